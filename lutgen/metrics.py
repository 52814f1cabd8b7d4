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
reference)`, which simulates block by block and reduces in the bit domain (exact result, difference and |e| are
bit-sliced planes summed with popcounts), so a 16-bit adder's 2^32 combinations never become a table. With
`samples=N` it simulates N random patterns instead and marks the result as an estimate.
"""
from __future__ import annotations

import threading

import numpy as np

from circuits.errors import AxnetError
from lutgen.operands import group_operands
from simulator.exhaustive import map_blocks, planes_to_words
from simulator.streaming import map_random_blocks, valid_mask

REFERENCES = ("add", "sub", "mul")
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


def normaliser(reference, widths, signed, n_outputs):
    """Divisor of MAE% and WCE% (EvoApproxLib output ranges, with 2^(n_outputs) as the fallback)."""
    wa, wb = widths[0], widths[1]
    if reference == "mul":
        return 1 << (wa + wb)
    if wa == wb:
        return 1 << (wa if signed else wa + 1)
    return 1 << n_outputs


def _reads_signed_output(reference, signed):
    """Whether the circuit's output word is read as two's complement."""
    return bool(signed) or reference == "sub"


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


def _finish(sums, reference, norm, signed, estimate=False):
    """The metric dict from accumulated sums."""
    n = sums["count"]
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
    }
    if estimate:
        result["samples"] = int(n)
    return result


def _sum_squares(abs_e):
    """Exact sum of squares of a non-negative int64 array, in chunks small enough never to overflow."""
    if abs_e.size == 0:
        return 0
    peak = int(abs_e.max())
    if peak == 0:
        return 0
    if peak >= 1 << 31:
        return sum(int(v) * int(v) for v in abs_e[abs_e != 0])
    chunk = max(1, (1 << 62) // (peak * peak))
    return sum(int(np.dot(abs_e[i:i + chunk], abs_e[i:i + chunk])) for i in range(0, abs_e.size, chunk))


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

def _operand_values(width, signed):
    v = np.arange(1 << width, dtype=np.int64)
    return np.where(v >= 1 << (width - 1), v - (1 << width), v) if signed else v


def exact_table(reference, widths, signed):
    """Exact results over the operand grid (one axis per operand, raw pattern order), int64."""
    carry = check_reference(reference, widths)
    axes = []
    for k, w in enumerate(widths):
        v = _operand_values(w, signed and not (carry and k == 2))
        shape = [1] * len(widths)
        shape[k] = -1
        axes.append(v.reshape(shape))
    if reference == "add":
        return sum(axes[1:], axes[0]) + np.zeros([1 << w for w in widths], dtype=np.int64)
    if reference == "sub":
        return axes[0] - axes[1]
    return axes[0] * axes[1]


def error_metrics(lut, reference="add"):
    """Metrics of a LUT (`table`, `operands` [(name, width)], `signed`, `outputs`) against the exact operation."""
    widths = [int(w) for _, w in lut.operands]
    names = [n for n, _ in lut.operands]
    check_reference(reference, widths, names)
    signed = bool(getattr(lut, "signed", False))
    table = np.asarray(lut.table, dtype=np.int64)
    outputs = getattr(lut, "outputs", None)
    n_out = len(outputs) if outputs else max(int(table.max(initial=0)).bit_length(), 1)
    approx = table
    if reference == "sub" and not signed:  # the raw word, read as two's complement over the output width
        approx = np.where(table >= 1 << (n_out - 1), table - (1 << n_out), table)
    sums = _value_sums(approx.ravel(), exact_table(reference, widths, signed).ravel())
    return _finish(sums, reference, normaliser(reference, widths, signed, n_out), signed)


# ---------------------------------------------------------------------------------------------------------------
# Bit-sliced arithmetic on planes (lists of uint64 arrays, LSB first)
# ---------------------------------------------------------------------------------------------------------------

class _Arena:
    """One thread's scratch planes, reused block after block: `planes(tag, n)` returns the same arrays each time."""

    def __init__(self, words):
        self.words = words
        self._bufs = {}
        self.counts = np.empty(words, dtype=np.uint8)

    def block(self, tag, n):
        """A (n, words) uint64 array for `tag`; its rows are the planes `planes(tag, n)` returns."""
        buf = self._bufs.get(tag)
        if buf is None or buf.shape[0] < n:
            buf = self._bufs[tag] = np.empty((n, self.words), dtype=np.uint64)
            self._bufs[tag, "rows"] = list(buf)
        return buf[:n]

    def planes(self, tag, n=1):
        self.block(tag, n)
        return self._bufs[tag, "rows"][:n]

    def popcounts(self, tag, n):
        """Set bits in each of the first n planes of `tag`, in one pass (Python ints)."""
        if n == 0:
            return []
        rows = self.block(tag, n)
        counts = self._bufs.get("counts")
        if counts is None or counts.shape[0] < n:
            counts = self._bufs["counts"] = np.empty((n, self.words), dtype=np.uint8)
        return [int(c) for c in np.bitwise_count(rows, out=counts[:n]).sum(axis=1, dtype=np.uint64)]

    def plane(self, tag):
        return self.planes(tag, 1)[0]


def _extend(planes, width, signed, zero):
    """Planes widened to `width` by sign extension (repeat the top plane) or zeros."""
    planes = list(planes)
    fill = planes[-1] if signed and planes else zero
    return planes + [fill] * (width - len(planes))


def _add_planes(arena, x, y, out, carry=None, invert_y=False):
    """out = x + y (+ carry plane) modulo 2^len(out), ripple-carry on planes with out= buffers.

    `out` may be `x` itself (accumulate in place). With invert_y the sum is x + NOT y, so with carry = ones it is
    x - y.
    """
    t, g, c, ny = arena.plane("add_t"), arena.plane("add_g"), arena.plane("add_c"), arena.plane("add_ny")
    live = carry is not None
    if live:
        np.copyto(c, carry)
    n = len(out)
    for i in range(n):
        xi, yi, o = x[i], y[i], out[i]
        if invert_y:
            yi = np.invert(yi, out=ny)
        last = i == n - 1
        if live:
            if not last:
                np.bitwise_and(xi, yi, out=g)
            np.bitwise_xor(xi, yi, out=t)
            np.bitwise_xor(t, c, out=o)
            if not last:
                np.bitwise_and(t, c, out=c)
                np.bitwise_or(c, g, out=c)
        else:
            if not last:
                np.bitwise_and(xi, yi, out=c)
            np.bitwise_xor(xi, yi, out=o)
            live = not last
    return out


def _mul_planes(arena, x, y, width, zero):
    """Product of two plane lists modulo 2^width: shift-and-add of partial-product rows, accumulated in place."""
    acc = arena.planes("mul_acc", width)
    row = arena.planes("mul_row", width)
    for k in range(width):
        np.bitwise_and(x[k], y[0], out=acc[k])
    for i in range(1, min(width, len(y))):
        for k in range(i, width):
            np.bitwise_and(x[k - i], y[i], out=row[k])
        _add_planes(arena, acc[i:], row[i:], acc[i:])
    return acc


def _abs_planes(arena, d):
    """|d| of a two's-complement plane list (len(d) - 1 planes; d must not be the minimum value)."""
    sign = d[-1]
    out = arena.planes("abs", len(d) - 1)
    t, c = arena.plane("abs_t"), arena.plane("abs_c")
    np.copyto(c, sign)
    for j, dj in enumerate(d[:-1]):
        np.bitwise_xor(dj, sign, out=t)
        np.bitwise_xor(t, c, out=out[j])
        if j < len(d) - 2:
            np.bitwise_and(t, c, out=c)
    return out


def _popcount(plane, counts=None):
    return int(np.bitwise_count(plane, out=counts).sum(dtype=np.uint64))


def _or_all(planes, out):
    """OR of a list of planes into `out` (zero for an empty list)."""
    if not planes:
        out.fill(0)
        return out
    np.copyto(out, planes[0])
    for p in planes[1:]:
        np.bitwise_or(out, p, out=out)
    return out


def _bitsliced_max(planes, arena=None):
    """Largest value over all patterns of an unsigned plane list: fix bits from the top while any pattern has it."""
    best, cand = 0, None  # cand: patterns still tied for the maximum (None: all of them)
    bufs = [arena.plane("max_a"), arena.plane("max_b")] if arena is not None else None
    for j in range(len(planes) - 1, -1, -1):
        if cand is None:
            if planes[j].any():
                cand, best = planes[j], 1 << j
            continue
        t = np.empty_like(cand) if bufs is None else (bufs[1] if cand is bufs[0] else bufs[0])
        np.bitwise_and(planes[j], cand, out=t)
        if t.any():
            cand, best = t, best | (1 << j)
    return best


# ---------------------------------------------------------------------------------------------------------------
# Streaming reduction
# ---------------------------------------------------------------------------------------------------------------

class _BlockReducer:
    """Turns one block of input and output planes into partial sums, all in the bit domain except MRE/WCRE."""

    def __init__(self, operands, reference, signed, n_outputs, words, carry):
        self.operands = operands
        self.reference = reference
        self.signed = bool(signed)
        self.carry = carry
        self.out_signed = _reads_signed_output(reference, signed)
        self.words = words
        self.zero = np.zeros(words, dtype=np.uint64)
        self.ones = ~self.zero
        self.exact_signed = self.signed or reference == "sub"
        self.segments = None  # set by stream_metrics when per-run reciprocal tables apply
        self._local = threading.local()

    def arena(self):
        """This thread's scratch planes."""
        arena = getattr(self._local, "arena", None)
        if arena is None:
            arena = self._local.arena = _Arena(self.words)
        return arena

    def exact_planes(self, arena, in_rows):
        """Exact result as a plane list (two's complement when exact_signed)."""
        a = [in_rows[i] for i in self.operands[0].bits]
        b = [in_rows[i] for i in self.operands[1].bits]
        if self.reference == "mul":
            width = len(a) + len(b)
            return _mul_planes(arena, _extend(a, width, self.signed, self.zero),
                               _extend(b, width, self.signed, self.zero), width, self.zero)
        width = max(len(a), len(b)) + 1 + (1 if self.carry and self.signed else 0)
        a = _extend(a, width, self.signed, self.zero)
        b = _extend(b, width, self.signed, self.zero)
        out = arena.planes("exact", width)
        if self.reference == "sub":
            return _add_planes(arena, a, b, out, carry=self.ones, invert_y=True)
        cin = in_rows[self.operands[2].bits[0]] if self.carry else None
        return _add_planes(arena, a, b, out, carry=cin)

    def __call__(self, in_rows, out_rows, n_valid, start=None):
        arena = self.arena()
        mask = None if n_valid == 64 * self.words else valid_mask(n_valid, self.words)
        exact = self.exact_planes(arena, in_rows)
        approx = list(out_rows)
        width = max(len(exact), len(approx)) + 2
        d = _add_planes(arena, _extend(approx, width, self.out_signed, self.zero),
                        _extend(exact, width, self.exact_signed, self.zero), arena.planes("diff", width),
                        carry=self.ones, invert_y=True)
        if mask is not None:
            for p in d + exact:
                np.bitwise_and(p, mask, out=p)
        mag = _abs_planes(arena, d)
        counts = arena.popcounts("abs", len(mag))
        top = max((j for j, c in enumerate(counts) if c), default=-1)
        mag = mag[: top + 1]
        err_any = _or_all(mag, arena.plane("err_any"))
        d_counts = arena.popcounts("diff", width)
        n_err = _popcount(err_any, arena.counts)
        sums = {"count": n_valid, "n_err": n_err,
                "sum_abs": sum(c << j for j, c in enumerate(counts)),
                "sum_e": sum(c << j for j, c in enumerate(d_counts[:-1])) - (d_counts[-1] << (width - 1)),
                "wce": _bitsliced_max(mag, arena),
                "n_rel": _popcount(_or_all(exact, arena.plane("exact_any")), arena.counts)}
        sums.update(self.per_pattern(mag, exact, err_any, n_err, n_valid, start, sums["wce"]))
        return sums

    def per_pattern(self, mag, exact, err_any, n_err, n_valid, start, peak):
        """Sum of squares and relative errors, which need |e| per pattern: the whole block against per-run
        reciprocal slices when the layout allows (exhaustive, operands in input order), else only where e != 0."""
        if n_err == 0:
            return {"sum_sq": 0, "sum_rel": 0.0, "max_rel": 0.0}
        if self.segments is not None and start is not None and len(mag) <= 64:
            return _segment_sums(planes_to_words(mag, n_valid, dtype=None), self.segments(start, n_valid), peak)
        idx = np.flatnonzero(np.unpackbits(err_any.view(np.uint8), bitorder="little")[:n_valid])
        abs_e = _gather_values(mag, idx)
        r = np.abs(_gather_values(exact, idx, signed=self.exact_signed)).astype(np.float64)
        inv = np.divide(1.0, r, out=np.zeros_like(r), where=r != 0)
        return _segment_sums(abs_e, [(0, idx.size, inv, 1.0)], peak)


_CHUNK = 1 << 15  # patterns per float pass: 256 KiB arrays stay in the L2 cache


def _segment_sums(abs_e, segments, peak):
    """Sum of |e|^2, sum and max of |e| * weight over (offset, length, weights, scale) segments of abs_e.

    Work goes in cache-sized chunks and skips chunks without errors. Squares are summed in float64 while every
    partial sum stays an exact integer below 2^53, in Python ints otherwise.
    """
    sum_sq, sum_rel, max_rel = 0, 0.0, 0.0
    exact_float = peak * peak * _CHUNK < 1 << 53
    for off, length, weights, scale in segments:
        for lo in range(0, length, _CHUNK):
            part = abs_e[off + lo:off + min(length, lo + _CHUNK)]
            if not part.any():
                continue
            values = part.astype(np.float64)
            if exact_float:
                sum_sq += int(np.multiply(values, values).sum())
            else:
                sum_sq += _sum_squares(part.astype(np.int64)) if part.dtype.kind in "iu" else \
                    int(round(float(np.multiply(values, values).sum())))
            if scale:
                rel = np.multiply(values, weights[lo:lo + values.size], out=values)
                sum_rel += float(rel.sum()) * scale
                max_rel = max(max_rel, float(rel.max()) * scale)
    return {"sum_sq": sum_sq, "sum_rel": sum_rel, "max_rel": max_rel}


def _gather_values(planes, idx, signed=False):
    """Values at pattern positions idx (int64 ndarray) of a plane list, int64 up to 62 planes else float64."""
    words, shifts = idx >> 6, (idx & 63).astype(np.uint64)
    wide = len(planes) > 62
    v = np.zeros(idx.size, dtype=np.float64 if wide else np.int64)
    for j, p in enumerate(planes):
        bits = ((p[words] >> shifts) & np.uint64(1)).astype(v.dtype)
        if signed and j == len(planes) - 1:
            v -= bits * (2.0 ** j if wide else 1 << j)
        else:
            v += bits * (2.0 ** j if wide else 1 << j)
    return v


def _run_reciprocals(operands, reference, signed, carry, n_inputs):
    """1/|exact| per pattern for exhaustive blocks when operands are consecutive inputs from input 0.

    Within a run of patterns whose high operand bits are fixed, the first operand counts up by one, so the exact
    result is an arithmetic sequence and its reciprocals are a slice of one precomputed table. Returns a function
    (start_pattern, n) -> list of (offset, length, 1/|exact| slice, scale), or None when the layout does not fit.
    """
    pos = 0
    for op in operands:
        if op.bits != tuple(range(pos, pos + op.width)):
            return None
        pos += op.width
    if pos != n_inputs:
        return None
    wa, wb = operands[0].width, operands[1].width
    run = 1 << (wa - 1 if signed else wa)  # a signed operand must not wrap from 011.. to 100.. inside a run
    a_vals = _operand_values(wa, signed)
    b_vals = _operand_values(wb, signed)
    if reference == "mul":
        lo, hi = int(a_vals.min()), int(a_vals.max())
    else:
        sign = -1 if reference == "sub" else 1
        lo = int(a_vals.min()) + min(sign * int(b_vals.min()), sign * int(b_vals.max()))
        hi = int(a_vals.max()) + max(sign * int(b_vals.min()), sign * int(b_vals.max())) + int(carry)
    x = np.arange(lo, hi + 1, dtype=np.float64)
    recip = np.divide(1.0, np.abs(x), out=np.zeros_like(x), where=x != 0)

    def segments(start, n):
        """(offset, length, reciprocal slice, scale) for each run of the block starting at pattern `start`."""
        out = []
        for seg in range(0, n, run):
            p = start + seg
            length = min(run, n - seg)
            a0 = int(a_vals[p & ((1 << wa) - 1)])
            b = int(b_vals[(p >> wa) & ((1 << wb) - 1)])
            if reference == "mul":
                out.append((seg, length, recip[a0 - lo:a0 - lo + length], 1.0 / abs(b) if b else 0.0))
            else:
                c = (p >> (wa + wb)) & 1 if carry else 0
                first = a0 + (b if reference == "add" else -b) + c
                out.append((seg, length, recip[first - lo:first - lo + length], 1.0))
        return out

    return segments


def stream_metrics(netlist, operands=None, reference="add", signed=False, progress=None, samples=None, seed=0,
                   block_words=STREAM_BLOCK_WORDS, threads=2):
    """Metrics of `netlist` against the exact operation without materialising its table.

    Exhaustive over every input combination, block by block (both threads reduce their own blocks); with
    `samples=N`, over N random patterns instead (the dict then says `"estimate": True` and `"samples": N`).
    `operands` is a list of `lutgen.operands.Operand` (grouped from the input names when None).
    """
    if operands is None:
        operands = group_operands(netlist.inputs)
    widths = [op.width for op in operands]
    carry = check_reference(reference, widths, [op.name for op in operands])
    n_out = len(netlist.outputs)
    if n_out == 0:
        raise AxnetError(f"circuit '{netlist.name}' has no outputs", path=netlist.source)
    norm = normaliser(reference, widths, signed, n_out)
    total = _empty_sums()
    if samples is not None:
        words = max(1, min(int(block_words), -(-int(samples) // 64)))
        reducer = _BlockReducer(operands, reference, signed, n_out, words, carry)
        blocks = map_random_blocks(netlist, lambda i, o, n: reducer(list(i), o, n), samples, seed=seed,
                                   block_words=words, threads=threads, progress=progress)
        for part in blocks:
            _merge(total, part)
        return _finish(total, reference, norm, signed, estimate=True)
    n_in = len(netlist.inputs)
    if n_in > MAX_EXHAUSTIVE_INPUTS:
        raise AxnetError(f"circuit '{netlist.name}' has {n_in} inputs: exact metrics over all 2^{n_in} combinations "
                         f"would take far too long (the limit is 2^{MAX_EXHAUSTIVE_INPUTS}); estimate them from "
                         "random patterns with --samples N", path=netlist.source)
    words = min(1 << (max(int(block_words), 1).bit_length() - 1), 1 << max(n_in - 6, 0))
    n_valid = min(64 * words, 1 << n_in)
    reducer = _BlockReducer(operands, reference, signed, n_out, words, carry)
    reducer.segments = _run_reciprocals(operands, reference, signed, carry, n_in)
    for part in map_blocks(netlist, lambda start, outputs, inputs: reducer(inputs, outputs, n_valid, start),
                           block_words=words, threads=threads, progress=progress, with_inputs=True):
        _merge(total, part)
    return _finish(total, reference, norm, signed)
