"""`--accum` on eval, sweep (--target accum) and retrain, end to end on a tiny run, and its one-line errors."""
import json

import pytest
from click.testing import CliRunner

from circuits.blif import write_blif
from circuits.generators import ripple_carry_adder
from cli import main
from cli_runs import invoke, train_tiny


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "float"
    train_tiny(out)
    return out


def test_eval_with_an_exact_wide_accumulator_is_the_plain_eval(tiny_run):
    plain = json.loads(invoke("eval", tiny_run / "last.pt", "--arith", "exact:8", "--json").stdout)
    r = invoke("eval", tiny_run / "last.pt", "--arith", "float", "--arith", "exact:8", "--accum",
               "rca:16:k=0:order=tree", "--json")
    float_row, row = json.loads(r.stdout)
    assert row["accuracy"] == plain["accuracy"] and row["accum"] == "rca:16:k=0:order=tree"
    assert "accumulator" in row["arith"] and float_row["accum"] is None


def test_sweep_target_accum_writes_its_files(tiny_run, tmp_path):
    out = tmp_path / "sweep"
    r = invoke("sweep", tiny_run / "last.pt", "--target", "accum", "--scheme", "trunc", "--width", 16,
               "--approx-bits", "0:16:16", "--order", "tree", "--out", out, "--json")
    result = json.loads(r.stdout)
    assert [p["approx_bits"] for p in result["points"]] == [0, 16]
    assert result["points"][0]["accuracy"] == result["exact_accumulation_accuracy"]
    assert result["points"][1]["accuracy"] < 20  # every sum truncated to 0: one class for every image
    assert {p.name for p in out.iterdir()} >= {"sweep.png", "sweep.csv", "sweep.json"}


def test_retrain_through_an_accumulator(tiny_run, tmp_path):
    blif = tmp_path / "exact8.blif"
    write_blif(ripple_carry_adder(8), blif)
    r = invoke("retrain", tiny_run / "last.pt", "--circuit", blif, "--grad", "ste", "--epochs", 1, "--batch-size", 16,
               "--accum", "loa:16:k=3", "--out", tmp_path / "re", "--json")
    result = json.loads(r.stdout)
    assert result["accum"] == "loa:16:k=3"
    assert all("accumulator loa16_k3" in row["arith"] for row in result["rows"][2:])
    assert not any("accumulator" in row["arith"] for row in result["rows"][:2])  # float, quantized exact: baselines


@pytest.mark.parametrize("args, message", [
    (["eval", "--arith", "exact:8", "--accum", "loa:4:k=1"], "narrower than a single term"),
    (["eval", "--arith", "exact:8", "--accum", "loa:16:k=2:order=zigzag"], "order 'zigzag'"),
    (["eval", "--arith", "float", "--accum", "loa:16:k=2"], None),
    (["sweep", "--target", "accum", "--scheme", "wallace", "--width", "16", "--approx-bits", "0:2"], "--scheme"),
    (["sweep", "--target", "accum", "--arith", "float", "--width", "16", "--approx-bits", "0:2"], "integer --arith"),
])
def test_bad_accumulators_exit_2_with_one_line(tiny_run, tmp_path, args, message):
    r = CliRunner().invoke(main, [args[0], str(tiny_run / "last.pt"), *args[1:]])
    if message is None:  # the float row simply has no accumulator: exit 0
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("axnet: error:") and message in lines[0], r.output


def test_three_operand_accumulator_exits_2(tiny_run, tmp_path):
    blif = tmp_path / "cin.blif"
    write_blif(ripple_carry_adder(16, carry_in=True), blif)
    r = CliRunner().invoke(main, ["eval", str(tiny_run / "last.pt"), "--arith", "exact:8", "--accum", str(blif)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "two operands" in r.output


def test_sweep_of_the_adder_with_an_exact_accumulator_is_the_plain_sweep(tiny_run):
    args = ["sweep", tiny_run / "last.pt", "--cell", "maj", "--width", 8, "--approx-bits", "2", "--json"]
    plain = json.loads(invoke(*args).stdout)
    summed = json.loads(invoke(*args, "--accum", "rca:16:k=0").stdout)
    assert summed["accum"] == "rca:16:k=0" and summed["points"] == plain["points"]


@pytest.mark.parametrize("options, message", [
    (["--arith", "exact:8"], "--arith: applies to --target accum only (this sweep is --target adder)"),
    (["--scheme", "eta1", "--order", "tree"], "--scheme, --order: apply to --target accum only"),
    (["--target", "accum", "--accum", "loa:16"], "--accum: applies to --target adder only")])
def test_sweep_refuses_the_other_targets_options(tiny_run, options, message):
    """An option of the other target would be ignored, and the sweep would answer another question than asked."""
    r = CliRunner().invoke(main, ["sweep", str(tiny_run / "last.pt"), *options, "--approx-bits", "0"])
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output
