"""Checkpoints: plain dicts of tensors, numbers, strings, lists and dicts, written atomically.

They load with `torch.load(weights_only=True)`, so opening a checkpoint never runs code from the file: a pickle
asking for any other object is refused with axnet's own one-line message. A run killed at any moment, or a disk
that fills up mid-write, leaves the previous file intact (temporary file + rename), never a half-written one.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
import zipfile

import torch

from circuits.errors import AxnetError
from lutgen.files import atomic_write

FORMAT = "axnet-checkpoint"
VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"


def save_checkpoint(path, payload):
    """Write `payload` (a dict) to `path` atomically, tagged with the checkpoint format and version.

    Serialised in memory first, so a full disk surfaces as a plain OSError of the file write, which atomic_write
    turns into one line naming the file while the previous checkpoint stays intact."""
    data = dict(payload, format=FORMAT, version=VERSION)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def unreadable_reason(path, error):
    """Why torch could not load `path`, in axnet's words (torch's own text is long and advises unsafe loading)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if isinstance(error, pickle.UnpicklingError) and found:
        return (f"refused: the file's pickle asks for {found.group(1)}, not only tensors and plain data; "
                "nothing in it was run")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC and not zipfile.is_zipfile(path):
        return "truncated or damaged checkpoint (its zip archive is incomplete)"
    if zipfile.is_zipfile(path):
        return "a zip archive, but not a PyTorch checkpoint"
    return "not a checkpoint (neither a PyTorch zip archive nor a readable pickle of tensors)"


def read_checkpoint_file(path):
    """torch.load(weights_only=True) of `path`; every failure is one AxnetError of our own."""
    if os.path.getsize(path) == 0:
        raise AxnetError("empty file, not a checkpoint", path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated, foreign or hostile file
        raise AxnetError(unreadable_reason(path, e), path=path) from None


def check_weights(data, key, path):
    """A checkpoint's `key` entry must be a non-empty dict of finite tensors."""
    state = data.get(key)
    if not isinstance(state, dict) or not state:
        raise AxnetError(f"checkpoint holds no weights (no '{key}' dictionary of tensors)", path=path)
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise AxnetError(f"checkpoint weights '{key}' hold {type(value).__name__} under {name!r}, "
                             "expected tensors", path=path)
    floats = [v.reshape(-1) for v in state.values() if v.is_floating_point()]
    if floats and not torch.isfinite(torch.cat(floats)).all():  # one pass: per-tensor calls cost 100x more
        name = next(n for n, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
        raise AxnetError(f"checkpoint weight {name} holds NaN or infinite values (the run diverged)", path=path)


def check_contents(data, path):
    """The entries eval, sweep, retrain and --resume read, with the right types, and weights that fit the model."""
    from dnn.workflow.prepare import state_problem

    if not isinstance(data.get("model"), str) or not isinstance(data.get("config"), dict):
        raise AxnetError("checkpoint has no 'model' name or 'config' settings", path=path)
    if not isinstance(data.get("model_kwargs", {}), dict):
        raise AxnetError("checkpoint 'model_kwargs' is not a dictionary", path=path)
    for key in ("state_dict", "train_state_dict"):
        if key == "state_dict" or key in data:
            check_weights(data, key, path)
            try:
                problem = state_problem(data, key)
            except AxnetError as e:
                raise AxnetError(e.message, path=path) from None
            if problem:
                raise AxnetError(problem, path=path)


def load_checkpoint(path):
    """Read a checkpoint written by `save_checkpoint`; a one-line AxnetError if it is missing, not one, or its
    weights do not fit its model."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AxnetError("checkpoint file not found", path=path)
    data = read_checkpoint_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AxnetError("not an axnet checkpoint (no 'format: axnet-checkpoint' entry)", path=path)
    if data.get("version") != VERSION:
        raise AxnetError(f"checkpoint version {data.get('version')} is not supported (expected {VERSION})", path=path)
    check_contents(data, path)
    return data


def check_circuit(checkpoint, sha256, path, what):
    """Refuse to continue a checkpoint trained against one circuit with another (compared by sha256)."""
    recorded = checkpoint.get("circuit_sha256")
    if recorded and sha256 and recorded != sha256:
        raise AxnetError(f"{what} refused: this checkpoint was trained against circuit sha256 {recorded[:16]}..., "
                         f"not {sha256[:16]}... ({checkpoint.get('arith', '?')})", path=path)
