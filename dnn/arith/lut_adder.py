"""`LutAdder`: an AdderNet back-end whose subtraction is a two-operand adder LUT (3 to 12 bits), and its gradients.

Semantics (quantization, d = C(w, -x), gradients) are those of `dnn.arith.base`'s module docstring.
"""
from __future__ import annotations

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.arith.base import MAX_LUT_BITS, MIN_LUT_BITS, _signed, _TableAdder


def _lut_bits(lut, where):
    """The adder width n of a LUT, after checking it has two operands of equal width in the supported range."""
    ops = ", ".join(f"{name}:{width}" for name, width in lut.operands)
    if lut.table.ndim != 2 or len(lut.operands) != 2:
        raise AxnetError(f"an adder back-end needs a LUT of exactly two operands, but this one has "
                         f"{len(lut.operands)} ({ops})", path=where)
    (_, wa), (_, wb) = lut.operands
    if wa != wb:
        raise AxnetError(f"an adder back-end needs two operands of equal width, but this LUT has {ops}", path=where)
    if not MIN_LUT_BITS <= wa <= MAX_LUT_BITS:
        raise AxnetError(f"a {wa}-bit adder LUT does not fit an adder layer: the width must be {MIN_LUT_BITS} to "
                         f"{MAX_LUT_BITS} bits (operands use the signed {wa - 1}-bit range)", path=where)
    # an n-bit adder's result fits n+1 bits; a wider table is another operation (a multiplier, say)
    lo, hi = (-(1 << wa), (1 << wa) - 1) if lut.signed else (0, (1 << (wa + 1)) - 1)
    table = np.asarray(lut.table)
    if table.min() < lo or table.max() > hi:
        raise AxnetError(f"LUT values run from {table.min()} to {table.max()}, beyond the {wa + 1}-bit result of a "
                         f"{wa}-bit adder ({lo}..{hi}): this is not an adder LUT (a multiplier?)", path=where)
    return int(wa)


def _check_grads(lut, where):
    """The gradient tables must be one finite float table per operand, shaped like the forward table."""
    names = [name for name, _ in lut.operands]
    if sorted(lut.grads) != sorted(names):
        raise AxnetError(f"the gradient tables ({', '.join(sorted(lut.grads))}) do not match the LUT's operands "
                         f"({', '.join(names)})", path=where)
    for name in names:
        g = np.asarray(lut.grads[name])
        if g.shape != lut.table.shape:
            raise AxnetError(f"gradient table grad_{name} has shape {g.shape}, but the LUT is {lut.table.shape}",
                             path=where)
        if not np.isfinite(g).all():
            raise AxnetError(f"gradient table grad_{name} holds non-finite values", path=where)


def adder_view(lut, bits):
    """The LUT as the adder layer reads it: operands and result as n-bit two's complement (low n output bits).

    A plain n-bit adder LUT also holds a carry-out bit, and an unsigned one orders its axes 0..2^n-1, so the values
    -1 and 0 sit at opposite ends of an axis. Differentiating that table would put the carry and the wrap into the
    gradients right where activations near 0 fall; gradients must be taken of this view instead.
    """
    from lutgen.lut import Lut

    table = _signed(np.asarray(lut.table, dtype=np.int64), bits)
    return Lut(table=table, operands=list(lut.operands), outputs=list(lut.outputs)[:bits], signed=True,
               circuit=lut.circuit, sha256=lut.sha256)


def layer_slopes(lut, bits, qmax, half_window, where=None):
    """Circuit slopes (dd/dw, dd/dc) at c = -x over the layer's domain, indexed [w + qmax, x + qmax] like `diff`.

    Windowed differences of the layer's reading of the circuit (see `adder_view`) in numeric order, with the window
    shrunk at the edges of the domain the layer can reach, so neither the carry-out, the raw-pattern wrap nor the
    overflow beyond the n-bit range enters a slope. A gradient file's own tables are used as they are only when they
    were taken of that same reading (a signed LUT with exactly n outputs) and no `half_window` overrides them;
    otherwise they are recomputed with the file's half window (or `half_window`).
    """
    from lutgen.gradient import shrink_gradient

    mask = (1 << bits) - 1
    pat = np.arange(-qmax, qmax + 1, dtype=np.int64) & mask
    meta = dict(lut.grad_meta or {})
    if half_window is None and lut.grads is not None and lut.signed and len(lut.outputs) == bits:
        name_a, name_b = (name for name, _ in lut.operands)
        return (np.asarray(lut.grads[name_a], np.float32)[np.ix_(pat, pat[::-1])],
                np.asarray(lut.grads[name_b], np.float32)[np.ix_(pat, pat[::-1])])
    if half_window is None and meta.get("method") == "diff":
        half_window = meta.get("half_window")
    if half_window is None:
        raise AxnetError("grad=lut needs gradient tables: this LUT has none; give a half window "
                         "(lut:PATH:grad=lut:w=W) or a file from `axnet gradlut`", path=where)
    reading = _signed(np.asarray(lut.table, dtype=np.int64)[np.ix_(pat, pat)], bits)
    slope_w, slope_c = shrink_gradient(reading, int(half_window), 0), shrink_gradient(reading, int(half_window), 1)
    return slope_w[:, ::-1], slope_c[:, ::-1]  # columns from c = -qmax..qmax to x = -qmax..qmax


class LutAdder(_TableAdder):
    """An n-bit two-operand adder LUT (from `axnet simulate`) as the layer's subtraction: d = C(w, -x).

    Operands are quantized to [-qmax, qmax], qmax = 2^(n-2) - 1, and passed to the LUT as n-bit two's-complement
    patterns, w as the FIRST operand and -x as the SECOND; the low n bits of the LUT entry are read as signed. |d| and
    the sum over the patch are exact. `grad="lut"` uses the LUT's gradient tables (a gradient file), or computes them
    on load with `half_window` through `lutgen.gradient.gradient_lut`; see the module docstring for the chain rule.
    """

    def __init__(self, lut, grad="ste", half_window=None):
        if grad not in ("ste", "lut"):
            raise AxnetError(f"grad='{grad}': expected 'ste' or 'lut'")
        self.path = None
        if not hasattr(lut, "table"):
            from lutgen.formats import load_lut
            self.path = str(lut)
            lut = load_lut(lut)
        where = self.path or (lut.circuit or None)
        self.bits = _lut_bits(lut, where)
        self.grad, self.half_window = grad, half_window
        self.circuit, self.sha256 = lut.circuit, lut.sha256
        values = np.arange(-self.qmax, self.qmax + 1, dtype=np.int64)
        mask = (1 << self.bits) - 1
        w_pat, nx_pat = (values & mask)[:, None], ((-values) & mask)[None, :]
        self.diff = torch.from_numpy(_signed(np.asarray(lut.table, dtype=np.int64)[w_pat, nx_pat], self.bits))
        if grad == "lut":
            if lut.grads is not None:
                _check_grads(lut, where)
            if half_window is None and (lut.grad_meta or {}).get("method") == "diff":
                self.half_window = lut.grad_meta.get("half_window")
            slope_w, slope_x = layer_slopes(lut, self.bits, self.qmax, half_window, where)
            self.grad_w_slope = torch.from_numpy(np.ascontiguousarray(slope_w))
            self.grad_x_slope = torch.from_numpy(np.ascontiguousarray(slope_x))

    @property
    def spec(self):
        text = f"lut:{self.path or self.circuit}"
        if self.grad == "lut":
            text += ":grad=lut" + (f":w={self.half_window}" if self.half_window is not None else "")
        return text

    def describe(self):
        return (f"{self.bits}-bit adder LUT {self.circuit or self.path} as d = C(w, -x), operands in +-{self.qmax}, "
                f"grad={self.grad}" + (f" (half window {self.half_window})" if self.half_window is not None else ""))


def lut_gather_sums(table, bits, xq, wq, geom):
    """Slow reference: sum_k |d| with d gathered from the LUT for every (x, w) pair, no folding (int64).

    `table` is the raw (2^n, 2^n) LUT, xq and wq integer-valued quantized tensors. This is the plain gather the fast
    table path is tested and benchmarked against.
    """
    table = torch.as_tensor(np.asarray(table, dtype=np.int64)).to(xq.device)
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    n, o = xq.shape[0], wq.shape[0]
    cols = geom.unfold(xq.double()).to(torch.int64)  # N, K, L
    w_pat = wq.reshape(o, -1).to(torch.int64) & mask
    out = torch.empty(n, o, cols.shape[2], dtype=torch.int64, device=xq.device)
    for i in range(n):
        words = table[w_pat[:, :, None], ((-cols[i]) & mask)[None]] & mask  # O, K, L
        out[i] = torch.where(words >= half, words - (1 << bits), words).abs().sum(1)
    return out.view(n, o, *geom.output_size(*xq.shape[2:]))
