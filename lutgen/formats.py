"""LUT file formats: axnet's .npz, the published AppMult text files, CSV, and AdaPT's C header.

npz layout (docs/ARCHITECTURE.md): `lut` int64 with one axis per operand, `meta` a JSON string, and for gradient
files one float32 `grad_<operand>` per operand. Every reader raises a one-line AxnetError naming the file (and line)
for malformed input; every writer goes through `atomic_write`, so a failure never leaves a partial file.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from lutgen.files import atomic_write
from lutgen.lut import Lut, pattern_values

AXNET_VERSION = "0.1.0"

# ---- npz ------------------------------------------------------------------------------------------------------------


def lut_meta(lut):
    """The JSON-able description stored beside the table."""
    meta = dict(lut.extra)
    meta.update({
        "operands": [{"name": n, "width": int(w)} for n, w in lut.operands],
        "outputs": list(lut.outputs),
        "signed": bool(lut.signed),
        "circuit": lut.circuit,
        "sha256": lut.sha256,
        "axnet_version": AXNET_VERSION,
    })
    if lut.grad_meta is not None:
        meta.update(lut.grad_meta)
    return meta


def save_npz(lut, path):
    """Write `lut` (and its gradients, if any) as an uncompressed .npz, atomically."""
    arrays = {"lut": np.asarray(lut.table, dtype=np.int64), "meta": np.array(json.dumps(lut_meta(lut)))}
    for name, grad in (lut.grads or {}).items():
        arrays[f"grad_{name}"] = np.asarray(grad, dtype=np.float32)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


GRAD_META_KEYS = ("half_window", "boundary", "method", "reference")
BASE_META_KEYS = ("operands", "outputs", "signed", "circuit", "sha256", "axnet_version")


def load_npz(path):
    """Read an axnet .npz LUT without unpickling anything; a malformed file is a one-line AxnetError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise AxnetError("no such file", path=path) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AxnetError(f"not a readable .npz LUT ({first_line(e)})", path=path) from None
    for key in ("lut", "meta"):
        if key not in arrays:
            raise AxnetError(f"malformed LUT file: no '{key}' array", path=path)
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (ValueError, TypeError) as e:
        raise AxnetError(f"malformed LUT file: 'meta' is not JSON ({first_line(e)})", path=path) from None
    return lut_from_arrays(arrays, meta, path)


def lut_from_arrays(arrays, meta, path):
    """Check the npz arrays against their meta and build the Lut."""
    table = arrays["lut"]
    if not isinstance(meta, dict):
        raise AxnetError("malformed LUT file: 'meta' is not a JSON object", path=path)
    if table.dtype.kind not in "iu":
        raise AxnetError(f"malformed LUT file: 'lut' has dtype {table.dtype}, expected int64", path=path)
    try:
        operands = [(str(o["name"]), int(o["width"])) for o in meta["operands"]]
    except (KeyError, TypeError, ValueError):
        raise AxnetError("malformed LUT file: meta 'operands' must be a list of {name, width}", path=path) from None
    expected = tuple(1 << w for _, w in operands)
    if table.shape != expected:
        raise AxnetError(f"malformed LUT file: 'lut' has shape {table.shape} but the operands "
                         f"{', '.join(f'{n}:{w}' for n, w in operands)} need {expected}", path=path)
    grads = {}
    for name, _ in operands:
        if f"grad_{name}" in arrays:
            g = arrays[f"grad_{name}"]
            if g.shape != table.shape or g.dtype.kind != "f":
                raise AxnetError(f"malformed LUT file: 'grad_{name}' has shape {g.shape} dtype {g.dtype}, "
                                 f"expected float32 {table.shape}", path=path)
            grads[name] = g.astype(np.float32)
    if grads and len(grads) != len(operands):
        raise AxnetError("malformed LUT file: gradient arrays for only some operands", path=path)
    grad_meta = {k: meta[k] for k in GRAD_META_KEYS if k in meta} if grads else None
    extra = {k: v for k, v in meta.items() if k not in BASE_META_KEYS + GRAD_META_KEYS}
    return Lut(table=table.astype(np.int64), operands=operands, outputs=list(meta.get("outputs", [])),
               signed=bool(meta.get("signed", False)), circuit=str(meta.get("circuit") or ""),
               sha256=meta.get("sha256"), grads=grads or None, grad_meta=grad_meta, extra=extra)


def first_line(e):
    """The first line of an exception's message, so wrapped errors stay one line."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- picking a reader -----------------------------------------------------------------------------------------------


def load_lut(path):
    """Read a LUT from any supported format, chosen by extension and, failing that, by content."""
    p = Path(path)
    if not p.exists():
        raise AxnetError("no such file", path=path)
    if p.is_dir():
        raise AxnetError("is a directory, not a LUT file", path=path)
    if p.stat().st_size == 0:
        raise AxnetError("empty file", path=path)
    return load_npz(path)
