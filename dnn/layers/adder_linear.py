"""AdderNet fully connected layer: `y[o] = -sum_i |x[i] - w[o, i]|`, the 1x1 case of Adder2d."""
from __future__ import annotations

import torch
from torch import nn

from dnn.kernels.adder_ops import Geometry
from dnn.layers.adder_function import _rename_official_keys, adder_forward

_POINT = Geometry((1, 1))


class AdderLinear(nn.Module):
    """Drop-in replacement for nn.Linear with the AdderNet operation; `arith` and `scale` as in Adder2d."""

    def __init__(self, in_features, out_features, bias=False, arith=None, accum=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.arith = arith
        self.accum = accum  # None: exact sums; an Accumulator: the terms summed through its circuit
        self.register_buffer("scale", None)
        self.register_buffer("clamp_bias", None)  # set by dnn.layers.calibrate.group_clamp_weights_
        self._register_load_state_dict_pre_hook(self._load_hook)

    def _load_hook(self, state_dict, prefix, *args):
        _rename_official_keys(self, state_dict, prefix)

    def forward(self, x):
        lead = x.shape[:-1]
        # the batch becomes the width of a 1-pixel-high image, so the kernels vectorise over samples
        image = x.reshape(-1, self.in_features).t().reshape(1, self.in_features, 1, -1)
        weight = self.weight.view(self.out_features, self.in_features, 1, 1)
        y = adder_forward(image, weight, _POINT, self.arith, self.scale, getattr(self, "accum", None))
        y = y.reshape(self.out_features, -1).t().reshape(*lead, self.out_features)
        if self.clamp_bias is not None:
            y = y + self.clamp_bias
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self):
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.arith is not None:
            text += f", arith={self.arith.describe()}"
        if getattr(self, "accum", None) is not None:
            text += f", accum={self.accum.describe()}"
        return text
