"""Calibration of a model's approximate layers from sample batches, and AdderQuant's grouped weight clamping.

Adder layers (`calibrate`): one shared scale per layer, see `dnn.arith.quant`. Multiplier layers (`calibrate_mult`):
the activation range of each layer, see `dnn.layers.mult_layers`.

Optionally (`group_clamp_weights_`, AdderQuant style) the per-filter max |W| is clustered into groups by k-means; the
filters of a group whose maximum exceeds the activation range s are clamped to [-s, s] and the layer gains the
per-filter bias `-sum max(|W| - s, 0)`, which keeps the output exact for every |x| <= s:
`|x - w| = |x - clamp(w, -s, s)| + max(|w| - s, 0)` whenever |x| <= s.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.layers.assign import adder_layers, approx_layers

METHODS = ("max", "percentile")


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


class _AllObserved(Exception):
    """Raised by the last observing hook of a calibration forward to stop it early."""


@torch.no_grad()
def calibrate(model, batches, method="max", percentile=99.99, include_weights=True):
    """Set the `scale` buffer of every adder layer from sample batches; returns {layer name: scale}.

    The activation statistic is the running max over batches of max |x| (method "max") or of the given percentile
    of |x| (method "percentile", as AdderQuant uses 99.94). With `include_weights` the scale is at least max |W| so
    no weight is clipped (use `group_clamp_weights_` afterwards to clamp large filters exactly instead).
    `batches` yields input tensors or (input, target) pairs; the model runs in eval mode with dynamic scales, and
    each forward stops once every adder layer has seen its input (a layer called twice in one forward is measured
    at its first call only).
    """
    _check_method(method, percentile)
    layers = {name: m for name, m in model.named_modules() if m in set(adder_layers(model))}
    if not layers:
        raise AxnetError("calibrate: the model has no adder layers")
    stats, hooks, seen_now = {}, [], set()

    def observer(name):
        def hook(module, inputs):
            value = _abs_statistic(inputs[0], method, percentile)
            stats[name] = torch.maximum(stats[name], value) if name in stats else value
            seen_now.add(name)
            if len(seen_now) == len(layers):  # every layer's input is measured: the rest of the forward is not needed
                raise _AllObserved
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
            seen_now.clear()
            try:
                model(x)
            except _AllObserved:  # the last adder layer itself is skipped: on approximate arithmetic the costly part
                pass
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


class RangeObserver:
    """Collects an activation range over batches: running min/max, or a percentile over a sample of values."""

    SAMPLE = 1 << 18  # values kept per batch for percentile calibration

    def __init__(self, method, percentile, mode):
        self.method, self.percentile, self.mode = method, percentile, mode
        self.lo, self.hi = math.inf, -math.inf
        self.samples = []
        self.generator = torch.Generator().manual_seed(0)

    def update(self, x):
        """Record one batch of a layer's inputs."""
        x = x.reshape(-1).to(torch.float32).cpu()
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise AxnetError("calibration batch gives a layer NaN or Inf inputs")
        if self.method == "max":
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
            return
        if x.numel() > self.SAMPLE:
            x = x[torch.randint(0, x.numel(), (self.SAMPLE,), generator=self.generator)]
        self.samples.append(x.numpy())

    def range(self):
        """(lo, hi) for the layer's act_range, or None when the layer saw no input."""
        if self.method == "max":
            return None if self.lo > self.hi else (self.lo, self.hi)
        if not self.samples:
            return None
        values = np.concatenate(self.samples)
        p = self.percentile
        if self.mode == "signed":
            amax = float(np.percentile(np.abs(values), p))
            return -amax, amax
        return float(np.percentile(values, 100.0 - p)), float(np.percentile(values, p))


def calibrate_mult(model, batches, method="max", percentile=99.99):
    """Set each approximate-multiplier layer's activation range from float forwards over `batches`.

    `batches` yields input tensors or (input, target) pairs. method "max" takes the min and max seen; "percentile"
    takes the given percentile of |x| (signed mode) or the (100-p, p) percentiles of x (unsigned mode).
    Returns the number of layers calibrated.
    """
    if method not in ("max", "percentile"):
        raise AxnetError(f"calibration method '{method}': expected 'max' or 'percentile'")
    if not 50.0 < float(percentile) <= 100.0:
        raise AxnetError(f"calibration percentile {percentile}: expected a value in (50, 100]")
    layers = [(n, m) for n, m in approx_layers(model) if m.mult is not None]
    if not layers:
        raise AxnetError("calibrate_mult: the model has no approximate-multiplier layer with a multiplier set")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for _, layer in layers:
        layer.observer = RangeObserver(method, float(percentile), layer.mult.mode)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                seen += 1
    finally:
        observers = [(layer, layer.observer) for _, layer in layers]
        for layer, _ in observers:
            layer.observer = None
        model.train(was_training)
    if seen == 0:
        raise AxnetError("calibrate_mult: no calibration batches given")
    count = 0
    for layer, observer in observers:
        r = observer.range()
        if r is not None:
            layer.act_range.copy_(torch.tensor(r, dtype=layer.act_range.dtype))
            count += 1
    return count


def clear_calibration(model):
    """Return every approximate-multiplier layer to dynamic activation ranges."""
    for _, layer in approx_layers(model):
        layer.act_range.fill_(float("nan"))
