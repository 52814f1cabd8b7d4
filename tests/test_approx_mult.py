"""Approximate-multiplier layers: exact to the LUT, exact zero-point terms, gradients, calibration, bad input."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from circuits.errors import AxnetError
from dnn.approx_mult import (ApproxConv2d, ApproxLinear, LutMultiplier, LutProduct, calibrate_mult,
                             clear_calibration, lut_accumulate, lut_grad_a, lut_grad_b, parse_mult,
                             reference_accumulate, set_mult)
from lutgen.formats import save_npz, write_adapt_header
from lutgen.lut import Lut, pattern_values

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "appmult"
MULT77 = FIXTURES / "Mult_7_7_MED_63.6771_size_178_depth_23_lutfp+bp_avg_8_8.txt"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AppMult fixtures not found at {FIXTURES}")


def exact_lut(n, signed, operands=2):
    """The exact n-bit product as a LUT indexed by raw patterns."""
    v = pattern_values(n, signed)
    table = np.outer(v, v) if operands == 2 else np.einsum("i,j,k->ijk", v, v, v)
    names = ["a", "b", "c"][:operands]
    return Lut(table=table, operands=[(s, n) for s in names], outputs=[], signed=signed, circuit=f"exact{n}")


def numeric_values(mult):
    """The multiplier's table as int64, index i meaning value qmin + i."""
    return torch.as_tensor(mult.values, dtype=torch.int64)


def copy_from(layer, base):
    """Give `layer` the parameters of the float layer `base`."""
    layer.load_state_dict(base.state_dict(), strict=False)
    return layer


def reference_conv(layer, x):
    """Slow conv reference: pad the quantized input with its zero point, gather AM for every kernel offset and
    channel in int64, apply the zero-point terms exactly (float64)."""
    mult = layer.mult
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    (ph, pw), (sh, sw), (dh, dw), G = layer.padding, layer.stride, layer.dilation, layer.groups
    qmin_a, qmin_b = mult.qrange(0)[0], mult.qrange(1)[0]
    zx = int(z_x)
    ix = F.pad(qx.detach().to(torch.int64) - zx, (pw, pw, ph, ph)) + zx - qmin_a
    iw = qw.detach().to(torch.int64) - qmin_b
    V = numeric_values(mult)
    N, C, H, W = ix.shape
    O, Cg, kh, kw = iw.shape
    ho = (H - dh * (kh - 1) - 1) // sh + 1
    wo = (W - dw * (kw - 1) - 1) // sw + 1
    acc = torch.zeros(N, O, ho, wo, dtype=torch.int64)
    sum_x = torch.zeros(N, O, ho, wo, dtype=torch.int64)
    Og = O // G
    for i in range(kh):
        for j in range(kw):
            patch = ix[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            for o in range(O):
                g = o // Og
                a = patch[:, g * Cg:(g + 1) * Cg]  # (N, Cg, ho, wo)
                acc[:, o] += V[a, iw[o, :, i, j].view(1, Cg, 1, 1)].sum(1)
                sum_x[:, o] += (a + qmin_a).sum(1)
    K = Cg * kh * kw
    sum_w = (iw + qmin_b).sum((1, 2, 3)).view(1, O, 1, 1)
    z_w = z_w.double().expand(O).view(1, O, 1, 1)  # per tensor or per output channel
    s_w = s_w.double().expand(O).view(1, O, 1, 1)
    inner = acc.double() - z_w * sum_x.double() - float(z_x) * sum_w.double() + K * float(z_x) * z_w
    y = inner * (float(s_x) * s_w)
    if layer.bias is not None:
        y = y + layer.bias.detach().double().view(1, -1, 1, 1)
    return y, float(s_x) * float(s_w.min())


def assert_exact_to_lut(y, y_ref, unit):
    """Run in float64, the layer output differs from the reference by far less than one LUT unit (s_x s_w): the
    integer accumulation matched exactly (an off-by-one anywhere would show as a whole unit)."""
    assert y.dtype == torch.float64
    err = (y - y_ref).abs().max().item()
    assert err < 1e-3 * unit, (err, unit)


# ---- integer accumulation fast paths against the elementwise gather ------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 40), K=st.integers(1, 70), O=st.integers(1, 9), na=st.integers(1, 5), nb=st.integers(1, 5),
       big=st.sampled_from([10, 1 << 20, 1 << 40]), seed=st.integers(0, 2**31 - 1))
def test_lut_accumulate_equals_elementwise_gather(M, K, O, na, nb, big, seed):
    # large table values force several exact float32 blocks, and the float64 path beyond 2^24
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-big, big + 1, (1 << na, 1 << nb), generator=g, dtype=torch.int64)
    ix = torch.randint(0, 1 << na, (M, K), generator=g)
    iw = torch.randint(0, 1 << nb, (O, K), generator=g)
    max_abs = int(values.abs().max())
    table = values.to(torch.float32 if max_abs <= 1 << 24 else torch.float64)
    fast = lut_accumulate(ix, iw, table, max_abs)
    slow = reference_accumulate(ix, iw, values)
    assert fast.dtype == torch.float64
    assert torch.equal(fast.to(torch.int64), slow)
    # the layers pass quantized values as floats and shift them to indices (signed: shift = -qmin)
    shifted = lut_accumulate((ix - 7).to(torch.float32), iw, table, max_abs, shift=7)
    assert torch.equal(shifted, fast)


@settings(max_examples=15, deadline=None)
@given(M=st.integers(1, 30), K=st.integers(1, 40), O=st.integers(1, 8), n=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_lut_gradient_fast_paths_equal_elementwise_sums(M, K, O, n, seed):
    g = torch.Generator().manual_seed(seed)
    ga = torch.randn(1 << n, 1 << n, generator=g)
    gb = torch.randn(1 << n, 1 << n, generator=g)
    ix = torch.randint(0, 1 << n, (M, K), generator=g)
    iw = torch.randint(0, 1 << n, (O, K), generator=g)
    grad_out = torch.randn(M, O, generator=g)
    pair_a = ga.double()[ix[:, None, :], iw[None, :, :]]  # (M, O, K)
    pair_b = gb.double()[ix[:, None, :], iw[None, :, :]]
    want_x = (grad_out.double()[:, :, None] * pair_a).sum(1)
    want_w = (grad_out.double()[:, :, None] * pair_b).sum(0)
    assert torch.allclose(lut_grad_a(ix, iw, grad_out, ga).double(), want_x, atol=1e-4)
    assert torch.allclose(lut_grad_b(ix, iw, grad_out, gb).double(), want_w, atol=1e-4)


# ---- layers exact to the LUT -----------------------------------------------------------------------------------------

@needs_fixtures
def test_unsigned_appmult_conv_is_exact_to_the_lut_with_zero_points():
    mult = LutMultiplier(MULT77, mode="unsigned")
    assert mult.values[0, 0] == 88  # AM(0,0) != 0: zero points must go through the LUT, not around it
    torch.manual_seed(1)
    layer = ApproxConv2d(3, 6, 3, stride=1, padding=1, bias=True, mult=mult).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)  # signed activations: z_x is well inside 0..127
    y = layer(x)
    y_ref, unit = reference_conv(layer, x)
    _, _, z_x = layer.quantize_input(x)
    assert 0 < float(z_x) < 127
    assert_exact_to_lut(y, y_ref, unit)


@needs_fixtures
def test_unsigned_appmult_zero_input_gives_the_lut_row_of_zero():
    mult = LutMultiplier(MULT77)
    torch.manual_seed(2)
    layer = ApproxLinear(20, 4, bias=False, mult=mult)
    y = layer(torch.zeros(3, 20))  # range [0, 0]: q_x = 0, z_x = 0
    qw, s_w, z_w = layer.quantize_weight()
    row = torch.as_tensor(mult.values[0], dtype=torch.float64)[qw.detach().long()].sum(1)
    want = float(s_w) * 1.0 * (row - 0)  # s_x = 1 for an all-zero range
    assert torch.allclose(y.double(), want.expand(3, 4), rtol=1e-6)
    assert float(want.abs().min()) > 0  # an exact multiplier would give 0 here


@needs_fixtures
def test_grouped_strided_dilated_conv_matches_reference():
    mult = LutMultiplier(FIXTURES / "mul7u_08E_lutfp.txt")
    torch.manual_seed(3)
    layer = ApproxConv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, mult=mult).double()
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64).relu()
    y_ref, unit = reference_conv(layer, x)
    y = layer(x)
    assert y.shape == y_ref.shape == nn.Conv2d(4, 6, (3, 2), (2, 1), (2, 1), (1, 2), 2)(x.float()).shape
    assert_exact_to_lut(y, y_ref, unit)


@settings(max_examples=12, deadline=None)
@given(groups=st.sampled_from([1, 2]), k=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), size=st.integers(5, 9), signed=st.booleans(), bits=st.integers(2, 6),
       weights=st.sampled_from(["tensor", "channel"]), seed=st.integers(0, 2**31 - 1))
def test_conv_geometry_matches_reference_for_random_luts(groups, k, stride, padding, dilation, size, signed, bits,
                                                         weights, seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(-500, 500, size=(1 << bits, 1 << bits))  # any table: no product structure to lean on
    mult = LutMultiplier(Lut(table=table, operands=[("a", bits), ("b", bits)], outputs=[], signed=signed),
                         weights=weights)
    torch.manual_seed(seed % 1000)
    layer = ApproxConv2d(2 * groups, 2 * groups, k, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, mult=mult).double()
    x = torch.randn(2, 2 * groups, size, size, dtype=torch.float64)
    y_ref, unit = reference_conv(layer, x)
    assert_exact_to_lut(layer(x), y_ref, unit)


def test_signed_adapt_header_conv_is_exact_to_the_lut(tmp_path):
    header = tmp_path / "mul8s_exact.h"
    write_adapt_header(exact_lut(8, True), header)
    mult = LutMultiplier(header, mode="signed")
    assert mult.mode == "signed" and mult.qrange(0) == (-128, 127)
    torch.manual_seed(4)
    layer = ApproxConv2d(3, 5, 3, padding=1, mult=mult).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y_ref, unit = reference_conv(layer, x)
    assert_exact_to_lut(layer(x), y_ref, unit)


def test_signed_linear_equals_elementwise_lut_product():
    # an asymmetric signed table: raw-pattern vs numeric order mistakes would show
    v = pattern_values(6, True)
    table = np.outer(v, v) + 3 * v[:, None] - v[None, :] ** 2 + 7
    mult = LutMultiplier(Lut(table=table, operands=[("a", 6), ("b", 6)], outputs=[], signed=True, circuit="odd"))
    torch.manual_seed(5)
    layer = ApproxLinear(12, 5, mult=mult).double()
    x = torch.randn(7, 12, dtype=torch.float64)
    qx, s_x, _ = layer.quantize_input(x)
    qw, s_w, _ = layer.quantize_weight()
    qxl, qwl = qx.detach().long(), qw.detach().long()
    patterns = lambda q: q % 64  # two's-complement bit pattern of a 6-bit value
    acc = torch.as_tensor(table)[patterns(qxl)[:, None, :], patterns(qwl)[None, :, :]].sum(-1)
    assert torch.equal(LutProduct.apply(qx.detach(), qw.detach(), mult).long(), acc)
    want = acc.double() * float(s_x) * float(s_w) + layer.bias.detach().double()
    assert_exact_to_lut(layer(x), want, float(s_x) * float(s_w))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("weights", ["tensor", "channel"])
def test_exact_lut_reproduces_conv2d_up_to_quantization(signed, weights):
    mult = LutMultiplier(exact_lut(8, signed), weights=weights)
    torch.manual_seed(6)
    base = nn.Conv2d(4, 8, 3, padding=1)
    layer = copy_from(ApproxConv2d(4, 8, 3, padding=1, mult=mult), base)
    x = torch.randn(2, 4, 10, 10)
    if not signed:
        x = x.relu()
    y = layer(x)
    # with an exact LUT the layer is the float conv of the dequantized operands
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    if weights == "channel":
        assert s_w.shape == z_w.shape == (8,)
        s_w, z_w = s_w.view(8, 1, 1, 1), z_w.view(8, 1, 1, 1)
    deq = F.conv2d((qx - z_x) * s_x, (qw - z_w) * s_w, base.bias, padding=1)
    assert torch.allclose(y, deq, atol=1e-4)
    # and within quantization error of the float conv
    exact = base(x)
    assert (y - exact).abs().max() < 0.03 * exact.abs().max()


def test_without_multiplier_layers_are_plain_torch_layers():
    torch.manual_seed(7)
    base, layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, groups=1), ApproxConv2d(3, 4, 3, stride=2, padding=1)
    layer.load_state_dict(base.state_dict())  # a plain checkpoint without act_range loads
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(layer(x), base(x))
    lin, alin = nn.Linear(5, 3), ApproxLinear(5, 3)
    alin.load_state_dict(lin.state_dict())
    x = torch.randn(4, 5)
    assert torch.equal(alin(x), lin(x))


def test_linear_keeps_leading_dimensions():
    mult = LutMultiplier(exact_lut(5, False))
    layer = ApproxLinear(6, 3, mult=mult)
    x = torch.rand(2, 4, 6)
    y = layer(x)
    assert y.shape == (2, 4, 3)
    flat = layer(x.reshape(8, 6))
    assert torch.allclose(y.reshape(8, 3), flat)
    assert layer(torch.zeros(0, 6)).shape == (0, 3)


# ---- gradients -------------------------------------------------------------------------------------------------------

def grads_of(layer, x, seed=0):
    """(dL/dx, dL/dW, dL/dbias) for a fixed random output gradient."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    y.backward(g)
    return x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()


@pytest.mark.parametrize("signed", [False, True])
def test_lut_gradient_of_exact_lut_equals_ste(signed):
    lut = exact_lut(6, signed)
    ste = LutMultiplier(lut, grad="ste")
    diff = LutMultiplier(lut, grad="lut", half_window=2)  # computed by lutgen.gradient.gradient_lut
    values = torch.arange(ste.qrange(0)[0], ste.qrange(0)[1] + 1, dtype=torch.float32)
    interior = slice(3, -3)
    assert torch.allclose(torch.as_tensor(diff.grad_b)[interior, interior],
                          values[:, None].expand(len(values), len(values))[interior, interior])
    torch.manual_seed(8)
    layer = ApproxConv2d(3, 4, 3, padding=1, mult=ste)
    x = torch.randn(2, 3, 7, 7)
    if not signed:
        x = x.relu()
    with torch.no_grad():  # keep the weights inside the interior of the gradient LUT
        layer.weight.copy_(torch.linspace(-0.5, 0.4, layer.weight.numel()).view_as(layer.weight))
    gx_ste, gw_ste, gb_ste = grads_of(layer, x)
    layer.mult = diff
    gx_lut, gw_lut, gb_lut = grads_of(layer, x)
    assert torch.allclose(gx_ste, gx_lut, atol=1e-5)
    assert torch.allclose(gw_ste, gw_lut, rtol=1e-4, atol=1e-4)
    assert torch.equal(gb_ste, gb_lut)


def test_ste_gradient_is_the_exact_product_gradient():
    mult = LutMultiplier(exact_lut(8, True), grad="ste")
    torch.manual_seed(9)
    layer = ApproxLinear(10, 4, mult=mult)
    x = torch.randn(6, 10)
    gx, gw, _ = grads_of(layer, x)
    qx, s_x, _ = layer.quantize_input(x)
    qw, s_w, _ = layer.quantize_weight()
    g = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gx, g @ (qw.detach() * s_w), atol=1e-5)
    assert torch.allclose(gw, g.t() @ (qx.detach() * s_x), atol=1e-4)


@pytest.mark.parametrize("groups,weights", [(1, "tensor"), (2, "channel")])
def test_ste_conv_gradients_equal_float_conv_of_quantized_operands(groups, weights):
    mult = LutMultiplier(exact_lut(8, False), grad="ste", weights=weights)
    torch.manual_seed(12)
    layer = ApproxConv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=groups, mult=mult)
    x = torch.randn(2, 4, 9, 9)
    gx, gw, gb = grads_of(layer, x)
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    shape = (-1, 1, 1, 1) if weights == "channel" else ()
    xq = ((qx - z_x) * s_x).detach().requires_grad_(True)
    wq = ((qw - z_w.view(shape)) * s_w.view(shape)).detach().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    y = F.conv2d(xq, wq, bias, stride=2, padding=1, dilation=2, groups=groups)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(gx, xq.grad, atol=1e-5)
    assert torch.allclose(gw, wq.grad, atol=1e-4)
    assert torch.allclose(gb, bias.grad, atol=1e-5)


@needs_fixtures
def test_file_gradient_luts_drive_the_backward():
    mult = LutMultiplier(MULT77, grad="lut")
    assert mult.half_window is None and mult.grad_a is not None
    torch.manual_seed(10)
    layer = ApproxLinear(16, 3, mult=mult)
    x = torch.randn(5, 16)
    gx, gw, _ = grads_of(layer, x)
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    ix, iw = qx.detach().long(), qw.detach().long()
    ga = torch.as_tensor(mult.grad_a, dtype=torch.float64)[ix[:, None, :], iw[None, :, :]]  # (M, O, K)
    gb = torch.as_tensor(mult.grad_b, dtype=torch.float64)[ix[:, None, :], iw[None, :, :]]
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).double()
    want_x = float(s_w) * (g[:, :, None] * (ga - float(z_w))).sum(1)
    want_w = float(s_x) * (g[:, :, None] * (gb - float(z_x))).sum(0)
    assert torch.allclose(gx.double(), want_x, rtol=1e-4, atol=1e-5)
    assert torch.allclose(gw.double(), want_w, rtol=1e-4, atol=1e-4)


# ---- calibration -----------------------------------------------------------------------------------------------------

def test_calibration_sets_ranges_and_matches_dynamic_on_the_same_batch():
    mult = LutMultiplier(exact_lut(7, False))
    torch.manual_seed(11)
    model = nn.Sequential(ApproxConv2d(2, 3, 3, mult=mult), nn.ReLU(), nn.Flatten(), ApproxLinear(3 * 4 * 4, 2))
    assert set_mult(model, mult) == 2
    conv, lin = model[0], model[3]
    x = torch.randn(4, 2, 6, 6)
    dynamic = conv(x)
    assert calibrate_mult(model, [(x, None)], method="max") == 2
    assert torch.allclose(conv.act_range, torch.stack([x.min(), x.max()]))
    # calibration runs the float model: the classifier's range is that of the float features
    features = F.conv2d(x, conv.weight, conv.bias).relu()
    assert torch.allclose(lin.act_range, torch.stack([features.min(), features.max()]))
    assert torch.allclose(conv(x), dynamic)
    # a batch beyond the calibrated range is clipped, not rescaled
    assert not torch.allclose(conv(3 * x), 3 * dynamic, rtol=0.01, atol=0.01)
    clear_calibration(model)
    assert not conv.calibrated


def test_percentile_calibration_ignores_outliers():
    mult = LutMultiplier(exact_lut(8, True))
    layer = ApproxLinear(100, 2, mult=mult)
    x = torch.randn(50, 100)
    x[0, 0] = 1000.0
    calibrate_mult(layer, [x], method="percentile", percentile=99.9)
    lo, hi = layer.act_range.tolist()
    assert lo == -hi and 2.0 < hi < 10.0


# ---- bad input -------------------------------------------------------------------------------------------------------

def test_bad_multiplier_luts_are_clear_errors(tmp_path):
    with pytest.raises(AxnetError, match="exactly two operands"):
        LutMultiplier(exact_lut(3, False, operands=3))
    with pytest.raises(AxnetError, match="mode 'signed' does not match .* unsigned"):
        LutMultiplier(exact_lut(7, False), mode="signed")
    with pytest.raises(AxnetError, match="mode 'unsigned' does not match .* signed"):
        LutMultiplier(exact_lut(8, True), mode="unsigned")
    wide = Lut(table=np.zeros((1 << 12, 2), dtype=np.int64), operands=[("a", 12), ("b", 1)], outputs=[])
    with pytest.raises(AxnetError, match="operand 'a' .* 12 bits wide"):
        LutMultiplier(wide)
    with pytest.raises(AxnetError, match="mode 'float'"):
        LutMultiplier(exact_lut(4, False), mode="float")
    with pytest.raises(AxnetError, match="grad 'lut' needs gradient LUTs"):
        LutMultiplier(exact_lut(4, False), grad="lut")
    with pytest.raises(AxnetError, match="weights 'row'"):
        LutMultiplier(exact_lut(4, False), weights="row")
    with pytest.raises(AxnetError, match="grad 'exact'"):
        LutMultiplier(exact_lut(4, False), grad="exact")
    with pytest.raises(AxnetError, match="no such file"):
        LutMultiplier(tmp_path / "missing.npz")


def test_non_finite_input_is_a_clear_error():
    mult = LutMultiplier(exact_lut(6, False))
    layer = ApproxConv2d(1, 2, 3, mult=mult)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    with pytest.raises(AxnetError, match="input contains NaN or Inf"):
        layer(x)
    lin = ApproxLinear(3, 2, mult=mult)
    with pytest.raises(AxnetError, match="ApproxLinear.*NaN or Inf"):
        lin(torch.tensor([[1.0, float("inf"), 0.0]]))
    with pytest.raises(AxnetError, match="no approximate-multiplier layer"):
        calibrate_mult(nn.Linear(2, 2), [torch.zeros(1, 2)])


def test_parse_mult_reads_the_cli_syntax(tmp_path):
    path = tmp_path / "exact6.npz"
    save_npz(exact_lut(6, False), path)
    assert parse_mult("float") is None
    m = parse_mult(f"lut:{path}")
    assert (m.mode, m.grad, m.widths) == ("unsigned", "ste", [6, 6])
    m = parse_mult(f"lut:{path}:w=2:mode=unsigned:weights=channel")
    assert (m.grad, m.half_window, m.weights) == ("lut", 2, "channel") and m.grad_a.shape == (64, 64)
    with pytest.raises(AxnetError, match="--mult 'lut'"):
        parse_mult("lut")
    with pytest.raises(AxnetError, match="w must be an integer"):
        parse_mult(f"lut:{path}:w=two")
    with pytest.raises(AxnetError, match="mode 'signed' does not match"):
        parse_mult(f"lut:{path}:mode=signed")


@needs_fixtures
def test_lut_aware_training_reduces_the_loss():
    torch.manual_seed(13)
    w_true = torch.randn(8, 3)
    x = torch.randn(256, 8)
    target = (x @ w_true).argmax(1)
    model = nn.Sequential(ApproxLinear(8, 16, mult=LutMultiplier(MULT77, grad="lut")), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.4 * losses[0]
