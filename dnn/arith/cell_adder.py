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


def carry_monotone(rows):
    """True when the cell's carry out never falls as its carry in rises: cout(a, b, 0) implies cout(a, b, 1)."""
    return all(rows[ab * 2 + 1][1] or not rows[ab * 2][1] for ab in range(4))


def chain_masks(rows, approx_bits, width):
    """The word tables of a monotone-carry chain: {name: [M00, M01, M10, M11]} for the bit functions g = cout at carry
    in 0, p = cout at carry in 1, d = sum(cin 0) ^ sum(cin 1) and s = sum(cin 0) ^ (d & (p ^ g)) of (a_i, b_i); bit i
    of M_ab is the function at (a, b) in cell i (the given cell below `approx_bits`, the exact full adder above)."""
    cell = (1 << approx_bits) - 1
    exact = ((1 << width) - 1) ^ cell

    def functions(table):
        out = {"g": [], "p": [], "s": [], "d": []}
        for ab in range(4):
            (s0, g), (s1, p) = table[ab * 2], table[ab * 2 + 1]
            d = s0 ^ s1
            for name, bit in (("g", g), ("p", p), ("d", d), ("s", s0 ^ (d & (p ^ g)))):
                out[name].append(bit)
        return out

    approx, full = functions(rows), functions(_EXACT_ROWS)
    return {name: [(cell if approx[name][ab] else 0) | (exact if full[name][ab] else 0) for ab in range(4)]
            for name in ("g", "p", "s", "d")}


_EXACT_ROWS = [((a + b + c) & 1, (a + b + c) >> 1) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def _bit_function(a, b, m):
    """The per-bit function with truth words m = [M00, M01, M10, M11] at the bits of a and b (int64 tensors)."""
    return (a & b & m[3]) | (a & ~b & m[2]) | (~a & b & m[1]) | (~a & ~b & m[0])


def chain_add(a, b, masks, width):
    """Width-bit sum of patterns a and b (int64 tensors, width <= 48) along a monotone-carry chain (`chain_masks`):
    all carries at once as c = (P + G) ^ P ^ G, the sum s = S ^ (D & (P + G)). Equals `ripple_add`."""
    g, p = _bit_function(a, b, masks["g"]), _bit_function(a, b, masks["p"])
    d, s = _bit_function(a, b, masks["d"]), _bit_function(a, b, masks["s"])
    return (s ^ (d & (p + g))) & ((1 << width) - 1)


def chain_mode(masks, width):
    """Shortcuts of the compiled chain: 1 when d does not depend on b, + 2 when g + p rises by exactly 1 with b in
    every bit (the exact carry g = ab, p = a | b; then P + G = A + b, one addition)."""
    (d00, d01, d10, d11), bit = masks["d"], lambda word, i: (word >> i) & 1
    mode = 1 if (d00, d10) == (d01, d11) else 0
    rise = all(bit(masks["g"][ab + 1], i) + bit(masks["p"][ab + 1], i) - bit(masks["g"][ab], i)
               - bit(masks["p"][ab], i) == 1 for ab in (0, 2) for i in range(width))
    return mode + (2 if rise else 0)


class CellAdder(_TableAdder):
    """A width-bit ripple-carry adder whose lowest `approx_bits` cells are `cell` and the rest exact full adders.

    The seed-000 setting: operands quantized to the signed (width-1)-bit range with the shared scale, then
    d = approx_add(w, -x) in width-bit two's complement (w the first operand, A of each cell), |d| and the sum exact.
    approx_bits = 0 is exact addition. Adders of up to 12 bits run through folded tables like LutAdder; wider ones
    compute every (x, w) pair: in word arithmetic when the cell's carry is monotone in the carry in (`chain_add`, on
    CPUs the compiled csrc/cell_chain.c; every bundled cell), else with the bit-sliced netlist kernel or the
    chained-table ripple (`ripple_add`, the reference). Gradients are straight-through ("ste").
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
        # a carry monotone in the carry in: the whole chain in word arithmetic (`chain_add`, csrc/cell_chain.c)
        self.masks = chain_masks(self.rows, approx_bits, width) if carry_monotone(self.rows) else None
        self.chain_mode = chain_mode(self.masks, width) if self.masks else None
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
        sums = self.chain_sums(xq, wq, geom) if self.masks is not None else None  # the compiled word chain
        if sums is None:
            sums = self.netlist_sums(xq, wq, geom)  # the ripple on a generated kernel: C on CPU, Triton on CUDA
        if sums is not None:
            return sums.double()
        if self.masks is not None:  # the word chain in torch
            return self.pairwise_sums(xq, wq, geom, lambda a, b: chain_add(a, b, self.masks, self.bits))
        if self.approx_bits == 0:  # exact addition, and the operand range rules out overflow: |w - x| exactly
            return ExactInt(self.bits).abs_sums(xq, wq, geom)
        if self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available():
            return native_kernels.cell_forward(xq, wq, geom, self.chunks, self.approx_bits, self.bits)
        return self.pairwise_sums(xq, wq, geom)

    def netlist_sums(self, xq, wq, geom):
        """The sums on a generated netlist kernel (the ripple as a bit-sliced circuit: compiled C on CPU, Triton on
        CUDA), or None where none serves."""
        from dnn.arith.netlist_adder import kernel_abs_sums
        if self.bits > 32:
            return None
        return kernel_abs_sums(self.ripple_program(), xq, wq, geom, self.bits)

    def ripple_program(self):
        """The ripple of cells as a compiled two-operand circuit program (built on first use)."""
        if self.program is None:
            from circuits.generators import ripple_carry_adder
            from dnn.arith.netlist_circuit import TwoOperandCircuit
            netlist = ripple_carry_adder(self.bits, cell=self.cell, approx_bits=self.approx_bits)
            self.program = TwoOperandCircuit(netlist).program(self.bits)
        return self.program

    def chain_sums(self, xq, wq, geom):
        """The sums along the monotone-carry chain on the compiled word kernel (csrc/cell_chain.c), or None where it
        cannot run (not CPU, wider than 32 bits, no compiler): `chain_add` per pair in torch then serves."""
        if not (self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available()):
            return None
        masks = [m for name in ("g", "p", "s", "d") for m in self.masks[name]]
        return native_kernels.cell_chain_forward(xq, wq, geom, masks, self.bits, self.chain_mode)

    def pairwise_sums(self, xq, wq, geom, add=None):
        """sum_k |add(w, -x)| computed for every (x, w) pair in chunks (float64, exact below 2^53); `add(a, b)` gives
        the width-bit sum patterns, by default the chained-table `ripple_add` (the reference)."""
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
                a = w_pat[:, o0:o0 + o_step]
                words = add(a, nx_pat) if add else ripple_add(a, nx_pat, self.chunks, self.approx_bits, self.bits)
                d = torch.where(words >= half, words - (1 << self.bits), words)
                out[n0:n0 + n_step, o0:o0 + o_step] = d.abs_().sum(2).double()
        return out.view(n, o, ho, wo)
