"""Helpers every LUT reader shares: one-line messages, file names, and the check that values fit the output bits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from circuits.files import read_text
from lutgen.lut import MAX_OUTPUT_BITS, pattern_values

AXNET_VERSION = "0.1.0"


def first_line(e):
    """The first line of an exception's message, so wrapped errors stay one line."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_text_lines(path):
    """The file's lines, with a one-line error for a missing, empty or binary file (a UTF-8 BOM is dropped)."""
    return read_text(path, "LUT file").splitlines()


def circuit_name_from_path(path):
    """The circuit name a LUT file stands for: its stem without `_lutfp...` or `_sop` suffixes."""
    stem = Path(path).name
    for suffix in ("_lutfp", "_sop"):
        if suffix in stem:
            return stem[: stem.index(suffix)]
    return Path(path).stem


def value_range(bits, signed):
    """(lowest, highest) value `bits` output bits hold: two's complement when `signed`, else unsigned."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def declared_bits(outputs, path):
    """Output bits a LUT declares (its output names), or MAX_OUTPUT_BITS when the file names none."""
    n = len(outputs)
    if n > MAX_OUTPUT_BITS:
        raise AxnetError(f"the LUT declares {n} output bits; a LUT entry holds at most {MAX_OUTPUT_BITS}", path=path)
    return n or MAX_OUTPUT_BITS


def check_values_fit(table, operands, bits, signed, path, what="entry"):
    """Refuse a table holding a value outside what `bits` output bits (signed or not) can hold, naming one entry.

    `table` may be any integer array (uint64 included: the comparison happens before any cast to int64).
    """
    lo, hi = value_range(bits, signed)
    table = np.asarray(table)
    if table.size == 0:
        return
    bad = (table < lo) | (table > hi)
    if not bad.any():
        return
    index = np.unravel_index(int(np.flatnonzero(bad)[0]), table.shape)
    where = ", ".join(f"{name}={int(pattern_values(w, signed)[i])}" for (name, w), i in zip(operands, index))
    kind = "signed" if signed else "unsigned"
    raise AxnetError(f"{what} [{where}] = {int(table[index])} does not fit the LUT's {bits} {kind} output bits "
                     f"({lo}..{hi})", path=path)


def check_int_list(values, lo, hi, path, line_of, what="value"):
    """Refuse Python ints outside lo..hi before they become an int64 array; `line_of(i)` names the i-th value's line."""
    if not values:
        return
    if min(values) >= lo and max(values) <= hi:
        return
    i = next(k for k, v in enumerate(values) if v < lo or v > hi)
    raise AxnetError(f"{what} {values[i]} is outside {lo}..{hi}", path=path, line=line_of(i))
