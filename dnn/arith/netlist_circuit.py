"""A two-operand circuit for the netlist back-ends: read, checked, inputs in operand order, compiled once.

`TwoOperandCircuit(circuit, role)` accepts a `.blif`/`.pla` path or a `circuits.netlist.Netlist`. The operands come
from the input names (`lutgen.operands.group_operands`: `a[0..n-1]`, `b[0..n-1]`, ...); the FIRST operand is the
one a layer feeds its weight, the second the activation side. Every refusal is one `AxnetError` line naming the file.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from circuits.errors import AxnetError

MAX_OPERAND_BITS = 32  # operands and results of the per-lane kernels are packed in 64-bit words


def read_netlist(path):
    """A Netlist from a .blif or .pla file (the reader's own errors already name the file)."""
    p = Path(path)
    if not p.is_file():
        raise AxnetError("circuit file not found", path=str(path))
    suffix = p.suffix.lower()
    if suffix == ".blif":
        from circuits.blif import read_blif
        return read_blif(str(path))
    if suffix == ".pla":
        from circuits.pla import read_pla
        return read_pla(str(path))
    raise AxnetError("expected a circuit file ending in .blif or .pla (a LUT file goes in lut:PATH)", path=str(path))


class TwoOperandCircuit:
    """A circuit with exactly two operands: `netlist` (inputs reordered: first operand's bits LSB first, then the
    second's), `widths` (wa, wb), `label` (file or circuit name), `sha256` (of the file, or None)."""

    def __init__(self, circuit, role="adder"):
        if isinstance(circuit, (str, Path)):
            from circuits.files import file_sha256
            self.path = str(circuit)
            netlist = read_netlist(circuit)
            self.sha256 = file_sha256(self.path)
        elif hasattr(circuit, "inputs") and hasattr(circuit, "nodes"):
            self.path, self.sha256, netlist = None, None, circuit
        else:
            raise AxnetError(f"a netlist {role} needs a .blif/.pla path or a Netlist, got {type(circuit).__name__}")
        self.label = self.path or netlist.source or netlist.name
        self.netlist, self.widths = self._operand_order(netlist, role)
        self._programs = {}

    def _operand_order(self, netlist, role):
        from lutgen.operands import group_operands
        try:
            operands = group_operands(netlist.inputs)
        except AxnetError as exc:
            raise AxnetError(f"cannot split the inputs into operands: {exc}", path=self.label) from None
        names = ", ".join(f"{op.name}[{op.width}]" for op in operands)
        if len(operands) != 2:
            raise AxnetError(f"a netlist {role} needs exactly two operands, but the inputs form {len(operands)} "
                             f"({names}); tie a carry-in to 0: drop it from .inputs and drive it with a constant-0 "
                             "node (`.names cin` with no rows), or rebuild the adder without one", path=self.label)
        for op in operands:
            if op.width > MAX_OPERAND_BITS:
                raise AxnetError(f"operand {op.name} has {op.width} bits; the netlist back-ends take at most "
                                 f"{MAX_OPERAND_BITS}", path=self.label)
        order = [netlist.inputs[i] for op in operands for i in op.bits]
        return replace(netlist, inputs=order), (operands[0].width, operands[1].width)

    def program(self, n_outputs):
        """The compiled program of the first `n_outputs` outputs (dead logic beyond them dropped), cached."""
        if n_outputs not in self._programs:
            from simulator.program import compile_netlist
            self._programs[n_outputs] = compile_netlist(replace(self.netlist,
                                                                outputs=self.netlist.outputs[:n_outputs]))
        return self._programs[n_outputs]
