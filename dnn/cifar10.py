"""CIFAR-10 from either of its official directories, without running anything from the files.

- `cifar-10-batches-bin`: `data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`; each record is one label
  byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32). Read natively with numpy.
- `cifar-10-batches-py`: `data_batch_1` .. `data_batch_5`, `test_batch`; each a pickled dict holding a uint8
  array and lists of ints and bytes. Pickle is that format's definition, and a plain `pickle.load` would run any
  callable a hostile file names, so `SafeBatchUnpickler` admits only the few numpy constructors an array needs and
  refuses everything else before it is called (one-line AxnetError, nothing executed).

`load_cifar10_dir(DIR)` takes either directory, or one that contains either (the binary one first).
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

from circuits.errors import AxnetError

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
SUBDIRS = ("cifar-10-batches-bin", "cifar-10-batches-py")
PIXELS = 3 * 32 * 32
RECORD = 1 + PIXELS  # label byte + pixels, the binary version's record


def reconstruct(cls, shape, typecode):
    """numpy's array pickling helper, admitted for ndarray only (what `numpy.core.multiarray._reconstruct` builds)."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {getattr(cls, '__name__', cls)!r}")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def plain_dtype(spec, align=False, copy=False):
    """numpy.dtype for plain numbers only: an object dtype would let the array hold arbitrary Python objects."""
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {spec!r}")
    return dtype


def from_buffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array helper: an array over the pickled bytes (copied, so it owns its memory)."""
    if plain_dtype(dtype).hasobject:
        raise pickle.UnpicklingError("object dtype")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order=order).copy()


def latin1_encode(text, codec="latin1"):
    """How Python 3 pickles bytes at protocol 2 (`_codecs.encode(text, 'latin1')`); no other codec is admitted."""
    if codec not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {codec!r}")
    return text.encode("latin1")


# (module, name) -> the callable handed to the unpickler instead of importing anything
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): plain_dtype,
    ("numpy.core.numeric", "_frombuffer"): from_buffer,
    ("numpy._core.numeric", "_frombuffer"): from_buffer,
    ("_codecs", "encode"): latin1_encode,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a callable outside ALLOWED_GLOBALS."""


class SafeBatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python batches: dicts, lists, ints, bytes, str and plain numpy arrays, nothing else."""

    def find_class(self, module, name):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise RefusedGlobal(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent id")


def safe_unpickle(data):
    """Unpickle CIFAR batch bytes with SafeBatchUnpickler (Python 2 strings read as bytes, as the batches need)."""
    return SafeBatchUnpickler(io.BytesIO(data), encoding="bytes").load()


def check_batch(data, labels, path):
    """Shapes, types and label range of one batch: (uint8 (N, 3, 32, 32), int64 labels)."""
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS or len(labels) != len(data):
        raise AxnetError(f"expected uint8 data of shape (N, {PIXELS}) and N labels, found {data.dtype} "
                         f"{data.shape} and {len(labels)} labels", path=path)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise AxnetError("label out of range 0..9", path=path)
    return data.reshape(-1, 3, 32, 32), labels


def read_file_bytes(path):
    """A batch file's bytes; a missing one names the file and its directory."""
    if not os.path.isfile(path):
        raise AxnetError(f"CIFAR-10 batch file {os.path.basename(path)} not found in this directory",
                         path=os.path.dirname(path) or ".")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AxnetError(f"cannot read: {e.strerror}", path=path) from None


def read_python_batch(path):
    """One CIFAR-10 python batch through the restricted unpickler."""
    raw = read_file_bytes(path)
    try:
        batch = safe_unpickle(raw)
    except RefusedGlobal as e:
        raise AxnetError(f"refused: the pickle asks for {e}, which a CIFAR-10 batch never holds "
                         "(nothing was run)", path=path) from None
    except Exception as e:  # any other unpickling failure means a corrupt or foreign file
        raise AxnetError(f"not a CIFAR-10 python batch ({type(e).__name__})", path=path) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise AxnetError("not a CIFAR-10 python batch (no b'data'/b'labels' keys)", path=path)
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or not isinstance(labels, (list, np.ndarray)):
        raise AxnetError("not a CIFAR-10 python batch (b'data' is not an array or b'labels' not a list)", path=path)
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise AxnetError("not a CIFAR-10 python batch (labels are not integers)", path=path) from None
    return check_batch(data, labels.reshape(-1), path)


def read_binary_batch(path):
    """One CIFAR-10 binary batch: records of one label byte and 3072 pixel bytes."""
    raw = read_file_bytes(path)
    if not raw or len(raw) % RECORD:
        raise AxnetError(f"{len(raw)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                         "(truncated or not a binary batch)", path=path)
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    return check_batch(records[:, 1:], records[:, 0].astype(np.int64), path)


def batch_layout(directory):
    """(directory, suffix, reader) of the CIFAR-10 batches in `directory` or one of its official subdirectories."""
    for where in [directory] + [os.path.join(directory, s) for s in SUBDIRS]:
        if os.path.isfile(os.path.join(where, TRAIN_FILES[0] + ".bin")):
            return where, ".bin", read_binary_batch
        if os.path.isfile(os.path.join(where, TRAIN_FILES[0])):
            return where, "", read_python_batch
    raise AxnetError(f"no CIFAR-10 batches here: expected {TRAIN_FILES[0]}.bin (cifar-10-batches-bin) or "
                     f"{TRAIN_FILES[0]} (cifar-10-batches-py)", path=directory)


def read_cifar10_arrays(directory):
    """(train uint8 images, train labels, test uint8 images, test labels) from a CIFAR-10 directory."""
    if not os.path.isdir(directory):
        raise AxnetError("--data cifar10:DIR: directory not found", path=directory)
    where, suffix, reader = batch_layout(directory)
    parts = [reader(os.path.join(where, name + suffix)) for name in TRAIN_FILES]
    test_x, test_y = reader(os.path.join(where, TEST_FILE + suffix))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y
