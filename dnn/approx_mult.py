"""The approximate-multiplier API under its earlier name: `dnn.approx_mult` re-exports it from its rooms.

New code imports from `dnn` (or `dnn.layers`, `dnn.arith`); this module keeps old imports working.
"""
from dnn.arith.lut_multiplier import LutMultiplier
from dnn.arith.mult_quant import quant_params, quantize, round_ste
from dnn.arith.spec import parse_mult
from dnn.kernels.mult_ops import lut_accumulate, lut_grad_a, lut_grad_b, reference_accumulate
from dnn.layers.assign import APPROX_LAYERS, approx_layers, set_mult
from dnn.layers.calibrate import calibrate_mult, clear_calibration
from dnn.layers.mult_layers import ApproxConv2d, ApproxLinear, LutProduct, patches

__all__ = ["ApproxConv2d", "ApproxLinear", "LutMultiplier", "LutProduct", "APPROX_LAYERS", "approx_layers",
           "set_mult", "parse_mult", "calibrate_mult", "clear_calibration", "lut_accumulate", "lut_grad_a",
           "lut_grad_b", "reference_accumulate", "quant_params", "quantize", "round_ste", "patches"]
