"""Adder and multiplier generators against plain Python definitions of what each circuit computes."""
import random

import pytest

from circuits import library
from circuits.blif import read_blif, write_blif
from circuits.errors import AxnetError
from circuits.generators import (array_multiplier, eta1_adder, loa_adder, ripple_carry_adder,
                                 signed_array_multiplier, subtractor, truncated_adder)
from circuits.truthtable import truth_table

# Cell tables from REFERENCE.md section 6 (rows A B Cin = 000..111, entries sum then carry), typed in by hand.
EXACT = [(0, 0), (1, 0), (1, 0), (0, 1), (1, 0), (0, 1), (0, 1), (1, 1)]
AMA2 = [(1, 0), (1, 0), (1, 0), (0, 1), (1, 0), (0, 1), (0, 1), (0, 1)]


def ripple_reference(a, b, width, table, k, cin=0):
    """Ripple the 8-row cell table through the low k positions and the exact table above."""
    total, carry = 0, cin
    for i in range(width):
        row = ((a >> i & 1) << 2) | ((b >> i & 1) << 1) | carry
        s, carry = (table if i < k else EXACT)[row]
        total |= s << i
    return total | carry << width


def loa_reference(a, b, width, l, carry_variant="and"):
    """LOA from its definition: low sum bits are a | b; carry into the exact high part is a_{l-1} & b_{l-1}."""
    mask = (1 << l) - 1
    low = (a | b) & mask
    carry = (a >> (l - 1)) & (b >> (l - 1)) & 1 if l and carry_variant == "and" else 0
    return low | (((a >> l) + (b >> l) + carry) << l)


def eta1_reference(a, b, width, l):
    """ETA-I from its definition: scan the low part from its top bit down, XOR until both bits are 1, then all 1."""
    low = 0
    for i in reversed(range(l)):
        x, y = a >> i & 1, b >> i & 1
        if x and y:
            low |= (1 << (i + 1)) - 1
            break
        low |= (x ^ y) << i
    return low | (((a >> l) + (b >> l)) << l)


def adder_words(netlist, width):
    """{(a, b): output word} over every operand pair, via the bit-parallel table."""
    table = truth_table(netlist)
    return {(a, b): table[a + (b << width)] for a in range(1 << width) for b in range(1 << width)}


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_exact_adder_is_integer_addition_with_the_slow_evaluator(width):
    netlist = ripple_carry_adder(width)
    assert netlist.inputs == [f"a[{i}]" for i in range(width)] + [f"b[{i}]" for i in range(width)]
    assert netlist.outputs == [f"s[{i}]" for i in range(width + 1)]
    for a in range(1 << width):
        for b in range(1 << width):
            assert netlist.evaluate_int(a + (b << width)) == a + b


@pytest.mark.parametrize("width", [5, 8])
def test_exact_adder_is_integer_addition_exhaustively(width):
    words = adder_words(ripple_carry_adder(width), width)
    assert all(v == a + b for (a, b), v in words.items())


def test_carry_in_is_the_last_input():
    width = 4
    netlist = ripple_carry_adder(width, carry_in=True)
    assert netlist.inputs[-1] == "cin"
    table = truth_table(netlist)
    for a in range(16):
        for b in range(16):
            for c in (0, 1):
                assert table[a + (b << width) + (c << 2 * width)] == a + b + c


@pytest.mark.parametrize("width", [16, 32])
def test_wide_exact_adders_on_random_samples(width):
    netlist = ripple_carry_adder(width)
    assert len(netlist.inputs) == 2 * width and len(netlist.outputs) == width + 1
    assert netlist.depth() == width  # one carry node per bit on the critical path
    rng = random.Random(width)
    for _ in range(25):
        a, b = rng.getrandbits(width), rng.getrandbits(width)
        assert netlist.evaluate_int(a + (b << width)) == a + b


@pytest.mark.parametrize("cell", ["ama1", "ama2", "ama3", "ama4", "ama5", "maj", "exact"])
def test_approximate_cells_ripple_like_their_tables(cell):
    table = library.cell_truth_table(cell)
    for width in (3, 5):
        for k in range(width + 1):
            words = adder_words(ripple_carry_adder(width, cell=cell, approx_bits=k), width)
            assert all(v == ripple_reference(a, b, width, table, k) for (a, b), v in words.items()), (width, k)


def test_maj_cell_matches_the_hand_typed_ama2_table():
    width, k = 4, 3
    words = adder_words(ripple_carry_adder(width, cell="maj", approx_bits=k), width)
    assert all(v == ripple_reference(a, b, width, AMA2, k) for (a, b), v in words.items())
    assert words[0, 0] == 0b0111  # AMA2 gives sum 1 for 0 + 0 + 0


def test_approximate_cells_with_carry_in():
    width, k = 4, 2
    table = library.cell_truth_table("ama3")
    out = truth_table(ripple_carry_adder(width, cell="ama3", approx_bits=k, carry_in=True))
    for a in range(16):
        for b in range(16):
            for c in (0, 1):
                assert out[a + (b << width) + (c << 2 * width)] == ripple_reference(a, b, width, table, k, c)


def test_cell_given_as_table_string_and_as_blif_path(tmp_path):
    spec = "01,10,00,11,10,01,01,00"  # an arbitrary made-up cell
    table = [(int(e[0]), int(e[1])) for e in spec.split(",")]
    words = adder_words(ripple_carry_adder(4, cell=spec, approx_bits=4), 4)
    assert all(v == ripple_reference(a, b, 4, table, 4) for (a, b), v in words.items())
    path = tmp_path / "cell.blif"
    write_blif(library.cell_netlist(spec), path)
    assert adder_words(ripple_carry_adder(4, cell=str(path), approx_bits=4), 4) == words


def test_model_names_are_writable_whatever_the_cell_spec(tmp_path):
    specs = ["AMA2", "00 10 10 01 10 01 01 11", library.cell_truth_table("ama1"), library.load_cell("ama3")]
    for k, spec in enumerate(specs):
        netlist = ripple_carry_adder(3, cell=spec, approx_bits=2)
        write_blif(netlist, tmp_path / f"{k}.blif")
        assert read_blif(tmp_path / f"{k}.blif").name == netlist.name
    assert ripple_carry_adder(3, cell="AMA2", approx_bits=2).name == "rca3_ama2_k2"


def test_wide_approximate_adder_on_random_samples():
    width, k = 32, 20
    table = library.cell_truth_table("ama1")
    netlist = ripple_carry_adder(width, cell="ama1", approx_bits=k)
    rng = random.Random(7)
    for _ in range(15):
        a, b = rng.getrandbits(width), rng.getrandbits(width)
        assert netlist.evaluate_int(a + (b << width)) == ripple_reference(a, b, width, table, k)


@pytest.mark.parametrize("variant", ["and", "zero"])
def test_loa_matches_its_definition(variant):
    for width in (4, 6):
        for l in range(width + 1):
            words = adder_words(loa_adder(width, l, carry_variant=variant), width)
            assert all(v == loa_reference(a, b, width, l, variant) for (a, b), v in words.items()), (width, l)


def test_eta1_matches_its_definition():
    for width in (4, 6):
        for l in range(width + 1):
            words = adder_words(eta1_adder(width, l), width)
            assert all(v == eta1_reference(a, b, width, l) for (a, b), v in words.items()), (width, l)


def test_truncated_adder_zeroes_the_low_bits_and_drops_their_carry():
    width = 5
    for l in range(width + 1):
        words = adder_words(truncated_adder(width, l), width)
        assert all(v == ((a >> l) + (b >> l)) << l for (a, b), v in words.items())


def test_subtractor_gives_a_twos_complement_difference():
    for width in (1, 4):
        words = adder_words(subtractor(width), width)
        assert all(v == (a - b) % (1 << (width + 1)) for (a, b), v in words.items())


@pytest.mark.parametrize("wa, wb", [(1, 1), (1, 3), (3, 1), (2, 5), (4, 4), (8, 8)])
def test_array_multiplier_is_exact(wa, wb):
    netlist = array_multiplier(wa, wb)
    assert netlist.inputs == [f"a[{i}]" for i in range(wa)] + [f"b[{i}]" for i in range(wb)]
    assert netlist.outputs == [f"p[{k}]" for k in range(wa + wb)]
    table = truth_table(netlist)
    assert all(table[a + (b << wa)] == a * b for a in range(1 << wa) for b in range(1 << wb))


def test_wide_multiplier_on_random_samples():
    netlist = array_multiplier(12, 10)
    rng = random.Random(3)
    for _ in range(10):
        a, b = rng.getrandbits(12), rng.getrandbits(10)
        assert netlist.evaluate_int(a + (b << 12)) == a * b


def test_generated_adder_survives_blif_round_trip(tmp_path):
    netlist = ripple_carry_adder(6, cell="ama4", approx_bits=3)
    write_blif(netlist, tmp_path / "a.blif")
    again = read_blif(tmp_path / "a.blif")
    assert again.inputs == netlist.inputs and again.outputs == netlist.outputs
    assert truth_table(again) == truth_table(netlist)


@pytest.mark.parametrize("call, message", [
    (lambda: ripple_carry_adder(0), "width must be a positive integer"),
    (lambda: ripple_carry_adder(4, approx_bits=5), "approx_bits must be an integer in 0..4"),
    (lambda: ripple_carry_adder(4, cell="nope", approx_bits=2), "cell 'nope'"),
    (lambda: ripple_carry_adder(4, cell="half", approx_bits=2), "half adder"),
    (lambda: loa_adder(4, 2, carry_variant="or"), "carry_variant"),
    (lambda: array_multiplier(3, 0), "width_b"),
])
def test_bad_parameters_are_axnet_errors(call, message):
    with pytest.raises(AxnetError, match=message):
        call()


def test_an_unknown_cell_is_refused_even_with_no_approximate_bits():
    with pytest.raises(AxnetError, match="nosuch"):
        ripple_carry_adder(8, cell="nosuch", approx_bits=0)


@pytest.mark.parametrize("wa, wb", [(2, 2), (3, 5), (5, 3), (4, 4), (2, 7)])
def test_signed_array_multiplier_is_the_twos_complement_product(wa, wb):
    def signed(value, bits):
        return value - (1 << bits) if value >> (bits - 1) else value
    net = signed_array_multiplier(wa, wb)
    assert net.inputs == [f"a[{j}]" for j in range(wa)] + [f"b[{i}]" for i in range(wb)]
    assert net.outputs == [f"p[{k}]" for k in range(wa + wb)]
    for a in range(1 << wa):
        for b in range(1 << wb):
            assert signed(net.evaluate_int(a + (b << wa)), wa + wb) == signed(a, wa) * signed(b, wb), (a, b)


def test_signed_array_multiplier_needs_a_magnitude_bit():
    with pytest.raises(AxnetError, match="at least 2 bits"):
        signed_array_multiplier(1, 4)
