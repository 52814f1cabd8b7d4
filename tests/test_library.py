"""The bundled cells against the published truth tables (REFERENCE.md section 6), and every way to name a cell."""
import pytest

from circuits import library
from circuits.blif import write_blif
from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node

# REFERENCE.md section 6, copied by hand: rows A B Cin = 000..111, entries "SC" (sum then carry).
PUBLISHED = {
    "exact": "00 10 10 01 10 01 01 11",
    "ama1": "00 10 01 01 00 01 01 11",
    "ama2": "10 10 10 01 10 01 01 01",
    "ama3": "10 10 01 01 10 01 01 01",
    "ama4": "00 10 00 10 01 01 01 11",
    "ama5": "00 00 10 10 01 01 11 11",
    "maj": "10 10 10 01 10 01 01 01",  # identical to AMA2
}


def published_rows(name):
    return [(int(e[0]), int(e[1])) for e in PUBLISHED[name].split()]


def test_every_bundled_cell_is_listed():
    assert set(library.cell_names()) == set(PUBLISHED) | {"half"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_cell_blif_matches_the_published_table(name):
    cell = library.load_cell(name)
    assert cell.inputs == ["a", "b", "cin"] and cell.outputs == ["s", "cout"]
    for row, (s, c) in enumerate(published_rows(name)):
        a, b, cin = row >> 2 & 1, row >> 1 & 1, row & 1
        assert cell.evaluate({"a": a, "b": b, "cin": cin}) == [s, c], (name, row)
    assert library.cell_truth_table(name) == published_rows(name)
    assert library.CELLS[name] == published_rows(name)


def test_half_adder():
    cell = library.load_cell("half")
    assert cell.inputs == ["a", "b"] and cell.outputs == ["s", "cout"]
    assert [cell.evaluate_int(p) for p in range(4)] == [0b00, 0b01, 0b01, 0b10]
    with pytest.raises(AxnetError, match="half adder"):
        library.cell_truth_table("half")


def test_load_cell_returns_an_independent_copy():
    first = library.load_cell("ama1")
    first.nodes.clear()
    assert library.load_cell("ama1").nodes


def test_names_are_case_insensitive():
    assert library.cell_truth_table("AMA3") == published_rows("ama3")


def test_table_string_spec():
    assert library.cell_truth_table("00,10,10,01,10,01,01,11") == published_rows("exact")
    assert library.cell_truth_table(" 10 10 10 01 10 01 01 01 ") == published_rows("ama2")


def test_cell_blif_path_spec(tmp_path):
    path = tmp_path / "mine.blif"
    write_blif(library.load_cell("ama4"), path)
    assert library.cell_truth_table(str(path)) == published_rows("ama4")
    assert library.cell_truth_table(path) == published_rows("ama4")


def test_cell_blif_with_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "two.blif"
    write_blif(library.load_cell("half"), path)
    with pytest.raises(AxnetError, match="3 inputs .* and 2 outputs"):
        library.cell_truth_table(str(path))


@pytest.mark.parametrize("spec", ["ama9", "00,10,10", "00,10,10,01,10,01,01,12", "nofile.blif", ""])
def test_bad_spec_is_an_error_naming_it(spec):
    with pytest.raises(AxnetError) as info:
        library.cell_truth_table(spec)
    assert spec in str(info.value)


def test_cell_netlist_from_a_table_computes_that_table():
    spec = "01,10,00,11,10,01,01,00"  # an arbitrary function, not a bundled one
    cell = library.cell_netlist(spec)
    assert cell.inputs == ["a", "b", "cin"] and cell.outputs == ["s", "cout"]
    assert library.cell_truth_table(cell) == [(int(e[0]), int(e[1])) for e in spec.split(",")]


def test_cell_netlist_accepts_a_netlist_of_the_right_shape_only():
    wire = Netlist("w", ["x", "y", "z"], ["p", "q"], {"p": Node("p", ("x",), ("1",)), "q": Node("q", ("z",), ("1",))})
    assert library.cell_truth_table(wire) == [(r >> 2 & 1, r & 1) for r in range(8)]
    with pytest.raises(AxnetError):
        library.cell_netlist(library.load_cell("half"))


def test_describe_lists_name_equations_and_description():
    rows = library.describe()
    assert [r["name"] for r in rows] == library.cell_names()
    for r in rows:
        assert r["equations"] and r["description"] and "\n" not in r["description"]
    (ama2,) = library.describe("ama2")
    assert ama2["table"] == PUBLISHED["ama2"].replace(" ", ",")
    with pytest.raises(AxnetError, match="unknown cell 'nope'"):
        library.describe("nope")
