"""Operations over every approximate layer of a model: find them, give them arithmetic, the adaptive LR step."""
from __future__ import annotations

import math

import torch

from dnn.layers.adder2d import Adder2d
from dnn.layers.adder_linear import AdderLinear
from dnn.layers.mult_layers import ApproxConv2d, ApproxLinear

APPROX_LAYERS = (ApproxConv2d, ApproxLinear)


def adder_layers(model):
    """Every AdderNet layer (Adder2d or AdderLinear) in `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, (Adder2d, AdderLinear))]


@torch.no_grad()
def adaptive_lr_scale_(model, eta=0.2):
    """The AdderNet adaptive learning-rate step: grad_W <- grad_W * eta * sqrt(numel(W)) / ||grad_W||_2.

    Call it after `loss.backward()` and before `optimizer.step()`, on every adder layer of `model`. Under mixed
    precision call `scaler.unscale_(optimizer)` FIRST, then this, then `scaler.step(optimizer)`: the step is
    invariant to the loss scale but unscale_ would divide the rescaled gradient again. A gradient that is not finite
    is left untouched so GradScaler still sees the overflow and skips the step. The norm is taken in float32.
    Returns the number of layers scaled.
    """
    count = 0
    for layer in adder_layers(model):
        grad = layer.weight.grad
        if grad is None:
            continue
        norm = grad.float().norm()
        if not torch.isfinite(norm) or norm == 0:
            continue
        grad.mul_((eta * math.sqrt(grad.numel()) / norm).to(grad.dtype))
        count += 1
    return count


def set_arith(model, arith):
    """Give every adder layer of `model` the back-end `arith` (None: exact float); returns how many were set."""
    layers = adder_layers(model)
    for layer in layers:
        layer.arith = arith
    return len(layers)


def approx_layers(model):
    """(name, layer) for every approximate-multiplier layer in `model`."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, APPROX_LAYERS)]


def set_mult(model, mult):
    """Give every approximate-multiplier layer the same multiplier (None: float); returns how many were set."""
    layers = approx_layers(model)
    for _, layer in layers:
        layer.mult = mult
    return len(layers)


def set_accum(model, accum):
    """Give every adder and approximate-multiplier layer the accumulator `accum` (a `dnn.arith.accumulate`
    Accumulator; None: exact sums); returns how many were set."""
    layers = adder_layers(model) + [layer for _, layer in approx_layers(model)]
    for layer in layers:
        layer.accum = accum
    return len(layers)
