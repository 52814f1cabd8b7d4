"""Quantization of the multiplier layers: affine (unsigned, AppMult) or symmetric (signed, AdaPT) with STE rounding."""
from __future__ import annotations

import torch

from circuits.errors import AxnetError


def round_ste(t):
    """Round to the nearest integer; the gradient passes straight through."""
    return t + (torch.round(t) - t).detach()


def quant_params(lo, hi, qmin, qmax, mode):
    """(scale, zero point) for the range [lo, hi] (0-dim tensors), widened to include 0 so 0 is exact."""
    lo = torch.clamp(lo.detach().to(torch.float32), max=0.0)
    hi = torch.clamp(hi.detach().to(torch.float32), min=0.0)
    if mode == "signed":
        scale = torch.maximum(-lo, hi) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale, zero


def quantize(t, scale, zero, qmin, qmax):
    """q = clamp(round(t / scale) + zero, qmin, qmax) with straight-through rounding (zero gradient when clipped)."""
    return torch.clamp(round_ste(t / scale) + zero, qmin, qmax)


def check_finite(t, what, layer):
    """A one-line AxnetError when a layer's input or weight holds NaN or Inf."""
    if not bool(torch.isfinite(t).all()):
        raise AxnetError(f"{type(layer).__name__}({layer.extra_repr()}): {what} contains NaN or Inf")
