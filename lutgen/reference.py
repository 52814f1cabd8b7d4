"""Which exact operation (add, sub or mul) a LUT or circuit approximates, when the user does not say.

`guess_reference(lut)` trusts, in order: a reference recorded in the file (npz meta, gradient meta, an AdaPT
`// reference:` line); then the values themselves (whichever of a+b and a*b the table is closer to, so an adder
stored in a multiplier format such as an AdaPT header is still an adder); then `add`. `guess_from_widths` is the
shape-only rule for circuits measured without a table: two operands of n and m bits (n, m >= 2) with n + m outputs
are a multiplier.
"""
from __future__ import annotations

import numpy as np

REFERENCES = ("add", "sub", "mul")
SAMPLE_ENTRIES = 1 << 16  # entries compared when guessing from values: plenty to tell a sum from a product


def lut_reference(lut):
    """The exact operation the LUT says it approximates ('add', 'sub', 'mul'), or None."""
    ref = (lut.grad_meta or {}).get("reference") or (lut.extra or {}).get("reference")
    return ref if ref in REFERENCES else None


def guess_from_widths(operands, n_outputs):
    """(reference, why) from the shape alone: mul for two operands of width >= 2 with a full-width product."""
    widths = [int(w) for _, w in operands]
    if len(widths) == 2 and min(widths) >= 2 and n_outputs == sum(widths):
        return "mul", f"guessed from {n_outputs} outputs for operands {widths[0]}+{widths[1]} bits"
    return "add", "the default; pass --reference to choose"


def guess_reference(lut):
    """(reference, why) for a LUT: the reference its file records, else the closer of a+b and a*b, else add."""
    recorded = lut_reference(lut)
    if recorded:
        return recorded, "recorded in the LUT file"
    widths = lut.widths
    if len(widths) != 2 or min(widths) < 2:
        return "add", "the default; pass --reference to choose"
    d_add, d_mul = value_distances(lut)
    if d_mul < d_add:
        return "mul", f"guessed from the values: mean |LUT - a*b| = {d_mul:.4g} < mean |LUT - (a+b)| = {d_add:.4g}"
    return "add", f"guessed from the values: mean |LUT - (a+b)| = {d_add:.4g} <= mean |LUT - a*b| = {d_mul:.4g}"


def sample_indices(size, limit=SAMPLE_ENTRIES):
    """Flat indices of at most `limit` entries spread evenly over a table of `size` entries (all when small)."""
    if size <= limit:
        return np.arange(size, dtype=np.int64)
    return np.linspace(0, size - 1, limit).astype(np.int64)


def value_distances(lut):
    """(mean |table - (a+b)|, mean |table - a*b|) over a sample of a two-operand LUT's entries, as floats."""
    table = np.asarray(lut.table)
    flat = sample_indices(table.size)
    ia, ib = np.unravel_index(flat, table.shape)
    a = lut.operand_values(0)[ia].astype(np.float64)
    b = lut.operand_values(1)[ib].astype(np.float64)
    got = table.reshape(-1)[flat].astype(np.float64)
    return float(np.mean(np.abs(got - (a + b)))), float(np.mean(np.abs(got - a * b)))
