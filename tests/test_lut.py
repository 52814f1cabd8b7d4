"""Forward LUTs: axis order, operand grouping, signed reading and the size limit, against per-pattern evaluation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from circuits.errors import AxnetError
from circuits.generators import array_multiplier, loa_adder, ripple_carry_adder
from circuits.netlist import Netlist, Node
from lutgen.lut import build_lut, pattern_grid, pattern_values, reshape_table, transpose_blocked
from lutgen.operands import group_operands


def evaluate_word(netlist, inputs):
    """Output word by the slow evaluator, for input values given as {input name: 0/1}."""
    return sum(v << k for k, v in enumerate(netlist.evaluate(inputs)))


def test_adder_lut_axes_follow_operand_order():
    """table[a, b] is the circuit's output for operand values a and b (pattern a + (b << wa))."""
    nl = loa_adder(4, 2)
    lut = build_lut(nl)
    assert lut.operands == [("a", 4), ("b", 4)] and lut.table.shape == (16, 16) and lut.table.dtype == np.int64
    for a in range(16):
        for b in range(16):
            assert lut.table[a, b] == nl.evaluate_int(a + (b << 4))
    assert lut.outputs == nl.outputs and lut.circuit == nl.name and not lut.signed


def test_carry_in_is_a_third_axis():
    nl = ripple_carry_adder(3, cell="ama1", approx_bits=2, carry_in=True)
    lut = build_lut(nl)
    assert lut.operands == [("a", 3), ("b", 3), ("cin", 1)]
    for a, b, c in [(0, 0, 1), (5, 3, 0), (7, 7, 1), (2, 6, 1)]:
        assert lut.table[a, b, c] == nl.evaluate_int(a + (b << 3) + (c << 6))


def test_interleaved_inputs_are_grouped_by_name():
    """Inputs declared b[0] a[0] b[1] a[1] ... still give table[a, b]; axis order is order of first appearance."""
    base = array_multiplier(3, 3)
    order = [n for j in range(3) for n in (f"b[{j}]", f"a[{j}]")]
    nl = Netlist(base.name, order, base.outputs, base.nodes)
    lut = build_lut(nl)
    assert lut.names == ["b", "a"]
    for a in range(8):
        for b in range(8):
            bits = {f"a[{j}]": (a >> j) & 1 for j in range(3)} | {f"b[{j}]": (b >> j) & 1 for j in range(3)}
            assert lut.table[b, a] == evaluate_word(nl, bits) == a * b


def test_widths_group_by_position():
    nl = ripple_carry_adder(4)
    lut = build_lut(nl, widths=[4, 4])
    assert np.array_equal(lut.table, np.add.outer(np.arange(16), np.arange(16)))
    with pytest.raises(AxnetError, match="--operands 4,3 adds up to 7"):
        build_lut(nl, widths=[4, 3])


def signed_multiplier(width):
    """A width x width two's-complement multiplier with a 2*width-bit product, from its truth table."""
    from circuits.truthtable import netlist_from_truth_table

    v = pattern_values(width, True)
    mask = (1 << 2 * width) - 1
    rows = [int(v[p & ((1 << width) - 1)] * v[p >> width]) & mask for p in range(1 << 2 * width)]
    inputs = [f"a[{i}]" for i in range(width)] + [f"b[{i}]" for i in range(width)]
    return netlist_from_truth_table(inputs, [f"p[{k}]" for k in range(2 * width)], rows, name=f"smul{width}")


def test_signed_lut_holds_signed_values_on_raw_pattern_axes():
    """A signed 3x3 multiplier read with signed=True gives table[pattern(x), pattern(y)] = x * y."""
    nl = signed_multiplier(3)
    lut = build_lut(nl, signed=True)
    v = pattern_values(3, True)
    assert lut.signed and np.array_equal(lut.table, np.multiply.outer(v, v))
    assert lut.table[7, 4] == (-1) * (-4)  # raw pattern 7 is -1, pattern 4 is -4
    unsigned = build_lut(nl)
    assert np.array_equal(unsigned.table, np.multiply.outer(v, v) % 64)


def test_too_large_a_table_points_to_streaming():
    inputs = [f"x[{i}]" for i in range(27)]
    nl = Netlist("wide", inputs, ["y"], {"y": Node("y", ("x[0]",), ("1",), 1)})
    with pytest.raises(AxnetError, match="axnet metrics"):
        build_lut(nl)


@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 999))
def test_reshape_fast_path_matches_gather(widths, seed):
    """The reshape+transpose path for consecutive operands equals the general index-grid gather."""
    inputs = [f"i{k}" for k in range(sum(widths))]
    ops = group_operands(inputs, widths)
    flat = np.random.default_rng(seed).integers(0, 1 << 20, size=1 << sum(widths))
    assert np.array_equal(reshape_table(flat, ops), flat[pattern_grid(ops)])


@settings(max_examples=20, deadline=None)
@given(perm_seed=st.integers(0, 999))
def test_any_input_order_matches_the_slow_evaluator(perm_seed):
    base = array_multiplier(2, 3)
    rng = np.random.default_rng(perm_seed)
    order = list(rng.permutation(base.inputs))
    nl = Netlist(base.name, order, base.outputs, base.nodes)
    lut = build_lut(nl)
    ia, ib = lut.names.index("a"), lut.names.index("b")
    for a in range(4):
        for b in range(8):
            idx = [0, 0]
            idx[ia], idx[ib] = a, b
            assert lut.table[tuple(idx)] == a * b


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 200), cols=st.integers(1, 200), block=st.integers(1, 70))
def test_blocked_transpose_equals_numpy(rows, cols, block):
    m = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    got = transpose_blocked(m, block)
    assert got.flags.c_contiguous and np.array_equal(got, m.T)


def test_large_two_operand_reshape_uses_the_blocked_path_correctly():
    ops = group_operands([f"i{k}" for k in range(18)], [10, 8])
    flat = np.random.default_rng(1).integers(0, 1 << 30, size=1 << 18)
    assert np.array_equal(reshape_table(flat, ops), flat[pattern_grid(ops)])
