"""AdaPT's C header LUT: `int16_t lut[256][256] = {{...}, ...};` over two signed 8-bit operands.

Rows and columns are indexed by the operands' raw two's-complement patterns (0..127, then -128..-1). The reader takes
any integer element type; the values must fit it (int16_t unless the declaration names another). A line
`// reference: add|sub|mul`, which the writer adds when the LUT knows its operation, is kept as a hint for
`lutgen.reference.guess_reference`.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from lutgen.files import atomic_write
from lutgen.formats.common import AXNET_VERSION, read_text_lines, value_range
from lutgen.lut import MAX_OUTPUT_BITS, Lut
from lutgen.reference import lut_reference

_ADAPT_DECL = re.compile(r"(?:\b(\w+)\s+)?\b(\w+)\s*\[\s*256\s*\]\s*\[\s*256\s*\]\s*=\s*\{")
_ADAPT_TOKEN = re.compile(r"\s*(?:(//[^\n]*|/\*.*?\*/)|([{},])|([-+]?\s*(?:0[xX][0-9a-fA-F]+|\d+))|(;)|(\S))", re.S)
_REFERENCE_HINT = re.compile(r"^//\s*reference:\s*(add|sub|mul)\s*$", re.M)
_PLAIN_ROW = re.compile(r"\{([-+0-9xXa-fA-F,\s]*)\}")
TYPE_BITS = {"int8_t": 8, "char": 8, "int16_t": 16, "short": 16, "int32_t": 32, "int": 32, "long": 62,
             "int64_t": 62}  # int16_t is AdaPT's own and the default


def check_adapt_shape(lut):
    """AdaPT loads 8-bit signed two-operand LUTs whose results fit int16."""
    if lut.table.ndim != 2 or lut.widths != [8, 8] or not lut.signed:
        kind = "signed" if lut.signed else "unsigned"
        raise AxnetError("--format adapt needs a signed LUT over two 8-bit operands (AdaPT's int16_t "
                         f"lut[256][256]); this one is {kind} over {', '.join(f'{n}:{w}' for n, w in lut.operands)}")
    if lut.table.min() < -32768 or lut.table.max() > 32767:
        raise AxnetError("--format adapt: a result does not fit AdaPT's int16_t entries")


def write_adapt_header(lut, path):
    """Write `int16_t lut[256][256]`, indexed by the operands' raw two's-complement patterns (0..127, -128..-1)."""
    check_adapt_shape(lut)
    a, b = lut.names
    rows = ",\n".join("    {" + ", ".join(map(str, row)) + "}" for row in lut.table.tolist())
    reference = lut_reference(lut)
    text = (f"// AdaPT lookup table written by axnet {AXNET_VERSION}\n"
            f"// circuit {lut.circuit or '(unnamed)'}" + (f", sha256 {lut.sha256}" if lut.sha256 else "") + "\n"
            + (f"// reference: {reference}\n" if reference else "")
            + f"// lut[{a}][{b}]: index = 8-bit two's-complement pattern (0..127 are 0..127, 128..255 are -128..-1)\n"
            "#include <stdint.h>\n\n"
            f"int16_t lut[256][256] = {{\n{rows}\n}};\n")
    with atomic_write(path, "w") as f:
        f.write(text)


def read_adapt_header(path):
    """Read a C header declaring `T name[256][256] = {{...}, ...};` as a signed 8x8-bit LUT."""
    text = "\n".join(read_text_lines(path))
    m = _ADAPT_DECL.search(text)
    if not m:
        raise AxnetError("no `lut[256][256] = {` declaration found (expected an AdaPT C header)", path=path)
    type_name = m.group(1) if m.group(1) in TYPE_BITS else "int16_t"
    bits = TYPE_BITS[type_name]
    rows = quick_adapt_rows(text, m.end() - 1)
    if rows is None:  # anything unusual: the careful tokenizer, which also names the offending line
        rows = parse_adapt_initializer(text, m.end() - 1, path)
    check_rows_fit(rows, bits, type_name, path, text.count("\n", 0, m.start()) + 1)
    hint = _REFERENCE_HINT.search(text[: m.start()])
    extra = {"reference": hint.group(1)} if hint else {}
    return Lut(table=np.array(rows, dtype=np.int64), operands=[("a", 8), ("b", 8)],
               outputs=[f"o[{k}]" for k in range(min(bits, MAX_OUTPUT_BITS))], signed=True, circuit=Path(path).stem,
               extra=extra)


def check_rows_fit(rows, bits, type_name, path, line):
    """Refuse an entry outside the declared element type's range, naming its operands."""
    lo, hi = value_range(bits, True)
    for i, row in enumerate(rows):
        if min(row) < lo or max(row) > hi:
            j = next(k for k, v in enumerate(row) if v < lo or v > hi)
            raise AxnetError(f"entry [a={signed8(i)}, b={signed8(j)}] = {row[j]} does not fit the declared "
                             f"{type_name} ({bits} signed bits, {lo}..{hi})", path=path, line=line)


def signed8(pattern):
    """The value of an 8-bit two's-complement pattern."""
    return pattern - 256 if pattern >= 128 else pattern


def c_int(token):
    """A C integer literal: decimal (leading zeros allowed) or 0x hex, with an optional sign."""
    body = token.lstrip("+-")
    value = int(body, 16) if body[:2].lower() == "0x" else int(body, 10)
    return -value if token.startswith("-") else value


def quick_adapt_rows(text, pos):
    """Fast path for a plain initializer (no comments, decimal or hex integers): 256 rows of 256 ints, else None."""
    end = text.find(";", pos)
    body = text[pos:end if end >= 0 else len(text)]
    if "/" in body:
        return None
    rows = _PLAIN_ROW.findall(body)
    if len(rows) != 256 or body.count("{") != 257:
        return None
    try:
        table = [[c_int(t) for t in r.replace(",", " ").split()] for r in rows]
    except ValueError:
        return None
    if any(len(r) != 256 for r in table):
        return None
    return table


def parse_adapt_initializer(text, pos, path):
    """The 256 rows of 256 integers of the brace initializer opening at `pos`."""
    def line_of(p):
        return text.count("\n", 0, p) + 1

    rows, row, depth = [], None, 0
    while pos < len(text):
        m = _ADAPT_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        start, pos = m.start(m.lastindex), m.end()
        if m.group(1):
            continue
        tok = m.group(m.lastindex)
        if tok == "{":
            depth += 1
            if depth == 2:
                row = []
            elif depth > 2:
                raise AxnetError("braces nested deeper than lut[256][256]", path=path, line=line_of(start))
        elif tok == "}":
            if depth == 2:
                if len(row) != 256:
                    raise AxnetError(f"row {len(rows)} has {len(row)} values, expected 256", path=path,
                                     line=line_of(start))
                rows.append(row)
            depth -= 1
            if depth == 0:
                if len(rows) != 256:
                    raise AxnetError(f"{len(rows)} rows, expected 256", path=path, line=line_of(start))
                return rows
        elif tok == ",":
            continue
        elif m.group(3) and depth == 2:
            try:
                row.append(c_int(tok.replace(" ", "")))
            except ValueError:
                raise AxnetError(f"integer literal '{tok[:30]}' is too long", path=path, line=line_of(start)) from None
        else:
            raise AxnetError(f"unexpected '{tok}' in the lut initializer", path=path, line=line_of(start))
    raise AxnetError("the lut initializer is not closed", path=path, line=line_of(len(text)))
