"""Exact-float AdderNet layers: forward, the authors' backward, kernels against references, checkpoints, lr scaling."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dnn import Adder2d, AdderLinear, adaptive_lr_scale_
from dnn.kernels import adder_ops
from dnn.kernels import native as native_kernels
from dnn.kernels.adder_ops import Geometry

NATIVE = [False, True] if native_kernels.available() else [False]


def reference_forward(x, weight, geom):
    """Direct float64 AdderNet forward over unfolded patches: -sum_k |X_col - W|."""
    n, _, h, w = x.shape
    cols = geom.unfold(x.double())  # N, K, L
    filters = weight.double().reshape(weight.shape[0], -1)
    y = -(cols[:, None] - filters[None, :, :, None]).abs().sum(2)
    return y.view(n, weight.shape[0], *geom.output_size(h, w))


def reference_backward(x, weight, grad_out, geom):
    """The authors' gradients in float64: dW = sum g*(X - W); dX = fold(sum_o g*clamp(W - X, -1, 1))."""
    n, _, h, w = x.shape
    cols = geom.unfold(x.double())
    filters = weight.double().reshape(weight.shape[0], -1)
    g = grad_out.double().reshape(n, weight.shape[0], -1)
    diff = cols[:, None] - filters[None, :, :, None]  # N, O, K, L
    grad_w = (g[:, :, None, :] * diff).sum((0, 3)).view(weight.shape)
    grad_cols = (g[:, :, None, :] * (-diff).clamp(-1, 1)).sum(1)
    return geom.fold(grad_cols, h, w), grad_w


geometries = st.builds(
    lambda k, s, p, d: Geometry(k, s, p, d),
    st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(st.integers(1, 2), st.integers(1, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)), st.tuples(st.integers(1, 2), st.integers(1, 2)))


@settings(max_examples=25, deadline=None)
@given(geom=geometries, n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 11), h=st.integers(5, 11),
       w=st.integers(5, 13), seed=st.integers(0, 2**16))
def test_exact_kernels_match_float64_reference(geom, n, c, o, h, w, seed):
    torch.manual_seed(seed)
    x = torch.randn(n, c, h, w)
    weight = torch.randn(o, c, *geom.kernel)
    expected = reference_forward(x, weight, geom)
    grad_out = torch.randn(expected.shape)
    expected_gx, expected_gw = reference_backward(x, weight, grad_out, geom)
    for native in NATIVE:
        y = adder_ops.l1_forward(x, weight, geom, native=native)
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)
        gx = adder_ops.l1_input_grad(x, weight, grad_out, geom, native=native)
        torch.testing.assert_close(gx.double(), expected_gx, rtol=1e-5, atol=1e-4)
    gw = adder_ops.l1_weight_grad(x, weight, grad_out, geom)
    torch.testing.assert_close(gw.double(), expected_gw, rtol=1e-4, atol=1e-3)
    padded_image = torch.nn.functional.pad(x, (geom.padding[1],) * 2 + (geom.padding[0],) * 2)
    # the same sums over a padded image the caller made: float32 in another order, so equal to rounding only
    from_padded = adder_ops.l1_weight_grad(None, weight, grad_out, geom, padded_image=padded_image)
    torch.testing.assert_close(from_padded, gw, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("width, stride, scale", [(28, 1, 1.0), (32, 1, 6.0), (45, 1, 3.0), (45, 2, 3.0)])
def test_exact_input_grad_on_wide_maps(width, stride, scale):
    """Maps wider than one 32-pixel span, whole-vector write-back, row tails, and activations far from 0 (post-ReLU
    layers see values up to ~10), where the kernel's clamp(w, x-1, x+1) - x form must still match the float64
    formula."""
    torch.manual_seed(width)
    geom = Geometry((3, 3), (stride, stride), (1, 1), (1, 1))
    x = scale * torch.rand(2, 3, 9, width)
    weight = scale * torch.rand(16, 3, 3, 3)
    grad_out = torch.randn(reference_forward(x, weight, geom).shape)
    expected_gx, _ = reference_backward(x, weight, grad_out, geom)
    for native in NATIVE:
        gx = adder_ops.l1_input_grad(x, weight, grad_out, geom, native=native)
        torch.testing.assert_close(gx.double(), expected_gx, rtol=1e-5, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(geom=geometries, n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 19), values=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_table_kernels_compiled_equal_torch(geom, n, c, o, values, seed):
    if not native_kernels.available():
        pytest.skip(f"compiled kernels unavailable: {native_kernels.error()}")
    torch.manual_seed(seed)
    index = torch.randint(0, values, (n, c, 9, 8), dtype=torch.int32)
    k = c * geom.kernel[0] * geom.kernel[1]
    mat = torch.randint(-50, 50, (values, 7))  # value-major: [activation index, weight index]
    wi = torch.randint(0, 7, (o, k), dtype=torch.int32)
    table = adder_ops.fold_table(mat.float(), wi)
    pad = values // 2
    y = adder_ops.table_forward(index, wi, mat, geom, pad, native=True)
    assert torch.equal(y, adder_ops.table_forward_torch(index, table, geom, pad))  # integer sums: bit-exact
    grad_out = torch.randn(y.shape)
    ma, mw = torch.randn(values, 7), torch.randn(values, 7)
    gx, gw = adder_ops.table_backward(index, wi, ma, mw, grad_out, geom, pad, native=True)
    torch.testing.assert_close(gx, adder_ops.table_input_grad_torch(index, adder_ops.fold_table(ma, wi), grad_out,
                                                                    geom, pad), rtol=1e-5, atol=1e-4)
    hits = adder_ops.table_scatter_torch(index, grad_out, geom, pad, values)
    torch.testing.assert_close(gw, (hits * adder_ops.fold_table(mw, wi)).sum(1).t(), rtol=1e-5, atol=1e-4)


def test_table_forward_equals_direct_lookup():
    """The torch table path itself against a per-tap loop over the unfolded index."""
    torch.manual_seed(1)
    geom = Geometry((2, 3), (1, 2), (1, 1))
    index = torch.randint(0, 5, (2, 2, 6, 7), dtype=torch.int32)
    table = torch.randn(12, 5, 3, dtype=torch.float64)
    y = adder_ops.table_forward_torch(index, table, geom, 2)
    shifted = F.unfold(index.double() - 2, (2, 3), padding=(1, 1), stride=(1, 2)).long() + 2  # N, K, L
    expected = torch.zeros(2, 3, shifted.shape[2], dtype=torch.float64)
    for k in range(12):
        expected += table[k][shifted[:, k]].transpose(1, 2)
    torch.testing.assert_close(y.reshape(2, 3, -1), expected)


def test_layer_forward_and_backward_are_the_authors():
    torch.manual_seed(2)
    layer = Adder2d(3, 5, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(5))
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    y = layer(x)
    grad_out = torch.randn(y.shape)
    y.backward(grad_out)
    geom = layer.geometry
    expected = reference_forward(x.detach(), layer.weight.detach(), geom) + layer.bias.detach().double().view(1, -1, 1, 1)
    torch.testing.assert_close(y.detach().double(), expected, rtol=1e-5, atol=1e-4)
    gx, gw = reference_backward(x.detach(), layer.weight.detach(), grad_out, geom)
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer.weight.grad.double(), gw, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(layer.bias.grad, grad_out.sum((0, 2, 3)))


def test_zero_padding_taps_count_the_weight():
    """With x = 0 everywhere every tap, padded or not, contributes |0 - w|: the output is -sum |w| everywhere."""
    layer = Adder2d(2, 3, 3, padding=2)
    y = layer(torch.zeros(1, 2, 4, 4))
    expected = -layer.weight.detach().abs().sum((1, 2, 3))
    torch.testing.assert_close(y, expected.view(1, 3, 1, 1).expand_as(y))


def test_adder_linear_matches_reference_and_leading_dims():
    torch.manual_seed(3)
    layer = AdderLinear(7, 4, bias=True)
    x = torch.randn(2, 3, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 4)
    expected = -(x.detach()[..., None, :] - layer.weight.detach()).abs().sum(-1) + layer.bias.detach()
    torch.testing.assert_close(y.detach(), expected)
    grad_out = torch.randn(y.shape)
    y.backward(grad_out)
    diff = x.detach()[..., None, :] - layer.weight.detach()  # ..., O, I
    torch.testing.assert_close(layer.weight.grad, (grad_out[..., None] * diff).sum((0, 1)), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad, (grad_out[..., None] * (-diff).clamp(-1, 1)).sum(-2), rtol=1e-5, atol=1e-5)


def test_half_precision_input_runs_in_float32():
    layer = Adder2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    y = layer(x.bfloat16())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, layer(x.bfloat16().float()))


def test_official_checkpoint_names_load():
    layer = Adder2d(2, 3, 3, bias=True)
    official = {"adder": torch.ones(3, 2, 3, 3), "b": torch.full((3,), 2.0)}
    layer.load_state_dict(official)
    assert torch.equal(layer.weight.detach(), torch.ones(3, 2, 3, 3))
    assert torch.equal(layer.bias.detach(), torch.full((3,), 2.0))
    linear = AdderLinear(4, 2)
    linear.load_state_dict({"adder": torch.zeros(2, 4)})
    assert torch.equal(linear.weight.detach(), torch.zeros(2, 4))


def test_scale_buffer_survives_state_dict_roundtrip():
    model = torch.nn.Sequential(Adder2d(1, 2, 3), AdderLinear(3, 2))
    model[0].scale = torch.tensor(1.5)
    fresh = torch.nn.Sequential(Adder2d(1, 2, 3), AdderLinear(3, 2))
    fresh.load_state_dict(model.state_dict())
    assert fresh[0].scale.item() == 1.5 and fresh[1].scale is None


def _model_grads(eta=None):
    torch.manual_seed(4)
    model = torch.nn.Sequential(Adder2d(1, 4, 3), torch.nn.Flatten(), AdderLinear(4 * 25, 3))
    loss = model(torch.randn(2, 1, 7, 7)).square().mean()
    return model, loss


def test_adaptive_lr_scale_sets_the_norm():
    model, loss = _model_grads()
    loss.backward()
    before = [p.grad.clone() for p in model.parameters()]
    assert adaptive_lr_scale_(model, eta=0.2) == 2
    for p, old in zip(model.parameters(), before):
        assert math.isclose(p.grad.norm().item(), 0.2 * math.sqrt(p.numel()), rel_tol=1e-5)
        torch.testing.assert_close(p.grad / p.grad.norm(), old / old.norm())  # direction unchanged


def test_adaptive_lr_scale_leaves_non_finite_grads_for_the_grad_scaler():
    model, loss = _model_grads()
    loss.backward()
    model[0].weight.grad[0, 0, 0, 0] = float("inf")
    assert adaptive_lr_scale_(model) == 1
    assert torch.isinf(model[0].weight.grad).any()


def test_adaptive_lr_scale_after_unscale_matches_fp32():
    model, loss = _model_grads()
    loss.backward()
    adaptive_lr_scale_(model)
    expected = [p.grad.clone() for p in model.parameters()]
    model, loss = _model_grads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    adaptive_lr_scale_(model)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


def test_layers_fall_back_to_torch_when_the_compiler_fails(tmp_path):
    """No usable compiler (and no cached build): the kernels report why and the layer still gives the same output."""
    import os
    import subprocess
    import sys
    script = (
        "import torch\n"
        "from dnn import Adder2d\nfrom dnn.kernels import native as native_kernels\n"
        "assert not native_kernels.available()\n"
        "assert 'failed' in native_kernels.error(), native_kernels.error()\n"
        "torch.manual_seed(0)\n"
        "layer = Adder2d(2, 3, 3, padding=1)\n"
        "x = torch.randn(2, 2, 6, 6, requires_grad=True)\n"
        "layer(x).sum().backward()\n"
        "torch.save((layer(x).detach(), x.grad), %r)\n" % str(tmp_path / "out.pt"))
    env = dict(os.environ, AXNET_CACHE=str(tmp_path / "cache"), CC="false")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    y, grad = torch.load(tmp_path / "out.pt")
    torch.manual_seed(0)
    layer = Adder2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 6, 6, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(y, layer(x).detach())
    torch.testing.assert_close(grad, x.grad)
