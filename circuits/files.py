"""Reading input files and writing output files safely.

Writing is atomic: a reader never sees a half-written file and a failed write leaves the old file intact. The new
file gets the mode the umask gives (overwriting keeps the old file's mode); a symlink is followed, so its target is
replaced and the link kept; a fifo, character device or `-` (standard output) is written directly, never replaced.
Temporary files are named `.NAME.PID-HOST.RANDOM.tmp`; those a killed write left behind are removed by the next
write of the same file (`remove_stale_temps`). Any operating-system failure while writing (disk full, I/O error,
read-only file system, no permission) is a one-line AxnetError naming the file.

It lives in `circuits` (the leftmost package) so every part, the netlist writers included, can use it;
`lutgen.files` re-exports it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import sys
import time

from circuits.errors import AxnetError

STALE_SECONDS = 3600  # a temporary file untouched this long belongs to no running write
DEAD_WRITER_GRACE = 10  # seconds a dead writer's file is left alone (its pid could be reused at once)
MAX_PID = 1 << 22  # Linux's pid_max ceiling: a larger number in a name is no process
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,7})-(?P<host>[0-9a-f]{6})\.[0-9a-f]{8}\.tmp$")
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # what tempfile.mkstemp wrote before


def host_tag():
    """Six hex digits naming this machine, so a pid is only judged on the machine that wrote it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temp_name(base):
    """The name of a new temporary file for `base` (see the module docstring for the pattern)."""
    return f".{base}.{os.getpid()}-{host_tag()}.{secrets.token_hex(4)}.tmp"


def pid_running(pid):
    """False only when no process `pid` exists on this machine (POSIX; elsewhere nothing is provable)."""
    if os.name != "posix":
        return True
    if not 0 < pid < MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def is_stale(name, st, now, host):
    """Whether temporary file `name` (lstat `st`) is left from a write that can no longer finish."""
    age = now - st.st_mtime
    m = _TEMP.match(name)
    if m and m.group("host") == host and int(m.group("pid")) != os.getpid():
        if not pid_running(int(m.group("pid"))):
            return age > DEAD_WRITER_GRACE
    return age > STALE_SECONDS


def remove_stale_temps(path):
    """Remove the temporary files that killed writes left: of the file `path`, or of every file when `path` is a
    directory. Only names atomic_write creates, only regular files, and only when their writer is provably dead
    (its pid is gone on this machine) or they are untouched for STALE_SECONDS. Returns the names removed."""
    path = os.fspath(path)
    if os.path.isdir(path):
        directory, base = path, None
    else:
        directory, base = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    now, host, removed = time.time(), host_tag(), []
    for name in names:
        m = _TEMP.match(name) or _LEGACY_TEMP.match(name)
        if not m or (base is not None and m.group("name") != base):
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and is_stale(name, st, now, host):
                os.remove(full)
                removed.append(name)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


# -- turning operating-system failures into one line ----------------------------------------------------------------

class RecordingFile:
    """A file object that remembers the OSError of a failed write, which torch reports as a RuntimeError."""

    def __init__(self, raw):
        self.raw = raw
        self.error = None

    def write(self, data):
        try:
            return self.raw.write(data)
        except OSError as e:
            self.error = e
            raise

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def write_failure(exc, path, recorded=None):
    """The one-line AxnetError for an OSError raised (or recorded) while writing `path`, else None."""
    cause = exc if isinstance(exc, OSError) else recorded
    if cause is None:
        return None
    name = errno.errorcode.get(cause.errno, "") if cause.errno else ""
    reason = cause.strerror or str(cause) or type(cause).__name__
    suffix = "; the previous file, if any, is unchanged" if os.path.lexists(path) else ""
    return AxnetError(f"cannot write: {reason}" + (f" ({name})" if name else "") + suffix, path=path)


@contextlib.contextmanager
def reporting_write_errors(path):
    """Run a block that writes `path`; an OSError (disk full, I/O error, no permission) becomes a one-line
    AxnetError naming the file. For writers that do not go through atomic_write (which already does this)."""
    try:
        yield
    except OSError as e:
        raise write_failure(e, os.fspath(path)) from None


# -- atomic writing -------------------------------------------------------------------------------------------------

def open_temp(directory, base):
    """(fd, path) of a new temporary file beside the output, created with mode 0666 so the umask decides."""
    for _ in range(100):
        tmp = os.path.join(directory, temp_name(base))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", directory)


def output_target(path):
    """(target, st): where to write (a symlink's final target) and its stat, or None when it does not exist."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        return target, os.stat(target)
    except FileNotFoundError:
        return target, None


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open a temporary file beside `path`; on success fsync and rename it over `path`, on error remove it.

    `-` is standard output and a fifo or character device is written in place (neither can be replaced); a
    directory is refused. Failures are one-line AxnetErrors naming `path`.
    """
    path = os.fspath(path)
    if path == "-":
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    try:
        target, st = output_target(path)
    except OSError as e:
        raise write_failure(e, path) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise AxnetError("is a directory, expected an output file", path=path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        with reporting_write_errors(path), open(target, mode, **kwargs) as f:
            yield f
        return
    with _replacing_write(path, target, st, mode, kwargs) as f:
        yield f


@contextlib.contextmanager
def _replacing_write(path, target, st, mode, kwargs):
    """The temporary-file-and-rename write of a regular (or new) file `target`, keeping an old file's mode."""
    directory = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temps(target)
        fd, tmp = open_temp(directory, os.path.basename(target))
    except OSError as e:
        raise write_failure(e, path) from None
    f = None
    try:
        with os.fdopen(fd, mode, **kwargs) as raw:
            f = RecordingFile(raw)
            yield f
            raw.flush()
            os.fsync(raw.fileno())
            if st is not None:
                os.fchmod(raw.fileno(), stat.S_IMODE(st.st_mode))
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        failure = write_failure(e, path, f.error if f is not None else None) if isinstance(e, Exception) else None
        if failure is None:
            raise
        raise failure from None


def check_output_dir(path, option):
    """Make sure `path` is (or can become) a directory axnet can write in, before any work is done.

    Creates it if needed and writes a probe file; a file in the way, a read-only or unwritable directory is a
    one-line AxnetError naming `option` (e.g. `--out`).
    """
    path = os.fspath(path)
    probe_parent = path
    while probe_parent and not os.path.lexists(probe_parent):
        probe_parent = os.path.dirname(probe_parent)
    if probe_parent and not os.path.isdir(probe_parent):
        what = "is a file" if probe_parent == path else f"cannot be created: '{probe_parent}' is a file"
        raise AxnetError(f"{option} {path}: {what}, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = open_temp(path, ".axnet-write-check")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        raise AxnetError(f"{option} {path}: cannot write there ({reason})") from None
    remove_stale_temps(path)


# -- reading --------------------------------------------------------------------------------------------------------

def read_text(path, kind="file"):
    """A text file's contents; a missing, unreadable, binary or empty file is a one-line AxnetError naming it.

    A leading UTF-8 byte-order mark is dropped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise AxnetError("no such file", path=path) from None
    except IsADirectoryError:
        raise AxnetError(f"is a directory, expected a {kind}", path=path) from None
    except OSError as e:
        raise AxnetError(f"cannot read: {e.strerror}", path=path) from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # a BOM (as some Windows editors write) is not content
    except UnicodeDecodeError:
        raise AxnetError(f"not a text file (cannot decode it as UTF-8), expected a {kind}", path=path) from None
    if not text.strip():  # after the BOM: a file holding only a BOM is empty too
        raise AxnetError("empty file", path=path)
    return text


def file_sha256(path):
    """Hex sha256 of a file's bytes: LUTs and checkpoints record it so results trace back to their circuit."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
