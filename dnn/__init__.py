"""PyTorch layers that run on exact or approximate arithmetic: AdderNet and approximate-multiplier layers.

The documented import path is this package: `from dnn import Adder2d, LutAdder, set_arith, ...`. The rooms inside
follow the pipeline: `dnn.kernels` (compute kernels) -> `dnn.arith` (arithmetic back-ends) -> `dnn.layers` -> models,
data and `dnn.convert` -> `dnn.workflow` (train, evaluate, sweep, retrain).
"""
from dnn.arith import CellAdder, ExactInt, LutAdder, LutMultiplier, NetlistAdder, parse_arith, parse_mult
from dnn.layers import (Adder2d, AdderLinear, ApproxConv2d, ApproxLinear, adaptive_lr_scale_, calibrate,
                        calibrate_mult, set_arith, set_mult)
from dnn.arith.accumulate import Accumulator, parse_accum
from dnn.layers.assign import set_accum
from dnn.models import MODELS, build_model

__all__ = ["Adder2d", "AdderLinear", "ApproxConv2d", "ApproxLinear", "ExactInt", "LutAdder", "CellAdder",
           "LutMultiplier", "NetlistAdder", "parse_arith", "parse_mult", "set_arith", "set_mult", "adaptive_lr_scale_",
           "calibrate", "calibrate_mult", "MODELS", "build_model", "Accumulator", "parse_accum", "set_accum"]
