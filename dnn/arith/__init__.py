"""Arithmetic back-ends: how a layer's integer operation is computed (exact, a LUT, a ripple of cells).

Adder back-ends (`ExactInt`, `LutAdder`, `CellAdder`) serve Adder2d/AdderLinear; `LutMultiplier` serves
ApproxConv2d/ApproxLinear. `parse_arith` / `parse_mult` build them from command-line strings.
"""
from dnn.arith.base import ExactInt
from dnn.arith.cell_adder import CellAdder
from dnn.arith.lut_adder import LutAdder
from dnn.arith.lut_multiplier import LutMultiplier
from dnn.arith.netlist_adder import NetlistAdder
from dnn.arith.spec import parse_arith, parse_mult

__all__ = ["ExactInt", "LutAdder", "CellAdder", "LutMultiplier", "NetlistAdder", "parse_arith", "parse_mult"]

