"""The published AppMult text LUTs: `*_lutfp.txt` (forward) and `*_lutfp+bp_avg_W_W.txt` (forward + gradients).

Lines before the first section title are header. Each section holds 2^(2n) lines `A B value`, A the outer loop;
forward values are unsigned results, gradient values int16 `round(16 g)` (REFERENCE.md section 4).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from lutgen.files import atomic_write
from lutgen.formats.common import (AXNET_VERSION, check_int_list, circuit_name_from_path, read_text_lines,
                                   value_range)
from lutgen.lut import MAX_OUTPUT_BITS, Lut

APPMULT_TITLES = (
    "LUT for approximate multiplier:",
    "LUT for the gradient of the approximate multiplier w.r.t. the first operand:",
    "LUT for the gradient of the approximate multiplier w.r.t. the second operand:",
)
FORWARD_RANGE = value_range(MAX_OUTPUT_BITS, False)
GRADIENT_RANGE = value_range(16, True)  # the tool stores int16
_HALF_WINDOW_INFO = re.compile(r"half smoothing window size for grad_([ab]):\s*([0-9]{1,9})\b")
_HALF_WINDOW_NAME = re.compile(r"_avg_([0-9]{1,9})_([0-9]{1,9})$")


def read_appmult(path):
    """Read a `*_lutfp.txt` (forward) or `*_lutfp+bp_avg_W_W.txt` (forward + two gradient sections) file.

    The operand width n comes from the line count (2^(2n) lines per section, A the outer loop); gradients are
    stored as int16 round(16*g) and read back as g. Forward values must be unsigned and fit 62 bits.
    """
    lines = read_text_lines(path)
    sections, half_windows = split_appmult_sections(lines, path)
    forward = sections.get(APPMULT_TITLES[0])
    if forward is None:
        raise AxnetError(f"not an AppMult LUT file: no '{APPMULT_TITLES[0]}' line", path=path)
    n = appmult_width(forward, path)
    table = appmult_values(forward, n, path, FORWARD_RANGE, "result")
    lut = Lut(table=table, operands=[("a", n), ("b", n)],
              outputs=[f"o[{k}]" for k in range(max(2 * n, output_bits(table)))], circuit=circuit_name_from_path(path))
    grad_sections = [sections.get(t) for t in APPMULT_TITLES[1:]]
    if any(s is not None for s in grad_sections):
        if any(s is None for s in grad_sections):
            missing = APPMULT_TITLES[1] if grad_sections[0] is None else APPMULT_TITLES[2]
            raise AxnetError(f"gradient file without the section '{missing}'", path=path)
        grads = {}
        for name, rows in zip(("a", "b"), grad_sections):
            if len(rows) != len(forward):
                raise AxnetError(f"gradient section for '{name}' has {len(rows)} lines, expected {len(forward)}",
                                 path=path, line=rows[-1][0] if rows else None)
            values = appmult_values(rows, n, path, GRADIENT_RANGE, "gradient (int16 16*g)")
            grads[name] = (values.astype(np.float32) / np.float32(16)).astype(np.float32)
        w = half_windows.get("a", half_window_from_name(path))
        lut = lut.with_grads(grads, {"half_window": w, "boundary": "appmult", "method": "diff"})
    return lut


def split_appmult_sections(lines, path):
    """{title: [(line number, 'A B V'), ...]} plus half windows named by INFO lines."""
    sections, current, half_windows = {}, None, {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if text in APPMULT_TITLES:
            if text in sections:
                raise AxnetError(f"section '{text}' appears twice", path=path, line=number)
            current = sections[text] = []
        elif current is None:
            m = _HALF_WINDOW_INFO.search(text)
            if m:
                half_windows[m.group(1)] = int(m.group(2))
        elif text:
            current.append((number, text))
    return sections, half_windows


def appmult_width(rows, path):
    """n such that the section holds 2^(2n) lines."""
    count = len(rows)
    n = (count.bit_length() - 1) // 2
    if count == 0 or count != 1 << (2 * n) or n == 0:
        raise AxnetError(f"LUT section has {count} lines; an AppMult LUT has 2^(2n) lines (4, 16, 64, ...)",
                         path=path, line=rows[-1][0] if rows else None)
    return n


def appmult_values(rows, n, path, bounds, what):
    """Check that line i reads `i // N  i % N  value`, value within `bounds`; the values as an (N, N) int64 table."""
    size = 1 << n
    values = []
    for i, (number, text) in enumerate(rows):
        parts = text.split()
        try:
            a, b, v = (int(t) for t in parts)
        except ValueError:
            raise AxnetError(f"expected 'A B value' (three integers), got '{text[:60]}'", path=path,
                             line=number) from None
        if a != i // size or b != i % size:
            raise AxnetError(f"expected operands {i // size} {i % size} (A outer, B inner), got {a} {b}",
                             path=path, line=number)
        values.append(v)
    check_int_list(values, *bounds, path, lambda i: rows[i][0], what)
    return np.array(values, dtype=np.int64).reshape(size, size)


def output_bits(table):
    """Bits needed for the largest unsigned value in `table` (at least 1)."""
    return max(1, int(table.max()).bit_length()) if table.size else 1


def half_window_from_name(path):
    """W from a `..._avg_W_W.txt` file name, else None."""
    m = _HALF_WINDOW_NAME.search(Path(path).stem)
    return int(m.group(1)) if m else None


def check_appmult_shape(lut):
    """The AppMult format holds unsigned LUTs over two operands of the same width."""
    if lut.table.ndim != 2:
        raise AxnetError(f"--format appmult needs a LUT with two operands; this one has {lut.table.ndim} "
                         f"({', '.join(lut.names)})")
    if lut.widths[0] != lut.widths[1]:
        raise AxnetError(f"--format appmult needs two operands of equal width, got {lut.widths[0]} and "
                         f"{lut.widths[1]}")
    if lut.signed:
        raise AxnetError("--format appmult holds unsigned LUTs only; this LUT is signed (use --format npz or csv)")


def appmult_section(title, table):
    """One section: its title, then `A B value` for A outer, B inner."""
    size = table.shape[0]
    a = np.repeat(np.arange(size), size)
    b = np.tile(np.arange(size), size)
    body = "\n".join(f"{x} {y} {v}" for x, y, v in zip(a.tolist(), b.tolist(), table.ravel().tolist()))
    return f"{title}\n{body}\n"


def round_half_even_x16(grad):
    """The int16 stored in AppMult gradient files: round-half-even of 16*g."""
    scaled = np.round(np.asarray(grad, dtype=np.float32) * np.float32(16))
    if scaled.size and (scaled.min() < -32768 or scaled.max() > 32767):
        raise AxnetError("--format appmult: a gradient exceeds the int16 range of the format (|16 g| > 32767)")
    return scaled.astype(np.int16)


def write_appmult(lut, path):
    """Write the forward LUT, and the two gradient sections if present, in the AppMult text format."""
    check_appmult_shape(lut)
    header = [f"INFO: written by axnet {AXNET_VERSION} from circuit {lut.circuit or '(unnamed)'}"
              + (f" (sha256 {lut.sha256})" if lut.sha256 else "")]
    parts = [appmult_section(APPMULT_TITLES[0], lut.table)]
    if lut.grads:
        gm = lut.grad_meta or {}
        if gm.get("half_window") is not None:
            header += [f"INFO: half smoothing window size for grad_a: {gm['half_window']}",
                       f"INFO: half smoothing window size for grad_b: {gm['half_window']}"]
        header.append(f"INFO: gradient method {gm.get('method')}, boundary {gm.get('boundary')}")
        for title, name in zip(APPMULT_TITLES[1:], lut.names):
            parts.append(appmult_section(title, round_half_even_x16(lut.grads[name])))
    with atomic_write(path, "w") as f:
        f.write("\n".join(header) + "\n")
        for part in parts:
            f.write(part)
