"""Atomic file writing: a reader never sees a half-written file and a failed write leaves the old file intact.

It lives in `circuits` (the leftmost package) so every part, the netlist writers included, can use it;
`lutgen.files` re-exports it.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open a temporary file beside `path`; on success fsync and rename it over `path`, on error remove it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def read_text(path, kind="file"):
    """A text file's contents; a missing, unreadable, binary or empty file is a one-line AxnetError naming it.

    A leading UTF-8 byte-order mark is dropped."""
    from circuits.errors import AxnetError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise AxnetError("no such file", path=path) from None
    except IsADirectoryError:
        raise AxnetError(f"is a directory, expected a {kind}", path=path) from None
    except OSError as e:
        raise AxnetError(f"cannot read: {e.strerror}", path=path) from None
    if not data.strip():
        raise AxnetError("empty file", path=path)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a BOM (as some Windows editors write) is not content
    except UnicodeDecodeError:
        raise AxnetError(f"not a text file (cannot decode it as UTF-8), expected a {kind}", path=path) from None


def file_sha256(path):
    """Hex sha256 of a file's bytes: LUTs and checkpoints record it so results trace back to their circuit."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
