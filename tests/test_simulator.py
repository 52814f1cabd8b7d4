"""Bit-parallel simulation against the plain per-pattern evaluator of the netlist model."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from circuits.errors import AxnetError
from circuits.generators import array_multiplier, ripple_carry_adder
from circuits.netlist import Netlist, Node
from simulator.exhaustive import (MAX_TABLE_INPUTS, compile_netlist, cover_truth_table, iter_output_planes,
                                  map_blocks, planes_to_words, simulate_table)
from simulator.streaming import simulate_random


@st.composite
def random_netlists(draw, max_inputs=10, max_nodes=14):
    """Random DAGs of random covers: on-set and off-set covers, constants, buffers, duplicate fanins, dead nodes."""
    n_in = draw(st.integers(1, max_inputs))
    inputs = [f"i{k}" for k in range(n_in)]
    nets = list(inputs)
    nodes = {}
    for k in range(draw(st.integers(0, max_nodes))):
        name = f"n{k}"
        kind = draw(st.sampled_from(["cover", "cover", "cover", "const0", "const1", "wide"]))
        if kind == "const0":
            nodes[name] = Node(name, (), (), 1)
        elif kind == "const1":
            nodes[name] = Node(name, (), ("",), 1)
        else:
            n_fan = draw(st.integers(1, 4)) if kind == "cover" else draw(st.integers(5, 12))
            fanins = tuple(draw(st.lists(st.sampled_from(nets), min_size=n_fan, max_size=n_fan)))
            cubes = tuple(draw(st.lists(st.text("01-", min_size=n_fan, max_size=n_fan), min_size=0, max_size=5)))
            nodes[name] = Node(name, fanins, cubes, draw(st.integers(0, 1)))
        nets.append(name)
    outputs = draw(st.lists(st.sampled_from(nets), min_size=1, max_size=7))
    return Netlist("random", inputs, outputs, nodes)


def reference_table(netlist):
    return np.array([netlist.evaluate_int(p) for p in range(1 << len(netlist.inputs))], dtype=np.int64)


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_netlists(), st.sampled_from([1, 2, 4, 1 << 12]), st.sampled_from([1, 2]))
def test_bit_parallel_table_equals_plain_evaluation(netlist, block_words, threads):
    table = simulate_table(netlist, block_words=block_words, threads=threads)
    assert table.dtype == np.int64 and table.shape == (1 << len(netlist.inputs),)
    np.testing.assert_array_equal(table, reference_table(netlist))


@settings(max_examples=25, deadline=None)
@given(random_netlists(max_inputs=11, max_nodes=10), st.sampled_from([1, 2, 8]))
def test_output_planes_in_small_blocks_match_table(netlist, block_words):
    table = simulate_table(netlist)
    n = len(netlist.inputs)
    seen = 0
    for start, planes in iter_output_planes(netlist, block_words=block_words, threads=2):
        assert planes.shape[0] == len(netlist.outputs) and planes.dtype == np.uint64
        words = planes_to_words(list(planes))
        count = min(words.size, (1 << n) - start)
        np.testing.assert_array_equal(words[:count], table[start:start + count])
        assert start == seen
        seen += count
    assert seen == 1 << n


def _cover(fanins, cubes, polarity=1):
    return Node("y", tuple(fanins), tuple(cubes), polarity)


def test_every_function_of_three_inputs_compiles_to_its_truth_table():
    # All 256 functions, each given as a cover of its minterms, through the recipe compiler.
    for tt in range(256):
        cubes = tuple("".join(str((r >> j) & 1) for j in range(3)) for r in range(8) if (tt >> r) & 1)
        node = _cover(("a", "b", "c"), cubes)
        assert cover_truth_table(node) == tt
        nl = Netlist("f", ["a", "b", "c"], ["y"], {"y": node})
        np.testing.assert_array_equal(simulate_table(nl), [(tt >> r) & 1 for r in range(8)])


def test_common_gates_cost_at_most_two_calls_and_buffers_are_free():
    gates = {"and": ("11",), "or": ("1-", "-1"), "xor": ("10", "01"), "nand": ("0-", "-0")}
    for cubes in gates.values():
        nl = Netlist("g", ["a", "b"], ["y"], {"y": _cover(("a", "b"), cubes)})
        assert len(compile_netlist(nl).steps) <= 2
    buf = Netlist("b", ["a"], ["y"], {"y": _cover(("a",), ("1",))})
    assert compile_netlist(buf).steps == []
    maj = Netlist("m", ["a", "b", "c"], ["y"], {"y": _cover(("a", "b", "c"), ("11-", "1-1", "-11"))})
    assert len(compile_netlist(maj).steps) <= 4


def test_dead_logic_is_not_simulated():
    nodes = {"y": _cover(("a", "b"), ("11",)), "dead": _cover(("a", "b"), ("10", "01"))}
    nl = Netlist("d", ["a", "b"], ["y"], nodes)
    assert compile_netlist(nl).gate_count == 1


def test_adders_and_multiplier_from_generators():
    for nl in (ripple_carry_adder(4, carry_in=True), array_multiplier(3, 4)):
        np.testing.assert_array_equal(simulate_table(nl), reference_table(nl))
    add = simulate_table(ripple_carry_adder(7))
    p = np.arange(1 << 14)
    np.testing.assert_array_equal(add, (p & 127) + (p >> 7))


def test_wide_circuit_refused_with_pointer_to_streaming():
    n = MAX_TABLE_INPUTS + 1
    nl = Netlist("wide", [f"x{i}" for i in range(n)], ["x0"], {})
    with pytest.raises(AxnetError, match="streaming"):
        simulate_table(nl)


def test_undriven_net_is_an_axnet_error():
    nl = Netlist("u", ["a"], ["y"], {"y": _cover(("a", "ghost"), ("11",))})
    with pytest.raises(AxnetError, match="ghost"):
        compile_netlist(nl)


def test_progress_counts_every_pattern_once():
    nl = ripple_carry_adder(6)
    done = []
    simulate_table(nl, progress=done.append, block_words=4)
    assert sum(done) == 1 << 12


def test_map_blocks_stops_early_when_asked():
    nl = ripple_carry_adder(8)
    starts = list(map_blocks(nl, lambda start, planes: start, block_words=8, stop_word=16))
    assert starts == [0, 512]


@settings(max_examples=20, deadline=None)
@given(random_netlists(max_inputs=9, max_nodes=10), st.integers(1, 300), st.integers(0, 2 ** 32))
def test_random_patterns_match_plain_evaluation(netlist, samples, seed):
    patterns, outputs = simulate_random(netlist, samples, seed)
    assert len(patterns) == samples == len(outputs)
    assert [int(o) for o in outputs] == [netlist.evaluate_int(int(p)) for p in patterns]


def test_random_patterns_are_reproducible_and_cover_wide_inputs():
    nl = ripple_carry_adder(40)  # 80 inputs: patterns are Python ints
    p1, o1 = simulate_random(nl, 100, seed=3)
    p2, o2 = simulate_random(nl, 100, seed=3)
    assert list(p1) == list(p2) and list(o1) == list(o2)
    mask = (1 << 40) - 1
    assert [int(o) for o in o1] == [(int(p) & mask) + (int(p) >> 40) for p in p1]
    assert max(int(p) for p in p1) > 1 << 70


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 63), st.integers(1, 4), st.integers(0, 2 ** 32))
def test_planes_to_words_matches_bit_by_bit_unpacking(n_planes, words, seed):
    rng = np.random.default_rng(seed)
    planes = [rng.integers(0, 2 ** 63, words, dtype=np.int64).view(np.uint64) for _ in range(n_planes)]
    want = [sum(((int(p[t // 64]) >> (t % 64)) & 1) << k for k, p in enumerate(planes)) for t in range(64 * words)]
    assert planes_to_words(planes).tolist() == want
    small = planes_to_words(planes, 70, dtype=None)
    assert small.dtype.kind == "u" and small.tolist() == want[:70]
