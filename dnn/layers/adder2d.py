"""AdderNet 2-D layer: `y = -sum |x - w|` over each patch, on exact float or on a chosen integer back-end.

The float mode uses the authors' surrogate backward (AdderNet, Chen et al. 2020): the weight gradient is the
full-precision difference `X - W` (not its sign) and the input gradient is `HardTanh(W - X)`. Their adaptive
learning-rate scaling is a separate explicit step, `adaptive_lr_scale_`, so that it can run on unscaled gradients.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dnn import adder_ops, native_kernels
from dnn.adder_ops import Geometry


class AdderConvFunction(torch.autograd.Function):
    """Exact float AdderNet convolution with the authors' backward (full-precision weight, HardTanh input)."""

    @staticmethod
    def forward(ctx, x, weight, geom):
        ctx.geom = geom
        ctx.x_shape = x.shape
        ctx.native = adder_ops.native_exact(x, weight)
        if ctx.native:
            # pad once: the compiled forward, input gradient and weight GEMM all read the same padded copy
            padded = native_kernels.pad_input(x, geom)
            ctx.save_for_backward(weight, *padded)
            return adder_ops.l1_forward(x, weight, geom, native=True, padded=padded)
        ctx.save_for_backward(weight, x)
        return adder_ops.l1_forward(x, weight, geom, native=False)

    @staticmethod
    def backward(ctx, grad_out):
        weight, *saved = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.native:  # saved: x's padded buffers (flat, image)
            flat, image = saved
            if ctx.needs_input_grad[0]:
                grad_x = native_kernels.l1_input_grad(ctx.x_shape, weight, grad_out, ctx.geom, (flat, image))
            if ctx.needs_input_grad[1]:
                grad_w = adder_ops.l1_weight_grad(None, weight, grad_out, ctx.geom, padded_image=image)
            return grad_x, grad_w, None
        (x,) = saved
        if ctx.needs_input_grad[0]:
            grad_x = adder_ops.l1_input_grad(x, weight, grad_out, ctx.geom, native=False)
        if ctx.needs_input_grad[1]:
            grad_w = adder_ops.l1_weight_grad(x, weight, grad_out, ctx.geom)
        return grad_x, grad_w, None


def _pair(value, name):
    """(v, v) for an int, the pair itself for a 2-sequence; anything else is a TypeError naming the argument."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def adder_forward(x, weight, geom, arith, scale):
    """Run one adder layer: exact float when `arith` is None, else the back-end with the layer's shared scale."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # |x - w| sums lose too much in half precision; compute in fp32 under autocast too
    if arith is None:
        return AdderConvFunction.apply(x.contiguous(), weight.float().contiguous(), geom)
    return arith.conv(x.contiguous(), weight.float().contiguous(), geom, scale)


def _rename_official_keys(module, state_dict, prefix):
    """Accept official AdderNet checkpoints (`adder`, `b`) and a saved quantization scale."""
    for old, new in (("adder", "weight"), ("b", "bias")):
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
    for name in ("scale", "clamp_bias"):  # optional buffers: create them so the saved values load
        key = prefix + name
        if key in state_dict and getattr(module, name) is None:
            setattr(module, name, torch.zeros_like(state_dict[key]))


class Adder2d(nn.Module):
    """Drop-in replacement for nn.Conv2d whose output is `-sum |x - w|` over each (zero-padded) patch.

    `arith` picks the arithmetic: None is exact float, or a back-end from `dnn.arith` (ExactInt, LutAdder,
    CellAdder); it may be reassigned at any time. `scale` is the layer's shared quantization scale for activations
    and weights (None: dynamic, max(|x|max, |w|max) each forward; set by `dnn.quant.calibrate`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=False,
                 arith=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        # N(0, 1) initialisation, as in the authors' code: BatchNorm after the layer absorbs the scale
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.arith = arith
        self.register_buffer("scale", None)
        self.register_buffer("clamp_bias", None)  # set by dnn.quant.group_clamp_weights_
        self._register_load_state_dict_pre_hook(self._load_hook)

    def _load_hook(self, state_dict, prefix, *args):
        _rename_official_keys(self, state_dict, prefix)

    @property
    def geometry(self):
        return Geometry(self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        y = adder_forward(x, self.weight, self.geometry, self.arith, self.scale)
        if self.clamp_bias is not None:
            y = y + self.clamp_bias.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")
        if self.arith is not None:
            text += f", arith={self.arith.describe()}"
        return text


def adder_layers(model):
    """Every AdderNet layer (Adder2d or AdderLinear) in `model`, in module order."""
    from dnn.adder_linear import AdderLinear
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
