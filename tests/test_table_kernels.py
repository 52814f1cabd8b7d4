"""Compiled table kernels (csrc/table.c) of the multiplier and adder LUT layers against the torch references:
bit-exact forward against the elementwise LUT gather, gradients to float32 rounding, the torch fallback."""
import numpy as np
import pytest
import torch

from dnn.arith.lut_multiplier import LutMultiplier
from dnn.kernels import adder_ops, mult_ops, native_mult
from dnn.kernels import native as native_kernels
from dnn.kernels.adder_ops import Geometry
from dnn.layers.mult_layers import ApproxConv2d, ApproxLinear
from lutgen.lut import Lut, pattern_values

needs_native = pytest.mark.skipif(not native_kernels.available(),
                                  reason=f"compiled kernels unavailable: {native_kernels.error()}")


def odd_mult(bits, signed, grad="ste", weights="tensor", seed=0):
    """An asymmetric product-like table (ordering mistakes show), with gradient tables for grad='lut'."""
    rng = np.random.default_rng(seed)
    v = pattern_values(bits, signed)
    table = np.outer(v, v) + 3 * v[:, None] - (v[None, :] % 5) + rng.integers(-2, 3, (1 << bits, 1 << bits))
    if not signed:
        table = np.clip(table, 0, (1 << 2 * bits) - 1)  # a 2n-bit product
    lut = Lut(table=table, operands=[("a", bits), ("b", bits)], outputs=[], signed=signed, circuit=f"odd{bits}")
    return LutMultiplier(lut, grad=grad, half_window=2 if grad == "lut" else None, weights=weights)


# (C, O, kernel, stride, padding, dilation, groups, N, H, W)
SHAPES = [(3, 5, 3, 1, 1, 1, 1, 2, 7, 9), (4, 17, (2, 3), (2, 1), (1, 0), 1, 1, 1, 8, 5),
          (6, 6, 3, 1, 2, 2, 6, 2, 9, 6), (4, 6, 3, 2, 1, 1, 2, 3, 5, 5), (2, 33, 1, 1, 0, 1, 1, 1, 4, 3)]
MODES = [("unsigned", "tensor"), ("unsigned", "channel"), ("signed", "tensor"), ("signed", "channel")]


def layer_and_input(shape, mult, seed=0):
    C, O, k, s, p, d, g, N, H, W = shape
    torch.manual_seed(seed)
    layer = ApproxConv2d(C, O, k, stride=s, padding=p, dilation=d, groups=g, mult=mult)
    x = torch.randn(N, C, H, W)
    if mult.mode == "unsigned":
        x = x + 0.3  # an asymmetric range: nonzero zero point
    return layer, x


def operands(layer, x):
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    geom = Geometry(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return qx.detach(), qw.detach(), geom, (s_x, z_x, s_w, z_w)


def gather_reference(layer, qx, qw, params):
    """The exact layer output from `reference_accumulate` (int64 gather of every pair) and exact zero-point terms."""
    mult = layer.mult
    s_x, z_x, s_w, z_w = params
    cols, ho, wo = mult_ops.padded_patches(qx, Geometry(layer.kernel_size, layer.stride, layer.padding,
                                                        layer.dilation), z_x)
    G, O = layer.groups, qw.shape[0]
    Kg, Og = cols.shape[1] // G, O // G
    ix = (cols - mult.qrange(0)[0]).long()
    iw = (qw.reshape(O, -1) - mult.qrange(1)[0]).long()
    acc = torch.cat([mult_ops.reference_accumulate(ix[:, g * Kg:(g + 1) * Kg], iw[g * Og:(g + 1) * Og],
                                                   mult.values) for g in range(G)], 1)  # (M, O) int64
    zw = mult_ops.per_output(z_w, O)
    zx = int(z_x)
    sum_x = cols.double().reshape(cols.shape[0], G, Kg).sum(2).repeat_interleave(Og, 1)
    sum_w = qw.reshape(O, -1).double().sum(1)
    inner = acc.double() - zw * sum_x - zx * sum_w + Kg * zx * zw
    y = inner * (s_x.double() * mult_ops.per_output(s_w, O))
    return y.float().reshape(qx.shape[0], ho, wo, O).permute(0, 3, 1, 2)


@needs_native
@pytest.mark.parametrize("mode,weights", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_bit_exact_against_the_elementwise_gather(mode, weights, shape):
    mult = odd_mult(8, mode == "signed", weights=weights)
    layer, x = layer_and_input(shape, mult)
    qx, qw, geom, params = operands(layer, x)
    assert mult_ops.native_conv(qx, qw, mult)
    fast = mult_ops.lut_conv_forward(qx, qw, mult, geom, layer.groups, *params, native=True)
    torch_path = mult_ops.lut_conv_forward(qx, qw, mult, geom, layer.groups, *params, native=False)
    want = gather_reference(layer, qx, qw, params)
    assert torch.equal(fast, want)
    assert torch.equal(torch_path, want)


@needs_native
def test_unsigned_products_beyond_int16_use_an_offset_and_wide_tables_int32():
    """An unsigned 8-bit product (up to 65025) is stored minus an offset; a 10-bit one needs int32 entries."""
    mult8 = odd_mult(8, False)
    mat, offset, _ = native_mult.integer_table(mult8)
    assert mat.dtype == torch.int16 and offset != 0
    mult10 = odd_mult(10, True)
    assert native_mult.integer_table(mult10)[0].dtype == torch.int32
    for mult in (mult8, mult10):
        layer, x = layer_and_input(SHAPES[0], mult)
        qx, qw, geom, params = operands(layer, x)
        fast = mult_ops.lut_conv_forward(qx, qw, mult, geom, 1, *params, native=True)
        assert torch.equal(fast, gather_reference(layer, qx, qw, params))


def reference_grads(layer, x, g):
    """Input and weight gradients through the reference composition (LutProduct + zero-point terms by autograd)."""
    xr = x.clone().requires_grad_(True)
    layer.weight.grad = None
    qx, s_x, z_x = layer.quantize_input(xr)
    qw, s_w, z_w = layer.quantize_weight()
    y = layer.product_conv(qx, qw, s_x, z_x, s_w, z_w).to(x.dtype)
    y.backward(g)
    return xr.grad, layer.weight.grad


def layer_grads(layer, x, g):
    xr = x.clone().requires_grad_(True)
    layer.weight.grad = None
    layer(xr).backward(g)
    return xr.grad, layer.weight.grad


def close(a, b):
    """Equal to float32 rounding: relative to the largest magnitude of the reference."""
    scale = float(b.abs().max()) or 1.0
    torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=2e-5)


@needs_native
@pytest.mark.parametrize("grad", ["ste", "lut"])
@pytest.mark.parametrize("mode,weights", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_equal_the_reference_composition(grad, mode, weights, shape, monkeypatch):
    mult = odd_mult(8, mode == "signed", grad=grad, weights=weights)
    layer, x = layer_and_input(shape, mult, seed=1)
    g = torch.randn_like(layer(x))
    want_x, want_w = reference_grads(layer, x, g)
    got_x, got_w = layer_grads(layer, x, g)
    close(got_x, want_x)
    close(got_w, want_w)
    monkeypatch.setattr(native_kernels, "available", lambda: False)  # the torch fallback gives the same
    torch_x, torch_w = layer_grads(layer, x, g)
    close(torch_x, want_x)
    close(torch_w, want_w)


@needs_native
@pytest.mark.parametrize("grad", ["ste", "lut"])
def test_linear_layer_runs_the_table_kernels_as_a_1x1_convolution(grad, monkeypatch):
    mult = odd_mult(8, True, grad=grad)
    torch.manual_seed(3)
    layer = ApproxLinear(37, 19, mult=mult)
    x = torch.randn(5, 3, 37)
    xr = x.clone().requires_grad_(True)
    y = layer(xr)
    g = torch.randn_like(y)
    y.backward(g)
    qx, s_x, z_x = layer.quantize_input(x.reshape(-1, 37))
    qw, s_w, z_w = layer.quantize_weight()
    want = (layer.approx_matmul(qx, qw, s_x, z_x, s_w, z_w).float() + layer.bias).reshape(5, 3, 19)
    assert torch.equal(y, want)
    gx, gw = xr.grad.clone(), layer.weight.grad.clone()
    monkeypatch.setattr(native_kernels, "available", lambda: False)
    layer.weight.grad = None
    xr.grad = None
    y2 = layer(xr)
    assert torch.equal(y2, y)
    y2.backward(g)
    close(gx, xr.grad)
    close(gw, layer.weight.grad)


def test_fallback_without_compiled_kernels_gives_the_same_layer_output(monkeypatch):
    mult = odd_mult(8, False, weights="channel")
    layer, x = layer_and_input(SHAPES[3], mult)
    qx, qw, geom, params = operands(layer, x)
    want = gather_reference(layer, qx, qw, params)
    monkeypatch.setattr(native_kernels, "available", lambda: False)
    assert not mult_ops.native_conv(qx, qw, mult)
    assert torch.equal(mult_ops.lut_conv_forward(qx, qw, mult, geom, layer.groups, *params), want)


@needs_native
@pytest.mark.parametrize("geom,n,c,o", [(Geometry((3, 3), (1, 1), (1, 1)), 2, 5, 40),
                                        (Geometry((3, 2), (2, 1), (0, 1), (2, 1)), 1, 3, 7),
                                        (Geometry((1, 1)), 3, 9, 130)])
def test_adder_table_kernels_equal_the_torch_versions(geom, n, c, o):
    """The LUT adder's use of the shared kernels: integer-exact forward, both table gradients."""
    torch.manual_seed(o)
    values, weights = 127, 127
    index = torch.randint(0, values, (n, c, 9, 11), dtype=torch.int32)
    k = c * geom.kernel[0] * geom.kernel[1]
    mat = torch.randint(0, 256, (values, weights))
    wi = torch.randint(0, weights, (o, k), dtype=torch.int32)
    y = adder_ops.table_forward(index, wi, mat, geom, 63, native=True)
    assert torch.equal(y, adder_ops.table_forward(index, wi, mat, geom, 63, native=False))
    g = torch.randn(y.shape)
    ma, mw = torch.randn(values, weights), torch.randn(values, weights)
    gx, gw = adder_ops.table_backward(index, wi, ma, mw, g, geom, 63, native=True)
    tx, tw = adder_ops.table_backward(index, wi, ma, mw, g, geom, 63, native=False)
    close(gx, tx)
    close(gw, tw)
    only_w = adder_ops.table_backward(index, wi, None, mw, g, geom, 63, native=True)
    assert only_w[0] is None and torch.equal(only_w[1], gw)
