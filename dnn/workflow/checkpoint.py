"""Checkpoints: plain dicts of tensors, numbers, strings, lists and dicts, written atomically.

They load with `torch.load(weights_only=True)`, so opening a checkpoint never runs code from the file. A run killed
at any moment leaves the previous file intact (temporary file + rename), never a half-written one.
"""
from __future__ import annotations

import os

import torch

from circuits.errors import AxnetError
from lutgen.files import atomic_write

FORMAT = "axnet-checkpoint"
VERSION = 1


def save_checkpoint(path, payload):
    """Write `payload` (a dict) to `path` atomically, tagged with the checkpoint format and version."""
    data = dict(payload, format=FORMAT, version=VERSION)
    with atomic_write(path, "wb") as f:
        torch.save(data, f)


def load_checkpoint(path):
    """Read a checkpoint written by `save_checkpoint`; a one-line AxnetError if it is missing or not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AxnetError("checkpoint file not found", path=path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AxnetError(f"not a loadable checkpoint ({first[:120]})", path=path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AxnetError("not an axnet checkpoint (no 'format: axnet-checkpoint' entry)", path=path)
    if data.get("version") != VERSION:
        raise AxnetError(f"checkpoint version {data.get('version')} is not supported (expected {VERSION})", path=path)
    return data


def check_circuit(checkpoint, sha256, path, what):
    """Refuse to continue a checkpoint trained against one circuit with another (compared by sha256)."""
    recorded = checkpoint.get("circuit_sha256")
    if recorded and sha256 and recorded != sha256:
        raise AxnetError(f"{what} refused: this checkpoint was trained against circuit sha256 {recorded[:16]}..., "
                         f"not {sha256[:16]}... ({checkpoint.get('arith', '?')})", path=path)
