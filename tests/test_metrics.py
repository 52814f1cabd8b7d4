"""Error metrics: the streamed bit-domain reduction, the table path and a plain brute-force computation agree."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from circuits.errors import AxnetError
from circuits.generators import array_multiplier, loa_adder, ripple_carry_adder, truncated_adder
from circuits.netlist import Netlist, Node
from lutgen.lut import build_lut
from lutgen.metrics import METRIC_KEYS, error_metrics, stream_metrics
from lutgen.operands import Operand, group_operands, operands_from_widths


def brute_force(netlist, operands, reference, signed):
    """EvoApproxLib metrics by looping over every pattern with the plain evaluator."""
    n_out = len(netlist.outputs)

    def value(raw, width, as_signed):
        return raw - (1 << width) if as_signed and raw >> (width - 1) else raw

    errors, rels = [], []
    for p in range(1 << len(netlist.inputs)):
        vals = []
        for k, op in enumerate(operands):
            raw = sum(((p >> pos) & 1) << j for j, pos in enumerate(op.bits))
            carry = reference == "add" and k == 2
            vals.append(value(raw, op.width, signed and not carry))
        exact = {"add": lambda v: sum(v), "sub": lambda v: v[0] - v[1], "mul": lambda v: v[0] * v[1]}[reference](vals)
        approx = value(netlist.evaluate_int(p), n_out, signed or reference == "sub")
        errors.append(approx - exact)
        if exact != 0:
            rels.append(abs(approx - exact) / abs(exact))
    n = len(errors)
    return {"ep_percent": 100 * sum(e != 0 for e in errors) / n, "mae": sum(map(abs, errors)) / n,
            "wce": max(map(abs, errors)), "mse": sum(e * e for e in errors) / n, "bias": sum(errors) / n,
            "mre_percent": 100 * sum(rels) / len(rels) if rels else None,
            "wcre_percent": 100 * max(rels) if rels else None, "count": n}


def assert_metrics_equal(got, want):
    for key, expected in want.items():
        actual = got[key]
        if expected is None or isinstance(expected, int) and not isinstance(expected, bool):
            assert actual == expected, key
        else:
            assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), (key, actual, expected)


def random_cell(rows):
    """A full-adder cell (inputs a b cin, outputs s cout) from 8 (sum, cout) rows, row index = a*4 + b*2 + cin."""
    def cover(bit):
        cubes = tuple(f"{r >> 2 & 1}{r >> 1 & 1}{r & 1}" for r in range(8) if rows[r][bit])
        return cubes
    nodes = {"s": Node("s", ("a", "b", "cin"), cover(0)), "cout": Node("cout", ("a", "b", "cin"), cover(1))}
    return Netlist("cell", ["a", "b", "cin"], ["s", "cout"], nodes)


@st.composite
def circuits_with_operands(draw):
    """Random circuits: random-cell ripple adders, or random logic over two operands (plus maybe a carry-in)."""
    reference = draw(st.sampled_from(["add", "sub", "mul"]))
    if reference == "add" and draw(st.booleans()):
        width = draw(st.integers(1, 4))
        rows = draw(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=8, max_size=8))
        carry = draw(st.booleans())
        nl = ripple_carry_adder(width, random_cell(rows), draw(st.integers(0, width)), carry_in=carry)
        return nl, group_operands(nl.inputs), reference
    wa, wb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    carry = reference == "add" and draw(st.booleans())
    n_in = wa + wb + carry
    inputs = [f"i{k}" for k in range(n_in)]
    nets, nodes = list(inputs), {}
    for k in range(draw(st.integers(1, 10))):
        n_fan = draw(st.integers(0, 3))
        fanins = tuple(draw(st.lists(st.sampled_from(nets), min_size=n_fan, max_size=n_fan)))
        cubes = tuple(draw(st.lists(st.text("01-", min_size=n_fan, max_size=n_fan), max_size=4)))
        nodes[f"n{k}"] = Node(f"n{k}", fanins, cubes, draw(st.integers(0, 1)))
        nets.append(f"n{k}")
    outputs = draw(st.lists(st.sampled_from(nets), min_size=1, max_size=wa + wb + 1))
    nl = Netlist("rand", inputs, outputs, nodes)
    return nl, operands_from_widths(inputs, [wa, wb] + ([1] if carry else [])), reference


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(circuits_with_operands(), st.booleans(), st.sampled_from([1, 2, 64]))
def test_stream_table_and_brute_force_agree(case, signed, block_words):
    netlist, operands, reference = case
    want = brute_force(netlist, operands, reference, signed)
    streamed = stream_metrics(netlist, operands, reference, signed=signed, block_words=block_words)
    lut = build_lut(netlist, widths=[op.width for op in operands], signed=signed)
    tabled = error_metrics(lut, reference)
    assert_metrics_equal(streamed, want)
    assert_metrics_equal(tabled, want)
    assert streamed["normaliser"] == tabled["normaliser"] and not streamed["estimate"]
    assert set(METRIC_KEYS) <= set(streamed)


def test_interleaved_operand_bits_use_the_general_path():
    nl = loa_adder(3, 2)  # inputs a0 a1 a2 b0 b1 b2; read them as two operands of alternating bits
    operands = [Operand("x", (0, 2, 4)), Operand("y", (1, 3, 5))]
    assert_metrics_equal(stream_metrics(nl, operands, "add"), brute_force(nl, operands, "add", False))


def test_multi_block_adder_with_many_segments_matches_table():
    nl = ripple_carry_adder(8, random_cell([(1, 0), (1, 0), (1, 0), (0, 1), (1, 0), (0, 1), (0, 1), (0, 1)]), 4)
    for signed in (False, True):
        lut = build_lut(nl, signed=signed)
        for words in (4, 1 << 13):
            assert_metrics_equal(stream_metrics(nl, None, "add", signed=signed, block_words=words),
                                 {k: v for k, v in error_metrics(lut, "add").items() if k in METRIC_KEYS})


def test_normalisers_follow_evoapproxlib():
    assert stream_metrics(loa_adder(4, 2), None, "add")["normaliser"] == 2 ** 5
    assert stream_metrics(loa_adder(4, 2), None, "add", signed=True)["normaliser"] == 2 ** 4
    assert stream_metrics(array_multiplier(3, 3), None, "mul")["normaliser"] == 2 ** 6


def test_truncated_adder_known_values():
    # Dropping the low k bits of both operands: e = -(a_lo + b_lo); for k = 2, |e| averages 3 and peaks at 6.
    m = stream_metrics(truncated_adder(4, 2), None, "add")
    assert m["mae"] == 3.0 and m["wce"] == 6 and m["bias"] == -3.0 and m["ep_percent"] == 100 * 15 / 16


def test_random_estimate_is_close_and_marked():
    nl = loa_adder(9, 5)
    exact = stream_metrics(nl, None, "add")
    est = stream_metrics(nl, None, "add", samples=40_000, seed=1)
    assert est["estimate"] is True and est["samples"] == 40_000 == est["count"]
    p = exact["ep_percent"] / 100
    assert abs(est["ep_percent"] / 100 - p) < 5 * math.sqrt(p * (1 - p) / 40_000)
    assert abs(est["mae"] - exact["mae"]) < 0.05 * exact["mae"]
    assert abs(est["mre_percent"] - exact["mre_percent"]) < 0.1 * exact["mre_percent"]
    assert est["wce"] <= exact["wce"]
    assert stream_metrics(nl, None, "add", samples=1000, seed=5) == stream_metrics(nl, None, "add", samples=1000,
                                                                                       seed=5)


def test_random_estimate_of_a_wide_adder():
    # LOA's error depends only on the low bits, so a 24-bit LOA has the error distribution of a 6-bit one;
    # MRE differs (larger exact sums), so only the absolute metrics carry over.
    narrow = stream_metrics(loa_adder(6, 4), None, "add")
    wide = stream_metrics(loa_adder(24, 4), None, "add", samples=30_000, seed=2)
    p = narrow["ep_percent"] / 100
    assert abs(wide["ep_percent"] / 100 - p) < 5 * math.sqrt(p * (1 - p) / 30_000)
    assert abs(wide["mae"] - narrow["mae"]) < 0.05 * narrow["mae"]
    assert wide["wce"] == narrow["wce"] and wide["normaliser"] == 2 ** 25
    assert wide["mre_percent"] < narrow["mre_percent"]


def test_sum_of_squares_does_not_overflow():
    # A 16-bit "multiplier" that outputs a constant 2^31 - 1 everywhere has e^2 sums far beyond 2^63.
    inputs = [f"a[{i}]" for i in range(8)] + [f"b[{i}]" for i in range(8)]
    nodes = {"one": Node("one", (), ("",), 1)}
    nl = Netlist("const", inputs, ["one"] * 31, nodes)
    m = stream_metrics(nl, None, "mul")
    a = np.arange(256, dtype=object)
    e = [(2 ** 31 - 1) - int(x) * int(y) for x in a for y in a]
    assert m["mse"] == sum(v * v for v in e) / len(e)
    assert m["bias"] == sum(e) / len(e)


def test_progress_reports_every_pattern():
    done = []
    stream_metrics(loa_adder(6, 2), None, "add", progress=done.append, block_words=4)
    assert sum(done) == 1 << 12


def test_bad_reference_and_operands_are_axnet_errors():
    nl = loa_adder(4, 2)
    with pytest.raises(AxnetError, match="--reference 'div'"):
        stream_metrics(nl, None, "div")
    with pytest.raises(AxnetError, match="operands"):
        stream_metrics(nl, operands_from_widths(nl.inputs, [4, 2, 2]), "add")
    with pytest.raises(AxnetError, match="exactly two operands"):
        error_metrics(build_lut(ripple_carry_adder(2, carry_in=True)), "mul")
    with pytest.raises(AxnetError, match="samples"):
        stream_metrics(nl, None, "add", samples=0)
    with pytest.raises(AxnetError, match="--samples"):
        stream_metrics(loa_adder(32, 4), None, "add")


# ---------------------------------------------------------------------------------------------------------------
# The C reduction (lutgen.native_metrics) against the numpy one, and overflow exclusion
# ---------------------------------------------------------------------------------------------------------------

def _native_available():
    from simulator import engine
    return engine.compile_native(ripple_carry_adder(2)) is not None


needs_native = pytest.mark.skipif(not _native_available(),
                                  reason="compiled engine unavailable (no compiler or AXNET_NATIVE=0)")


def _uses_c_reduction(netlist, reference, signed, overflow="include"):
    from lutgen import native_metrics
    from lutgen.bitslice_metrics import run_reciprocals
    from lutgen.metrics import overflow_fit_bits
    ops = group_operands(netlist.inputs)
    carry = len(ops) == 3
    segments = run_reciprocals(ops, reference, signed, carry, len(netlist.inputs))
    fit = overflow_fit_bits(overflow, reference, signed, len(netlist.outputs))
    return native_metrics.plan(netlist, ops, reference, signed, carry, segments, fit, "native") is not None


@needs_native
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["add", "sub", "mul"]), st.integers(1, 6), st.integers(1, 6), st.booleans(),
       st.sampled_from([1, 4, 64, 8192]), st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=8,
                                                    max_size=8))
def test_c_reduction_is_bit_identical_to_numpy(reference, wa, wb, signed, block_words, rows):
    """Multipliers, and ripple adders of random cells read as adders or subtractors: every key, floats included,
    must be equal, not just close."""
    if reference == "mul":
        nl = array_multiplier(wa, wb)
    else:
        nl = ripple_carry_adder(wa, random_cell(rows), wa // 2)
    assert _uses_c_reduction(nl, reference, signed)
    got = stream_metrics(nl, None, reference, signed=signed, block_words=block_words, backend="native")
    want = stream_metrics(nl, None, reference, signed=signed, block_words=block_words, backend="numpy")
    assert got == want


@needs_native
def test_c_reduction_of_twelve_bit_adders_matches_numpy_exactly():
    for nl in (ripple_carry_adder(12, "ama2", 6), loa_adder(12, 6), ripple_carry_adder(10, "ama1", 7,
                                                                                        carry_in=True)):
        for signed in (False, True):
            assert _uses_c_reduction(nl, "add", signed)
            assert stream_metrics(nl, None, "add", signed=signed, backend="native") == \
                stream_metrics(nl, None, "add", signed=signed, backend="numpy")


def wraparound_adder(width, approx_bits=0):
    """An n-bit signed adder with no carry out (add8s-style): the low `width` outputs of a ripple adder."""
    full = ripple_carry_adder(width, "ama2", approx_bits) if approx_bits else ripple_carry_adder(width)
    return Netlist(f"wrap{width}", full.inputs, full.outputs[:width], full.nodes)


def brute_force_excluding_overflow(netlist, width):
    """Metrics over the pairs whose exact signed sum fits `width` bits, by the plain evaluator."""
    half = 1 << (width - 1)
    errors, rels = [], []
    for p in range(1 << (2 * width)):
        a, b = p % (1 << width), p >> width
        a, b = a - (a >= half) * (1 << width), b - (b >= half) * (1 << width)
        exact = a + b
        if not -half <= exact < half:
            continue
        raw = netlist.evaluate_int(p)
        approx = raw - (1 << width) if raw >= half else raw
        errors.append(approx - exact)
        if exact:
            rels.append(abs(approx - exact) / abs(exact))
    n = len(errors)
    return {"ep_percent": 100 * sum(e != 0 for e in errors) / n, "mae": sum(map(abs, errors)) / n,
            "wce": max(map(abs, errors)), "mse": sum(e * e for e in errors) / n, "bias": sum(errors) / n,
            "mre_percent": 100 * sum(rels) / len(rels), "wcre_percent": 100 * max(rels), "count": n}


@pytest.mark.parametrize("approx_bits", [0, 3])
def test_overflow_exclusion_counts_only_fitting_pairs(approx_bits):
    nl = wraparound_adder(6, approx_bits)
    want = brute_force_excluding_overflow(nl, 6)
    assert want["count"] == 3 * 2 ** 10  # 3/4 of the 2^12 signed pairs do not overflow
    lut = build_lut(nl, signed=True)
    backends = ("native", "numpy") if _native_available() else ("numpy", "numpy")
    results = [stream_metrics(nl, None, "add", signed=True, overflow="exclude", backend=b, block_words=w)
               for w in (2, 8192) for b in backends]
    assert results[0] == results[1] and results[2] == results[3]  # same blocks: bit-identical
    results.append(stream_metrics(nl, None, "add", signed=True, overflow="exclude", samples=3000, seed=1))
    results.append(error_metrics(lut, "add", overflow="exclude"))
    for got in results:
        assert got["overflow"] == "exclude" and got["normaliser"] == 2 ** 5
        if not got["estimate"]:
            assert_metrics_equal(got, want)
    if approx_bits == 0:
        assert results[0]["ep_percent"] == 0.0  # wrap-around is the only error of an exact wrap-around adder
        assert stream_metrics(nl, None, "add", signed=True)["ep_percent"] == 25.0  # overflow included
    assert results[-2]["count"] < 3000


def test_overflow_option_is_checked():
    nl = wraparound_adder(4)
    with pytest.raises(AxnetError, match="--overflow 'maybe'"):
        stream_metrics(nl, None, "add", signed=True, overflow="maybe")
    with pytest.raises(AxnetError, match="signed adders"):
        stream_metrics(nl, None, "add", overflow="exclude")
    with pytest.raises(AxnetError, match="signed adders"):
        error_metrics(build_lut(array_multiplier(2, 2), signed=True), "mul", overflow="exclude")
    assert stream_metrics(nl, None, "add", signed=True)["overflow"] == "include"


def test_cli_metrics_overflow_option(tmp_path):
    import json

    from click.testing import CliRunner

    from circuits.blif import write_blif
    from cli import main
    path = tmp_path / "wrap6.blif"
    write_blif(wraparound_adder(6, 3), path)
    runner = CliRunner()
    r = runner.invoke(main, ["metrics", str(path), "--signed", "--overflow", "exclude", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["metrics"]
    assert m["overflow"] == "exclude" and m["count"] == 3 * 2 ** 10 and m["normaliser"] == 2 ** 5
    r = runner.invoke(main, ["metrics", str(path), "--signed"])
    assert r.exit_code == 0 and "include" in r.output and "4096" in r.output
    r = runner.invoke(main, ["metrics", str(path), "--overflow", "exclude"])
    assert r.exit_code == 2 and "signed adders" in r.output and "Traceback" not in r.output
