"""Bit-parallel exhaustive, streaming and random-pattern simulation of combinational netlists."""
