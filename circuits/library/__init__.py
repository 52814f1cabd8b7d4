"""The bundled cell library: exact and approximate full-adder cells stored as BLIF files beside this module.

Each full-adder cell has inputs `a b cin` and outputs `s cout`; the half adder `half` has inputs `a b`. The BLIF
files are written from each cell's equations; `CELLS` holds their truth tables, computed by simulating those files.

Cell truth tables (`cell_truth_table`) list 8 `(sum, cout)` rows for A B Cin = 000, 001, ..., 111: A is the most
significant bit of the row index (the order of the published tables), unlike the pattern order of netlists.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from circuits.blif import read_blif
from circuits.errors import AxnetError
from circuits.netlist import Netlist

LIBRARY_DIR = Path(__file__).resolve().parent

# name -> (equations, one-line description); the logic itself lives in LIBRARY_DIR/<name>.blif.
CELL_INFO = {
    "exact": ("S = A ^ B ^ Cin, Cout = MAJ(A, B, Cin)", "exact full adder"),
    "half": ("S = A ^ B, Cout = A & B", "exact half adder (inputs a b, no carry in)"),
    "ama1": ("S = Cin & XNOR(A, B), Cout = B | A & Cin", "approximate mirror adder 1 (2 of 8 rows wrong)"),
    "ama2": ("S = NOT Cout, Cout = MAJ(A, B, Cin)", "approximate mirror adder 2 (exact carry, 2 of 8 sums wrong)"),
    "ama3": ("S = NOT Cout, Cout = B | A & Cin", "approximate mirror adder 3 (3 of 8 rows wrong)"),
    "ama4": ("S = Cin & (NOT A | B), Cout = A", "approximate mirror adder 4 (3 of 8 rows wrong)"),
    "ama5": ("S = B, Cout = A", "approximate mirror adder 5: wires only (4 of 8 rows wrong)"),
    "maj": ("S = NOT Cout, Cout = MAJ(A, B, Cin)",
            "majority-gate full adder, one majority gate and an inverter (same function as AMA2)"),
}
FULL_ADDER_PORTS = (["a", "b", "cin"], ["s", "cout"])
_TABLE_TEXT = re.compile(r"^\s*[01]{2}(\s*[,;\s]\s*[01]{2}){7}\s*$")


def cell_names():
    """Names of the bundled cells, in a fixed order."""
    return list(CELL_INFO)


def cell_path(name):
    """Path of a bundled cell's BLIF file."""
    key = str(name).lower()
    if key not in CELL_INFO:
        raise AxnetError(f"unknown cell '{name}'; bundled cells: {', '.join(cell_names())}")
    return LIBRARY_DIR / f"{key}.blif"


@lru_cache(maxsize=None)
def _read_cell(key):
    return read_blif(cell_path(key))


def _copy(netlist):
    return Netlist(netlist.name, list(netlist.inputs), list(netlist.outputs), dict(netlist.nodes), netlist.source)


def load_cell(name):
    """A fresh Netlist of a bundled cell (inputs `a b cin`, or `a b` for `half`; outputs `s cout`)."""
    return _copy(_read_cell(str(name).lower()))


def table_of_netlist(netlist):
    """The 8 (sum, cout) rows, A B Cin = 000..111 with A the MSB, of a 3-input 2-output cell netlist."""
    rows = []
    for r in range(8):
        a, b, c = (r >> 2) & 1, (r >> 1) & 1, r & 1
        s, cout = netlist.evaluate([a, b, c])
        rows.append((s, cout))
    return rows


def _check_cell_shape(netlist, spec):
    if len(netlist.inputs) != 3 or len(netlist.outputs) != 2:
        raise AxnetError(f"cell '{spec}' has {len(netlist.inputs)} inputs and {len(netlist.outputs)} outputs; a "
                         "full-adder cell needs 3 inputs (A B Cin) and 2 outputs (S Cout), in that order",
                         path=netlist.source)


def parse_table(text):
    """An 8-row table string such as `00,10,10,01,10,01,01,11` (each entry sum then carry) -> list of pairs."""
    entries = re.split(r"[,;\s]+", text.strip())
    if len(entries) != 8 or not all(re.fullmatch(r"[01]{2}", e) for e in entries):
        raise AxnetError(f"cell table '{text}' must be 8 comma-separated entries of two bits (sum then carry) "
                         "for A B Cin = 000..111, e.g. 00,10,10,01,10,01,01,11")
    return [(int(e[0]), int(e[1])) for e in entries]


def format_table(rows):
    """The inverse of parse_table: `00,10,...`."""
    return ",".join(f"{s}{c}" for s, c in rows)


def _kind(spec):
    """'netlist', 'name', 'table' or 'path' for a cell spec; an AxnetError naming it when it is none of these."""
    if isinstance(spec, Netlist):
        return "netlist"
    if isinstance(spec, (list, tuple)):
        return "rows"
    text = str(spec)
    if not isinstance(spec, Path) and text.lower() in CELL_INFO:
        return "name"
    if not isinstance(spec, Path) and _TABLE_TEXT.match(text):
        return "table"
    if Path(text).is_file():
        return "path"
    if text.endswith(".blif"):
        raise AxnetError("no such cell file", path=text)
    raise AxnetError(f"cell '{text}' is not a bundled cell ({', '.join(cell_names())}), an existing cell .blif "
                     "file, or an 8-row table such as 00,10,10,01,10,01,01,11")


def _rows_from_sequence(spec):
    rows = [tuple(int(v) for v in row) for row in spec]
    if len(rows) != 8 or any(len(r) != 2 or not set(r) <= {0, 1} for r in rows):
        raise AxnetError(f"cell table {spec!r} must be 8 (sum, cout) pairs of 0/1")
    return rows


def cell_truth_table(spec):
    """The 8 (sum, cout) rows, A B Cin = 000..111 (A the MSB), of a bundled cell name, a cell BLIF path (3 inputs
    A B Cin, 2 outputs S Cout, in that order), an 8-row string like `00,10,10,01,10,01,01,11`, a Netlist, or a
    sequence of 8 pairs."""
    kind = _kind(spec)
    if kind == "rows":
        return _rows_from_sequence(spec)
    if kind == "table":
        return parse_table(str(spec))
    if kind == "name" and str(spec).lower() not in CELLS:
        raise AxnetError(f"cell '{spec}' is a half adder with no carry in; a full-adder cell is needed here")
    if kind == "name":
        return list(CELLS[str(spec).lower()])
    netlist = spec if kind == "netlist" else read_blif(spec)
    _check_cell_shape(netlist, spec)
    return table_of_netlist(netlist)


def cell_netlist(spec):
    """A 3-input 2-output cell Netlist for any spec `cell_truth_table` takes (tables become espresso covers)."""
    from circuits.truthtable import netlist_from_truth_table

    kind = _kind(spec)
    if kind == "netlist":
        _check_cell_shape(spec, spec.name)
        return spec
    if kind == "name":
        cell_truth_table(spec)  # refuses the half adder
        return load_cell(spec)
    if kind == "path":
        netlist = read_blif(spec)
        _check_cell_shape(netlist, spec)
        return netlist
    rows = cell_truth_table(spec)
    # pattern order: input i of (a, b, cin) is bit i of the pattern; the cell table has A as the row's MSB.
    by_pattern = [rows[((p & 1) << 2) | (((p >> 1) & 1) << 1) | ((p >> 2) & 1)] for p in range(8)]
    return netlist_from_truth_table(*FULL_ADDER_PORTS, by_pattern, name="cell_" + format_table(rows).replace(",", ""))


def describe(name=None):
    """For `axnet library`: a list of dicts with name, inputs, outputs, equations, description and table (the 8-row
    string, None for the half adder), for every bundled cell or just `name`."""
    names = cell_names() if name is None else [str(cell_path(name).stem)]
    out = []
    for key in names:
        netlist = _read_cell(key)
        equations, text = CELL_INFO[key]
        out.append({
            "name": key,
            "inputs": list(netlist.inputs),
            "outputs": list(netlist.outputs),
            "equations": equations,
            "description": text,
            "table": format_table(CELLS[key]) if key in CELLS else None,
            "path": str(cell_path(key)),
        })
    return out


def _build_cells():
    """Truth tables of the bundled full-adder cells, by simulating their BLIF files."""
    cells = {}
    for key in CELL_INFO:
        netlist = _read_cell(key)
        if len(netlist.inputs) == 3:
            cells[key] = table_of_netlist(netlist)
    return cells


CELLS = _build_cells()
