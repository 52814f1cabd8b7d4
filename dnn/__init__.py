"""PyTorch layers that run on exact or approximate arithmetic: AdderNet and approximate-multiplier layers."""
from dnn.adder2d import Adder2d, adaptive_lr_scale_
from dnn.adder_linear import AdderLinear
from dnn.approx_mult import ApproxConv2d, ApproxLinear, LutMultiplier, calibrate_mult, set_mult
from dnn.arith import CellAdder, ExactInt, LutAdder, parse_arith, set_arith
from dnn.models import MODELS, build_model
