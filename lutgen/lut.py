"""Forward lookup tables: a circuit's output word for every combination of its operands.

A `Lut` has one axis per operand, indexed by the operand's raw bit pattern, in operand order, so for operands a then
b the result is `table[a, b]`. A signed LUT reads operands and result as two's complement: the axes stay in raw
pattern order (index 255 of an 8-bit axis is -1) and the table holds the signed value of the output word.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from circuits.errors import AxnetError
from lutgen.operands import group_operands

MAX_LUT_BITS = 26  # 2**26 int64 entries = 512 MiB; wider circuits are measured by streaming instead
MAX_OUTPUT_BITS = 62  # the output word must fit an int64 with room for the signed reading


@dataclass
class Lut:
    """A forward LUT plus its provenance and, for gradient LUTs, one float32 gradient table per operand."""

    table: np.ndarray
    operands: list  # [(name, width)] in axis order
    outputs: list  # output net names, LSB first
    signed: bool = False
    circuit: str = ""
    sha256: str | None = None
    grads: dict | None = None  # operand name -> float32 array shaped like table
    grad_meta: dict | None = None  # half_window, boundary, method (and reference for ste)
    extra: dict = field(default_factory=dict)  # anything else a file carried in its meta

    @property
    def names(self):
        """Operand names in axis order."""
        return [name for name, _ in self.operands]

    @property
    def widths(self):
        """Operand widths in bits, in axis order."""
        return [int(w) for _, w in self.operands]

    def operand_values(self, axis):
        """Numeric value of every index along `axis`: the raw pattern, or its two's-complement reading if signed."""
        return pattern_values(self.widths[axis], self.signed)

    def with_grads(self, grads, grad_meta):
        """A copy of this LUT carrying gradient tables (the forward table is shared, not copied)."""
        return replace(self, grads=grads, grad_meta=dict(grad_meta))

    def describe(self):
        """One line: circuit, operands, signedness, shape."""
        ops = ", ".join(f"{n}:{w}" for n, w in self.operands)
        kind = "signed" if self.signed else "unsigned"
        return f"{self.circuit or '(unnamed)'}: {kind} LUT over {ops} ({self.table.size} entries)"


def pattern_values(width, signed):
    """Values of raw patterns 0..2^width-1: themselves, or their two's-complement reading when `signed`."""
    v = np.arange(1 << width, dtype=np.int64)
    if signed:
        v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
    return v


def numeric_order(width, signed):
    """Raw patterns sorted by numeric value (for signed widths: 100..0, ..., 111..1, 000..0, ..., 011..1)."""
    return np.argsort(pattern_values(width, signed), kind="stable")


def check_size(n_bits, what):
    """Refuse a table of more than 2^MAX_LUT_BITS entries, pointing the user to streaming metrics."""
    if n_bits > MAX_LUT_BITS:
        raise AxnetError(f"{what} has {n_bits} input bits: a LUT would hold 2^{n_bits} entries, more than the "
                         f"2^{MAX_LUT_BITS} limit; measure it with `axnet metrics CIRCUIT`, which streams "
                         "without building the table")


def reshape_table(flat, operands):
    """Turn a flat table indexed by pattern = sum(in_i << i) into one axis per operand (raw patterns, axis order).

    Operands whose bits are consecutive inputs in order (the usual case) are a reshape plus a transpose; any other
    grouping falls back to a gather through an index grid.
    """
    widths = [op.width for op in operands]
    starts = [op.bits[0] for op in operands]
    consecutive = all(op.bits == tuple(range(op.bits[0], op.bits[0] + op.width)) for op in operands)
    in_order = consecutive and starts == sorted(starts) and \
        all(starts[k] + widths[k] == starts[k + 1] for k in range(len(operands) - 1)) and \
        (not operands or starts[0] == 0)
    if in_order:
        # pattern = a + (b << wa) + ...: in C order the last operand varies slowest, so reverse then transpose.
        shaped = flat.reshape([1 << w for w in reversed(widths)])
        if len(widths) == 2 and flat.size >= 1 << 16:
            return transpose_blocked(shaped)
        return np.ascontiguousarray(shaped.transpose(list(range(len(widths)))[::-1]))
    return flat[pattern_grid(operands)]


def transpose_blocked(matrix, block=64):
    """A contiguous copy of `matrix.T`, copied in cache-sized tiles (several times faster than numpy's strided
    copy for the 4096 x 4096 tables of 12-bit operands)."""
    rows, cols = matrix.shape
    out = np.empty((cols, rows), dtype=matrix.dtype)
    for i in range(0, rows, block):
        for j in range(0, cols, block):
            out[j:j + block, i:i + block] = matrix[i:i + block, j:j + block].T
    return out


def pattern_grid(operands):
    """Index grid: entry [v0, v1, ...] is the input pattern that puts value v_k on operand k's bits."""
    grid = np.zeros([1 << op.width for op in operands], dtype=np.int64)
    for axis, op in enumerate(operands):
        v = np.arange(1 << op.width, dtype=np.int64)
        contrib = np.zeros_like(v)
        for j, pos in enumerate(op.bits):
            contrib |= ((v >> j) & 1) << pos
        shape = [1] * len(operands)
        shape[axis] = -1
        grid += contrib.reshape(shape)
    return grid


def _simulate(netlist, progress):
    """The simulator's exhaustive table, passing a progress callback only when one is given."""
    from simulator.exhaustive import simulate_table
    if progress is None:
        return simulate_table(netlist)
    return simulate_table(netlist, progress=progress)


def build_lut(netlist, widths=None, signed=False, sha256=None, progress=None):
    """Simulate `netlist` exhaustively and arrange its output words as a LUT over its operands.

    Operands come from the input names, or by position from `widths` (e.g. [8, 8] or [8, 8, 1]).
    """
    operands = group_operands(netlist.inputs, widths)
    check_size(len(netlist.inputs), f"circuit '{netlist.name}'")
    n_out = len(netlist.outputs)
    if n_out == 0:
        raise AxnetError(f"circuit '{netlist.name}' has no outputs", path=netlist.source)
    if n_out > MAX_OUTPUT_BITS:
        raise AxnetError(f"circuit '{netlist.name}' has {n_out} outputs; a LUT entry holds at most "
                         f"{MAX_OUTPUT_BITS} bits", path=netlist.source)
    flat = np.asarray(_simulate(netlist, progress), dtype=np.int64)
    if signed:  # in place: at 2^26 entries a second copy would cost another 512 MiB
        flat[flat >= 1 << (n_out - 1)] -= 1 << n_out
    table = reshape_table(flat, operands)
    return Lut(table=table, operands=[(op.name, op.width) for op in operands], outputs=list(netlist.outputs),
               signed=bool(signed), circuit=netlist.name, sha256=sha256)
