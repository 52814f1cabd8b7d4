"""The training commands end to end: train, kill -9 and resume, eval, sweep, retrain, and their error handling."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from cli import main
from cli_runs import TINY_TRAIN, invoke, train_tiny
from dnn.workflow.checkpoint import load_checkpoint

AXNET = [sys.executable, "-c", "from cli import main; main()"]
QUIET_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 1-epoch float run on 48 digits: the checkpoint the eval/sweep/retrain tests start from."""
    out = tmp_path_factory.mktemp("run") / "float"
    summary = train_tiny(out)
    assert summary["epochs"] == 1 and 0 <= summary["final_test_acc"] <= 100
    return out


def test_train_help_is_short_and_names_the_recipe():
    r = invoke("train", "--help")
    assert r.exit_code == 0 and "--resume" in r.output and "AdderNet recipe" in r.output


def test_bad_training_input_is_one_line_and_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["train", "--model", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.output.strip().startswith("axnet: error: --model 'nope'")
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["train", "--model", "mnist-cnn", "--data", "mnist:/no/such/dir",
                                  "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "/no/such/dir" in r.output and "Traceback" not in r.output


def wait_for(path, proc, timeout=180):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, "training exited before writing its first checkpoint"
        assert time.monotonic() - start < timeout, "no checkpoint appeared"
        time.sleep(0.02)


def test_a_run_killed_mid_epoch_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "run"
    args = AXNET + ["train", *TINY_TRAIN, "--epochs", "3", "--save-every", "1", "--out", str(run)]
    proc = subprocess.Popen(args, env=QUIET_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(run / "last.pt", proc)
        time.sleep(0.3)  # into epoch 2
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(run / "last.pt", weights_only=True)  # whatever the moment, the file is whole
    assert 1 <= killed["epoch"] <= 3
    done = subprocess.run(args + ["--resume"], env=QUIET_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = load_checkpoint(run / "last.pt")
    assert final["epoch"] == 3 and final["history"]["epoch"] == [1, 2, 3]


def test_eval_reports_each_arithmetic_as_json_and_table(tiny_run):
    r = invoke("eval", tiny_run / "last.pt", "--arith", "float", "--arith", "exact:8", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["arith"].split()[0] for row in rows] == ["float", rows[1]["arith"].split()[0]]
    # the whole test set, not the run's quick-trial --limit-test 32
    assert all(0 <= row["accuracy"] <= 100 and row["images"] == 1000 for row in rows)
    table = invoke("eval", tiny_run / "last.pt")
    assert table.exit_code == 0 and "accuracy" in table.output and "float" in table.output
    bad = CliRunner().invoke(main, ["eval", str(tiny_run / "last.pt"), "--arith", "bogus"])
    assert bad.exit_code == 2 and "--arith 'bogus'" in bad.output


def test_eval_of_a_missing_or_foreign_checkpoint(tmp_path):
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "none.pt")])
    assert r.exit_code == 2 and "none.pt: checkpoint file not found" in r.output
    (tmp_path / "x.pt").write_text("hello")
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "x.pt")])
    assert r.exit_code == 2 and "x.pt: not a checkpoint" in r.output


def test_sweep_writes_png_csv_json(tiny_run, tmp_path):
    out = tmp_path / "sweep"
    r = invoke("sweep", tiny_run / "last.pt", "--cell", "maj", "--width", 8, "--approx-bits", "0:6:3", "--out", out,
               "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert [p["approx_bits"] for p in result["points"]] == [0, 3, 6]
    assert json.loads((out / "sweep.json").read_text())["points"] == result["points"]
    assert (out / "sweep.csv").read_text().splitlines()[0] == "approx_bits,accuracy"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # every point is what `axnet eval` reports for the same arithmetic
    specs = [f"cell:maj:k={p['approx_bits']}:width=8" for p in result["points"]]
    r = invoke("eval", tiny_run / "last.pt", *[a for spec in specs for a in ("--arith", spec)], "--json")
    assert r.exit_code == 0, r.output
    assert [row["accuracy"] for row in json.loads(r.stdout)] == [p["accuracy"] for p in result["points"]]


def test_retrain_table_and_circuit_check(tiny_run, tmp_path):
    blif = tmp_path / "add6.blif"
    assert invoke("build-adder", "--width", 6, "--cell", "ama2", "--approx-bits", 2, "-o", blif).exit_code == 0
    out = tmp_path / "re"
    r = invoke("retrain", tiny_run / "last.pt", "--circuit", blif, "--grad", "lut", "--half-window", 1,
               "--epochs", 1, "--batch-size", 16, "--compare-ste", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [row["row"] for row in rows] == ["float", "quantized exact (6-bit)", "circuit, before retraining",
                                            "circuit, BatchNorm re-estimated only",
                                            "after retraining, gradient LUT", "after retraining, STE"]
    assert "| after retraining, STE |" in (out / "retrain.md").read_text()
    retrained = load_checkpoint(out / "retrain_lut" / "last.pt")
    assert retrained["circuit_sha256"] == json.loads((out / "retrain.json").read_text())["circuit_sha256"]
    # a checkpoint retrained on this circuit refuses to be retrained against another one
    other = tmp_path / "other.blif"
    invoke("build-adder", "--width", 6, "--cell", "ama1", "--approx-bits", 2, "-o", other)
    r = CliRunner().invoke(main, ["retrain", str(out / "retrain_lut" / "last.pt"), "--circuit", str(other),
                                  "--grad", "ste", "--epochs", "1", "--out", str(tmp_path / "re2")])
    assert r.exit_code == 2 and "retrain refused" in r.output


def test_retrain_over_seeds_reports_each_seed_and_the_paired_difference(tiny_run, tmp_path):
    blif = tmp_path / "add6.blif"
    assert invoke("build-adder", "--width", 6, "--cell", "ama2", "--approx-bits", 2, "-o", blif).exit_code == 0
    common = ["--circuit", blif, "--grad", "lut", "--half-window", 1, "--epochs", 1, "--batch-size", 16,
              "--compare-ste", "--json"]
    r = invoke("retrain", tiny_run / "last.pt", *common, "--seed", 3, "--seeds", 2, "--out", tmp_path / "many")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    lut_row, ste_row = result["rows"][-2:]
    assert lut_row["seeds"] == ste_row["seeds"] == [3, 4]
    assert lut_row["accuracy"] == pytest.approx(sum(lut_row["per_seed"]) / 2)
    diffs = [a - b for a, b in zip(lut_row["per_seed"], ste_row["per_seed"])]
    assert result["lut_minus_ste"]["per_seed"] == pytest.approx(diffs)
    assert (tmp_path / "many" / "retrain_ste_seed4" / "last.pt").exists()
    assert "mean ± standard deviation over seeds 3-4" in (tmp_path / "many" / "retrain.md").read_text()
    # the second seed's run is the run a single retraining with that seed gives
    r = invoke("retrain", tiny_run / "last.pt", *common, "--seed", 4, "--out", tmp_path / "one")
    single = json.loads(r.stdout)["rows"]
    assert [single[-2]["accuracy"], single[-1]["accuracy"]] == [lut_row["per_seed"][1], ste_row["per_seed"][1]]


def test_train_defaults_follow_the_model_family_and_optimizer_can_be_chosen(tiny_run, tmp_path):
    cfg = load_checkpoint(tiny_run / "last.pt")["config"]
    assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["batch_size"]) == ("adam", 0.03, 0.0, 16)
    out = tmp_path / "sgd"
    r = invoke("train", *TINY_TRAIN, "--epochs", 1, "--optimizer", "sgd", "--lr", 0.2, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    cfg = load_checkpoint(out / "last.pt")["config"]
    assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["batch_size"]) == ("sgd", 0.2, 5e-4, 16)
    r = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--optimizer", "rmsprop", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "rmsprop" in r.output


def test_train_augment_conflict_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--augment", "affine", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--augment affine and --no-augment" in r.output and "Traceback" not in r.output


def test_train_ema_out_of_range_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--ema", "1.5", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.output.strip() == "axnet: error: --ema 1.5: the averaging decay must be in [0, 1) " \
        "(e.g. 0.999; 0 = off)" and not (tmp_path / "x").exists()


def test_train_refuses_distillation_options_without_a_teacher(tmp_path):
    r = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--kd-alpha", "0.5", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "need --teacher" in r.output and "Traceback" not in r.output


def test_a_batch_larger_than_the_training_set_is_refused_before_the_run_directory(tmp_path):
    """The last partial batch is dropped, so such a run would train nothing and report loss 0: one line, exit 2, and
    --out left as it was."""
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--model", "mnist-addernet", "--limit", "16", "--batch-size", "32",
                                  "--epochs", "1", "--no-augment", "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and "--batch-size 32" in line and "16 training images" in line
    assert not out.exists()
