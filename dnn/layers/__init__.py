"""The network layers: AdderNet (Adder2d, AdderLinear) and approximate-multiplier (ApproxConv2d, ApproxLinear) layers,
each beside its autograd function, plus what acts on all of a model's layers (assign, calibrate)."""
from dnn.layers.adder2d import Adder2d
from dnn.layers.adder_linear import AdderLinear
from dnn.layers.assign import adaptive_lr_scale_, adder_layers, approx_layers, set_accum, set_arith, set_mult
from dnn.layers.calibrate import calibrate, calibrate_mult, clear_calibration, group_clamp_weights_
from dnn.layers.mult_layers import ApproxConv2d, ApproxLinear

__all__ = ["Adder2d", "AdderLinear", "ApproxConv2d", "ApproxLinear", "adaptive_lr_scale_", "adder_layers",
           "approx_layers", "set_accum", "set_arith", "set_mult", "calibrate", "calibrate_mult", "clear_calibration",
           "group_clamp_weights_"]
