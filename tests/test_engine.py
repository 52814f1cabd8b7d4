"""The compiled netlist engine, its numpy twin and its torch twin against the plain per-pattern evaluator."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from circuits import generators, library
from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node
from simulator import engine, native, torch_engine
from simulator.exhaustive import map_blocks, simulate_table
from simulator.program import compile_netlist
from simulator.streaming import simulate_random
from test_simulator import random_netlists

NATIVE = engine.compile_native(generators.ripple_carry_adder(2)) is not None  # False: no compiler, AXNET_NATIVE=0
BACKENDS = ["native", "numpy", "torch"] if NATIVE else ["numpy", "torch"]
needs_native = pytest.mark.skipif(not NATIVE, reason=f"compiled engine unavailable: {native.last_error()}")


def per_lane(netlist, operands, widths, backend):
    if backend == "torch":
        return torch_engine.evaluate_operands(netlist, [torch.as_tensor(v) for v in operands], widths).numpy()
    return engine.evaluate_operands(netlist, operands, widths, backend=backend)


def packed(operands, widths):
    pattern, off = np.zeros(len(operands[0]), dtype=object), 0
    for v, w in zip(operands, widths):
        pattern = pattern + ((np.asarray(v).astype(object) % (1 << w)) << off)
        off += w
    return pattern


def reference(netlist, patterns):
    return np.array([netlist.evaluate_int(int(p)) for p in patterns], dtype=object)


def as_signed(words, n_out):
    return np.array([w - (1 << 64) if n_out == 64 and w >> 63 else w for w in words], dtype=object)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_netlists(max_inputs=12, max_nodes=14), st.integers(0, 1500), st.integers(0, 2 ** 32),
       st.sampled_from(BACKENDS))
def test_per_lane_evaluation_equals_plain_evaluation(netlist, n, seed, backend):
    rng = np.random.default_rng(seed)
    patterns = rng.integers(-(1 << 62), 1 << 62, n)  # bits above the inputs must be ignored
    if backend == "torch":
        got = torch_engine.evaluate_patterns(netlist, torch.as_tensor(patterns)).numpy()
    else:
        got = engine.evaluate_patterns(netlist, patterns, backend=backend)
    want = reference(netlist, [int(p) % (1 << len(netlist.inputs)) for p in patterns])
    assert got.dtype == np.int64 and list(got) == list(want)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_netlists(max_inputs=11, max_nodes=12), st.sampled_from([1, 2, 8, 64]))
def test_native_and_torch_exhaustive_planes_and_tables_equal_numpy(netlist, block_words):
    want = reference(netlist, range(1 << len(netlist.inputs))).astype(np.int64)
    backends = BACKENDS[:-1]
    for b in backends:
        np.testing.assert_array_equal(simulate_table(netlist, backend=b), want)
    planes = {b: [(s, np.array(p)) for s, p in map_blocks(netlist, lambda s, p: (s, np.array(p)),
                                                           block_words=block_words, backend=b)]
              for b in backends}
    assert [s for s, _ in planes[backends[0]]] == [s for s, _ in planes["numpy"]]
    for (_, x), (_, y) in zip(planes[backends[0]], planes["numpy"]):
        np.testing.assert_array_equal(x, y)
    start, words = 0, planes["numpy"][0][1].shape[1] if planes["numpy"][0][1].size else 1
    got = torch_engine.exhaustive_planes(netlist, start, words).numpy().view(np.uint64)
    np.testing.assert_array_equal(got.reshape(-1, words), planes["numpy"][0][1].reshape(-1, words))


@needs_native
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_netlists(max_inputs=9, max_nodes=10), st.integers(1, 700), st.integers(0, 2 ** 32))
def test_native_random_patterns_equal_numpy(netlist, samples, seed):
    p1, o1 = simulate_random(netlist, samples, seed, backend="native")
    p2, o2 = simulate_random(netlist, samples, seed, backend="numpy")
    assert list(p1) == list(p2) and list(o1) == list(o2)


def generator_circuits():
    g = generators
    return [g.ripple_carry_adder(8), g.ripple_carry_adder(6, "ama2", 3, carry_in=True), g.loa_adder(10, 4),
            g.eta1_adder(8, 5), g.truncated_adder(7, 3), g.subtractor(6), g.array_multiplier(6, 5),
            g.ripple_carry_adder(32, "maj", 20), g.array_multiplier(12, 12)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_generator_and_cell_per_lane(backend, monkeypatch):
    if backend != "native":
        monkeypatch.setenv("AXNET_NATIVE", "0")  # the numpy and torch twins run with the compiled path off
        engine.forget_all()
    rng = np.random.default_rng(7)
    circuits = generator_circuits() + [library.load_cell(name) for name in library.cell_names()]
    for nl in circuits:
        n_in = len(nl.inputs)
        widths = [n_in // 2, n_in - n_in // 2] if n_in > 1 else [1]
        ops = [rng.integers(-(1 << w), 1 << w, 700) for w in widths]
        got = per_lane(nl, ops, widths, backend)
        assert list(got) == list(reference(nl, packed(ops, widths))), (nl.name, backend)


@needs_native
def test_operands_of_any_integer_kind_and_zero_copy_tensors():
    nl = generators.ripple_carry_adder(16)
    rng = np.random.default_rng(3)
    a, b = rng.integers(-40000, 40000, 5000), rng.integers(0, 1 << 16, 5000)
    want = engine.evaluate_operands(nl, [a, b], backend="native")
    np.testing.assert_array_equal(want, (a % 65536) + b)
    np.testing.assert_array_equal(engine.evaluate_operands(nl, [a.astype(np.int32), b.astype(np.int32)]), want)
    ta, tb = torch.as_tensor(a, dtype=torch.int32), torch.as_tensor(b)
    out = torch.empty(5000, dtype=torch.int64)
    got = engine.evaluate_operands(nl, [ta, tb], out=out, backend="native", threads=2)
    assert got is out and torch.equal(out, torch.as_tensor(want))
    strided = engine.evaluate_operands(nl, [torch.as_tensor(a)[::2], torch.as_tensor(b)[::2]], backend="native")
    np.testing.assert_array_equal(strided.numpy(), want[::2])
    np.testing.assert_array_equal(engine.evaluate_operands(nl, [a[:0], b[:0]], backend="native"), [])


def test_sixty_four_outputs_fill_the_whole_word():
    nodes = {"one": Node("one", (), ("",), 1)}
    nl = Netlist("ones", ["x"], ["one"] * 64, nodes)
    for backend in BACKENDS[:-1]:
        assert list(engine.evaluate_patterns(nl, np.arange(3), backend=backend)) == [-1, -1, -1]
    assert torch_engine.evaluate_patterns(nl, torch.arange(3)).tolist() == [-1, -1, -1]


def test_bad_operands_are_axnet_errors():
    nl = generators.ripple_carry_adder(4)
    with pytest.raises(AxnetError, match="widths"):
        engine.evaluate_operands(nl, [np.arange(3), np.arange(3)], widths=[4, 3])
    with pytest.raises(AxnetError, match="differ in length"):
        engine.evaluate_operands(nl, [np.arange(3), np.arange(4)])
    with pytest.raises(AxnetError, match="integer"):
        engine.evaluate_operands(nl, [np.zeros(3), np.zeros(3)])
    with pytest.raises(AxnetError, match="evenly"):
        engine.evaluate_operands(nl, [np.arange(3)] * 3)
    with pytest.raises(AxnetError, match="64 inputs"):
        engine.evaluate_patterns(generators.ripple_carry_adder(40), np.arange(3))
    with pytest.raises(AxnetError, match="out="):
        engine.evaluate_operands(nl, [np.arange(3), np.arange(3)], out=np.empty(2, dtype=np.int64))
    with pytest.raises(AxnetError, match="out="):
        engine.evaluate_operands(nl, [np.arange(3), np.arange(3)], out=np.empty(3, dtype=np.int32))
    with pytest.raises(AxnetError, match="integer"):
        engine.evaluate_operands(nl, [torch.zeros(3), torch.zeros(3)])


def _fresh_circuit():
    """A circuit no other test builds, so its library is not memoised yet."""
    nodes = {"y": Node("y", ("a", "b", "c"), ("1-0", "011"), 0)}
    return Netlist("fresh", ["a", "b", "c"], ["y", "y", "a"], nodes)


def test_build_failure_is_recorded_and_numpy_takes_over(monkeypatch, tmp_path):
    engine.forget_all()
    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setenv("AXNET_CACHE", str(tmp_path))
    monkeypatch.delenv("AXNET_NATIVE", raising=False)
    monkeypatch.setenv("CC", "false")
    nl = _fresh_circuit()
    with pytest.warns(native.NativeBuildWarning, match="could not build"):
        assert engine.compile_native(nl) is None
    assert "failed" in native.last_error()
    assert list(tmp_path.glob("engine/*.err"))
    with pytest.raises(AxnetError, match="not available"):
        engine.evaluate_patterns(nl, np.arange(8), backend="native")
    assert list(engine.evaluate_patterns(nl, np.arange(8))) == [nl.evaluate_int(p) for p in range(8)]
    monkeypatch.setenv("AXNET_NATIVE", "0")
    engine.forget_all()
    assert engine.compile_native(nl) is None and "AXNET_NATIVE=0" in native.last_error()


@needs_native
def test_library_is_cached_on_disk_and_reloaded(monkeypatch, tmp_path):
    engine.forget_all()
    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setenv("AXNET_CACHE", str(tmp_path))
    nl = _fresh_circuit()
    source = engine.c_source(compile_netlist(nl))
    assert not native.is_cached("circuit", source, engine.CSRC)
    assert engine.compile_native(nl, work=1) is None  # too little work to be worth a build
    assert engine.compile_native(nl) is not None
    built = list(tmp_path.glob("engine/*.so"))
    assert len(built) == 1 and native.is_cached("circuit", source, engine.CSRC)
    assert not list(tmp_path.glob("engine/.build-*"))  # the temporary build directory is gone
    engine.forget_all()
    monkeypatch.setattr(native, "_LOADED", {})
    assert engine.compile_native(nl, work=1) is not None  # on disk: used even for small work


def test_compiled_program_does_not_depend_on_the_hash_seed():
    """The slot numbering (and so the generated C text and its disk-cache key) is the same in every process."""
    import subprocess
    import sys
    from pathlib import Path
    script = ("import hashlib; from circuits.generators import loa_adder, array_multiplier; "
              "from simulator.program import compile_netlist; "
              "ps = [compile_netlist(n) for n in (loa_adder(16, 6), array_multiplier(6, 6))]; "
              "print(hashlib.sha256(repr([(p.steps, p.output_slots) for p in ps]).encode()).hexdigest())")
    root = str(Path(__file__).resolve().parents[1])
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=True,
                              env={"PYTHONHASHSEED": str(seed), "PYTHONPATH": root}).stdout for seed in (1, 2, 3)}
    assert len(digests) == 1
