"""`axnet explore` (issue 14): cost estimates, design sets, accuracy equal to `axnet eval`, engines, resume, the
per-layer search and bad input. Tiny checkpoints (a few hundred digits, one epoch) keep the suite quick."""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from circuits import generators
from circuits.cost import (abc_area, cube_literals, factor, find_abc, netlist_cost, node_function, prime_cover,
                           _Counter)
from circuits.errors import AxnetError
from circuits.netlist import Node
from cli import main

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGES = 120


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def adder_ckpt(tmp_path_factory):
    """A one-epoch mnist-addernet trained on 256 digits."""
    from dnn.workflow import TrainConfig, run_training
    out = tmp_path_factory.mktemp("adder_ckpt")
    cfg = TrainConfig(model="mnist-addernet", epochs=1, batch_size=32, lr=0.03, optimizer="adam", seed=0,
                      train_limit=256, test_limit=TEST_IMAGES, augment=False, save_every=1)
    run_training(cfg, str(out), show=False)
    return str(out / "last.pt")


@pytest.fixture(scope="module")
def cnn_ckpt(tmp_path_factory):
    from dnn.workflow import TrainConfig, run_training
    out = tmp_path_factory.mktemp("cnn_ckpt")
    cfg = TrainConfig(model="mnist-cnn", epochs=1, batch_size=32, lr=0.03, optimizer="adam", seed=0,
                      train_limit=256, test_limit=60, augment=False, save_every=1)
    run_training(cfg, str(out), show=False)
    return str(out / "last.pt")


# ---- cost estimate -----------------------------------------------------------------------------------------------

def test_cost_equals_hand_counts_for_small_adders():
    half = netlist_cost(generators.ripple_carry_adder(1))  # s = a ^ b, c = a & b
    assert half.cells == {"XOR2": 1, "AND2": 1} and half.depth == 1 and half.area == pytest.approx(3.333)
    # 2 bits: a half adder, then a full adder: sum = XOR3 = 2 XOR2, carry = MAJ = c(a + b) + ab = 2 AND2 + 2 OR2;
    # the carry out waits for c1 (level 1), then OR (2) ... AND (2) and the final OR (3)
    two = netlist_cost(generators.ripple_carry_adder(2))
    assert two.cells == {"XOR2": 3, "AND2": 3, "OR2": 2} and two.gates == 8 and two.inverters == 0
    assert two.depth == 3 and two.area == pytest.approx(3 * 2.0 + 3 * 1.333 + 2 * 1.333)
    # LOA with 2 OR bits on 3 bits: s0, s1 = OR2; c2 = AND2; bit 2 a full adder (6 gates)
    loa = netlist_cost(generators.loa_adder(3, 2))
    assert loa.cells == {"OR2": 2 + 2, "AND2": 1 + 2, "XOR2": 2} and loa.gates == 9
    # a truncated 2-bit adder with both bits cut is constants only
    assert netlist_cost(generators.truncated_adder(2, 2)).gates == 0


def test_cost_propagates_constants_and_skips_dead_logic():
    from circuits.blif import parse_blif

    netlist = parse_blif("""
.model t
.inputs a b
.outputs y z w
.names one
1
.names zero
.names a one n1
11 1
.names n1 b y
10 1
01 1
.names a zero z
11 1
.names a b dead
11 1
.names n1 w
0 1
.end
""")
    cost = netlist_cost(netlist)  # y = a ^ b (AND with 1 is a wire), z = 0, w = NOT a, `dead` feeds nothing
    assert cost.cells == {"XOR2": 1, "NOT": 1} and cost.depth == 1
    # the lowest cell of a ripple adder without carry-in reads constant 0: MAJ(a, b, 0) = a & b, and the MAJ
    # cell's sum NOT MAJ is its complement: one two-input gate and one inverter
    lowest = netlist_cost(generators.ripple_carry_adder(1, cell="maj", approx_bits=1))
    assert lowest.gates == 1 and lowest.inverters == 1 and lowest.depth == 2


def test_cost_of_exact_ripple_adders_grows_linearly_with_width():
    costs = [netlist_cost(generators.ripple_carry_adder(n)) for n in range(2, 13)]
    steps = {(b.gates - a.gates, round(b.area - a.area, 3), b.depth - a.depth) for a, b in zip(costs, costs[1:])}
    assert steps == {(6, 9.332, 2)}  # one more full adder per bit: 6 gates, 9.332 NAND2, 2 levels of carry


def test_prime_cover_and_factoring_keep_the_function():
    """The decomposition's two steps, checked against the function on random nodes of up to 5 inputs."""
    rng = random.Random(3)
    for _ in range(60):
        k = rng.randint(1, 5)
        table = rng.getrandbits(1 << k) or 1
        cubes = prime_cover(table, k)
        node = Node("n", tuple(f"x{i}" for i in range(k)), tuple(cubes), 1)
        assert node_function(node, k) == table
        expr = factor(cube_literals(cubes, node.fanins), _Counter(node.fanins))
        for r in range(1 << k):
            values = {f"x{i}": (r >> i) & 1 for i in range(k)}
            assert evaluate_expr(expr, values) == (table >> r) & 1


def evaluate_expr(expr, values):
    if expr[0] == "const1":
        return 1
    if expr[0] == "lit":
        net, positive = expr[1]
        return values[net] if positive else 1 - values[net]
    parts = [evaluate_expr(e, values) for e in expr[1]]
    return int(all(parts)) if expr[0] == "and" else int(any(parts))


@pytest.mark.skipif(find_abc() is None, reason="no ABC program on PATH")
def test_abc_maps_onto_the_bundled_library():
    area = abc_area(generators.ripple_carry_adder(4))
    assert 0 < area <= netlist_cost(generators.ripple_carry_adder(4)).area * 1.5


# ---- per-layer search -----------------------------------------------------------------------------------------------

def test_nsga2_finds_the_brute_force_front_of_the_predicted_objectives():
    """On 2 layers x 6 circuits (36 assignments) the search must return every point of the exact Pareto front of
    (cost, predicted accuracy), found by trying every assignment."""
    pytest.importorskip("pymoo")
    from dnn.workflow.explore_search import (assignment_cost, dominates, predicted_accuracy, search_front)

    rng = random.Random(5)
    areas = [rng.uniform(10, 60) for _ in range(6)]
    ops = [100, 2500]
    sensitivity = [[rng.uniform(40, 90) for _ in areas] for _ in ops]
    point = lambda c: (round(assignment_cost(areas, ops, c), 9), round(predicted_accuracy(90.0, sensitivity, c), 9))
    every = {c: point(c) for c in itertools.product(range(6), repeat=2)}
    exact_front = {p for c, p in every.items() if not any(dominates(q, p) for q in every.values())}
    found = search_front(areas, ops, 90.0, sensitivity, generations=60, seed=1)
    assert {point(c) for c in found} == exact_front
    assert search_front(areas, ops, 90.0, sensitivity, generations=60, seed=1) == found  # seeded: repeatable


# ---- design sets --------------------------------------------------------------------------------------------------

def test_designs_are_deduplicated_by_function(tmp_path):
    from circuits.blif import write_blif
    from dnn.workflow.explore_designs import collect_designs
    from lutgen.formats import save_npz
    from lutgen.lut import build_lut

    loa = generators.loa_adder(8, 3)
    write_blif(loa, tmp_path / "mine.blif")
    save_npz(build_lut(loa), tmp_path / "mine.npz")
    designs = collect_designs([tmp_path], ["rca:8:cell=maj,ama2:k=2", "loa:8:k=3"])
    names = [d.names for d in designs]
    assert names == [["loa8_k3"], ["rca8_maj_k2", "rca8_ama2_k2"]]  # MAJ and AMA2 cells compute the same function
    loa_design = designs[0]
    assert len(loa_design.sources) == 3 and loa_design.cost["gates"] == netlist_cost(loa).gates
    assert {d.role for d in designs} == {"adder"}


# ---- runs ---------------------------------------------------------------------------------------------------------

def run(ckpt, out, *args, limit=TEST_IMAGES):
    """`axnet explore CKPT --out OUT ARGS` on the first `limit` test digits (None: the command's default)."""
    return cli("explore", ckpt, "--out", out, *args, *(["--limit-test", limit] if limit else []))


def table(run_dir, columns_to_drop=("seconds",)):
    conn = sqlite3.connect(os.path.join(run_dir, "results.sqlite"))
    cols = [c[1] for c in conn.execute("PRAGMA table_info(designs)") if c[1] not in columns_to_drop]
    rows = sorted(conn.execute(f"SELECT {', '.join(cols)} FROM designs").fetchall(), key=repr)
    conn.close()
    return cols, rows


def test_explore_accuracy_equals_axnet_eval(adder_ckpt, tmp_path):
    from lutgen.formats import save_npz
    from lutgen.lut import build_lut

    lut_path = tmp_path / "eta1.npz"
    save_npz(build_lut(generators.eta1_adder(8, 3)), lut_path)
    result = run(adder_ckpt, tmp_path / "run", "--circuits", lut_path, "--family", "loa:8:k=4", "--workers", "1",
                 "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    by_name = {r["circuit"]: r for r in records}
    assert set(by_name) == {"eta1_8_k3", "loa8_k4"}
    for r in records:
        assert {"circuit", "accuracy", "retrained_accuracy", "mae", "ep_percent", "area_nand2", "gates",
                "depth"} <= set(r)
    evaluated = cli("eval", adder_ckpt, "--arith", f"lut:{lut_path}", "--limit-test", TEST_IMAGES, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    evaluated = json.loads(evaluated.stdout)
    assert by_name["eta1_8_k3"]["images"] == evaluated["images"]
    assert by_name["eta1_8_k3"]["accuracy"] == evaluated["accuracy"]
    assert by_name["eta1_8_k3"]["area_nand2"] is None  # a LUT file has no netlist to cost
    for name in ("results.csv", "results.json", "pareto.png", "summary.md"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_circuits_too_wide_for_a_table_run_through_the_netlist_engine(adder_ckpt, tmp_path):
    from circuits.blif import write_blif
    from dnn.workflow.explore_designs import MAX_TABLE_INPUTS

    path = tmp_path / "loa13.blif"
    write_blif(generators.loa_adder(13, 3), path)  # 26 inputs: no table, NetlistAdder in the layers
    assert 26 > MAX_TABLE_INPUTS
    result = run(adder_ckpt, tmp_path / "run", "--circuits", path, "--family", "loa:13:k=3", "--workers", "1",
                 "--json", limit=60)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)  # the file and the family are one function
    assert record["names"] == ["loa13_k3"] and len(record["sources"]) == 2
    assert record["mae"] > 0 and record["operands"] == "13,13" and record["gates"] > 0
    evaluated = cli("eval", adder_ckpt, "--arith", f"circuit:{path}", "--limit-test", 60, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert record["accuracy"] == json.loads(evaluated.stdout)["accuracy"]
    too_wide = run(adder_ckpt, tmp_path / "run2", "--family", "rca:33")
    assert too_wide.exit_code == 2 and "fits no adder layer" in too_wide.output
    assert not (tmp_path / "run2").exists()


def test_local_pool_and_ray_give_identical_tables(adder_ckpt, tmp_path):
    pytest.importorskip("ray")
    families = ["--family", "loa:8:k=2..3", "--family", "trunc:8:k=2"]
    local = run(adder_ckpt, tmp_path / "local", *families, "--workers", "2")
    assert local.exit_code == 0, local.output
    ray_run = run(adder_ckpt, tmp_path / "ray", *families, "--engine", "ray", "--workers", "2")
    assert ray_run.exit_code == 0, ray_run.output
    assert table(tmp_path / "local") == table(tmp_path / "ray")
    assert len(table(tmp_path / "ray")[1]) == 3


def test_killed_run_resumes_without_duplicates(adder_ckpt, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-c", "import cli; cli.main()", "explore", adder_ckpt, "--out", str(out),
            "--family", "loa:8:k=1..5", "--workers", "1", "--limit-test", str(TEST_IMAGES)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM designs").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
            if rows >= 1:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= rows < 5, "the run should be killed part-way"
    refused = run(adder_ckpt, out, "--family", "loa:8:k=1..5", "--workers", "1")
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = run(adder_ckpt, out, "--family", "loa:8:k=1..5", "--workers", "1", "--resume")
    assert resumed.exit_code == 0, resumed.output
    _, rows_after = table(out)
    assert len(rows_after) == 5 and len({r[0] for r in rows_after}) == 5
    other = run(adder_ckpt, out, "--family", "loa:8:k=1", "--resume", limit=50)
    assert other.exit_code == 2 and "test_limit" in other.output  # other settings never mix into one table


def test_per_layer_front_is_at_least_as_good_as_uniform(adder_ckpt, tmp_path):
    from dnn.workflow.explore_search import dominates

    pytest.importorskip("pymoo")

    out = tmp_path / "run"
    result = run(adder_ckpt, out, "--family", "loa:8:k=2..5", "--family", "trunc:8:k=3", "--assign", "per-layer",
                 "--generations", "20", "--evaluate", "6", "--workers", "1")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    uniform = [(d["area_nand2"], d["accuracy"]) for d in data["designs"]]
    searched = [a for a in data["assignments"] if a["kind"] == "search"]
    assert searched and len(data["assignments"]) >= 1 + 2 * 5  # baseline + 2 layers x 5 designs + the search
    # an assignment of one design to both layers is the uniform design, and must score exactly as it does
    by_key = {d["design"]: d for d in data["designs"]}
    for a in searched:
        if len(set(a["designs"])) == 1:
            assert a["accuracy"] == by_key[a["designs"][0]]["accuracy"]
            assert a["cost"] == pytest.approx(by_key[a["designs"][0]]["area_nand2"])
    front = [(p["cost"], p["accuracy"]) for p in data["per_layer_front"] if p["front_rank"] == 1]
    for u in uniform:
        assert any(p == u or dominates(p, u) for p in front), f"uniform point {u} beats the per-layer front"


def test_front_designs_are_retrained_once(adder_ckpt, tmp_path):
    out = tmp_path / "run"
    args = ("--family", "loa:8:k=2", "--family", "trunc:8:k=5", "--family", "rca:8", "--retrain-epochs", "1",
            "--grad", "ste", "--workers", "1")
    result = run(adder_ckpt, out, *args)
    assert result.exit_code == 0, result.output
    records = {r["circuit"]: r for r in json.loads((out / "results.json").read_text())["designs"]}
    for r in records.values():
        assert (r["retrained_accuracy"] is not None) == (r["front_rank"] == 1)
        if r["front_rank"] == 1:
            assert r["retrain_epochs"] == 1 and r["retrain_grad"] == "ste"
            assert 0 <= r["retrained_accuracy"] <= 100
    again = run(adder_ckpt, out, *args, "--resume")
    assert again.exit_code == 0 and "retrain " not in again.output  # nothing left to do, nothing redone


def test_retraining_with_netlist_differences(adder_ckpt, tmp_path):
    from lutgen.formats import save_npz
    from lutgen.lut import build_lut

    out = tmp_path / "run"
    result = run(adder_ckpt, out, "--family", "loa:8:k=3", "--retrain-epochs", "1", "--grad", "diff",
                 "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["retrain_grad"] == "diff" and record["retrained_accuracy"] is not None
    lut_path = tmp_path / "loa.npz"
    save_npz(build_lut(generators.loa_adder(8, 2)), lut_path)
    bare = run(adder_ckpt, tmp_path / "run2", "--circuits", lut_path, "--retrain-epochs", "1", "--grad", "diff")
    assert bare.exit_code == 2 and "LUT file" in bare.output and not (tmp_path / "run2").exists()


def test_multipliers_serve_a_cnn_checkpoint(cnn_ckpt, tmp_path):
    result = run(cnn_ckpt, tmp_path / "run", "--family", "mul:4", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert records[0]["role"] == "multiplier" and records[0]["mae"] == 0 and records[0]["accuracy"] is not None
    adder = run(cnn_ckpt, tmp_path / "adder", "--family", "loa:8:k=2")
    assert adder.exit_code == 2 and "fits no layer" in adder.output
    retrain = run(cnn_ckpt, tmp_path / "retrain", "--family", "mul:4", "--retrain-epochs", "1")
    assert retrain.exit_code == 2 and "adder layers" in retrain.output and not (tmp_path / "retrain").exists()


# ---- bad input ---------------------------------------------------------------------------------------------------

def needs(package):
    """Skip a case whose message comes after an optional extra's import (`make test` installs every extra)."""
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} is not installed")


@pytest.mark.parametrize("args, says", [
    (["--circuits", "EMPTY"], "no circuit files"),
    (["--circuits", "BROKEN"], "broken.blif"),
    (["--family", "mul:4"], "fits no layer"),
    (["--family", "rca:2"], "fits no adder layer"),
    pytest.param(["--family", "loa:8:k=1", "--engine", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers",
                 marks=needs("ray")),
    pytest.param(["--circuits", "LUTFILE", "--assign", "per-layer"], "needs circuits with a netlist",
                 marks=needs("pymoo")),
    ([], "no circuits to explore"),
])
def test_bad_input_is_one_line_and_leaves_no_run(adder_ckpt, tmp_path, args, says):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "broken.blif").write_text(".model x\n.inputs a\n.outputs y\ngarbage\n.end\n")
    from lutgen.formats import save_npz
    from lutgen.lut import build_lut
    save_npz(build_lut(generators.loa_adder(8, 2)), tmp_path / "loa.npz")
    named = {"EMPTY": str(empty), "BROKEN": str(tmp_path / "broken.blif"), "LUTFILE": str(tmp_path / "loa.npz")}
    args = [named.get(a, a) for a in args]
    out = tmp_path / "run"
    result = run(adder_ckpt, out, *args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output and says in result.output
    assert not out.exists()


# ---- circuits nobody here wrote (ArithsGen) -------------------------------------------------------------------------

def arithsgen_blif(circuit, hierarchical=False):
    import contextlib
    import io
    text = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()):
        (circuit.get_blif_code_hier if hierarchical else circuit.get_blif_code_flat)(text)
    return text.getvalue()


def test_arithsgen_flat_blif_is_read_and_its_exact_adder_is_ours(tmp_path):
    pytest.importorskip("ariths_gen")
    from ariths_gen.multi_bit_circuits.adders import UnsignedKoggeStoneAdder, UnsignedRippleCarryAdder
    from ariths_gen.multi_bit_circuits.approximate_adders import QuAdder
    from ariths_gen.wire_components import Bus
    from dnn.workflow.explore_designs import collect_designs

    for name, circuit in (("ks8", UnsignedKoggeStoneAdder(Bus(N=8, prefix="a"), Bus(N=8, prefix="b"))),
                          ("rca8", UnsignedRippleCarryAdder(Bus(N=8, prefix="a"), Bus(N=8, prefix="b"))),
                          ("quad8", QuAdder(Bus(N=8, prefix="a"), Bus(N=8, prefix="b"), R=[4, 4], P=[0, 2],
                                            prefix=""))):
        (tmp_path / f"ag_{name}.blif").write_text(arithsgen_blif(circuit))
    designs = collect_designs([tmp_path], ["rca:8", "ag-quad:8:r=4,4:p=0,2"])
    # files in name order (ag_ks8, ag_quad8, ag_rca8), then the families: the two exact ArithsGen adders and ours are
    # one function, and the QuAd file is the family's QuAd
    assert [d.names for d in designs] == [["u_ksa", "u_rca", "rca8"], ["quad", "ag_quad8_r4-4_p0-2"]]
    # ArithsGen's ripple adder shares a ^ b between sum and carry (5 gates per full adder, ours 6): the cheapest
    # implementation gives the design its cost
    from circuits.blif import read_blif
    assert designs[0].implementation == "u_rca"
    assert designs[0].cost == netlist_cost(read_blif(tmp_path / "ag_rca8.blif")).as_dict()
    assert designs[0].cost["gates"] < netlist_cost(generators.ripple_carry_adder(8)).gates
    assert designs[1].lut.table.tolist() != designs[0].lut.table.tolist()


def test_arithsgen_malformed_hierarchical_files_are_refused_cleanly(adder_ckpt, tmp_path):
    pytest.importorskip("ariths_gen")
    from ariths_gen.multi_bit_circuits.adders import UnsignedKoggeStoneAdder
    from ariths_gen.multi_bit_circuits.multipliers import UnsignedWallaceMultiplier
    from ariths_gen.wire_components import Bus

    cases = ((UnsignedKoggeStoneAdder(Bus(N=8, prefix="a"), Bus(N=8, prefix="b")), "driven twice"),
             (UnsignedWallaceMultiplier(Bus(N=4, prefix="a"), Bus(N=4, prefix="b")), "connected twice"))
    for i, (circuit, says) in enumerate(cases):
        path = tmp_path / f"hier{i}.blif"
        path.write_text(arithsgen_blif(circuit, hierarchical=True))
        result = run(adder_ckpt, tmp_path / f"run{i}", "--circuits", path)
        assert result.exit_code == 2 and says in result.output and result.output.count("\n") == 1
        assert not (tmp_path / f"run{i}").exists()


def test_family_specs_are_checked():
    from dnn.workflow.explore_families import parse_family

    assert parse_family("rca:8:cell=maj,ama1:k=0..2")[2] == [
        {"cell": c, "k": str(k)} for c, k in itertools.product(["maj", "ama1"], range(3))]
    for bad in ("rca", "rca:x", "rca:8:k=5..1", "loa:8:cell=maj", "rca:8:k=0..99999", "mul:8x", "zzz:8"):
        with pytest.raises(AxnetError):
            parse_family(bad)
