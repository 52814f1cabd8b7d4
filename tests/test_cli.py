"""The circuit toolchain commands end to end: the demo flow, output formats, and every bad input exiting 2 with one
line on stderr, no traceback and no output file."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from lutgen.formats import load_lut
from lutgen.gradient import gradient_lut

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "appmult"


def run(*args):
    """Invoke `axnet ARGS` in-process; stdout and stderr come back separately."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def adder(tmp_path_factory):
    """An 8-bit ripple-carry adder with 4 low AMA2 cells, as `make demo` builds it."""
    path = tmp_path_factory.mktemp("adder") / "adder8_ama2_k4.blif"
    ok("build-adder", "--width", 8, "--cell", "ama2", "--approx-bits", 4, "-o", path)
    return path


def test_demo_flow(adder, tmp_path):
    """build-adder, simulate, metrics, gradlut: the `make demo` sequence."""
    npz = tmp_path / "x.npz"
    out = ok("simulate", adder, "-o", npz).output
    assert "wrote" in out
    lut = load_lut(npz)
    assert lut.operands == [("a", 8), ("b", 8)] and lut.sha256 and lut.circuit == "rca8_ama2_k4"
    # AMA2 keeps the carry exact, so only the 4 low sum bits can differ from a + b
    exact = np.add.outer(np.arange(256), np.arange(256))
    assert np.all((lut.table >> 4) == (exact >> 4)) and np.any(lut.table != exact)
    table = ok("metrics", npz).output
    assert "reference" in table and "add" in table and "MAE" in table
    data = json.loads(ok("metrics", npz, "--json").stdout)
    err = lut.table - exact
    assert data["reference"] == "add"
    assert data["metrics"]["mae"] == pytest.approx(np.abs(err).mean())
    assert data["metrics"]["wce"] == np.abs(err).max()
    grad = tmp_path / "x_grad.npz"
    ok("gradlut", npz, "--half-window", 2, "-o", grad)
    g = load_lut(grad)
    assert g.grad_meta == {"half_window": 2, "boundary": "shrink", "method": "diff"}
    want = gradient_lut(lut, 2)
    assert all(np.array_equal(g.grads[k], want.grads[k]) for k in "ab") and np.array_equal(g.table, lut.table)


def test_metrics_of_a_circuit_agree_with_its_lut(adder, tmp_path):
    from_circuit = json.loads(ok("metrics", adder, "--json").stdout)["metrics"]
    ok("simulate", adder, "-o", tmp_path / "a.npz")
    from_lut = json.loads(ok("metrics", tmp_path / "a.npz", "--json").stdout)["metrics"]
    assert from_circuit == from_lut and from_circuit["count"] == 65536 and from_circuit["ep_percent"] > 0
    sampled = json.loads(ok("metrics", adder, "--samples", 2000, "--json").stdout)
    assert sampled["metrics"]["count"] == 2000 and "random" in sampled["mode"]


def test_info_and_library(adder):
    info = json.loads(ok("info", adder, "--json").stdout)
    assert info["inputs"] == 16 and info["outputs"] == 9 and info["depth"] >= 1
    assert info["operands"] == [{"name": "a", "width": 8}, {"name": "b", "width": 8}]
    assert info["nodes"] > 0 and info["max_fanout"] >= 1
    text = ok("info", adder).output
    assert "a (8 bits), b (8 bits)" in text and "depth" in text
    cells = json.loads(ok("library", "--json").stdout)
    assert {"exact", "ama2", "maj"} <= {c["name"] for c in cells}
    assert "MAJ" in ok("library").output


@pytest.mark.parametrize("scheme", ["loa", "eta1", "trunc"])
def test_build_adder_schemes(scheme, tmp_path):
    blif, npz = tmp_path / "x.blif", tmp_path / "x.npz"
    ok("build-adder", "--width", 4, "--scheme", scheme, "--approx-bits", 2, "-o", blif)
    ok("simulate", blif, "-o", npz)
    table = load_lut(npz).table
    exact = np.add.outer(np.arange(16), np.arange(16))
    assert table.shape == (16, 16) and np.all((table >> 3) <= (exact >> 3) + 1) and np.any(table != exact)


def test_simulate_writes_every_format(tmp_path):
    """A signed 8-bit adder: npz, AdaPT header and CSV agree; appmult holds an unsigned LUT."""
    blif = tmp_path / "add8.blif"
    ok("build-adder", "--width", 8, "-o", blif)
    ok("simulate", blif, "--signed", "-o", tmp_path / "s.npz")
    ok("simulate", blif, "--signed", "--format", "adapt", "-o", tmp_path / "s.h")
    ok("simulate", blif, "--signed", "-o", tmp_path / "s.csv")
    ok("simulate", blif, "--format", "appmult", "-o", tmp_path / "u.txt")
    signed = load_lut(tmp_path / "s.npz")
    assert signed.signed and np.array_equal(load_lut(tmp_path / "s.h").table, signed.table)
    assert np.array_equal(load_lut(tmp_path / "s.csv").table, signed.table)
    words = np.add.outer(np.arange(256), np.arange(256))  # the 9-bit sum word of the raw patterns
    assert np.array_equal(signed.table, np.where(words >= 256, words - 512, words))
    assert signed.table[255, 255] == 510 - 512 and signed.table[127, 1] == 128
    assert np.array_equal(load_lut(tmp_path / "u.txt").table, words)


def test_operands_option_groups_by_position(tmp_path):
    blif = tmp_path / "add4c.blif"
    ok("build-adder", "--width", 4, "--carry-in", "-o", blif)
    ok("simulate", blif, "--operands", "4,4,1", "-o", tmp_path / "c.npz")
    lut = load_lut(tmp_path / "c.npz")
    assert lut.operands == [("a", 4), ("b", 4), ("c", 1)] and lut.table[15, 15, 1] == 31


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AppMult fixtures not found at {FIXTURES}")
def test_gradlut_appmult_format_reproduces_a_published_file(tmp_path):
    out = tmp_path / "bp.txt"
    ok("gradlut", FIXTURES / "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols_lutfp.txt", "--half-window", 2,
       "--boundary", "appmult", "--format", "appmult", "-o", out)
    want = load_lut(FIXTURES / "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols_lutfp+bp_avg_2_2.txt")
    got = load_lut(out)
    assert all(np.array_equal(got.grads[k], want.grads[k]) for k in "ab")
    mul = json.loads(ok("metrics", FIXTURES / "mul7u_08E_sop.blif", "--json").stdout)
    assert mul["reference"] == "mul"  # guessed: 7 x 7 operands, 14 outputs


# -- bad input: exit 2, one line on stderr, no traceback, no output file ----------------------------------------------

BLIF_HEAD = ".model m\n.inputs a b\n.outputs q\n"
BAD_BLIF = {
    "unknown_directive": BLIF_HEAD + ".frobnicate\n.end\n",
    "cover_width": BLIF_HEAD + ".names a b q\n111 1\n.end\n",
    "undefined_net": BLIF_HEAD + ".names a zz q\n11 1\n.end\n",
    "doubly_driven": BLIF_HEAD + ".names a q\n1 1\n.names b q\n1 1\n.end\n",
    "cycle": BLIF_HEAD + ".names a r q\n11 1\n.names q r\n1 1\n.end\n",
    "latch": BLIF_HEAD + ".latch a q re clk 0\n.end\n",
    "unknown_subckt": BLIF_HEAD + ".subckt nosuch x=a y=q\n.end\n",
    "recursive_models": BLIF_HEAD + ".subckt r x=a y=q\n.end\n.model r\n.inputs x\n.outputs y\n"
                        ".subckt m a=x b=x q=y\n.end\n",
    "empty": "",
}


def assert_refused(result, out, *needles):
    assert result.exit_code == 2, (result.output, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("axnet: error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not Path(out).exists()


@pytest.mark.parametrize("case", sorted(BAD_BLIF))
def test_bad_circuit_files(case, tmp_path):
    blif = tmp_path / f"{case}.blif"
    blif.write_text(BAD_BLIF[case])
    out = tmp_path / "out.npz"
    assert_refused(run("simulate", blif, "-o", out), out, str(blif))


def test_missing_file(tmp_path):
    out = tmp_path / "out.npz"
    assert_refused(run("simulate", tmp_path / "nope.blif", "-o", out), out, "nope.blif", "no such file")
    assert_refused(run("gradlut", tmp_path / "nope.npz", "--half-window", 1, "-o", out), out, "nope.npz")


def test_bad_options_and_shapes(adder, tmp_path):
    out = tmp_path / "out.txt"
    assert_refused(run("simulate", adder, "--operands", "8,7", "-o", out), out, "--operands 8,7")
    assert_refused(run("simulate", adder, "--format", "adapt", "-o", out), out, "--format adapt")  # unsigned
    small = tmp_path / "add4c.blif"
    ok("build-adder", "--width", 4, "--carry-in", "-o", small)
    assert_refused(run("simulate", small, "--signed", "--format", "adapt", "-o", out), out, "8-bit")
    assert_refused(run("simulate", small, "--format", "appmult", "-o", out), out, "two operands")
    three = tmp_path / "three.npz"
    ok("simulate", small, "-o", three)
    assert_refused(run("gradlut", three, "--half-window", 1, "-o", out), out, "exactly two operands")
    assert_refused(run("build-adder", "--width", 4, "--scheme", "loa", "--carry-in", "-o", out), out, "--carry-in")


def test_lut_too_large_points_to_streaming_metrics(tmp_path):
    wide = tmp_path / "add13c.blif"
    ok("build-adder", "--width", 13, "--carry-in", "-o", wide)  # 27 inputs
    out = tmp_path / "wide.npz"
    assert_refused(run("simulate", wide, "-o", out), out, "axnet metrics")


def test_malformed_appmult_file(tmp_path):
    bad = tmp_path / "bad_lutfp.txt"
    bad.write_text("LUT for approximate multiplier:\n0 0 0\n0 1 0\n1 0 zero\n1 1 1\n")
    out = tmp_path / "g.npz"
    assert_refused(run("gradlut", bad, "--half-window", 1, "-o", out), out, f"{bad}:4:")


def test_failure_leaves_an_existing_output_untouched(adder, tmp_path):
    out = tmp_path / "keep.h"
    out.write_text("precious\n")
    result = run("simulate", adder, "--format", "adapt", "-o", out)
    assert result.exit_code == 2 and out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h"]


def test_pla_circuit_gives_the_same_lut_as_its_blif(tmp_path):
    from circuits.blif import read_blif
    from circuits.pla import write_pla

    adder = tmp_path / "add3.blif"
    ok("build-adder", "--width", 3, "--cell", "ama1", "--approx-bits", 2, "-o", adder)
    pla = tmp_path / "adder.pla"
    write_pla(read_blif(adder), pla)
    ok("simulate", pla, "-o", tmp_path / "p.npz")
    ok("simulate", adder, "-o", tmp_path / "b.npz")
    assert np.array_equal(load_lut(tmp_path / "p.npz").table, load_lut(tmp_path / "b.npz").table)
    out = tmp_path / "x.npz"
    assert_refused(run("simulate", tmp_path / "adder.v", "-o", out), out, ".blif or .pla")


def test_undriven_zero_ties_nets_with_a_warning(tmp_path):
    blif = tmp_path / "u.blif"
    blif.write_text(BAD_BLIF["undefined_net"])
    result = ok("simulate", blif, "--undriven", "zero", "-o", tmp_path / "u.npz")
    assert "axnet: warning:" in result.stderr and "zz" in result.stderr
    assert np.all(load_lut(tmp_path / "u.npz").table == 0)  # q = a & zz with zz tied to 0
    info = json.loads(ok("info", blif, "--undriven", "zero", "--json").stdout)
    assert info["operands"] == [{"name": "a", "width": 1}, {"name": "b", "width": 1}]


def test_unwritable_output_is_a_one_line_error(adder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    out = blocker / "x.npz"
    assert_refused(run("simulate", adder, "-o", out), out, "cannot write")
    assert_refused(run("build-adder", "--width", 4, "-o", blocker / "x.blif"), blocker / "x.blif", "cannot write")
