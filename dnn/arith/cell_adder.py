"""`CellAdder`: an AdderNet back-end whose subtraction is a ripple-carry adder of full-adder cells (seed 000).

The low `approx_bits` cells are an approximate cell, the rest exact; widths up to 48 bits. Semantics as in
`dnn.arith.base`.
"""
from __future__ import annotations

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.arith.base import ELEMENTWISE_CHUNK, MAX_LUT_BITS, ExactInt, _signed, _TableAdder
from dnn.kernels import native as native_kernels


def ripple_tables(rows, bits):
    """Chained tables for the low `bits` cells: [(offset, m, table)] with m <= 8 bits each.

    table[(cin << 2m) | (a << m) | b] = s | (cout << m) for m-bit slices a, b of the operands, computed by rippling
    the cell's truth table `rows` (row index A*4 + B*2 + Cin) across the slice. Every slice of the same width
    ripples the same cell the same way, so those chunks share one table tensor (the compiled adder reads it once).
    """
    s_of = np.array([r[0] for r in rows], dtype=np.int64)
    c_of = np.array([r[1] for r in rows], dtype=np.int64)
    chunks, offset, made = [], 0, {}
    while offset < bits:
        m = min(8, bits - offset)
        if m in made:
            chunks.append((offset, m, made[m]))
            offset += m
            continue
        entries = np.arange(1 << (2 * m + 1), dtype=np.int64)
        b, a, carry = entries & ((1 << m) - 1), (entries >> m) & ((1 << m) - 1), entries >> (2 * m)
        total = np.zeros_like(entries)
        for i in range(m):
            row = ((a >> i) & 1) * 4 + ((b >> i) & 1) * 2 + carry
            total |= s_of[row] << i
            carry = c_of[row]
        made[m] = torch.from_numpy(total | (carry << m))
        chunks.append((offset, m, made[m]))
        offset += m
    return chunks


def ripple_add(a, b, chunks, approx_bits, width):
    """Width-bit sum of patterns a and b (int64 tensors) whose low `approx_bits` cells follow `chunks`.

    The high part is exact: sum = ((a_hi + b_hi + c_k) << k) | s_lo, with (s_lo, c_k) from the chained tables.
    Returns the low `width` bits as an unsigned pattern.
    """
    carry = torch.zeros((), dtype=torch.int64, device=a.device)
    low = torch.zeros((), dtype=torch.int64, device=a.device)
    for offset, m, table in chunks:
        mask = (1 << m) - 1
        index = (carry << (2 * m)) | (((a >> offset) & mask) << m) | ((b >> offset) & mask)
        entry = table.to(a.device)[index]
        low = low | ((entry & mask) << offset)
        carry = entry >> m
    high = ((a >> approx_bits) + (b >> approx_bits) + carry) << approx_bits
    return (high | low) & ((1 << width) - 1)


class CellAdder(_TableAdder):
    """A width-bit ripple-carry adder whose lowest `approx_bits` cells are `cell` and the rest exact full adders.

    The seed-000 setting: operands quantized to the signed (width-1)-bit range with the shared scale, then
    d = approx_add(w, -x) in width-bit two's complement (w the first operand, A of each cell), |d| and the sum exact.
    approx_bits = 0 is exact addition. Adders of up to 12 bits run through folded tables like LutAdder; wider ones
    compute every (x, w) pair with the chained-table ripple (`ripple_add`). Gradients are straight-through ("ste").
    """

    def __init__(self, cell="maj", approx_bits=0, width=32, grad="ste"):
        from circuits.library import cell_truth_table
        width, approx_bits = int(width), int(approx_bits)
        if not 3 <= width <= 48:
            raise AxnetError(f"cell adder width={width}: must be between 3 and 48 bits")
        if not 0 <= approx_bits <= width:
            raise AxnetError(f"cell adder k={approx_bits}: the number of approximate cells must be 0 to {width}")
        if grad != "ste":
            raise AxnetError(f"cell adder grad='{grad}': only 'ste' is available (a {width}-bit adder has no "
                             "gradient LUT); make a LUT of a narrow adder for grad=lut")
        self.cell, self.approx_bits, self.bits, self.grad = cell, approx_bits, width, grad
        self.rows = cell_truth_table(cell)
        self.chunks = ripple_tables(self.rows, approx_bits)
        self.program = None  # the ripple compiled for the netlist kernel, on first use
        if width <= MAX_LUT_BITS:
            values = torch.arange(-self.qmax, self.qmax + 1, dtype=torch.int64)
            mask = (1 << width) - 1
            words = ripple_add((values & mask)[:, None], ((-values) & mask)[None, :], self.chunks, approx_bits, width)
            self.diff = torch.from_numpy(_signed(words.numpy(), width))

    @property
    def spec(self):
        return f"cell:{self.cell}:k={self.approx_bits}:width={self.bits}"

    def describe(self):
        return (f"{self.bits}-bit ripple-carry adder, lowest {self.approx_bits} cells '{self.cell}', as "
                f"d = add(w, -x), operands in +-{self.qmax}, grad={self.grad}")

    def abs_sums(self, xq, wq, geom):
        if self.diff is not None:
            return super().abs_sums(xq, wq, geom)
        sums = self.netlist_sums(xq, wq, geom)
        if sums is not None:
            return sums.double()
        if self.approx_bits == 0:  # exact addition, and the operand range rules out overflow: |w - x| exactly
            return ExactInt(self.bits).abs_sums(xq, wq, geom)
        if self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available():
            return native_kernels.cell_forward(xq, wq, geom, self.chunks, self.approx_bits, self.bits)
        return self.pairwise_sums(xq, wq, geom)

    def netlist_sums(self, xq, wq, geom):
        """The sums on the compiled netlist kernel (the ripple as a bit-sliced circuit), or None where it cannot run."""
        from dnn.kernels import netlist_native
        if not (self.bits <= 32 and netlist_native.usable(xq, self.bits)):
            return None
        if self.program is None:
            from circuits.generators import ripple_carry_adder
            from dnn.arith.netlist_circuit import TwoOperandCircuit
            netlist = ripple_carry_adder(self.bits, cell=self.cell, approx_bits=self.approx_bits)
            self.program = TwoOperandCircuit(netlist).program(self.bits)
        return netlist_native.adder_abs_sums(self.program, xq, wq, geom, self.bits)

    def pairwise_sums(self, xq, wq, geom):
        """sum_k |add(w, -x)| computed for every (x, w) pair in chunks (float64, exact below 2^53)."""
        n, o = xq.shape[0], wq.shape[0]
        mask = (1 << self.bits) - 1
        w_pat = (wq.reshape(o, -1).to(torch.int64) & mask)[None, :, :, None]  # 1, O, K, 1
        ho, wo = geom.output_size(*xq.shape[2:])
        length, k = ho * wo, w_pat.shape[2]
        out = torch.empty(n, o, length, dtype=torch.float64, device=xq.device)
        o_step = max(1, min(o, ELEMENTWISE_CHUNK // (k * length)))
        n_step = max(1, ELEMENTWISE_CHUNK // (k * length * o_step))
        half = 1 << (self.bits - 1)
        for n0 in range(0, n, n_step):
            cols = geom.unfold(xq[n0:n0 + n_step].double()).to(torch.int64)
            nx_pat = ((-cols) & mask)[:, None]  # n, 1, K, L
            for o0 in range(0, o, o_step):
                words = ripple_add(w_pat[:, o0:o0 + o_step], nx_pat, self.chunks, self.approx_bits, self.bits)
                d = torch.where(words >= half, words - (1 << self.bits), words)
                out[n0:n0 + n_step, o0:o0 + o_step] = d.abs_().sum(2).double()
        return out.view(n, o, ho, wo)
