"""Bit-parallel exhaustive, streaming and random-pattern simulation of combinational netlists, and the compiled
netlist engine (`simulator.engine`; numpy and torch twins) that also evaluates a circuit per lane."""
