"""Netlist back-ends in the layers: NetlistAdder against LutAdder, against Netlist.evaluate_int per pair, its
on-the-fly gradients against LutAdder grad=lut, the torch fallback, cell adders on the compiled kernel, bad input."""
import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.blif import write_blif
from circuits.generators import array_multiplier, eta1_adder, loa_adder, ripple_carry_adder, truncated_adder
from circuits.netlist import Netlist, Node
from cli import main
from cli_runs import train_tiny
from dnn import Adder2d, AdderLinear, CellAdder, LutAdder, NetlistAdder, parse_arith
from dnn.arith.netlist_adder import adder_sums_torch, evaluate_pairs
from dnn.kernels import netlist_native, netlist_torch
from dnn.kernels.adder_ops import Geometry
from lutgen.lut import build_lut

SMALL = {"loa6": lambda: loa_adder(6, 3), "eta7": lambda: eta1_adder(7, 4), "trunc5": lambda: truncated_adder(5, 2),
         "maj8": lambda: ripple_carry_adder(8, cell="maj", approx_bits=5), "loa12": lambda: loa_adder(12, 5),
         "ama3_10": lambda: ripple_carry_adder(10, cell="ama3", approx_bits=4)}


def random_operands(qmax, shape_x, shape_w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-qmax, qmax + 1, shape_x, generator=g).float()
    w = torch.randint(-qmax, qmax + 1, shape_w, generator=g).float()
    return x, w


def slow_sums(netlist, bits, xq, wq, geom):
    """sum_k |d| with every d from Netlist.evaluate_int on the packed pattern (w first, then -x): the slow truth."""
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    order = [netlist.inputs.index(f"{name}[{i}]") for name in ("a", "b") for i in range(bits)]
    cols = geom.unfold(xq.double()).to(torch.int64)
    n, o = xq.shape[0], wq.shape[0]
    w = wq.reshape(o, -1).to(torch.int64)
    out = torch.zeros(n, o, cols.shape[2], dtype=torch.int64)
    for i in range(n):
        for j in range(o):
            for p in range(cols.shape[2]):
                total = 0
                for k in range(w.shape[1]):
                    a, b = int(w[j, k]) & mask, int(-cols[i, k, p]) & mask
                    value = (a | (b << bits))
                    pattern = sum(((value >> q) & 1) << order[q] for q in range(2 * bits))
                    d = netlist.evaluate_int(pattern) & mask
                    total += abs(d - (1 << bits) if d >= half else d)
                out[i, j, p] = total
    return out.view(n, o, *geom.output_size(*xq.shape[2:]))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_adders_equal_lut_adder_on_both_paths(name):
    net = SMALL[name]()
    lut = LutAdder(build_lut(net))
    table, pairs = NetlistAdder(net, table_bits=12), NetlistAdder(net, table_bits=0)
    assert torch.equal(table.diff, lut.diff) and pairs.diff is None
    geom = Geometry((3, 3), (1, 1), (1, 1))
    x, w = random_operands(lut.qmax, (2, 3, 6, 5), (4, 3, 3, 3))
    expected = lut.abs_sums(x, w, geom).double()
    assert torch.equal(table.abs_sums(x, w, geom).double(), expected)
    assert torch.equal(pairs.abs_sums(x, w, geom).double(), expected)
    assert torch.equal(pairs.pairwise_sums(x, w, geom).double(), expected)


@settings(max_examples=8, deadline=None)
@given(bits=st.sampled_from([9, 13, 16, 24, 32]), approx=st.integers(0, 8), seed=st.integers(0, 2**16),
       stride=st.integers(1, 2), pad=st.integers(0, 1))
def test_wide_adders_match_evaluate_int_per_pair(bits, approx, seed, stride, pad):
    net = loa_adder(bits, min(approx, bits - 1)) if seed % 2 else ripple_carry_adder(bits, "ama1", approx)
    adder = NetlistAdder(net, table_bits=0)
    geom = Geometry((2, 3), (stride, stride), (pad, pad))
    x, w = random_operands(adder.qmax, (1, 2, 4, 5), (3, 2, 2, 3), seed)
    expected = slow_sums(net, bits, x, w, geom)
    assert torch.equal(adder_sums_torch(adder.program, x, w, geom, bits), expected)
    compiled = netlist_native.adder_abs_sums(adder.program, x, w, geom, bits)
    if compiled is not None:
        assert torch.equal(compiled, expected)


def test_compiled_kernel_covers_partial_tiles_and_many_filters():
    net = ripple_carry_adder(16, "maj", 7)
    adder = NetlistAdder(net)
    geom = Geometry((3, 3), (1, 1), (1, 1))
    x, w = random_operands(adder.qmax, (3, 4, 13, 11), (9, 4, 3, 3), seed=5)
    compiled = netlist_native.adder_abs_sums(adder.program, x, w, geom, 16)
    if compiled is None:
        pytest.skip("no C compiler")
    assert torch.equal(compiled, adder_sums_torch(adder.program, x, w, geom, 16))


def test_torch_fallback_runs_with_native_code_off(monkeypatch):
    monkeypatch.setenv("AXNET_NATIVE", "0")
    assert not netlist_native.enabled()
    net = loa_adder(16, 5)
    layer = Adder2d(2, 3, 3, padding=1, arith=NetlistAdder(net))
    x = torch.randn(2, 2, 5, 5)
    y = layer(x)
    step = layer.arith.qmax
    assert y.shape == (2, 3, 5, 5) and torch.isfinite(y).all() and step == (1 << 14) - 1
    monkeypatch.setenv("AXNET_NATIVE", "1")
    if netlist_native.enabled():
        assert torch.equal(layer(x), y)


def test_pack_and_unpack_planes_round_trip():
    values = torch.randint(-2**40, 2**40, (3, 130))
    planes = netlist_torch.pack_planes(values, 64)
    assert planes.shape == (64, 3, 3)
    assert torch.equal(netlist_torch.unpack_planes(planes, 130), values)


def test_evaluate_pairs_matches_evaluate_int():
    net = array_multiplier(5, 5)
    from dnn.arith.netlist_circuit import TwoOperandCircuit
    program = TwoOperandCircuit(net, "multiplier").program(10)
    a, b = torch.randint(0, 32, (200,)), torch.randint(0, 32, (200,))
    assert torch.equal(evaluate_pairs(program, a, b, 5), a * b)
    assert torch.equal(netlist_torch.evaluate_lanes(program, [a, b], [5, 5]), a * b)


@pytest.mark.parametrize("half_window", [0, 1, 3])
@pytest.mark.parametrize("name", ["loa6", "eta7"])
def test_diff_gradients_equal_lut_adder_grad_lut(name, half_window):
    net = SMALL[name]()
    lut = LutAdder(build_lut(net), grad="lut", half_window=half_window)
    table = NetlistAdder(net, grad="diff", half_window=half_window)
    fly = NetlistAdder(net, grad="diff", half_window=half_window, table_bits=0)
    assert torch.equal(table.grad_w_slope, lut.grad_w_slope) and torch.equal(table.grad_x_slope, lut.grad_x_slope)
    geom = Geometry((3, 3), (1, 1), (1, 1))
    x, w = random_operands(lut.qmax, (2, 3, 6, 6), (4, 3, 3, 3), seed=half_window)
    step, g = torch.tensor(0.05), torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    gx, gw = lut.backward(x, w, step, g, geom, (True, True))
    fx, fw = fly.backward(x, w, step, g, geom, (True, True))
    torch.testing.assert_close(fx, gx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fw, gw, rtol=1e-5, atol=1e-4)
    # slopes on the fly equal the table's at every point of the domain
    values = torch.arange(-lut.qmax, lut.qmax + 1)
    sw, sc = fly.slopes(values[:, None], -values[None, :])
    assert torch.equal(sw, lut.grad_w_slope) and torch.equal(sc, lut.grad_x_slope)


def test_wide_adder_trains_with_diff_gradients():
    layer = AdderLinear(6, 3, arith=NetlistAdder(loa_adder(16, 4), grad="diff", half_window=2))
    x = torch.randn(4, 6, requires_grad=True)
    layer(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    assert x.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cell", ["maj", "ama1", "ama4", "ama5"])
def test_cell_adder_on_the_netlist_kernel_equals_the_table_ripple(cell):
    geom = Geometry((3, 3), (1, 1), (1, 1))
    for k in (1, 9, 20, 32):
        adder = CellAdder(cell, k, 32)
        x, w = random_operands(adder.qmax, (2, 3, 5, 4), (3, 3, 3, 3), seed=k)
        fast = adder.netlist_sums(x, w, geom)
        if fast is None:
            pytest.skip("no C compiler")
        assert torch.equal(fast.double(), adder.pairwise_sums(x, w, geom))


def test_parse_arith_circuit_spec(tmp_path):
    path = tmp_path / "loa12.blif"
    write_blif(loa_adder(12, 4), path)
    adder = parse_arith(f"circuit:{path}")
    assert isinstance(adder, NetlistAdder) and adder.bits == 12 and adder.grad == "ste"
    diff = parse_arith(f"circuit:{path}:w=1")
    assert diff.grad == "diff" and diff.half_window == 1 and diff.spec == f"circuit:{path}:grad=diff:w=1"
    assert parse_arith(diff.spec).spec == diff.spec and adder.sha256 is not None


def _carry_in_adder():
    net = ripple_carry_adder(6, carry_in=True)
    return net


def _bad_circuits(tmp_path):
    cases = {}
    cases["cin"] = (_carry_in_adder(), "tie a carry-in to 0")
    cases["wide"] = (ripple_carry_adder(33), "at most 32")
    few = ripple_carry_adder(8)
    cases["few"] = (Netlist(few.name, few.inputs, few.outputs[:5], few.nodes), "needs at least 8 outputs")
    cases["mult"] = (array_multiplier(6, 6), "a multiplier?")
    cases["uneven"] = (Netlist("u", ["a[0]", "a[1]", "a[2]", "b[0]", "b[1]"], ["s"],
                               {"s": Node("s", ("a[0]", "b[0]"), ("11",), 1)}), "equal width")
    out = {}
    for key, (net, message) in cases.items():
        path = tmp_path / f"{key}.blif"
        write_blif(net, path)
        out[key] = (path, message)
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "float"
    train_tiny(out, "--limit", 32, "--limit-test", 16)
    return out / "last.pt"


def test_bad_circuits_are_one_line_exit_2(tiny_checkpoint, tmp_path):
    for key, (path, message) in _bad_circuits(tmp_path).items():
        r = CliRunner().invoke(main, ["eval", str(tiny_checkpoint), "--arith", f"circuit:{path}"])
        assert r.exit_code == 2, (key, r.output)
        line = r.output.strip()
        assert "\n" not in line and str(path) in line and message in line, (key, line)
        assert "Traceback" not in r.output


def test_eval_under_a_wide_circuit(tiny_checkpoint, tmp_path):
    path = tmp_path / "loa16.blif"
    write_blif(loa_adder(16, 4), path)
    r = CliRunner().invoke(main, ["eval", str(tiny_checkpoint), "--arith", f"circuit:{path}", "--arith",
                                  "exact:16", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [0 <= row["accuracy"] <= 100 for row in rows] == [True, True]


def test_calibration_stops_after_the_last_adder_input_with_the_same_scales():
    from dnn.layers.calibrate import calibrate
    from dnn.models import build_model
    torch.manual_seed(0)
    model = build_model("mnist-addernet")
    model.eval()
    batches = [torch.randn(4, 1, 28, 28) for _ in range(3)]
    seen, calls = {}, []
    hooks = [m.register_forward_pre_hook(lambda m, i, name=name: seen.__setitem__(name, max(
        seen.get(name, 0.0), float(i[0].abs().max())))) for name, m in (("conv1", model.conv1), ("conv2", model.conv2))]
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in hooks:
        h.remove()
    model.fc.register_forward_hook(lambda *a: calls.append(1))
    scales = calibrate(model, batches, method="max", include_weights=False)
    assert calls == []  # nothing after the last adder layer's input ran
    assert scales == pytest.approx({"conv1": seen["conv1"], "conv2": seen["conv2"]}, rel=0, abs=0)


@pytest.mark.parametrize("net, half_window", [(loa_adder(6, 3), 1), (eta1_adder(7, 4), 2), (loa_adder(16, 5), 2),
                                              (ripple_carry_adder(24, "ama1", 5), 0),
                                              (ripple_carry_adder(32, "maj", 9), 3)])
def test_compiled_diff_backward_equals_the_torch_reference(net, half_window):
    adder = NetlistAdder(net, grad="diff", half_window=half_window, table_bits=0)
    geom = Geometry((3, 3), (1, 1), (1, 1))
    q = adder.qmax
    x, w = random_operands(q, (2, 3, 6, 7), (4, 3, 3, 3), seed=half_window)
    x[0, 0, 0, :4] = torch.tensor([q, -q, q - 1, -q + 1]).float()  # the ends of the domain (one-sided slopes)
    step, g = torch.tensor(0.05 if adder.bits < 10 else 3e-4), torch.randn(2, 4, 6, 7)
    compiled = netlist_native.adder_diff_backward(adder.program, x, w, step, g, geom, adder.bits, q, half_window)
    if compiled is None:
        pytest.skip("no C compiler")
    gx, gw = adder.diff_backward(x, w, step, g, geom, (True, True))
    # float32 sums in another order, divisors taken out of the sums: equal to float32 rounding of the largest terms
    for fast, slow in zip(compiled, (gx, gw)):
        assert (fast - slow).abs().max() <= 1e-5 * slow.abs().max()


def test_retrain_through_a_wide_netlist(tiny_checkpoint, tmp_path):
    path = tmp_path / "loa16.blif"
    write_blif(loa_adder(16, 6), path)
    r = CliRunner().invoke(main, ["retrain", str(tiny_checkpoint), "--circuit", str(path), "--grad", "lut",
                                  "--half-window", "1", "--epochs", "1", "--batch-size", "16",
                                  "--out", str(tmp_path / "rt"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert ["16-bit adder netlist" in row["arith"] for row in rows[2:]] == [True] * (len(rows) - 2)
    assert "grad=diff" in rows[-1]["arith"] and "grad=ste" in rows[2]["arith"]


def _retrain_rows(checkpoint, out, *options):
    r = CliRunner().invoke(main, ["retrain", str(checkpoint), *options, "--epochs", "1", "--batch-size", "16",
                                  "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["rows"]


def test_retrain_arith_spec_takes_the_netlist_of_a_narrow_adder(tiny_checkpoint, tmp_path):
    """--arith circuit:FILE:w=W retrains through the netlist itself even where a table would fit: its rows before
    retraining equal those of the table path (--circuit FILE, bit-exact forward), and it trains with grad=diff."""
    path = tmp_path / "loa8.blif"
    write_blif(loa_adder(8, 3), path)
    table = _retrain_rows(tiny_checkpoint, tmp_path / "t", "--circuit", str(path), "--half-window", "1")
    netlist = _retrain_rows(tiny_checkpoint, tmp_path / "n", "--arith", f"circuit:{path}:w=1", "--compare-ste")
    assert [r["accuracy"] for r in netlist[:4]] == [r["accuracy"] for r in table[:4]]
    assert "netlist" in netlist[2]["arith"] and "netlist" not in table[2]["arith"]
    assert "grad=diff" in netlist[4]["arith"] and "grad=ste" in netlist[5]["arith"]
    assert netlist[4]["row"] == "after retraining, windowed differences"
    assert table[4]["row"] == "after retraining, gradient LUT"
    lut = _retrain_rows(tiny_checkpoint, tmp_path / "l", "--arith", f"lut:{path}:grad=ste")
    assert "grad=ste" in lut[4]["arith"] and "netlist" not in lut[4]["arith"]


@pytest.mark.parametrize("options, message", [
    (["--arith", "circuit:{path}", "--circuit", "{path}"], "leave out --circuit"),
    (["--arith", "circuit:{path}:grad=lut"], "grad=lut; a circuit back-end takes grad=diff or grad=ste"),
    (["--arith", "cell:maj:k=3"], "retrain takes lut:PATH"),
    (["--arith", "circuit:{path}x"], "not found"),
    (["--arith", "lut:{path}:grad=lut"], "needs --half-window W (with --arith, :w=W)"),
    ([], "--circuit FILE.blif|LUT.npz or --arith SPEC")])
def test_retrain_arith_spec_bad_input(tiny_checkpoint, tmp_path, options, message):
    path = tmp_path / "loa8.blif"
    write_blif(loa_adder(8, 3), path)
    r = CliRunner().invoke(main, ["retrain", str(tiny_checkpoint), *[o.format(path=path) for o in options],
                                  "--out", str(tmp_path / "rt")])
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "rt" / "retrain.json").exists()


@pytest.mark.parametrize("geometry, shape", [(((3, 3), (1, 1), (1, 1)), (3, 2, 17, 13)),
                                             (((3, 2), (2, 1), (0, 2), (2, 1)), (2, 3, 21, 11))])
def test_compiled_diff_backward_over_several_tiles(geometry, shape):
    """More pixels than one 512-lane tile (a partial last tile), strides, dilation and asymmetric padding; taps whose
    tile holds values at either end of the range (per-lane windows) and taps whose tile does not (the neighbours of
    c added bit-sliced) both occur."""
    adder = NetlistAdder(loa_adder(16, 5), grad="diff", half_window=4, table_bits=0)
    geom = Geometry(*geometry)
    q = adder.qmax
    x, w = random_operands(q, shape, (3, shape[1], *geometry[0]), seed=7)
    x[0, 0, 2, :5] = torch.tensor([q, -q, q - 3, -q + 4, q - 5]).float()
    ho, wo = geom.output_size(*shape[2:])
    step, g = torch.tensor(3e-4), torch.randn(shape[0], 3, ho, wo)
    compiled = netlist_native.adder_diff_backward(adder.program, x, w, step, g, geom, adder.bits, q, 4)
    if compiled is None:
        pytest.skip("no C compiler")
    gx, gw = adder.diff_backward(x, w, step, g, geom, (True, True))
    for fast, slow in zip(compiled, (gx, gw)):
        assert (fast - slow).abs().max() <= 1e-5 * slow.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_operands_made_in_c_or_torch_agree(dtype):
    """The kernel's operands come from C for float32 tensors and from torch otherwise (float64 values past 2^24 would
    round in float32): both give the sums of the torch reference, here with 32-bit values far past 2^24."""
    adder = NetlistAdder(ripple_carry_adder(32, "ama1", 7), table_bits=0)
    geom = Geometry((3, 2), (1, 2), (2, 1))
    x, w = random_operands(adder.qmax, (2, 3, 5, 6), (4, 3, 3, 2), seed=11)
    if dtype == torch.float64:  # integers float32 cannot hold
        x, w = x.double() + 1, w.double() - 1
    fast = netlist_native.adder_abs_sums(adder.program, x.to(dtype), w.to(dtype), geom, 32)
    if fast is None:
        pytest.skip("no C compiler")
    assert torch.equal(fast, adder_sums_torch(adder.program, x.to(dtype), w.to(dtype), geom, 32))


@pytest.mark.parametrize("needs", [(False, True), (True, False)])
def test_compiled_diff_backward_computes_only_the_gradients_asked_for(needs):
    """The first layer's input needs no gradient: the kernel skips c's neighbours and the fold (and likewise the
    weight's side), and what it does return equals the full computation."""
    adder = NetlistAdder(loa_adder(16, 5), grad="diff", half_window=2, table_bits=0)
    geom = Geometry((3, 3), (1, 1), (1, 1))
    x, w = random_operands(adder.qmax, (2, 3, 9, 8), (4, 3, 3, 3), seed=5)
    step, g = torch.tensor(3e-4), torch.randn(2, 4, 9, 8)
    full = netlist_native.adder_diff_backward(adder.program, x, w, step, g, geom, 16, adder.qmax, 2)
    if full is None:
        pytest.skip("no C compiler")
    part = netlist_native.adder_diff_backward(adder.program, x, w, step, g, geom, 16, adder.qmax, 2, needs)
    for want, got, full_grad in zip(needs, part, full):
        assert (got is None) == (not want)
        if want:
            assert torch.equal(got, full_grad)
