"""Quantization of AdderNet layers: one shared scale per layer for activations and weights.

|a*x - b*w| is c*|x - w| only when a == b, so an adder layer cannot quantize activations and weights with separate
scales the way a multiplication layer can (AdderQuant, Nie et al. 2022). Each adder layer therefore has ONE real
`scale`: the value that maps to the largest integer `qmax` of the back-end, so the quantization step is
`scale / qmax` for both operands. `layer.scale` is a buffer: None means dynamic (max(|x|max, |w|max) of every
forward); `calibrate` fixes it from sample batches. Rounding is straight-through in the backward pass.

Optionally (`group_clamp_weights_`, AdderQuant style) the per-filter max |W| is clustered into groups by k-means; the
filters of a group whose maximum exceeds the activation range s are clamped to [-s, s] and the layer gains the
per-filter bias `-sum max(|W| - s, 0)`, which keeps the output exact for every |x| <= s:
`|x - w| = |x - clamp(w, -s, s)| + max(|w| - s, 0)` whenever |x| <= s.
"""
from __future__ import annotations

import torch

from circuits.errors import AxnetError

METHODS = ("max", "percentile")


def integer_range(bits):
    """Largest magnitude of an operand of an n-bit adder back-end: the signed (n-1)-bit range, symmetric."""
    return (1 << (bits - 2)) - 1


def abs_max(t):
    """max |t| in one pass; NaN if t holds a NaN, inf if it holds an inf."""
    return torch.linalg.vector_norm(t.detach().float(), float("inf"))


def check_finite(x, what="input", magnitude=None):
    """A quantized layer cannot map inf or NaN to an integer: refuse it with a clear error.

    `magnitude` is abs_max(x) when the caller already has it (it is finite exactly when x is)."""
    magnitude = abs_max(x) if magnitude is None else magnitude
    if not bool(torch.isfinite(magnitude)):
        raise AxnetError(f"quantized adder layer got a non-finite {what} (inf or NaN); "
                         "check the data, or the learning rate if this happened in training")


def layer_scale(x, weight, scale, x_max=None, w_max=None):
    """The shared scale to use now: the calibrated one, else max(|x|max, |w|max); never zero. Detached."""
    if scale is not None:
        s = scale.detach().to(device=x.device, dtype=torch.float32).reshape(())
    else:
        x_max = abs_max(x) if x_max is None else x_max
        w_max = abs_max(weight) if w_max is None else w_max
        s = torch.maximum(x_max, w_max.to(x_max.device))
    return torch.where(s > 0, s, torch.ones_like(s))


def quantize(t, step, qmax):
    """Integer-valued float tensor: round(t / step) clamped to [-qmax, qmax] (round half to even)."""
    return torch.clamp(torch.round(t / step), -qmax, qmax)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, step, qmax):
        return quantize(t, step, qmax) * step

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def ste_round(t, step, qmax):
    """Fake quantization with the straight-through estimator: forward rounds to the grid, backward is identity."""
    return _RoundSTE.apply(t, step, qmax)


def _abs_statistic(x, method, percentile):
    """max |x| or the given percentile of |x| (kthvalue, so tensors of any size work)."""
    flat = x.detach().abs().reshape(-1).float()
    if method == "max" or flat.numel() == 1:
        return flat.max()
    k = max(1, min(flat.numel(), int(round(flat.numel() * percentile / 100.0))))
    return flat.kthvalue(k).values


def _check_method(method, percentile):
    if method not in METHODS:
        raise AxnetError(f"--calibration '{method}': expected one of {', '.join(METHODS)}")
    if not 0 < float(percentile) <= 100:
        raise AxnetError(f"--percentile {percentile}: must be in (0, 100]")


@torch.no_grad()
def calibrate(model, batches, method="max", percentile=99.99, include_weights=True):
    """Set the `scale` buffer of every adder layer from sample batches; returns {layer name: scale}.

    The activation statistic is the running max over batches of max |x| (method "max") or of the given percentile
    of |x| (method "percentile", as AdderQuant uses 99.94). With `include_weights` the scale is at least max |W| so
    no weight is clipped (use `group_clamp_weights_` afterwards to clamp large filters exactly instead).
    `batches` yields input tensors or (input, target) pairs; the model runs in eval mode with dynamic scales.
    """
    from dnn.adder2d import adder_layers
    _check_method(method, percentile)
    layers = {name: m for name, m in model.named_modules() if m in set(adder_layers(model))}
    if not layers:
        raise AxnetError("calibrate: the model has no adder layers")
    stats, hooks = {}, []

    def observer(name):
        def hook(module, inputs):
            value = _abs_statistic(inputs[0], method, percentile)
            stats[name] = torch.maximum(stats[name], value) if name in stats else value
        return hook

    was_training = model.training
    saved = {name: m.scale for name, m in layers.items()}
    for name, m in layers.items():
        m.scale = None
        hooks.append(m.register_forward_pre_hook(observer(name)))
    try:
        model.eval()
        seen = 0
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
            seen += 1
    except BaseException:
        for name, m in layers.items():
            m.scale = saved[name]
        raise
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise AxnetError("calibrate: no batches were given")
    result = {}
    for name, m in layers.items():
        s = stats[name].float()
        if include_weights:
            s = torch.maximum(s, m.weight.detach().abs().max().float())
        m.scale = s.reshape(()).clone()
        result[name] = float(m.scale)
    return result


def kmeans_1d(values, groups, iterations=50):
    """Cluster a 1-D tensor into at most `groups` clusters (Lloyd's algorithm from quantile seeds): labels."""
    values = values.detach().float().reshape(-1)
    k = max(1, min(int(groups), values.numel()))
    centres = torch.quantile(values, torch.linspace(0, 1, k, device=values.device))
    labels = torch.zeros(values.numel(), dtype=torch.long, device=values.device)
    for _ in range(iterations):
        labels = (values[:, None] - centres[None, :]).abs().argmin(1)
        updated = centres.clone()
        for g in range(k):
            members = values[labels == g]
            if members.numel():
                updated[g] = members.mean()
        if torch.equal(updated, centres):
            break
        centres = updated
    return labels


@torch.no_grad()
def group_clamp_weights_(layer, activation_range, groups=4):
    """Clamp the filters of every weight group whose max |W| exceeds `activation_range`, exactly.

    Filters are grouped by k-means of their max |W| into `groups`; in a group whose max exceeds s the weights are
    clamped to [-s, s] and `layer.clamp_bias[o] = -sum max(|W[o]| - s, 0)` is added to the layer output, which keeps
    the output unchanged for every input with |x| <= s. Sets `layer.scale = s`. Returns the number of clamped filters.
    """
    s = float(activation_range)
    if not s > 0:
        raise AxnetError(f"activation range {activation_range} must be positive")
    w = layer.weight.detach()
    flat = w.reshape(w.shape[0], -1)
    per_filter = flat.abs().max(1).values
    labels = kmeans_1d(per_filter, groups)
    clamp = torch.zeros_like(per_filter, dtype=torch.bool)
    for g in labels.unique():
        members = labels == g
        if per_filter[members].max() > s:
            clamp |= members
    excess = (flat.abs() - s).clamp(min=0).sum(1)
    bias = torch.where(clamp, -excess, torch.zeros_like(excess))
    flat[clamp] = flat[clamp].clamp(-s, s)
    previous = layer.clamp_bias if layer.clamp_bias is not None else torch.zeros_like(bias)
    layer.clamp_bias = previous + bias
    layer.scale = torch.tensor(s, dtype=torch.float32, device=w.device)
    return int(clamp.sum())
