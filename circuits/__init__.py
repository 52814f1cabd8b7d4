"""Netlist model, BLIF/PLA readers and writers, the bundled circuit library and adder generators."""
from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node

__all__ = ["AxnetError", "Netlist", "Node"]
