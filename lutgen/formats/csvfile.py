"""LUTs as CSV: one row per operand combination, `a,b,...,value[,grad_a,grad_b,...]`.

Operand columns hold values (two's complement readings when signed), so widths and signedness are read back from
the values each column takes. A CSV declares no output names, so its values must fit 62 bits.
"""
from __future__ import annotations

import math

import numpy as np

from circuits.errors import AxnetError
from lutgen.files import atomic_write
from lutgen.formats.common import check_int_list, check_values_fit, circuit_name_from_path, read_text_lines
from lutgen.lut import MAX_LUT_BITS, MAX_OUTPUT_BITS, Lut

OPERAND_LIMIT = 1 << MAX_LUT_BITS  # no operand column of a LUT can hold a value this large
VALUE_LIMIT = 1 << MAX_OUTPUT_BITS


def write_csv(lut, path):
    """One row per operand combination: operand values (signed if the LUT is), the result, then any gradients."""
    names = lut.names
    header = names + ["value"] + ([f"grad_{n}" for n in names] if lut.grads else [])
    grids = np.meshgrid(*[lut.operand_values(k) for k in range(len(names))], indexing="ij")
    columns = [g.ravel() for g in grids] + [lut.table.ravel()]
    grad_cols = [np.asarray(lut.grads[n], dtype=np.float32).ravel() for n in names] if lut.grads else []
    with atomic_write(path, "w", newline="") as f:
        f.write(",".join(header) + "\n")
        chunk = 1 << 16
        for start in range(0, lut.table.size, chunk):
            ints = [c[start:start + chunk].tolist() for c in columns]
            floats = [[f"{x:.9g}" for x in c[start:start + chunk].tolist()] for c in grad_cols]
            rows = zip(*ints, *floats)
            f.write("".join(",".join(map(str, r)) + "\n" for r in rows))


def csv_header(line, path):
    """(operand names, gradient column names) from the header line, checked."""
    header = [h.strip() for h in line.split(",")]
    if "value" not in header:
        raise AxnetError("CSV LUT header must name operand columns, then 'value', then optional grad_<operand> "
                         f"columns; got '{line[:80]}'", path=path, line=1)
    k = header.index("value")
    names, grad_names = header[:k], header[k + 1:]
    if not names:
        raise AxnetError("CSV LUT has no operand columns before 'value'", path=path, line=1)
    if "" in names or len(set(names)) != len(names):
        raise AxnetError("CSV operand columns need distinct, non-empty names", path=path, line=1)
    if grad_names and grad_names != [f"grad_{n}" for n in names]:
        raise AxnetError(f"CSV gradient columns must be {', '.join('grad_' + n for n in names)}", path=path, line=1)
    return names, grad_names


def read_csv(path):
    """Read a CSV written by `write_csv`: operand widths and signedness come from the values each column takes."""
    lines = read_text_lines(path)
    names, grad_names = csv_header(lines[0], path)
    ints, floats = parse_csv_rows(lines, len(names) + 1, len(grad_names), path)
    widths, signed = csv_operand_widths(ints[:, :len(names)], names, path)
    shape = tuple(1 << w for w in widths)
    index = tuple(ints[:, j] & (shape[j] - 1) for j in range(len(names)))
    flat = np.ravel_multi_index(index, shape)
    if len(flat) != int(np.prod(shape)) or len(np.unique(flat)) != len(flat):
        raise AxnetError(f"CSV LUT must list every combination of {', '.join(names)} exactly once "
                         f"({int(np.prod(shape))} rows), found {len(flat)} rows", path=path)
    table = np.empty(shape, dtype=np.int64)
    table.reshape(-1)[flat] = ints[:, len(names)]
    operands = list(zip(names, widths))
    check_values_fit(table, operands, MAX_OUTPUT_BITS, signed, path)
    lut = Lut(table=table, operands=operands, outputs=[], signed=signed, circuit=circuit_name_from_path(path))
    if grad_names:
        grads = {}
        for j, n in enumerate(names):
            g = np.empty(shape, dtype=np.float32)
            g.reshape(-1)[flat] = floats[:, j]
            grads[n] = g
        lut = lut.with_grads(grads, {"half_window": None, "boundary": None, "method": None})
    return lut


def parse_csv_rows(lines, n_int, n_float, path):
    """Integer and float columns of every data row, with file:line for a malformed or out-of-range field."""
    ints, floats, numbers = [], [], []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cells = raw.split(",")
        if len(cells) != n_int + n_float:
            raise AxnetError(f"expected {n_int + n_float} comma-separated fields, got {len(cells)}", path=path,
                             line=number)
        try:
            row = [int(c) for c in cells[:n_int]]
            grads = [float(c) for c in cells[n_int:]]
        except ValueError:
            raise AxnetError(f"non-numeric field in '{raw[:60]}'", path=path, line=number) from None
        if not all(math.isfinite(g) and abs(g) < 3e38 for g in grads):
            raise AxnetError(f"gradient field in '{raw[:60]}' is not a finite float32", path=path, line=number)
        ints.append(row)
        floats.append(grads)
        numbers.append(number)
    if not ints:
        raise AxnetError("CSV LUT has a header but no rows", path=path)
    for j in range(n_int):
        bound = VALUE_LIMIT if j == n_int - 1 else OPERAND_LIMIT
        what = "value" if j == n_int - 1 else "operand value"
        check_int_list([r[j] for r in ints], -bound, bound - 1, path, numbers.__getitem__, what)
    return np.array(ints, dtype=np.int64), np.array(floats, dtype=np.float32).reshape(len(ints), n_float)


def csv_operand_widths(values, names, path):
    """Width of each operand column (2^w distinct values) and whether the columns are signed."""
    signed = bool((values < 0).any())
    widths = []
    for j, name in enumerate(names):
        col = values[:, j]
        count = len(np.unique(col))
        w = count.bit_length() - 1
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed and w >= 1 else (0, (1 << w) - 1)
        if w < 1 or count != 1 << w or col.min() != lo or col.max() != hi:
            kind = "signed" if signed else "unsigned"
            raise AxnetError(f"CSV column '{name}' takes {count} values from {col.min()} to {col.max()}, not "
                             f"every {kind} value of some width", path=path)
        widths.append(w)
    return widths, signed
