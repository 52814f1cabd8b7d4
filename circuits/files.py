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
