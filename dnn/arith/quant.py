"""Quantization of AdderNet layers: one shared scale per layer for activations and weights.

|a*x - b*w| is c*|x - w| only when a == b, so an adder layer cannot quantize activations and weights with separate
scales the way a multiplication layer can (AdderQuant, Nie et al. 2022). Each adder layer therefore has ONE real
`scale`: the value that maps to the largest integer `qmax` of the back-end, so the quantization step is
`scale / qmax` for both operands. `layer.scale` is a buffer: None means dynamic (max(|x|max, |w|max) of every
forward); `dnn.layers.calibrate.calibrate` fixes it from sample batches. Rounding is straight-through in the
backward pass.
"""
from __future__ import annotations

import torch

from circuits.errors import AxnetError


def integer_range(bits):
    """Largest magnitude of an operand of an n-bit adder back-end: the signed (n-1)-bit range, symmetric."""
    return (1 << (bits - 2)) - 1


def abs_max(t):
    """max |t| in one pass (aminmax: a tenth of the time of the inf-norm on CPU); NaN if t holds a NaN, inf if it
    holds an inf, 0 if it is empty."""
    t = t.detach().float()
    if t.numel() == 0:
        return torch.zeros((), device=t.device)
    lo, hi = torch.aminmax(t)
    return torch.maximum(-lo, hi)


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
