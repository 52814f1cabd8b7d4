"""PLA reader and writer, and the truth-table helpers (espresso covers, bit-parallel tables) they rest on."""
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyeda.parsing import pla as pyeda_pla

from circuits.errors import AxnetError
from circuits.generators import array_multiplier, eta1_adder, ripple_carry_adder
from circuits.netlist import Netlist, Node
from circuits.pla import parse_pla, read_pla, write_pla
from circuits.truthtable import netlist_from_truth_table, truth_table


def slow_table(netlist):
    return [netlist.evaluate_int(p) for p in range(2 ** len(netlist.inputs))]


# -- truth tables ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("netlist", [ripple_carry_adder(3), array_multiplier(2, 3), eta1_adder(3, 2)],
                         ids=["rca3", "mul2x3", "eta3"])
def test_bit_parallel_truth_table_matches_evaluate_int(netlist):
    assert truth_table(netlist) == slow_table(netlist)


def test_full_adder_table_becomes_a_three_input_two_output_netlist():
    # pattern order: row r has a = bit 0, b = bit 1, cin = bit 2
    rows = [((r & 1) ^ (r >> 1 & 1) ^ (r >> 2), int((r & 1) + (r >> 1 & 1) + (r >> 2) >= 2)) for r in range(8)]
    netlist = netlist_from_truth_table(["a", "b", "cin"], ["s", "cout"], rows, name="fa")
    assert netlist.inputs == ["a", "b", "cin"] and netlist.outputs == ["s", "cout"]
    assert [tuple((w >> k) & 1 for k in range(2)) for w in slow_table(netlist)] == rows
    assert len(netlist.nodes["cout"].cubes) == 3  # espresso finds the 3-cube majority cover, not 4 minterms
    assert len(netlist.nodes["s"].cubes) == 4


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 4).flatmap(lambda n: st.tuples(st.just(n), st.lists(
    st.integers(0, 7), min_size=2 ** n, max_size=2 ** n))))
def test_truth_table_netlist_computes_its_table(case):
    n, words = case
    netlist = netlist_from_truth_table([f"x{i}" for i in range(n)], ["f0", "f1", "f2"], words)
    assert slow_table(netlist) == words


def test_dont_cares_may_go_either_way_but_cares_hold():
    rows = [(1, "-"), ("-", 0), (0, 1), (1, "-")]
    netlist = netlist_from_truth_table(["a", "b"], ["y", "z"], rows)
    for r, want in enumerate(rows):
        got = netlist.evaluate_int(r)
        for k, v in enumerate(want):
            if v != "-":
                assert (got >> k) & 1 == v


def test_bad_truth_tables_are_refused():
    with pytest.raises(AxnetError, match="3 rows, expected"):
        netlist_from_truth_table(["a", "b"], ["y"], [0, 1, 1])
    with pytest.raises(AxnetError, match="does not fit"):
        netlist_from_truth_table(["a"], ["y"], [0, 2])


# -- reading --------------------------------------------------------------------------------------------------------

def test_reads_labels_comments_and_type_f():
    text = """# 2-input xor and and
.i 2
.o 2
.ilb a[0] a[1]
.ob x y
.p 3
10 10
01 10
11 01   # and
.e
"""
    netlist = parse_pla(text, source="x.pla")
    assert netlist.inputs == ["a[0]", "a[1]"] and netlist.outputs == ["x", "y"]
    assert slow_table(netlist) == [0b00, 0b01, 0b01, 0b10]


def test_default_labels_and_cubes_without_a_space():
    netlist = parse_pla(".i 3\n.o 1\n1-11\n.e\n")
    assert netlist.inputs == ["x[0]", "x[1]", "x[2]"] and netlist.outputs == ["y[0]"]
    assert slow_table(netlist) == [int(r & 1 and r >> 2 & 1) for r in range(8)]


def test_types_with_off_set_and_dont_cares():
    fd = parse_pla(".i 2\n.o 1\n.type fd\n11 1\n0- -\n.e\n")
    assert slow_table(fd) == [0, 0, 0, 1]  # don't cares read as 0
    fr = parse_pla(".i 2\n.o 1\n.type fr\n11 1\n00 0\n.e\n")
    assert slow_table(fr) == [0, 0, 0, 1]
    r = parse_pla(".i 2\n.o 2\n.type r\n11 0~\n00 ~0\n.e\n")  # function = complement of the off-set
    assert slow_table(r) == [0b01, 0b11, 0b11, 0b10]


def test_reader_agrees_with_pyeda_on_a_plain_file():
    text = ".i 3\n.o 2\n.ilb a b c\n.ob f g\n.type f\n1-0 10\n011 11\n--1 01\n.e\n"
    ours = parse_pla(text)
    parsed = pyeda_pla.parse(text)
    for pattern in range(8):
        bits = [pattern >> i & 1 for i in range(3)]
        want = 0
        for invec, outvec in parsed["cover"]:
            if all(c == 3 or c == 1 + b for c, b in zip(invec, bits)):  # pyeda: 1 = '0', 2 = '1', 3 = '-'
                want |= sum(o << k for k, o in enumerate(outvec) if o == 1)
        assert ours.evaluate_int(pattern) == want


BAD = [
    (".i 2\n.o 1\n111 1\n", 3, "has 3 input and 1 output columns"),
    (".i 2\n.o 1\n.type fr\n1- 1\n11 0\n", 4, "meets the off-set cube at line 5"),
    (".i 2\n.o 1\n.ilb a\n", 3, ".ilb lists 1 names"),
    (".o 1\n11 1\n", 2, "cube before .i and .o"),
    (".i 2\n.o 1\n.mv 4 0 2 2\n", 3, ".mv is not supported"),
    (".i 2\n.o 1\n.foo\n", 3, "unknown directive '.foo'"),
    (".i 2\n.o 1\n1x 1\n", 3, "only 0, 1 and -"),
    (".i 2\n.o 1\n11 x\n", 3, "only 0, 1, - and ~"),
    (".i 2\n.i 3\n", 2, ".i declared twice"),
    (".i two\n", 1, "one non-negative integer"),
    (".i 2\n.o 1\n.type q\n", 3, ".type must be one of"),
]


@pytest.mark.parametrize("text, line, message", BAD, ids=[b[2] for b in BAD])
def test_bad_pla_is_refused_naming_file_and_line(text, line, message):
    with pytest.raises(AxnetError) as info:
        parse_pla(text, source="bad.pla")
    assert str(info.value).startswith(f"bad.pla:{line}: ")
    assert message in str(info.value)


def test_missing_counts_empty_and_absent_files(tmp_path):
    with pytest.raises(AxnetError, match="missing .i or .o"):
        parse_pla("# nothing\n", source="n.pla")
    (tmp_path / "e.pla").write_text("")
    with pytest.raises(AxnetError, match="e.pla: empty file"):
        read_pla(tmp_path / "e.pla")
    with pytest.raises(AxnetError, match="no such file"):
        read_pla(tmp_path / "absent.pla")


# -- writing --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("netlist", [ripple_carry_adder(3), array_multiplier(3, 3), eta1_adder(4, 2)],
                         ids=["rca3", "mul3x3", "eta4"])
def test_write_then_read_gives_the_same_function(tmp_path, netlist):
    write_pla(netlist, tmp_path / "c.pla")
    again = read_pla(tmp_path / "c.pla")
    assert (again.inputs, again.outputs) == (netlist.inputs, netlist.outputs)
    assert truth_table(again) == truth_table(netlist)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.integers(0, 3), min_size=2 ** n, max_size=2 ** n)))
def test_random_functions_survive_a_pla_round_trip(tmp_path, words):
    n = (len(words) - 1).bit_length()
    netlist = netlist_from_truth_table([f"i{k}" for k in range(n)], ["o0", "o1"], words)
    write_pla(netlist, tmp_path / "r.pla")
    assert slow_table(read_pla(tmp_path / "r.pla")) == words


def test_constant_circuits_round_trip(tmp_path):
    netlist = Netlist("c", [], ["one", "zero"], {"one": Node("one", (), ("",)), "zero": Node("zero", (), ())})
    write_pla(netlist, tmp_path / "c.pla")
    assert read_pla(tmp_path / "c.pla").evaluate_int(0) == 0b01


def test_written_cover_is_minimised(tmp_path):
    write_pla(ripple_carry_adder(2), tmp_path / "a.pla")
    cubes = [line for line in (tmp_path / "a.pla").read_text().splitlines() if line and line[0] in "01-"]
    minterm_count = sum(bin(a + b).count("1") for a, b in itertools.product(range(4), range(4)))
    assert len(cubes) < minterm_count


@pytest.mark.parametrize("text, message", [
    (".i 30000000\n.o 1\n.e\n", ".i 30000000: at most 65536 columns"),
    (".i 2\n.o 99999999999999999999\n.e\n", "at most 65536 columns"),
    (".i ²\n.o 1\n.e\n", ".i needs one non-negative integer"),
])
def test_absurd_column_counts_are_refused_at_once(text, message):
    with pytest.raises(AxnetError, match=re.escape(message)):
        parse_pla(text, source="big.pla")


def test_wide_pla_without_cubes_reads_quickly():
    netlist = parse_pla(".i 5000\n.o 200\n.e\n")  # work follows the cubes, not inputs x outputs
    assert len(netlist.inputs) == 5000 and all(n.cubes == () for n in netlist.nodes.values())
