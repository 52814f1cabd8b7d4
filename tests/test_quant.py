"""Shared-scale quantization: dynamic and calibrated scales, straight-through rounding, exact weight clamping."""
import numpy as np
import pytest
import torch

from circuits.errors import AxnetError
from dnn import Adder2d, AdderLinear, ExactInt
from dnn.arith.quant import layer_scale, ste_round
from dnn.layers.calibrate import calibrate, group_clamp_weights_, kmeans_1d


def _net():
    torch.manual_seed(20)
    return torch.nn.Sequential(Adder2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                               torch.nn.Flatten(), AdderLinear(3 * 36, 2))


def test_dynamic_scale_is_max_of_activations_and_weights():
    x = torch.tensor([[0.5, -3.0]])
    w = torch.tensor([[2.0, -1.0]])
    assert layer_scale(x, w, None).item() == 3.0
    assert layer_scale(x, w * 4, None).item() == 8.0
    assert layer_scale(x, w, torch.tensor(1.25)).item() == 1.25
    assert layer_scale(x * 0, w * 0, None).item() == 1.0  # an all-zero layer still has a usable step


def test_one_step_for_activations_and_weights():
    """y = -step * sum |round(w/step) - round(x/step)| with step = scale / qmax shared by both operands."""
    torch.manual_seed(21)
    layer = AdderLinear(5, 3, arith=ExactInt(6))
    x = torch.randn(4, 5) * 3
    s = max(x.abs().max().item(), layer.weight.abs().max().item())
    step = s / 15
    xq = torch.clamp(torch.round(x / step), -15, 15)
    wq = torch.clamp(torch.round(layer.weight.detach() / step), -15, 15)
    expected = -(xq[:, None, :] - wq[None]).abs().sum(-1) * step
    torch.testing.assert_close(layer(x), expected)
    layer.scale = torch.tensor(1.0)  # calibrated: activations beyond the range clip to +-qmax
    xq = torch.clamp(torch.round(x * 15), -15, 15)
    wq = torch.clamp(torch.round(layer.weight.detach() * 15), -15, 15)
    torch.testing.assert_close(layer(x), -(xq[:, None, :] - wq[None]).abs().sum(-1) / 15)


def test_ste_round_rounds_forward_and_passes_gradient():
    t = torch.tensor([0.26, -0.74, 5.0], requires_grad=True)
    y = ste_round(t, torch.tensor(0.5), 4)
    assert y.tolist() == [0.5, -0.5, 2.0]
    y.sum().backward()
    assert t.grad.tolist() == [1.0, 1.0, 1.0]


def test_calibrate_max_and_percentile():
    model = _net()
    batches = [torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6) * 3]
    model.train()
    scales = calibrate(model, batches, method="max", include_weights=False)
    assert model.training  # mode restored
    assert scales["0"] == pytest.approx(max(b.abs().max().item() for b in batches))
    assert model[0].scale.item() == pytest.approx(scales["0"])
    inputs = []
    hook = model[4].register_forward_pre_hook(lambda m, a: inputs.append(a[0].abs().reshape(-1)))
    model[4].scale = None
    scales = calibrate(model, [(b, None) for b in batches], method="percentile", percentile=90,
                       include_weights=False)
    hook.remove()
    per_batch = [np.sort(t.numpy())[int(round(t.numel() * 0.9)) - 1] for t in inputs]
    assert scales["4"] == pytest.approx(max(per_batch))
    with_weights = calibrate(model, batches, method="max")
    assert with_weights["4"] >= model[4].weight.abs().max().item()


def test_calibrate_errors():
    model = _net()
    with pytest.raises(AxnetError, match="calibration"):
        calibrate(model, [torch.randn(1, 1, 6, 6)], method="mean")
    with pytest.raises(AxnetError, match="percentile"):
        calibrate(model, [torch.randn(1, 1, 6, 6)], method="percentile", percentile=0)
    with pytest.raises(AxnetError, match="no batches"):
        calibrate(model, [])
    with pytest.raises(AxnetError, match="no adder layers"):
        calibrate(torch.nn.Linear(2, 2), [torch.randn(1, 2)])


def test_kmeans_groups_separate_clusters():
    values = torch.tensor([0.1, 0.12, 0.11, 5.0, 5.2, 9.9, 10.0])
    labels = kmeans_1d(values, 3)
    assert labels[0] == labels[1] == labels[2] and labels[3] == labels[4] and labels[5] == labels[6]
    assert len(set(labels.tolist())) == 3


def test_group_clamp_is_exact_within_the_activation_range():
    """Clamping large filters to s with bias -sum max(|W| - s, 0) leaves the output unchanged for |x| <= s."""
    torch.manual_seed(22)
    layer = Adder2d(2, 6, 3, padding=1)
    with torch.no_grad():
        layer.weight.mul_(0.3)
        layer.weight[4] *= 10  # two filters far beyond the activation range
        layer.weight[5] *= 12
    s = 1.0
    x = (torch.rand(3, 2, 5, 5) * 2 - 1) * s
    x[0, 0, 0, 0] = s
    before = layer(x).detach()
    small = layer.weight[:4].detach().clone()
    assert group_clamp_weights_(layer, s, groups=2) == 2
    assert layer.weight.abs().max().item() <= s
    assert torch.equal(layer.weight[:4].detach(), small)  # the group inside the range is untouched
    torch.testing.assert_close(layer(x), before, rtol=1e-6, atol=1e-4)
    assert layer.scale.item() == s
    # with the layer quantized on the same scale, the clamped weights are representable exactly
    layer.arith = ExactInt(16)
    torch.testing.assert_close(layer(x), before, rtol=1e-3, atol=2e-2)
    fresh = Adder2d(2, 6, 3, padding=1)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh.clamp_bias, layer.clamp_bias)


def test_abs_max_matches_the_plain_definition():
    from dnn.arith.quant import abs_max
    g = torch.Generator().manual_seed(3)
    for shape in [(5,), (3, 4, 7), (1,)]:
        t = torch.randn(shape, generator=g) * 7
        assert abs_max(t) == t.abs().max()
        assert abs_max(-t.abs()) == t.abs().max()  # the largest magnitude is a negative value
    assert abs_max(torch.empty(0)) == 0
    assert torch.isnan(abs_max(torch.tensor([1.0, float("nan"), -2.0])))
    assert abs_max(torch.tensor([1.0, float("-inf")])) == float("inf")
