"""Netlist model, BLIF/PLA readers and writers, the bundled circuit library and adder generators."""
from circuits.blif import parse_blif, read_blif, write_blif
from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node
from circuits.pla import parse_pla, read_pla, write_pla

__all__ = ["AxnetError", "Netlist", "Node", "parse_blif", "read_blif", "write_blif", "parse_pla", "read_pla",
           "write_pla"]
