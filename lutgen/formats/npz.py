"""axnet's own LUT file: an uncompressed .npz (a zip of .npy arrays) that is read without ever unpickling.

Layout (docs/ARCHITECTURE.md): `lut` int64 with one axis per operand, `meta` a JSON string, and for gradient files
one float32 `grad_<operand>` per operand. The archive is opened with `zipfile` and every member's .npy header is
checked (no object dtype, a size the member really holds) before numpy reads it with `allow_pickle=False`, so a
truncated file, a non-zip file or a pickle is one line of axnet's own, never numpy's advice to load it unsafely.
"""
from __future__ import annotations

import json
import zipfile
import zlib

import numpy as np

from circuits.errors import AxnetError
from lutgen.files import atomic_write
from lutgen.formats.common import AXNET_VERSION, check_values_fit, declared_bits, first_line
from lutgen.lut import MAX_LUT_BITS, MAX_OUTPUT_BITS, Lut

GRAD_META_KEYS = ("half_window", "boundary", "method", "reference")
BASE_META_KEYS = ("operands", "outputs", "signed", "circuit", "sha256", "axnet_version")
MAX_MEMBER_BYTES = (8 << MAX_LUT_BITS) + 4096  # the largest table a LUT may hold, plus its .npy header
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, KeyError,
              OverflowError, TypeError, SyntaxError, RuntimeError)


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


def read_npz_arrays(path):
    """{name: array} of every .npy member, checked before reading; any malformed archive is a one-line AxnetError."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename[:-4]: read_member(archive, info, path) for info in archive.infolist()
                    if info.filename.endswith(".npy")}
    except FileNotFoundError:
        raise AxnetError("no such file", path=path) from None
    except AxnetError:
        raise
    except zipfile.BadZipFile:
        raise AxnetError("not an .npz LUT: not a zip archive, or a truncated one", path=path) from None
    except PermissionError:
        raise AxnetError("cannot read: permission denied", path=path) from None
    except NPZ_ERRORS as e:  # zipfile seeks to offsets a damaged directory gives (EINVAL), bad headers, bad data
        raise AxnetError(f"not a readable .npz LUT: a damaged archive ({first_line(e)})", path=path) from None


def read_member(archive, info, path):
    """One .npy member: its header must describe a plain (non-object) array no larger than the member's bytes."""
    name = info.filename
    if info.file_size > MAX_MEMBER_BYTES:
        raise AxnetError(f"malformed LUT file: member '{name}' holds {info.file_size} bytes, more than any LUT",
                         path=path)
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise AxnetError(f"malformed LUT file: member '{name}' has .npy version {version}", path=path)
        if dtype.hasobject:
            raise AxnetError(f"malformed LUT file: member '{name}' holds Python objects (a pickle); refused, "
                             "never unpickled", path=path)
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize + f.tell()
        if need > info.file_size:
            raise AxnetError(f"malformed LUT file: member '{name}' is truncated ({info.file_size} bytes, its "
                             f"header needs {need})", path=path)
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_npz(path):
    """Read an axnet .npz LUT without unpickling anything; a malformed file is a one-line AxnetError."""
    arrays = read_npz_arrays(path)
    for key in ("lut", "meta"):
        if key not in arrays:
            raise AxnetError(f"malformed LUT file: no '{key}' array", path=path)
    meta = arrays["meta"]
    if meta.shape != () or meta.dtype.kind not in "US":
        raise AxnetError("malformed LUT file: 'meta' is not a JSON string", path=path)
    try:
        meta = json.loads(str(meta[()]))
    except (ValueError, TypeError, RecursionError) as e:
        raise AxnetError(f"malformed LUT file: 'meta' is not JSON ({first_line(e)})", path=path) from None
    return lut_from_arrays(arrays, meta, path)


def meta_operands(meta, path):
    """[(name, width)] from meta 'operands', each width 1..MAX_OUTPUT_BITS."""
    try:
        operands = [(str(o["name"]), int(o["width"])) for o in meta["operands"]]
    except (KeyError, TypeError, ValueError, OverflowError):
        raise AxnetError("malformed LUT file: meta 'operands' must be a list of {name, width}", path=path) from None
    if not operands or any(not 1 <= w <= MAX_LUT_BITS for _, w in operands):
        raise AxnetError(f"malformed LUT file: operand widths must be 1..{MAX_LUT_BITS}, got "
                         f"{[w for _, w in operands]}", path=path)
    if len({n for n, _ in operands}) != len(operands):
        raise AxnetError("malformed LUT file: two operands share a name", path=path)
    return operands


def meta_fields(meta, path):
    """(outputs, signed, circuit, sha256) from meta, each of the type it must have."""
    outputs = meta.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise AxnetError("malformed LUT file: meta 'outputs' must be a list of names", path=path)
    signed = meta.get("signed", False)
    if not isinstance(signed, bool):
        raise AxnetError("malformed LUT file: meta 'signed' must be true or false", path=path)
    sha = meta.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise AxnetError("malformed LUT file: meta 'sha256' must be a string", path=path)
    return outputs, signed, str(meta.get("circuit") or ""), sha


def read_grads(arrays, operands, shape, path):
    """{operand: float32 gradient} for the operands that have one: all of them, or none."""
    grads = {}
    for name, _ in operands:
        if f"grad_{name}" in arrays:
            g = arrays[f"grad_{name}"]
            if g.shape != shape or g.dtype.kind != "f":
                raise AxnetError(f"malformed LUT file: 'grad_{name}' has shape {g.shape} dtype {g.dtype}, "
                                 f"expected float32 {shape}", path=path)
            grads[name] = g.astype(np.float32, copy=False)
    if grads and len(grads) != len(operands):
        raise AxnetError("malformed LUT file: gradient arrays for only some operands", path=path)
    return grads


def lut_from_arrays(arrays, meta, path):
    """Check the npz arrays against their meta (shape, dtype, values within the output bits) and build the Lut."""
    table = arrays["lut"]
    if not isinstance(meta, dict):
        raise AxnetError("malformed LUT file: 'meta' is not a JSON object", path=path)
    if table.dtype.kind not in "iu":
        raise AxnetError(f"malformed LUT file: 'lut' has dtype {table.dtype}, expected int64", path=path)
    operands = meta_operands(meta, path)
    expected = tuple(1 << w for _, w in operands)
    if table.shape != expected:
        raise AxnetError(f"malformed LUT file: 'lut' has shape {table.shape} but the operands "
                         f"{', '.join(f'{n}:{w}' for n, w in operands)} need {expected}", path=path)
    outputs, signed, circuit, sha = meta_fields(meta, path)
    check_values_fit(table, operands, min(declared_bits(outputs, path), MAX_OUTPUT_BITS), signed, path)
    grads = read_grads(arrays, operands, table.shape, path)
    grad_meta = {k: meta[k] for k in GRAD_META_KEYS if k in meta} if grads else None
    kept = BASE_META_KEYS + (GRAD_META_KEYS if grads else ())  # without gradients, a 'reference' hint is extra
    extra = {k: v for k, v in meta.items() if k not in kept}
    return Lut(table=table.astype(np.int64, copy=False), operands=operands, outputs=outputs, signed=signed,
               circuit=circuit, sha256=sha, grads=grads or None, grad_meta=grad_meta, extra=extra)
