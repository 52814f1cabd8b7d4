"""Gradient LUTs for two-operand approximate circuits, by windowed difference (Meng et al., DATE 2025).

Along each operand the table is smoothed by a moving average over 2w+1 points and differentiated centrally, which in
the interior is `g(b) = (L[b+w+1] + L[b+w] - L[b-w] - L[b-w-1]) / (2(2w+1))`. Near the edges:
- `boundary="shrink"` (default): the half window shrinks to what fits, down to a central difference and, at the first
  and last value, a one-sided difference, so every entry is a local slope.
- `boundary="appmult"`: the published tool's rule, reproduced bit for bit (float32 window means, float32
  subtraction): a per-row constant range/N, where g_a takes the range of row b (the tool's quirk).
Signed LUTs are differentiated over values in numeric order and stored back in raw-pattern order.
"""
from __future__ import annotations

import numpy as np

from circuits.errors import AxnetError
from lutgen.lut import numeric_order

BOUNDARIES = ("shrink", "appmult")
METHODS = ("diff", "ste")
REFERENCES = ("add", "sub", "mul")


def gradient_lut(lut, half_window=None, boundary="shrink", method="diff", reference=None):
    """A copy of `lut` with `grads` = {first operand: dL/da, second: dL/db} as float32 tables indexed like `table`.

    `method="ste"` gives the exact operation's gradient instead (`reference` add, sub or mul), for comparison.
    """
    check_two_operands(lut)
    if method not in METHODS:
        raise AxnetError(f"--method '{method}': expected one of {', '.join(METHODS)}")
    if method == "ste":
        ga, gb = ste_gradients(lut, reference)
        meta = {"half_window": None, "boundary": None, "method": "ste", "reference": reference}
    else:
        if boundary not in BOUNDARIES:
            raise AxnetError(f"--boundary '{boundary}': expected one of {', '.join(BOUNDARIES)}")
        w = check_half_window(half_window)
        ga, gb = diff_gradients(lut, w, boundary)
        meta = {"half_window": w, "boundary": boundary, "method": "diff"}
    (na, _), (nb, _) = lut.operands
    return lut.with_grads({na: ga, nb: gb}, meta)


def check_two_operands(lut):
    """Gradients are defined for two-operand LUTs only (a carry-in or third operand is refused)."""
    if lut.table.ndim != 2:
        ops = ", ".join(f"{n}:{w}" for n, w in lut.operands)
        raise AxnetError(f"gradient LUTs need exactly two operands, but this LUT has {lut.table.ndim} ({ops}); "
                         "rebuild it without the extra operand (e.g. tie the carry-in to 0)")


def check_half_window(half_window):
    """The half window must be a non-negative integer."""
    try:
        w = int(half_window)
        whole = float(half_window) == w
    except (TypeError, ValueError):
        raise AxnetError(f"--half-window '{half_window}': expected a non-negative integer") from None
    if w < 0 or not whole:
        raise AxnetError(f"--half-window {half_window}: expected a non-negative integer")
    return w


def diff_gradients(lut, w, boundary):
    """Windowed-difference gradients (g_a, g_b) in raw-pattern index order."""
    wa, wb = lut.widths
    order_a, order_b = numeric_order(wa, lut.signed), numeric_order(wb, lut.signed)
    values = lut.table[np.ix_(order_a, order_b)]  # rows and columns in numeric order
    if boundary == "appmult":
        if wa != wb:
            raise AxnetError(f"--boundary appmult needs operands of equal width (the published rule reads row b "
                             f"for g_a), got {wa} and {wb}; use --boundary shrink")
        ga, gb = appmult_gradients(values, w)
    else:
        ga = shrink_gradient(values, w, axis=0)
        gb = shrink_gradient(values, w, axis=1)
    inv_a, inv_b = np.argsort(order_a), np.argsort(order_b)
    return (np.ascontiguousarray(ga[np.ix_(inv_a, inv_b)]), np.ascontiguousarray(gb[np.ix_(inv_a, inv_b)]))


def shrink_gradient(values, w, axis):
    """Slope along `axis` with the half window shrunk near the edges to h = min(w, i-1, N-2-i); one-sided at 0, N-1."""
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    n = v.shape[-1]
    if n < 2:
        return np.zeros(values.shape, dtype=np.float32)
    i = np.arange(n)
    h = np.clip(np.minimum(np.minimum(i - 1, n - 2 - i), w), 0, None)
    inner = (i >= 1) & (i <= n - 2)
    hi, ii = h[inner], i[inner]
    g = np.empty_like(v)
    g[..., inner] = (v[..., ii + hi + 1] + v[..., ii + hi] - v[..., ii - hi] - v[..., ii - hi - 1]) / (2 * (2 * hi + 1))
    g[..., 0] = v[..., 1] - v[..., 0]
    g[..., n - 1] = v[..., n - 1] - v[..., n - 2]
    return np.moveaxis(g, -1, axis).astype(np.float32)


def appmult_gradients(values, w):
    """The published tool's gradients, bit for bit: float32 window means, float32 differences, range/N outside."""
    n = values.shape[0]
    ga = appmult_axis(values.T, w).T  # along a: column b of the table, as a row
    gb = appmult_axis(values, w)
    lo, hi = w + 1, n - 2 - w
    row_range = (values.max(axis=1) - values.min(axis=1)).astype(np.float32) / np.float32(n)
    outside = np.ones(n, dtype=bool)
    if lo <= hi:
        outside[lo:hi + 1] = False
    gb[:, outside] = row_range[:, None]  # row a's range for g_b(a, b)
    ga[outside, :] = row_range[None, :]  # the tool's quirk: row b's range for g_a(a, b)
    return ga, gb


def appmult_axis(values, w):
    """Interior slope along the last axis: float32 means over 2w+1 points, then (S[i+1] - S[i-1]) / 2 in float32."""
    n = values.shape[-1]
    g = np.zeros(values.shape, dtype=np.float32)
    if n < 2 * w + 3:
        return g
    csum = np.concatenate([np.zeros(values.shape[:-1] + (1,), dtype=np.int64),
                           np.cumsum(values.astype(np.int64), axis=-1)], axis=-1)
    window = csum[..., 2 * w + 1:] - csum[..., : n - 2 * w]  # window sums centred on w .. n-1-w
    means = (window / (2 * w + 1)).astype(np.float32)
    g[..., w + 1: n - 1 - w] = (means[..., 2:] - means[..., :-2]) / np.float32(2)
    return g


def ste_gradients(lut, reference):
    """The exact operation's gradients (straight-through estimator): add (1, 1), sub (1, -1), mul (b, a)."""
    if reference not in REFERENCES:
        raise AxnetError(f"--method ste needs --reference {'|'.join(REFERENCES)} (got {reference!r})")
    a = lut.operand_values(0).astype(np.float32)[:, None]
    b = lut.operand_values(1).astype(np.float32)[None, :]
    shape = lut.table.shape
    if reference == "add":
        return np.ones(shape, np.float32), np.ones(shape, np.float32)
    if reference == "sub":
        return np.ones(shape, np.float32), -np.ones(shape, np.float32)
    return np.broadcast_to(b, shape).copy(), np.broadcast_to(a, shape).copy()
