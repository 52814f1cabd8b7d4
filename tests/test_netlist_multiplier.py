"""NetlistMultiplier: multiplier netlists in ApproxConv2d/ApproxLinear, against LutMultiplier, the exact product,
Netlist.evaluate_int per pair, and the torch reference of the compiled kernel."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.generators import array_multiplier, loa_adder, signed_array_multiplier
from circuits.netlist import Netlist, Node
from dnn import ApproxConv2d, ApproxLinear, LutMultiplier, parse_mult
from dnn.arith.netlist_multiplier import NetlistMultiplier, product_sums_torch
from dnn.kernels import netlist_native, netlist_torch
from lutgen.lut import build_lut
from circuits.errors import AxnetError


def approximate_multiplier(wa, wb, signed=False):
    """An array multiplier (two's complement when `signed`) whose lowest product bit is stuck at 1 and bit 1 is an
    OR: not a plain product."""
    net = (signed_array_multiplier if signed else array_multiplier)(wa, wb)
    nodes = dict(net.nodes)
    outputs = list(net.outputs)
    nodes["stuck"] = Node("stuck", (), ("",), 1)
    nodes["orbit"] = Node("orbit", ("a[1]", "b[1]"), ("1-", "-1"), 1)
    outputs[0], outputs[1] = "stuck", "orbit"
    return Netlist("approx_mult", net.inputs, outputs, nodes)


def slow_sums(net, qx, qw, widths, signed):
    wa, wb = widths
    bits = len(net.outputs)
    out = torch.zeros(qx.shape[0], qw.shape[0], dtype=torch.int64)
    pos = {name: i for i, name in enumerate(net.inputs)}
    for m in range(qx.shape[0]):
        for o in range(qw.shape[0]):
            total = 0
            for k in range(qx.shape[1]):
                a, b = int(qx[m, k]) & ((1 << wa) - 1), int(qw[o, k]) & ((1 << wb) - 1)
                pattern = sum(((a >> i) & 1) << pos[f"a[{i}]"] for i in range(wa))
                pattern |= sum(((b >> i) & 1) << pos[f"b[{i}]"] for i in range(wb))
                p = net.evaluate_int(pattern)
                total += p - (1 << bits) if signed and p >= 1 << (bits - 1) else p
            out[m, o] = total
    return out


@settings(max_examples=6, deadline=None)
@given(wa=st.integers(2, 13), wb=st.integers(2, 13), signed=st.booleans(), seed=st.integers(0, 1000))
def test_product_sums_match_evaluate_int(wa, wb, signed, seed):
    net = approximate_multiplier(wa, wb, signed)
    mult = NetlistMultiplier(net, mode="signed" if signed else "unsigned")
    g = torch.Generator().manual_seed(seed)
    (lo0, hi0), (lo1, hi1) = mult.qrange(0), mult.qrange(1)
    qx = torch.randint(lo0, hi0 + 1, (5, 7), generator=g).float()
    qw = torch.randint(lo1, hi1 + 1, (3, 7), generator=g).float()
    expected = slow_sums(net, qx, qw, (wa, wb), signed)
    assert torch.equal(product_sums_torch(mult.program, qx, qw, mult.widths, mult.out_bits, signed), expected)
    compiled = netlist_native.mult_sums(mult.program, qx, qw, mult.widths, mult.out_bits, signed)
    if compiled is not None:
        assert torch.equal(compiled, expected)


def test_wide_exact_multiplier_gives_the_exact_product_on_many_rows():
    mult = NetlistMultiplier(array_multiplier(12, 12))
    qx = torch.randint(0, 4096, (1100, 40)).float()
    qw = torch.randint(0, 4096, (6, 40)).float()
    assert torch.equal(mult.product_sums(qx, qw), qx.double() @ qw.double().t())


@pytest.mark.parametrize("mode", ["unsigned", "signed"])
def test_layers_equal_lut_multiplier_of_the_same_circuit(mode):
    net = approximate_multiplier(6, 6, mode == "signed")
    lut = LutMultiplier(build_lut(net, signed=mode == "signed"))
    torch.manual_seed(0)
    conv_lut = ApproxConv2d(3, 4, 3, padding=1, mult=lut)
    conv_net = ApproxConv2d(3, 4, 3, padding=1, mult=NetlistMultiplier(net, mode=mode))
    conv_net.load_state_dict(conv_lut.state_dict())
    x = torch.randn(2, 3, 7, 6)
    assert torch.equal(conv_net(x), conv_lut(x))
    lin_lut = ApproxLinear(10, 5, mult=lut)
    lin_net = ApproxLinear(10, 5, mult=NetlistMultiplier(net, mode=mode, weights="channel"))
    lin_lut.mult = LutMultiplier(build_lut(net, signed=mode == "signed"), weights="channel")
    lin_net.load_state_dict(lin_lut.state_dict())
    x = torch.randn(4, 10, requires_grad=True)
    y = lin_net(x)
    assert torch.equal(y, lin_lut(x))
    y.sum().backward()  # straight-through gradients
    assert torch.isfinite(x.grad).all() and lin_net.weight.grad is not None


def test_parse_mult_circuit_and_bad_circuits(tmp_path):
    from circuits.blif import write_blif
    path = tmp_path / "m12.blif"
    write_blif(signed_array_multiplier(12, 12), path)  # read back through BLIF: its constant-1 row survives
    mult = parse_mult(f"circuit:{path}:mode=signed")
    assert isinstance(mult, NetlistMultiplier) and mult.mode == "signed" and mult.widths == [12, 12]
    a, b = torch.tensor([-2048, -1, 5, 2047]), torch.tensor([-2048, 7, -3, 2047])
    p = netlist_torch.evaluate_lanes(mult.program, [a & 4095, b & 4095], [12, 12])
    assert torch.equal(torch.where(p >= 1 << 23, p - (1 << 24), p), a * b)
    # the wrong mode for the circuit runs but gives wrong products: one line saying which mode fits
    with pytest.raises(AxnetError, match="m12.blif: read in unsigned mode .* use mode=signed"):
        parse_mult(f"circuit:{path}")
    unsigned = tmp_path / "u12.blif"
    write_blif(array_multiplier(12, 12), unsigned)
    with pytest.raises(AxnetError, match="u12.blif: read in signed mode .* it is an unsigned multiplier"):
        parse_mult(f"circuit:{unsigned}:mode=signed")
    adder = tmp_path / "add.blif"
    write_blif(loa_adder(8, 2), adder)
    with pytest.raises(AxnetError, match="an adder's result, not a product"):
        parse_mult(f"circuit:{adder}")
    with pytest.raises(AxnetError, match="grad=ste"):
        parse_mult(f"circuit:{path}:grad=lut")


def test_a_lut_read_in_the_wrong_mode_is_refused():
    """A table of an unsigned multiplier simulated with --signed (or the reverse) would give wrong products."""
    with pytest.raises(AxnetError, match="read in signed mode .* it is an unsigned multiplier; make the table "
                                         "again without `axnet simulate --signed`"):
        LutMultiplier(build_lut(array_multiplier(6, 6), signed=True))
    with pytest.raises(AxnetError, match="read in unsigned mode .* with `axnet simulate --signed`"):
        LutMultiplier(build_lut(signed_array_multiplier(6, 6)))
    assert LutMultiplier(build_lut(signed_array_multiplier(6, 6), signed=True)).mode == "signed"
    assert LutMultiplier(build_lut(approximate_multiplier(6, 6))).mode == "unsigned"
