"""`LutMultiplier`: a multiplier LUT prepared for the approximate-multiplier layers (values, gradient tables).

Activations are the LUT's first operand (A) and weights its second (B), as in the AppMult work; the quantization
modes and the layer maths are in `dnn.layers.mult_layers`.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.kernels.mult_ops import FLOAT32_EXACT, FLOAT64_EXACT

MAX_OPERAND_BITS = 10  # folded tables hold K * 2^n * Cout entries; wider operands make them impractically large
MODES = ("unsigned", "signed")
GRADS = ("ste", "lut")


def load_lut_file(path):
    """Read a LUT file through lutgen (axnet .npz, AppMult text files, AdaPT C header)."""
    from lutgen.formats import load_lut
    return load_lut(path)


class LutMultiplier:
    """A multiplier LUT prepared for the layers: values in numeric operand order, optional gradient tables.

    `lut` is a `lutgen.lut.Lut` or a path; `mode` is "unsigned" or "signed" (None: as the LUT says); `grad` is
    "ste" or "lut" (gradients from the file, or computed with `lutgen.gradient.gradient_lut` when `half_window`
    is given); `weights` is "tensor" (one weight scale per layer) or "channel" (one per output channel).
    One object may be shared by any number of layers.
    """

    def __init__(self, lut, mode=None, grad="ste", half_window=None, weights="tensor"):
        source = None
        if isinstance(lut, (str, os.PathLike)):
            source = os.fspath(lut)
            lut = load_lut_file(lut)
        self.source = source
        self.lut = lut
        self.mode = check_mode(lut, mode, source)
        check_is_product(lut, source)
        _check_lut_reading(lut, self.mode, source)
        self.grad = check_grad_option(grad)
        self.half_window = half_window
        if weights not in ("tensor", "channel"):
            raise AxnetError(f"weights '{weights}': expected 'tensor' or 'channel' (weight quantization scales)")
        self.weights = weights
        self.widths = [int(w) for _, w in lut.operands]
        self.circuit = getattr(lut, "circuit", "") or ""
        self.sha256 = getattr(lut, "sha256", None)
        self.values = numeric_table(lut.table, self.widths, lut.signed)
        self.max_abs = int(np.abs(self.values).max())
        if self.max_abs >= FLOAT64_EXACT:
            raise AxnetError(f"LUT '{self.circuit}' holds values up to {self.max_abs}, too large to accumulate "
                             "exactly", path=source)
        self.grad_a = self.grad_b = None
        if self.grad == "lut":
            ga, gb = gradient_tables(lut, half_window, source)
            self.grad_a = numeric_table(ga, self.widths, lut.signed).astype(np.float32)
            self.grad_b = numeric_table(gb, self.widths, lut.signed).astype(np.float32)
        self._cache = {}

    def qrange(self, operand):
        """(qmin, qmax) of operand 0 (activations) or 1 (weights) in numeric values."""
        n = self.widths[operand]
        if self.mode == "signed":
            return -(1 << (n - 1)), (1 << (n - 1)) - 1
        return 0, (1 << n) - 1

    def tables(self, device):
        """The value table (and gradient tables) as tensors on `device`, cached per device."""
        key = str(device)
        if key not in self._cache:
            dtype = torch.float32 if self.max_abs <= FLOAT32_EXACT else torch.float64
            entry = {"values": torch.as_tensor(self.values, dtype=dtype, device=device)}
            if self.grad_a is not None:
                entry["grad_a"] = torch.as_tensor(self.grad_a, device=device)
                entry["grad_b"] = torch.as_tensor(self.grad_b, device=device)
            self._cache[key] = entry
        return self._cache[key]

    def describe(self):
        """One line for logs and reports."""
        wa, wb = self.widths
        window = f", half_window={self.half_window}" if self.half_window is not None else ""
        per = ", per-channel weights" if self.weights == "channel" else ""
        return (f"lut:{self.circuit or self.source or '(unnamed)'} {self.mode} {wa}x{wb}-bit, "
                f"grad={self.grad}{window}{per}")

    def __repr__(self):
        return f"LutMultiplier({self.describe()})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def check_mode(lut, mode, source):
    """The quantization mode, checked against the LUT's operand count, signedness and widths."""
    operands = list(lut.operands)
    if len(operands) != 2:
        raise AxnetError(f"a multiplier LUT needs exactly two operands (activation, weight); "
                         f"LUT '{lut.circuit}' has {len(operands)}", path=source)
    lut_mode = "signed" if lut.signed else "unsigned"
    if mode is None:
        mode = lut_mode
    if mode not in MODES:
        raise AxnetError(f"mode '{mode}': expected 'unsigned' or 'signed'")
    if mode != lut_mode:
        raise AxnetError(f"mode '{mode}' does not match LUT '{lut.circuit}', which is {lut_mode}", path=source)
    for name, width in operands:
        if not 1 <= int(width) <= MAX_OPERAND_BITS or (mode == "signed" and int(width) < 2):
            raise AxnetError(f"operand '{name}' of LUT '{lut.circuit}' is {width} bits wide; {mode} multiplier "
                             f"layers take {2 if mode == 'signed' else 1} to {MAX_OPERAND_BITS} bits", path=source)
    return mode


def check_is_product(lut, source):
    """Refuse a table of sums, which would run in a multiplier layer and quietly add instead of multiply: the LUT
    file records an add/sub reference, or its recorded outputs are an adder's n + 1 bits (as the netlist path)."""
    from lutgen.reference import lut_reference
    (_, wa), (_, wb) = lut.operands
    outs = len(lut.outputs or [])
    recorded = lut_reference(lut)
    if recorded in ("add", "sub") or (recorded is None and 0 < outs <= max(wa, wb) + 1):
        why = (f"its file records the reference '{recorded}'" if recorded
               else f"{outs} outputs for {wa}x{wb}-bit operands")
        raise AxnetError(f"LUT '{lut.circuit}' holds an adder's results, not products ({why}; a multiplier has "
                         f"{wa + wb}); use it in an adder layer: --arith lut:FILE", path=source)


def check_product_reading(a, b, p, widths, out_bits, mode, where, fix=None):
    """Refuse `mode` when its reading of sampled products (int64 patterns: operands a, b and product p) is far from
    a*b (mean error over half of |a*b|) while the other mode's is within a quarter of that: a multiplier of the
    other signedness runs, but gives the layer wrong products. `fix`: what to do instead (default: the other mode)."""
    (wa, wb) = widths

    def relative_error(signed):
        x, y, q = (as_signed(a, wa), as_signed(b, wb), as_signed(p, out_bits)) if signed else (a, b, p)
        exact = x.double() * y.double()
        return float((q.double() - exact).abs().mean() / exact.abs().mean().clamp(min=1.0))
    mine, other = relative_error(mode == "signed"), relative_error(mode != "signed")
    if mine > 0.5 and other < mine / 4:
        switch = "unsigned" if mode == "signed" else "signed"
        raise AxnetError(f"read in {mode} mode the products are far from a*b (mean error {mine:.0%} of |a*b|), read "
                         f"{switch} they are close ({other:.1%}): it is {'an' if switch == 'unsigned' else 'a'} "
                         f"{switch} multiplier; {fix or f'use mode={switch}'}", path=where)


def as_signed(patterns, bits):
    """n-bit patterns (int64 tensor) read as two's complement."""
    return torch.where(patterns >= (1 << (bits - 1)), patterns - (1 << bits), patterns)


def _check_lut_reading(lut, mode, source, samples=256):
    """check_product_reading on sampled entries of a LUT that records its output count (a table of the other
    signedness, say an unsigned multiplier simulated with --signed)."""
    outs = len(lut.outputs or [])
    if not 0 < outs <= 62:
        return
    wa, wb = (int(w) for _, w in lut.operands)
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 1 << wa, (samples,), generator=gen)
    b = torch.randint(0, 1 << wb, (samples,), generator=gen)
    p = torch.from_numpy(np.asarray(lut.table)[a.numpy(), b.numpy()].astype(np.int64)) & ((1 << outs) - 1)
    check_product_reading(a, b, p, (wa, wb), outs, mode, source,
                          f"make the table again {'without' if lut.signed else 'with'} `axnet simulate --signed`")


def check_grad_option(grad):
    """'ste' or 'lut', or a one-line error naming the option."""
    if grad not in GRADS:
        raise AxnetError(f"grad '{grad}': expected 'ste' or 'lut'")
    return grad


def numeric_table(table, widths, signed):
    """Reorder a raw-pattern-indexed table so index i of each axis is numeric value qmin + i."""
    table = np.asarray(table)
    if not signed:
        return table.copy()
    orders = []
    for n in widths:
        v = np.arange(1 << n)
        orders.append(np.argsort(np.where(v >= 1 << (n - 1), v - (1 << n), v), kind="stable"))
    return table[np.ix_(orders[0], orders[1])]


def gradient_tables(lut, half_window, source):
    """(dAM/dA, dAM/dB) tables in raw pattern order: from the LUT, or computed for `half_window`."""
    grads = getattr(lut, "grads", None)
    meta = getattr(lut, "grad_meta", None) or {}
    if half_window is None:
        if not grads:
            raise AxnetError(f"grad 'lut' needs gradient LUTs, but LUT '{lut.circuit}' carries none; give "
                             "half_window to compute them", path=source)
    elif not grads or meta.get("half_window") != half_window or meta.get("method", "diff") != "diff":
        if int(half_window) < 0:
            raise AxnetError(f"half_window {half_window}: must be 0 or more")
        from lutgen.gradient import gradient_lut
        grads = gradient_lut(lut, int(half_window)).grads
    names = [name for name, _ in lut.operands]
    out = []
    for name in names:
        g = grads.get(name) if grads else None
        if g is None or np.shape(g) != np.shape(lut.table):
            raise AxnetError(f"LUT '{lut.circuit}' has no gradient table for operand '{name}' shaped like its "
                             "forward table", path=source)
        if not np.all(np.isfinite(g)):
            raise AxnetError(f"gradient table for operand '{name}' of LUT '{lut.circuit}' is not finite",
                             path=source)
        out.append(np.asarray(g, dtype=np.float32))
    return out
