"""The numpy reference reduction of streamed error metrics: bit-sliced arithmetic on planes, popcount sums.

Given one block of input and output planes, `BlockReducer` computes the exact result, the difference and |e| as
bit-sliced planes (lists of uint64 arrays, LSB first) and sums them with popcounts; only the sum of squares and the
relative errors need |e| per pattern, against per-run reciprocal tables (`run_reciprocals`) when the operands are
consecutive inputs. `lutgen.native_metrics` does the same reduction in C and is tested against this module.
"""
from __future__ import annotations

import threading

import numpy as np

from simulator.exhaustive import planes_to_words
from simulator.streaming import valid_mask


def reads_signed_output(reference, signed):
    """Whether the circuit's output word is read as two's complement."""
    return bool(signed) or reference == "sub"


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


def operand_values(width, signed):
    """Every value of a width-bit operand in raw pattern order (two's complement when signed), int64."""
    v = np.arange(1 << width, dtype=np.int64)
    return np.where(v >= 1 << (width - 1), v - (1 << width), v) if signed else v


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

class BlockReducer:
    """Turns one block of input and output planes into partial sums, all in the bit domain except MRE/WCRE."""

    def __init__(self, operands, reference, signed, n_outputs, words, carry):
        self.operands = operands
        self.reference = reference
        self.signed = bool(signed)
        self.carry = carry
        self.out_signed = reads_signed_output(reference, signed)
        self.words = words
        self.zero = np.zeros(words, dtype=np.uint64)
        self.ones = ~self.zero
        self.exact_signed = self.signed or reference == "sub"
        self.segments = None  # set by stream_metrics when per-run reciprocal tables apply
        self.fit_bits = 0  # > 0: count only patterns whose exact result fits this many bits (two's complement)
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

    def fit_mask(self, arena, exact, mask):
        """`mask` (None: all) AND the patterns whose two's-complement exact result fits fit_bits bits, i.e. whose
        planes fit_bits - 1 .. top are all equal (the overflow exclusion of signed wrap-around adders)."""
        fit, t = arena.plane("fit"), arena.plane("fit_t")
        np.copyto(fit, self.ones if mask is None else mask)
        sign = exact[self.fit_bits - 1]
        for p in exact[self.fit_bits:]:
            np.bitwise_xor(p, sign, out=t)
            np.invert(t, out=t)
            np.bitwise_and(fit, t, out=fit)
        return fit

    def __call__(self, in_rows, out_rows, n_valid, start=None):
        arena = self.arena()
        mask = None if n_valid == 64 * self.words else valid_mask(n_valid, self.words)
        exact = self.exact_planes(arena, in_rows)
        count = n_valid
        if 0 < self.fit_bits < len(exact):
            mask = self.fit_mask(arena, exact, mask)
            count = _popcount(mask, arena.counts)
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
        sums = {"count": count, "n_err": n_err,
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


def run_reciprocals(operands, reference, signed, carry, n_inputs):
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
    a_vals = operand_values(wa, signed)
    b_vals = operand_values(wb, signed)
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

    segments.table = (lo, hi, recip, run)  # for the C reduction (lutgen.native_metrics), which uses the same table
    return segments
