"""Issue 12, runs: --out checked before any work, a full disk while checkpointing, existing runs kept unless asked,
--resume raising --epochs, the whole test set unless --limit-test, and progress bars only on a terminal."""
import contextlib
import errno
import json
import math
import os

import pytest
import torch

from circuits.errors import AxnetError
from cli_runs import TINY_TRAIN, invoke, train_tiny
from dnn.workflow import checkpoint as C
from dnn.workflow import loop
from dnn.workflow.checkpoint import load_checkpoint
from dnn.workflow.rundir import cosine_lr

TINY = TINY_TRAIN


def one_line_error(*args):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    return r.output.strip()


@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    """A finished 1-epoch run (Adam, lr 0.03) on 48 digits."""
    out = tmp_path_factory.mktemp("runs") / "one"
    train_tiny(out)
    return out


# ---- 6: --out checked before any work -------------------------------------------------------------------------------

def test_train_sweep_retrain_refuse_a_bad_out_at_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, words in ((blocker, "is a file"), (blocker / "run", "cannot be created"),
                       ("/proc/axnet-run", "cannot write there")):
        assert words in one_line_error("train", *TINY, "--out", out)
        # the checkpoint does not exist: the --out check comes before anything is read or measured
        line = one_line_error("sweep", tmp_path / "none.pt", "--out", out)
        assert f"--out {out}" in line and words in line
        line = one_line_error("retrain", tmp_path / "none.pt", "--circuit", tmp_path / "none.blif", "--out", out)
        assert f"--out {out}" in line and words in line


# ---- 7: a full disk while writing a checkpoint ---------------------------------------------------------------------

def full_disk_after_half(real):
    """An atomic_write whose file takes half of the first write, then fails with ENOSPC (disk full mid-file)."""

    class HalfFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    @contextlib.contextmanager
    def writer(path, mode="w", **kw):
        with real(path, mode, **kw) as f:
            yield HalfFile(f)
    return writer


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_good_checkpoint(run1, tmp_path, monkeypatch):
    run = tmp_path / "run"
    import shutil
    shutil.copytree(run1, run)
    before = (run / "last.pt").read_bytes()
    monkeypatch.setattr(C, "atomic_write", full_disk_after_half(C.atomic_write))
    r = invoke("train", "--out", run, "--resume", "--epochs", 2)
    assert r.exit_code == 2 and "Traceback" not in r.output
    line = r.stderr.strip().splitlines()[-1]  # after the epoch's plain progress line
    assert line.startswith("axnet: error: ") and "No space left on device" in line and ".pt: cannot write" in line
    assert (run / "last.pt").read_bytes() == before and load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


# ---- 8: an existing run is kept unless --resume or --overwrite -----------------------------------------------------

def test_train_into_an_existing_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "r"
    assert invoke("train", *TINY, "--epochs", 2, "--save-every", 1, "--out", out).exit_code == 0
    before = (out / "last.pt").read_bytes()
    line = one_line_error("train", *TINY, "--epochs", 1, "--out", out)
    assert "already holds a run (best.pt, curves.png, epoch_0001.pt, epoch_0002.pt, ...)" in line
    assert "--resume" in line and "--overwrite" in line and (out / "last.pt").read_bytes() == before
    assert "give one of them" in one_line_error("train", *TINY, "--out", out, "--resume", "--overwrite")
    r = invoke("train", *TINY, "--epochs", 1, "--save-every", 1, "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not (out / "epoch_0002.pt").exists()  # the old run's later epochs do not pass for the new run's


def test_resume_continues_with_the_runs_settings_and_may_raise_epochs(run1, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run1, run)
    # nothing given: the finished run stays as it was (the defaults, e.g. 30 epochs for mnist, are not compared)
    r = invoke("train", "--out", run, "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epochs"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 1
    assert "--lr 0.5 differs from the run's 0.03" in one_line_error("train", "--out", run, "--resume", "--lr", 0.5)
    assert "--limit 40 differs from the run's 48" in one_line_error("train", "--out", run, "--resume", "--limit", 40)
    r = invoke("train", "--out", run, "--resume", "--epochs", 3, "--json")
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["history"]["epoch"] == [1, 2, 3] and ckpt["config"]["epochs"] == 3
    # the schedule is the one a 3-epoch run has from epoch 1 on, not a cosine that already reached zero
    assert ckpt["history"]["lr"] == pytest.approx([0.03, cosine_lr(0.03, 1, 3), cosine_lr(0.03, 2, 3)])
    assert ckpt["history"]["lr"][1] == pytest.approx(0.03 * 0.75)
    assert "--epochs 2 is below the run's 3" in one_line_error("train", "--out", run, "--resume", "--epochs", 2)
    assert "--model is required" in one_line_error("train", "--out", tmp_path / "new")


def test_retrain_keeps_earlier_results_unless_resume_or_overwrite(run1, tmp_path):
    out = tmp_path / "re"
    out.mkdir()
    (out / "retrain.json").write_text("{}")
    line = one_line_error("retrain", run1 / "last.pt", "--circuit", tmp_path / "x.blif", "--out", out)
    assert "already holds retraining results (retrain.json)" in line


# ---- 9: the whole test set unless --limit-test ----------------------------------------------------------------------

def test_eval_and_sweep_use_the_whole_test_set_unless_limited(run1):
    r = invoke("eval", run1 / "last.pt", "--json")
    whole = json.loads(r.stdout)
    assert whole["images"] == 1000 and whole["data_used"] == "mnist5k: the whole test set, 1000 images"
    r = invoke("eval", run1 / "last.pt", "--limit-test", 10, "--json")
    assert json.loads(r.stdout)["data_used"] == "mnist5k: the first 10 of 1000 test images (--limit-test 10)"
    r = invoke("eval", run1 / "last.pt")
    assert r.output.splitlines()[0] == "data mnist5k: the whole test set, 1000 images"
    r = invoke("sweep", run1 / "last.pt", "--width", 8, "--approx-bits", 2, "--limit-test", 20)
    assert r.exit_code == 0, r.output
    assert "data mnist5k: the first 20 of 1000 test images (--limit-test 20)" in r.stdout.splitlines()[0]
    assert "sweep k=2: " in r.stderr and "\r" not in r.stderr  # a plain line per point in a log


def test_retrain_reports_its_data_and_the_half_window_it_uses(run1, tmp_path):
    blif = tmp_path / "add6.blif"
    assert invoke("build-adder", "--width", 6, "--cell", "ama2", "--approx-bits", 2, "-o", blif).exit_code == 0
    assert invoke("simulate", blif, "-o", tmp_path / "add6.npz").exit_code == 0
    assert invoke("gradlut", tmp_path / "add6.npz", "--half-window", 1, "-o", tmp_path / "g1.npz").exit_code == 0
    r = invoke("retrain", run1 / "last.pt", "--circuit", tmp_path / "g1.npz", "--half-window", 2, "--epochs", 1,
               "--batch-size", 16, "--limit-test", 50, "--out", tmp_path / "re")
    assert r.exit_code == 0, r.output
    note = ("--half-window 2: the gradient file was made with half window 1; using 2 (gradients recomputed from "
            "the LUT's values, the file's are not used)")
    assert f"axnet: note: {note}" in r.stderr
    assert r.stdout.splitlines()[0] == "data mnist5k: the first 50 of 1000 test images (--limit-test 50); " \
        "48 training images"
    result = json.loads((tmp_path / "re" / "retrain.json").read_text())
    assert result["notes"] == [note] and result["images"] == 50
    assert load_checkpoint(tmp_path / "re" / "retrain_lut" / "last.pt")["config"]["test_limit"] == 50
    # a retrained checkpoint (with its calibration buffers) passes the weight checks and evaluates
    r = invoke("eval", tmp_path / "re" / "retrain_lut" / "last.pt", "--limit-test", 20, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 20


def test_half_window_note_says_which_window():
    from dnn.workflow.retrain import half_window_note

    class FakeLut:  # the two fields the note reads
        grads = {"a": None}
        grad_meta = {"method": "diff", "half_window": 3}
    assert half_window_note(FakeLut, "lut", None) == "--circuit holds gradients made with half window 3; using them"
    assert half_window_note(FakeLut, "lut", 3) is None and half_window_note(FakeLut, "ste", 1) is None
    assert "made with half window 3; using 1" in half_window_note(FakeLut, "lut", 1)


# ---- 11: non-finite float options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--eta", "--ema", "--kd-alpha", "--kd-temperature"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_options_are_refused_by_name(tmp_path, option, value):
    line = one_line_error("train", *TINY, option, value, "--out", tmp_path / "x")
    assert line == f"axnet: error: {option} {value}: must be a finite number"
    assert not (tmp_path / "x").exists()


def test_retrain_lr_and_library_configs_must_be_finite(tmp_path):
    line = one_line_error("retrain", tmp_path / "c.pt", "--circuit", tmp_path / "a.blif", "--lr", "nan",
                          "--out", tmp_path / "x")
    assert line == "axnet: error: --lr nan: must be a finite number"
    from dnn.workflow import TrainConfig, run_training
    for field in ("lr", "momentum", "weight_decay", "eta", "kd_alpha", "kd_temperature", "ema"):
        with pytest.raises(AxnetError, match="must be a finite number"):
            run_training(TrainConfig(**{field: math.nan}), str(tmp_path / field), show=False)
        assert not (tmp_path / field).exists()


# ---- 14: progress bars only on a terminal ---------------------------------------------------------------------------

def test_progress_bars_draw_only_on_a_terminal(run1, capfd):
    assert loop.bar_off(True) is None and loop.bar_off(False) is True  # None: tqdm's "terminals only"
    from dnn.workflow.prepare import model_from_checkpoint
    model = model_from_checkpoint(load_checkpoint(run1 / "last.pt"))
    x, y = torch.zeros(1200, 1, 28, 28), torch.zeros(1200, dtype=torch.long)
    capfd.readouterr()
    loop.evaluate(model, x, y, show=True)  # stderr here is a pipe, not a terminal
    assert capfd.readouterr().err == ""


def test_training_logs_plain_lines_without_carriage_returns(tmp_path):
    r = invoke("train", *TINY, "--epochs", 1, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert "epoch   1/1  loss" in r.stderr and "\r" not in r.stderr
