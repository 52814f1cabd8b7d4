"""The exact float AdderNet operation and its autograd function, shared by Adder2d and AdderLinear.

The float mode uses the authors' surrogate backward (AdderNet, Chen et al. 2020): the weight gradient is the
full-precision difference `X - W` (not its sign) and the input gradient is `HardTanh(W - X)`. Their adaptive
learning-rate scaling is a separate explicit step, `dnn.layers.assign.adaptive_lr_scale_`, so that it can run on
unscaled gradients. Integer back-ends (`dnn.arith`) bring their own autograd functions.
"""
from __future__ import annotations

import torch

from circuits.errors import AxnetError
from dnn.kernels import adder_ops
from dnn.kernels import native as native_kernels


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


def adder_forward(x, weight, geom, arith, scale, accum=None):
    """Run one adder layer: exact float when `arith` is None, else the back-end with the layer's shared scale;
    with `accum` (an `Accumulator`) the terms |d| are summed through that circuit (integer back-ends only)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # |x - w| sums lose too much in half precision; compute in fp32 under autocast too
    if arith is None:
        if accum is not None:
            raise AxnetError(f"accumulator {accum.spec}: the layer has no integer arithmetic to take terms from "
                             "(float); give it one, e.g. --arith exact:8")
        return AdderConvFunction.apply(x.contiguous(), weight.float().contiguous(), geom)
    if accum is None:
        return arith.conv(x.contiguous(), weight.float().contiguous(), geom, scale)
    return arith.conv(x.contiguous(), weight.float().contiguous(), geom, scale, accum=accum)


def _rename_official_keys(module, state_dict, prefix):
    """Accept official AdderNet checkpoints (`adder`, `b`) and a saved quantization scale."""
    for old, new in (("adder", "weight"), ("b", "bias")):
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
    for name in ("scale", "clamp_bias"):  # optional buffers: create them so the saved values load
        key = prefix + name
        if key in state_dict and getattr(module, name) is None:
            setattr(module, name, torch.zeros_like(state_dict[key]))
