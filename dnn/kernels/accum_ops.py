"""Accumulating per-term integers through an adder circuit in torch (any device), and the plain Python reference.

An accumulator circuit C adds the running value (its first operand) and a term (its second); only its low `bits`
outputs are kept. Orders (see `dnn.arith.accumulate` for the layer semantics):
- sequential: acc = 0, then acc = C(acc, t_k) for k = 0 .. K-1;
- tree: each level adds adjacent pairs (t0 + t1, t2 + t3, ...) through C, an odd last term moves up unchanged,
  until one value remains.
`BitslicedCircuit` evaluates the circuit's word-op program (`simulator.program`) with int64 bitwise ops over bit
planes of 64 outputs per word, every output at once per step; `reference_accumulate` is a plain loop over outputs
and terms through `Netlist.evaluate_int`, the slow reference the tests compare every path against.
"""
from __future__ import annotations

import torch

from dnn.kernels.adder_ops import CHUNK_ELEMENTS
from simulator.torch_engine import run_program

ORDERS = ("sequential", "tree")


def to_planes(values, bits):
    """(bits, W) int64 bit planes of int64 `values` (M,): bit q of word w of plane j is bit j of values[64 w + q]."""
    m = values.numel()
    words = -(-m // 64)
    padded = torch.zeros(words * 64, dtype=torch.int64, device=values.device)
    padded[:m] = values.reshape(-1)
    lanes = padded.view(words, 64)
    shifts = torch.arange(64, device=values.device, dtype=torch.int64)
    planes = torch.empty(bits, words, dtype=torch.int64, device=values.device)
    for j in range(bits):
        # distinct powers of two: the sum is their OR, and no partial sum overflows int64
        planes[j] = (((lanes >> j) & 1) << shifts).sum(1)
    return planes


def from_planes(planes, m):
    """(m,) int64 values from (bits, W) planes: the inverse of `to_planes`."""
    bits, words = planes.shape
    shifts = torch.arange(64, device=planes.device, dtype=torch.int64)
    out = torch.zeros(words, 64, dtype=torch.int64, device=planes.device)
    for j in range(bits):
        out |= ((planes[j].unsqueeze(1) >> shifts) & 1) << j
    return out.reshape(-1)[:m]


class BitslicedCircuit:
    """An accumulator circuit's program over int64 bit planes: `add(a, b)` gives the low `bits` output planes."""

    def __init__(self, program, a_inputs, b_inputs, out_slots, bits):
        self.program, self.bits = program, bits
        self.a_inputs, self.b_inputs, self.out_slots = list(a_inputs), list(b_inputs), list(out_slots)

    def add(self, a, b):
        """Output planes (bits, W) of C(a, b) for operand planes a, b (bits, W)."""
        inputs = [None] * self.program.n_inputs
        for j, pos in enumerate(self.a_inputs):
            inputs[pos] = a[j]
        for j, pos in enumerate(self.b_inputs):
            inputs[pos] = b[j]
        return torch.stack(run_program(self.program, inputs, outputs=self.out_slots))

    def accumulate(self, terms, order):
        """(M,) int64 patterns: the K terms of each row of `terms` (M, K) accumulated in `order`."""
        m, k = terms.shape
        if order == "sequential":
            acc = torch.zeros(self.bits, -(-m // 64), dtype=torch.int64, device=terms.device)
            for step in range(k):  # one step over all outputs at once; the terms' order is the point here
                acc = self.add(acc, to_planes(terms[:, step].contiguous(), self.bits))
            return from_planes(acc, m)
        values = terms
        while values.shape[1] > 1:
            n = values.shape[1]
            pairs = values[:, :n - n % 2]
            a = to_planes(pairs[:, 0::2].reshape(-1), self.bits)
            b = to_planes(pairs[:, 1::2].reshape(-1), self.bits)
            level = from_planes(self.add(a, b), a.shape[1] * 64)[:m * (n // 2)].view(m, n // 2)
            values = torch.cat([level, values[:, n - 1:]], 1) if n % 2 else level
        return values[:, 0]


def indexed_accumulate_torch(circuit, cols, w_index, terms_of, order):
    """out[m, o] (int64 patterns) accumulated from the terms `terms_of(cols_chunk, w_index)` -> (mc, O, K) int64
    patterns (e.g. a table gather pair[w_index[o, k], cols[m, k]]); chunked over m."""
    m, k = cols.shape
    o = w_index.shape[0]
    out = torch.empty(m, o, dtype=torch.int64, device=cols.device)
    step = max(1, CHUNK_ELEMENTS // (8 * max(1, o * k)))
    for m0 in range(0, m, step):
        terms = terms_of(cols[m0:m0 + step].long(), w_index)  # (mc, O, K)
        out[m0:m0 + step] = circuit.accumulate(terms.reshape(-1, k), order).view(-1, o)
    return out


def reference_accumulate(add, terms, order):
    """Slow reference: a plain Python loop over each output's terms (lists of ints), `add(a, b)` one circuit call."""
    results = []
    for row in terms:
        row = [int(t) for t in row]
        if order == "sequential":
            acc = 0
            for t in row:
                acc = add(acc, t)
        else:
            while len(row) > 1:
                pairs = [add(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
                row = pairs + ([row[-1]] if len(row) % 2 else [])
            acc = row[0]
        results.append(acc)
    return results
