"""Checkpoints that are garbage, truncated, hostile, without weights or with mis-shaped weights: one line each."""
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

from circuits.errors import AxnetError
from cli import main
from dnn.models import build_model
from dnn.workflow.checkpoint import load_checkpoint, save_checkpoint


class Marker:
    """Unpickling this runs open(path, 'w'): the marker file appears if the pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def good_payload(model="mnist-cnn"):
    return {"model": model, "config": {"model": model}, "state_dict": build_model(model).state_dict()}


def one_line_error(args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    return r.output.strip()


def test_every_saved_checkpoint_loads_weights_only(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", good_payload())
    raw = torch.load(tmp_path / "ok.pt", weights_only=True)
    assert raw["format"] == "axnet-checkpoint" and load_checkpoint(tmp_path / "ok.pt")["model"] == "mnist-cnn"


@pytest.mark.parametrize("inside_zip", [True, False])
def test_a_hostile_pickle_is_refused_and_never_run(tmp_path, inside_zip):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = dict(good_payload(), format="axnet-checkpoint", version=1, extra=Marker(str(marker)))
    if inside_zip:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps({"format": "axnet-checkpoint", "extra": Marker(str(marker))}, protocol=2))
    with pytest.raises(AxnetError, match=r"evil.pt: refused: the file's pickle asks for (builtins|_?io)\.open"):
        load_checkpoint(path)
    assert not marker.exists()
    assert "nothing in it was run" in one_line_error(["eval", path])
    assert not marker.exists()


def test_truncated_garbage_and_empty_checkpoints_get_our_own_words(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", good_payload())
    whole = (tmp_path / "ok.pt").read_bytes()
    cases = {"cut.pt": whole[:len(whole) // 2], "junk.pt": os.urandom(300), "text.pt": b"hello",
             "empty.pt": b"", "zip.pt": None}
    import zipfile
    for name, data in cases.items():
        if data is None:
            with zipfile.ZipFile(tmp_path / name, "w") as z:
                z.writestr("readme.txt", "not torch")
        else:
            (tmp_path / name).write_bytes(data)
    expect = {"cut.pt": "truncated or damaged checkpoint", "junk.pt": "not a checkpoint",
              "text.pt": "not a checkpoint", "empty.pt": "empty file, not a checkpoint",
              "zip.pt": "a zip archive, but not a PyTorch checkpoint"}
    for name, words in expect.items():
        line = one_line_error(["eval", tmp_path / name])
        assert line.startswith(f"axnet: error: {tmp_path / name}: {words}"), line
        assert "weights_only" not in line and "PytorchStreamReader" not in line


def test_a_checkpoint_without_weights_is_one_line(tmp_path):
    payload = good_payload()
    del payload["state_dict"]
    save_checkpoint(tmp_path / "none.pt", payload)
    assert "checkpoint holds no weights" in one_line_error(["eval", tmp_path / "none.pt"])
    payload["state_dict"] = {"conv.weight": [1, 2]}
    save_checkpoint(tmp_path / "list.pt", payload)
    assert "hold list under 'conv.weight'" in one_line_error(["eval", tmp_path / "list.pt"])
    payload = good_payload()
    del payload["model"]
    save_checkpoint(tmp_path / "nomodel.pt", payload)
    assert "no 'model' name" in one_line_error(["eval", tmp_path / "nomodel.pt"])


def test_mis_shaped_missing_and_non_finite_weights_name_the_tensor(tmp_path):
    payload = good_payload()
    key = next(k for k, v in payload["state_dict"].items() if v.dim() == 4)
    payload["state_dict"][key] = torch.zeros(3, 3)
    save_checkpoint(tmp_path / "shape.pt", payload)
    line = one_line_error(["eval", tmp_path / "shape.pt"])
    assert f"{key} has shape (3, 3), the model expects" in line and "shape.pt" in line
    line = one_line_error(["retrain", tmp_path / "shape.pt", "--circuit", tmp_path / "none.blif", "--out",
                           tmp_path / "re"])
    assert f"shape.pt: checkpoint does not fit the model: {key} has shape (3, 3)" in line
    payload = good_payload()
    payload["state_dict"].pop(key)
    save_checkpoint(tmp_path / "missing.pt", payload)
    assert f"mismatched entries, e.g. {key}" in one_line_error(["eval", tmp_path / "missing.pt"])
    payload = good_payload()
    payload["state_dict"][key] = payload["state_dict"][key].clone().fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", payload)
    assert f"{key} holds NaN or infinite values" in one_line_error(["eval", tmp_path / "nan.pt"])
