"""Error metrics of an approximate adder, subtractor or multiplier against the exact operation.

Definitions follow EvoApproxLib (e = approximate - exact over every input combination):
EP% = 100 P(e != 0); MAE = mean |e|; WCE = max |e|; MSE = mean e^2; bias = mean e; MRE% and WCRE% = mean and max
of 100 |e| / |exact| over the combinations whose exact result is not 0 (None when there is none; MRE/WCRE of
the streamed path come from per-pattern |e| against reciprocal tables). MAE% and WCE% divide by a normaliser,
reported in the dict: 2^(n+1) for n-bit unsigned adders and subtractors, 2^n for signed ones, 2^(wa+wb) for
multipliers, and the output range 2^(n_outputs) for adders whose operands differ in width.

Conventions:
- `add`: two operands a, b, optionally a third 1-bit operand read as an unsigned carry-in: exact = a + b + cin.
  The circuit's output word is read unsigned, or as two's complement over the output width when `signed`.
- `sub`: exact = a - b, which can be negative, so the output word is always read as two's complement over the
  output width (an n-bit subtractor has n + 1 outputs, the top one the sign/borrow).
- `mul`: exact = a * b; output unsigned, or two's complement when `signed`.

Two entry points: `error_metrics(lut, reference)` on a materialised table, and `stream_metrics(netlist, operands,
reference)`, which simulates block by block and never builds a table of a 16-bit adder's 2^32 combinations. Its
reference reduction (`lutgen.bitslice_metrics`) works in the bit domain (exact result, difference and |e| as
bit-sliced planes summed with popcounts); exhaustive runs of operands laid out from input 0 reduce in C instead
(`lutgen.native_metrics`), right after the circuit's compiled kernel, with the same sums in the same order, so
results are bit-identical (floats included: chunks of |e| / |exact| summed in numpy's pairwise order). With
`samples=N` it simulates N random patterns instead and marks the result as an estimate.

Overflow (`overflow="exclude"`, signed add/sub only): EvoApproxLib's signed wrap-around adders (add8s_*) are
measured over only the combinations whose exact result fits the output width n in two's complement, with
normaliser 2^(n-1); `count` is then the number of combinations counted and the dict says `"overflow"`.
"""
from __future__ import annotations

import numpy as np

from circuits.errors import AxnetError
from lutgen import native_metrics
from lutgen.bitslice_metrics import BlockReducer, _sum_squares, operand_values, run_reciprocals
from lutgen.operands import group_operands
from simulator.exhaustive import map_blocks
from simulator.streaming import map_random_blocks

REFERENCES = ("add", "sub", "mul")
OVERFLOW_MODES = ("include", "exclude")
METRIC_KEYS = ("ep_percent", "mae", "mae_percent", "wce", "wce_percent", "mse", "bias", "mre_percent",
               "wcre_percent", "count")
STREAM_BLOCK_WORDS = 1 << 13
MAX_EXHAUSTIVE_INPUTS = 40  # 2^40 combinations is hours on two cores; wider circuits are estimated by sampling


# ---------------------------------------------------------------------------------------------------------------
# Operand roles and normaliser
# ---------------------------------------------------------------------------------------------------------------

def check_reference(reference, widths, names=None):
    """Validate the operand count for `reference`; returns True when the third operand is a carry-in."""
    if reference not in REFERENCES:
        raise AxnetError(f"--reference '{reference}': expected one of {', '.join(REFERENCES)}")
    names = names or [f"op{k}" for k in range(len(widths))]
    listed = ", ".join(f"{n}:{w}" for n, w in zip(names, widths))
    if len(widths) == 2:
        return False
    if reference == "add" and len(widths) == 3 and widths[2] == 1:
        return True
    need = "two operands and an optional 1-bit carry-in" if reference == "add" else "exactly two operands"
    raise AxnetError(f"--reference {reference} needs {need}, but the circuit's operands are {listed}; "
                     "group the inputs with --operands (e.g. 8,8 or 8,8,1)")


def overflow_fit_bits(overflow, reference, signed, n_outputs):
    """Bits the exact result must fit (two's complement) to be counted: 0 (all count) for `include`, the output
    width for `exclude`, EvoApproxLib's definition for signed wrap-around adders such as add8s_*."""
    if overflow not in OVERFLOW_MODES:
        raise AxnetError(f"--overflow '{overflow}': expected one of {', '.join(OVERFLOW_MODES)}")
    if overflow == "include":
        return 0
    if reference not in ("add", "sub") or not signed:
        raise AxnetError(f"--overflow exclude applies to signed adders and subtractors (--signed, --reference "
                         f"add or sub), not to {'signed' if signed else 'unsigned'} '{reference}'")
    return n_outputs


def normaliser(reference, widths, signed, n_outputs, overflow="include"):
    """Divisor of MAE% and WCE% (EvoApproxLib output ranges, with 2^(n_outputs) as the fallback); 2^(n_outputs-1)
    when overflowing patterns are excluded (the n-bit signed result range)."""
    wa, wb = widths[0], widths[1]
    if overflow == "exclude":
        return 1 << (n_outputs - 1)
    if reference == "mul":
        return 1 << (wa + wb)
    if wa == wb:
        return 1 << (wa if signed else wa + 1)
    return 1 << n_outputs


# ---------------------------------------------------------------------------------------------------------------
# Finishing: partial sums -> metric dict
# ---------------------------------------------------------------------------------------------------------------

def _empty_sums():
    return {"count": 0, "n_err": 0, "sum_abs": 0, "sum_e": 0, "sum_sq": 0, "wce": 0, "n_rel": 0,
            "sum_rel": 0.0, "max_rel": 0.0}


def _merge(total, part):
    """Fold one block's partial sums into the running total (ints stay Python ints, exact)."""
    for key in ("count", "n_err", "sum_abs", "sum_e", "sum_sq", "n_rel"):
        total[key] += int(part[key])
    total["sum_rel"] += float(part["sum_rel"])
    total["wce"] = max(total["wce"], int(part["wce"]))
    total["max_rel"] = max(total["max_rel"], float(part["max_rel"]))
    return total


def _finish(sums, reference, norm, signed, estimate=False, overflow="include"):
    """The metric dict from accumulated sums."""
    n = sums["count"]
    if n == 0:
        raise AxnetError("no operand combination has an exact result that fits the output word "
                         "(--overflow exclude counts only those)")
    rel_n = sums["n_rel"]
    result = {
        "ep_percent": 100.0 * sums["n_err"] / n,
        "mae": sums["sum_abs"] / n,
        "mae_percent": 100.0 * sums["sum_abs"] / n / norm,
        "wce": int(sums["wce"]),
        "wce_percent": 100.0 * sums["wce"] / norm,
        "mse": sums["sum_sq"] / n,
        "bias": sums["sum_e"] / n,
        "mre_percent": 100.0 * sums["sum_rel"] / rel_n if rel_n else None,
        "wcre_percent": 100.0 * sums["max_rel"] if rel_n else None,
        "count": int(n),
        "estimate": bool(estimate),
        "reference": reference,
        "normaliser": int(norm),
        "signed": bool(signed),
        "overflow": overflow,
    }
    if estimate:
        result["samples"] = int(n)
    return result


def _value_sums(approx, exact):
    """Partial sums from per-pattern approximate and exact values (int64 arrays of equal shape)."""
    e = approx - exact
    abs_e = np.abs(e)
    nz = exact != 0
    rel = abs_e[nz] / np.abs(exact[nz]).astype(np.float64)
    return {"count": e.size, "n_err": int(np.count_nonzero(e)), "sum_abs": int(abs_e.sum()),
            "sum_e": int(e.sum()), "sum_sq": _sum_squares(abs_e), "wce": int(abs_e.max(initial=0)),
            "n_rel": int(nz.sum()), "sum_rel": float(rel.sum()), "max_rel": float(rel.max(initial=0.0))}


# ---------------------------------------------------------------------------------------------------------------
# Metrics of a materialised LUT
# ---------------------------------------------------------------------------------------------------------------

def exact_table(reference, widths, signed):
    """Exact results over the operand grid (one axis per operand, raw pattern order), int64."""
    carry = check_reference(reference, widths)
    axes = []
    for k, w in enumerate(widths):
        v = operand_values(w, signed and not (carry and k == 2))
        shape = [1] * len(widths)
        shape[k] = -1
        axes.append(v.reshape(shape))
    if reference == "add":
        return sum(axes[1:], axes[0]) + np.zeros([1 << w for w in widths], dtype=np.int64)
    if reference == "sub":
        return axes[0] - axes[1]
    return axes[0] * axes[1]


def error_metrics(lut, reference="add", overflow="include"):
    """Metrics of a LUT (`table`, `operands` [(name, width)], `signed`, `outputs`) against the exact operation.

    `overflow="exclude"` (signed add/sub) counts only the entries whose exact result fits the output width."""
    widths = [int(w) for _, w in lut.operands]
    names = [n for n, _ in lut.operands]
    check_reference(reference, widths, names)
    signed = bool(getattr(lut, "signed", False))
    table = np.asarray(lut.table, dtype=np.int64)
    outputs = getattr(lut, "outputs", None)
    n_out = len(outputs) if outputs else max(int(table.max(initial=0)).bit_length(), 1)
    fit_bits = overflow_fit_bits(overflow, reference, signed, n_out)
    approx = table
    if reference == "sub" and not signed:  # the raw word, read as two's complement over the output width
        approx = np.where(table >= 1 << (n_out - 1), table - (1 << n_out), table)
    exact = exact_table(reference, widths, signed).ravel()
    approx = approx.ravel()
    if fit_bits:
        fits = (exact >= -(1 << (fit_bits - 1))) & (exact < 1 << (fit_bits - 1))
        approx, exact = approx[fits], exact[fits]
    sums = _value_sums(approx, exact)
    return _finish(sums, reference, normaliser(reference, widths, signed, n_out, overflow), signed,
                   overflow=overflow)


def stream_metrics(netlist, operands=None, reference="add", signed=False, progress=None, samples=None, seed=0,
                   block_words=STREAM_BLOCK_WORDS, threads=2, overflow="include", backend="auto"):
    """Metrics of `netlist` against the exact operation without materialising its table.

    Exhaustive over every input combination, block by block (both threads reduce their own blocks); with
    `samples=N`, over N random patterns instead (the dict then says `"estimate": True` and `"samples": N`).
    `operands` is a list of `lutgen.operands.Operand` (grouped from the input names when None).
    `overflow="exclude"` (signed add/sub only) counts only the patterns whose exact result fits the output word.
    Exhaustive runs reduce in C (`lutgen.native_metrics`) when they can, with bit-identical results; `backend`
    "numpy" forces the numpy simulation and reduction (the reference), "native" requires the compiled circuit.
    """
    if operands is None:
        operands = group_operands(netlist.inputs)
    widths = [op.width for op in operands]
    carry = check_reference(reference, widths, [op.name for op in operands])
    n_out = len(netlist.outputs)
    if n_out == 0:
        raise AxnetError(f"circuit '{netlist.name}' has no outputs", path=netlist.source)
    fit_bits = overflow_fit_bits(overflow, reference, signed, n_out)
    norm = normaliser(reference, widths, signed, n_out, overflow)
    total = _empty_sums()
    if samples is not None:
        words = max(1, min(int(block_words), -(-int(samples) // 64)))
        reducer = BlockReducer(operands, reference, signed, n_out, words, carry)
        reducer.fit_bits = fit_bits
        blocks = map_random_blocks(netlist, lambda i, o, n: reducer(list(i), o, n), samples, seed=seed,
                                   block_words=words, threads=threads, progress=progress, backend=backend)
        for part in blocks:
            _merge(total, part)
        return _finish(total, reference, norm, signed, estimate=True, overflow=overflow)
    n_in = len(netlist.inputs)
    if n_in > MAX_EXHAUSTIVE_INPUTS:
        raise AxnetError(f"circuit '{netlist.name}' has {n_in} inputs: exact metrics over all 2^{n_in} combinations "
                         f"would take far too long (the limit is 2^{MAX_EXHAUSTIVE_INPUTS}); estimate them from "
                         "random patterns with --samples N", path=netlist.source)
    words = min(1 << (max(int(block_words), 1).bit_length() - 1), 1 << max(n_in - 6, 0))
    n_valid = min(64 * words, 1 << n_in)
    segments = run_reciprocals(operands, reference, signed, carry, n_in)
    fast = native_metrics.plan(netlist, operands, reference, signed, carry, segments, fit_bits, backend)
    if fast is not None:
        parts = native_metrics.map_native_blocks(fast, (1 << n_in) // n_valid, n_valid, threads, progress)
    else:
        reducer = BlockReducer(operands, reference, signed, n_out, words, carry)
        reducer.segments, reducer.fit_bits = segments, fit_bits
        parts = map_blocks(netlist, lambda start, outputs, inputs: reducer(inputs, outputs, n_valid, start),
                           block_words=words, threads=threads, progress=progress, with_inputs=True, backend=backend)
    for part in parts:
        _merge(total, part)
    return _finish(total, reference, norm, signed, overflow=overflow)
