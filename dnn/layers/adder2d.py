"""AdderNet 2-D layer: `y = -sum |x - w|` over each patch, on exact float or on a chosen integer back-end."""
from __future__ import annotations

import torch
from torch import nn

from dnn.kernels.adder_ops import Geometry
from dnn.layers.adder_function import _pair, _rename_official_keys, adder_forward


class Adder2d(nn.Module):
    """Drop-in replacement for nn.Conv2d whose output is `-sum |x - w|` over each (zero-padded) patch.

    `arith` picks the arithmetic: None is exact float, or a back-end from `dnn.arith` (ExactInt, LutAdder,
    CellAdder); it may be reassigned at any time. `scale` is the layer's shared quantization scale for activations
    and weights (None: dynamic, max(|x|max, |w|max) each forward; set by `dnn.layers.calibrate.calibrate`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=False,
                 arith=None, accum=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        # N(0, 1) initialisation, as in the authors' code: BatchNorm after the layer absorbs the scale
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.arith = arith
        self.accum = accum  # None: exact sums; an Accumulator: the terms summed through its circuit
        self.register_buffer("scale", None)
        self.register_buffer("clamp_bias", None)  # set by dnn.layers.calibrate.group_clamp_weights_
        self._register_load_state_dict_pre_hook(self._load_hook)

    def _load_hook(self, state_dict, prefix, *args):
        _rename_official_keys(self, state_dict, prefix)

    @property
    def geometry(self):
        return Geometry(self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        y = adder_forward(x, self.weight, self.geometry, self.arith, self.scale, getattr(self, "accum", None))
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
        if getattr(self, "accum", None) is not None:
            text += f", accum={self.accum.describe()}"
        return text
