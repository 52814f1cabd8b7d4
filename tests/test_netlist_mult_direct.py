"""The netlist multiplier's direct convolution kernel (csrc/netlist_mult.h `nl_mult_conv`, read straight from the
padded image, zero-point terms folded in) against the unfolded path (`ApproxConv2d.product_conv`) and the torch
reference `product_sums_torch`, bit for bit; with native code off the layers give the same values."""
import pytest
import torch

from circuits.errors import AxnetError
from circuits.generators import array_multiplier, signed_array_multiplier
from circuits.netlist import Netlist, Node
from dnn import ApproxConv2d, ApproxLinear
from dnn.arith.accumulate import Accumulator
from dnn.arith.netlist_multiplier import NetlistMultiplier, product_sums_torch
from dnn.kernels import netlist_native
from dnn.kernels.adder_ops import Geometry
from dnn.kernels.mult_ops import padded_patches

needs_native = pytest.mark.skipif(not netlist_native.enabled(), reason="no C compiler or AXNET_NATIVE=0")


def truncated_multiplier(wa, wb, cut=3, signed=False):
    """An array multiplier (two's complement when `signed`) whose `cut` lowest product bits are 0 and whose next bit
    is an OR of two inputs."""
    net = (signed_array_multiplier if signed else array_multiplier)(wa, wb)
    nodes, outputs = dict(net.nodes), list(net.outputs)
    nodes["zero"] = Node("zero", (), (), 1)
    nodes["orbit"] = Node("orbit", ("a[0]", "b[1]"), ("1-", "-1"), 1)
    outputs[:cut] = ["zero"] * cut
    outputs[cut] = "orbit"
    return Netlist("trunc_mult", net.inputs, outputs, nodes)


def unfolded_sums(mult, qx, qw, geom, groups, x_pad):
    """sum over each patch of P(x, w[o]) through the unfold and `product_sums_torch` per group, (N, O, Ho, Wo)."""
    cols, ho, wo = padded_patches(qx, geom, torch.tensor(float(x_pad)))
    n, o = qx.shape[0], qw.shape[0]
    kg, og = cols.shape[1] // groups, o // groups
    outs = []
    for g in range(groups):
        s = product_sums_torch(mult.program, cols[:, g * kg:(g + 1) * kg], qw[g * og:(g + 1) * og].reshape(og, kg),
                               mult.widths, mult.out_bits, mult.mode == "signed")
        outs.append(s.reshape(n, ho * wo, og).transpose(1, 2))
    return torch.cat(outs, 1).reshape(n, o, ho, wo)


GEOMETRIES = [  # (N, C, H, W, O, groups, kernel, stride, padding, dilation)
    (1, 3, 7, 6, 4, 1, 3, 1, 1, 1),
    (3, 4, 9, 11, 6, 2, 3, 2, 2, 1),
    (1, 4, 10, 9, 4, 2, 3, 1, 0, 2),
    (3, 2, 5, 13, 5, 1, (2, 3), (1, 2), (2, 0), (2, 1)),
    (2, 6, 23, 40, 9, 3, 3, 1, 1, 1),  # more than one tile of pixels, some rows of lanes side by side
]
WIDTHS = [(2, 3), (4, 4), (5, 4), (8, 6), (12, 12), (17, 3)]


@needs_native
@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("mode", ["unsigned", "signed"])
def test_kernel_sums_equal_unfold_and_torch_reference(widths, mode):
    net = (truncated_multiplier(*widths, cut=1, signed=mode == "signed") if widths == (8, 6)
           else multiplier(*widths, mode))
    mult = NetlistMultiplier(net, mode=mode)
    (lo0, hi0), (lo1, hi1) = mult.qrange(0), mult.qrange(1)
    g = torch.Generator().manual_seed(sum(widths))
    for n, c, h, w, o, groups, k, s, p, d in GEOMETRIES:
        geom = Geometry(*(v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d)))
        qx = torch.randint(lo0, hi0 + 1, (n, c, h, w), generator=g).float()
        qw = torch.randint(lo1, hi1 + 1, (o, c // groups, *geom.kernel), generator=g).float()
        x_pad = int(torch.randint(lo0, hi0 + 1, (), generator=g))
        got = netlist_native.mult_conv(mult.program, qx, qw, geom, groups, mult.widths, mult.out_bits,
                                       mode == "signed", x_pad)
        assert torch.equal(got, unfolded_sums(mult, qx, qw, geom, groups, x_pad)), (widths, n, c, h, w)


def make_layer(net, mode, weights, groups=1, stride=1, padding=1, dilation=1, cin=4, cout=6, seed=0):
    torch.manual_seed(seed)
    return ApproxConv2d(cin, cout, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                        mult=NetlistMultiplier(net, mode=mode, weights=weights)).double()


def unfolded_layer(layer, x):
    """The layer's output through the unfolded product (the path before the direct kernel)."""
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    return (layer.product_conv(qx, qw, s_x, z_x, s_w, z_w).to(x.dtype) + layer.bias.view(1, -1, 1, 1)).detach()


LAYERS = [  # (groups, stride, padding, dilation, batch, H, W)
    (1, 1, 1, 1, 3, 9, 7), (2, 1, 1, 1, 1, 8, 8), (1, 2, 0, 1, 3, 11, 6), (2, 1, 2, 2, 1, 7, 10),
    (1, 1, 2, 1, 1, 5, 12), (2, 2, 1, 2, 3, 12, 9),
]
def multiplier(wa, wb, mode):
    """The exact array multiplier for the layer's mode (a signed layer needs a two's-complement circuit)."""
    return (signed_array_multiplier if mode == "signed" else array_multiplier)(wa, wb)


CIRCUITS = {"4x4": lambda mode: multiplier(4, 4, mode), "8x6": lambda mode: multiplier(8, 6, mode),
            "12x12": lambda mode: multiplier(12, 12, mode),
            "trunc10x7": lambda mode: truncated_multiplier(10, 7, signed=mode == "signed")}


@needs_native
@pytest.mark.parametrize("circuit", sorted(CIRCUITS))
@pytest.mark.parametrize("mode", ["unsigned", "signed"])
@pytest.mark.parametrize("weights", ["tensor", "channel"])
def test_layer_output_equals_unfolded_path(circuit, mode, weights):
    net = CIRCUITS[circuit](mode)
    for i, (groups, stride, padding, dilation, batch, h, w) in enumerate(LAYERS):
        layer = make_layer(net, mode, weights, groups, stride, padding, dilation, seed=i)
        x = torch.randn(batch, 4, h, w, dtype=torch.float64) + (0.5 if mode == "unsigned" else 0.0)
        qx, s_x, z_x = layer.quantize_input(x)
        qw, s_w, z_w = layer.quantize_weight()
        assert layer.direct_product(qx, qw, s_x, z_x, s_w, z_w) is not None
        y = layer(x)
        assert torch.equal(y, unfolded_layer(layer, x)), (circuit, groups, stride, padding, dilation)
        assert torch.equal(layer.float()(x.float()), unfolded_layer(layer, x.float()))  # float32 layers too
        layer.double()


@needs_native
def test_16x16_multiplier_on_a_tiny_layer():
    for mode in ("unsigned", "signed"):
        layer = make_layer(multiplier(16, 16, mode), mode, "channel", groups=2, cin=2, cout=2)
        x = torch.randn(2, 2, 5, 4, dtype=torch.float64)
        assert torch.equal(layer(x), unfolded_layer(layer, x))


@needs_native
def test_layer_sums_equal_torch_reference_of_the_circuit():
    """The integer sums under the layer: the direct kernel's against `product_sums_torch` on the unfolded input."""
    mult = NetlistMultiplier(truncated_multiplier(12, 12))
    g = torch.Generator().manual_seed(5)
    qx = torch.randint(0, 4096, (3, 4, 9, 8), generator=g).float()
    qw = torch.randint(0, 4096, (6, 2, 3, 3), generator=g).float()
    geom = Geometry((3, 3), (1, 1), (1, 1), (1, 1))
    got = netlist_native.mult_conv(mult.program, qx, qw, geom, 2, mult.widths, mult.out_bits, False, 17)
    assert torch.equal(got, unfolded_sums(mult, qx, qw, geom, 2, 17))


@pytest.mark.parametrize("mode", ["unsigned", "signed"])
def test_native_code_off_gives_the_same_values(monkeypatch, mode):
    layer = make_layer(multiplier(12, 12, mode), mode, "channel", groups=2, stride=2, padding=2)
    lin = ApproxLinear(12, 5, mult=NetlistMultiplier(multiplier(12, 12, mode), mode=mode)).double()
    x = torch.randn(3, 4, 11, 9, dtype=torch.float64)
    xl = torch.randn(7, 12, dtype=torch.float64)
    y, yl = layer(x), lin(xl)
    monkeypatch.setenv("AXNET_NATIVE", "0")
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    assert layer.direct_product(qx, qw, s_x, z_x, s_w, z_w) is None  # the unfolded torch path serves
    assert torch.equal(layer(x), y) and torch.equal(lin(xl), yl)
    assert torch.equal(layer(x), unfolded_layer(layer, x))


@needs_native
@pytest.mark.parametrize("mode", ["unsigned", "signed"])
def test_straight_through_gradients_match_the_unfolded_path(mode):
    layer = make_layer(truncated_multiplier(12, 12, signed=mode == "signed"), mode, "channel", groups=2, stride=2,
                       padding=1)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    gx, gw = x.grad.clone(), layer.weight.grad.clone()
    x.grad = layer.weight.grad = None
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    (layer.product_conv(qx, qw, s_x, z_x, s_w, z_w) + layer.bias.view(1, -1, 1, 1)).square().sum().backward()
    assert torch.allclose(gx, x.grad, rtol=1e-4, atol=1e-6 * x.grad.abs().max().item())
    assert torch.allclose(gw, layer.weight.grad, rtol=1e-4, atol=1e-6 * layer.weight.grad.abs().max().item())


def test_accumulator_and_wide_terms_keep_the_unfolded_path():
    mult = NetlistMultiplier(array_multiplier(24, 24))  # K * 2^48 terms pass 2^53: float64 roundings of today's path
    layer = ApproxConv2d(8, 2, 3, padding=1, mult=mult)
    x = torch.randn(1, 8, 4, 4)
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    assert layer.direct_product(qx, qw, s_x, z_x, s_w, z_w) is None
    layer = ApproxConv2d(8, 2, 3, padding=1, mult=NetlistMultiplier(array_multiplier(12, 12)),
                         accum=Accumulator("loa:32:k=2"))
    assert layer.direct_product(qx, qw, s_x, z_x, s_w, z_w) is None  # the accumulator circuit sums the products
    with pytest.raises(AxnetError, match="no product table"):
        layer(x)
