"""A hostile pickle in every file type axnet reads (checkpoint, .npz LUT, CIFAR-10 python batch) is refused with one
line and never executed: each file's pickle would create a marker file if it were run."""
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from circuits.errors import AxnetError
from cli import main
from dnn.data import load_data
from dnn.workflow.checkpoint import load_checkpoint
from lutgen.formats import load_lut


class Marker:
    """Unpickling this calls open(path, 'w'): the marker file appears if the pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def run_cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    return r.output


def test_checkpoint(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": "axnet-checkpoint", "version": 1, "model": "mnist-cnn", "x": Marker(marker)},
               tmp_path / "evil.pt")
    with pytest.raises(AxnetError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    for args in (["eval", tmp_path / "evil.pt"], ["sweep", tmp_path / "evil.pt"],
                 ["train", "--model", "mnist-cnn", "--teacher", tmp_path / "evil.pt", "--limit", 32, "--epochs", 1,
                  "--out", tmp_path / "run"]):
        assert "nothing in it was run" in run_cli(*args)
    assert not marker.exists()


def test_npz_lut(tmp_path):
    marker = tmp_path / "ran"
    np.savez(tmp_path / "evil.npz", lut=np.array([Marker(marker)], dtype=object),
             meta=np.array(json.dumps({"operands": [{"name": "a", "width": 1}], "outputs": ["s"]})))
    with pytest.raises(AxnetError):
        load_lut(tmp_path / "evil.npz")
    run_cli("metrics", tmp_path / "evil.npz")
    assert not marker.exists()


def test_cifar10_python_batch(tmp_path):
    marker = tmp_path.parent / (tmp_path.name + "-ran")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": Marker(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(AxnetError, match="refused"):
        load_data(f"cifar10:{tmp_path}")
    line = run_cli("train", "--model", "lenet5-cnn", "--data", f"cifar10:{tmp_path}", "--out", tmp_path / "run")
    assert "data_batch_1: refused" in line and "nothing was run" in line
    assert not marker.exists()
