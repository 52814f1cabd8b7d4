"""Issue 12 items 3-7: output files keep sensible modes, symlinks, fifos, devices and stdout are respected, stale
temporary files are cleaned up without touching a live writer's, output directories are checked up front, and a full
disk is one line with the old file intact."""
import errno
import io
import os
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import circuits.files as files
from circuits.errors import AxnetError
from circuits.files import atomic_write, check_output_dir, remove_stale_temps, reporting_write_errors, temp_name


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_new_files_get_the_umask_mode_and_overwrites_keep_theirs(tmp_path, umask):
    for mask, want in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        path = tmp_path / f"new{mask:o}.txt"
        with atomic_write(path) as f:
            f.write("x")
        assert mode_of(path) == want
    umask(0o022)
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    with atomic_write(kept) as f:
        f.write("new")
    assert kept.read_text() == "new" and mode_of(kept) == 0o640


def test_symlink_output_writes_the_target_and_keeps_the_link(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "lut.csv"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with atomic_write(link) as f:
        f.write("new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new" and mode_of(target) == 0o600
    assert sorted(p.name for p in real_dir.iterdir()) == ["lut.csv"]  # the temporary file sat beside the target
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(real_dir / "made.csv")
    with atomic_write(dangling) as f:
        f.write("made")
    assert dangling.is_symlink() and (real_dir / "made.csv").read_text() == "made"


def test_fifo_is_written_directly_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    with atomic_write(fifo, "wb") as f:
        f.write(b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_character_device_is_written_in_place_never_replaced():
    before = os.stat("/dev/null")
    with atomic_write("/dev/null") as f:
        f.write("discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_dev_full_gives_a_one_line_disk_full_error():
    with pytest.raises(AxnetError) as e:
        with atomic_write("/dev/full", "wb") as f:
            f.write(b"x" * (1 << 16))
            f.flush()
    assert str(e.value).startswith("/dev/full: cannot write:") and "ENOSPC" in str(e.value)
    assert "\n" not in str(e.value)


def test_dash_is_standard_output(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_write("-") as f:
        f.write("to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    assert not (tmp_path / "-").exists() and list(tmp_path.iterdir()) == []


def test_directory_as_output_file_is_refused(tmp_path):
    with pytest.raises(AxnetError, match="is a directory"):
        with atomic_write(tmp_path) as f:
            f.write("x")


# ---- stale temporary files -----------------------------------------------------------------------------------------------

def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_temp(directory, name, age):
    path = directory / name
    path.write_text("partial")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_stale_temps_of_dead_or_old_writes_go_and_live_ones_stay(tmp_path):
    host = files.host_tag()
    base = "out.npz"
    gone = [
        make_temp(tmp_path, f".{base}.{dead_pid()}-{host}.0123abcd.tmp", 60),  # writer dead, past the grace
        make_temp(tmp_path, f".{base}.{os.getpid()}-{host}.89abcdef.tmp", 2 * files.STALE_SECONDS),  # too old
        make_temp(tmp_path, f".{base}.a1b2c3d4.tmp", 2 * files.STALE_SECONDS),  # old mkstemp name, too old
    ]
    kept = [
        make_temp(tmp_path, f".{base}.{dead_pid()}-{host}.0123abce.tmp", 1),  # dead, but within the grace
        make_temp(tmp_path, f".{base}.{os.getppid()}-{host}.0123abcf.tmp", 600),  # writer still running
        make_temp(tmp_path, f".{base}.{dead_pid()}-abcdef.0123abd0.tmp", 600) if host != "abcdef" else None,
        make_temp(tmp_path, f".{base}.a1b2c3d5.tmp", 60),  # old-style name, recent
        make_temp(tmp_path, f".other.npz.{dead_pid()}-{host}.0123abd1.tmp", 600),  # another file's
        make_temp(tmp_path, f".{base}.tmp", 2 * files.STALE_SECONDS),  # not a name atomic_write makes
        make_temp(tmp_path, f"{base}.{dead_pid()}-{host}.0123abd2.tmp", 2 * files.STALE_SECONDS),  # no dot
    ]
    with atomic_write(tmp_path / base, "wb") as f:
        f.write(b"complete")
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept if p is not None)
    assert (tmp_path / base).read_bytes() == b"complete"
    # a whole directory (what --resume calls) also takes other files' stale temporaries
    other, recent_legacy = kept[4], kept[3]
    assert remove_stale_temps(tmp_path) == [other.name]
    os.utime(recent_legacy, (time.time() - 2 * files.STALE_SECONDS,) * 2)
    assert remove_stale_temps(tmp_path) == [recent_legacy.name]


def test_a_concurrent_writers_temporary_file_is_never_removed(tmp_path):
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]);\n"
              "from circuits.files import atomic_write\n"
              "with atomic_write(sys.argv[2], 'w') as f:\n"
              "    f.write('partial'); f.flush(); print('ready', flush=True); sys.stdin.readline()\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(files.__file__)))
    out = tmp_path / "shared.csv"
    child = subprocess.Popen([sys.executable, "-c", script, repo, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        (temp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".shared.csv.")]
        os.utime(temp, (time.time() - 600,) * 2)  # old enough for a dead writer, but this one runs
        with atomic_write(out) as f:  # our own write of the same file, and in the same thread a second one
            f.write("ours")
            assert temp.exists()
        assert remove_stale_temps(out) == [] and temp.exists()
    finally:
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(20)
    assert child.returncode == 0 and out.read_text() == "partial"


def test_temp_names_match_the_pattern_the_cleaner_looks_for():
    name = temp_name("a.b c.npz")
    m = files._TEMP.match(name)
    assert m and m.group("name") == "a.b c.npz" and int(m.group("pid")) == os.getpid()


# ---- output directories ---------------------------------------------------------------------------------------------

def test_check_output_dir_creates_and_probes(tmp_path):
    check_output_dir(tmp_path / "runs" / "one", "--out")
    assert (tmp_path / "runs" / "one").is_dir() and list((tmp_path / "runs" / "one").iterdir()) == []


def test_check_output_dir_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AxnetError, match=r"^--out .*afile: is a file, not a directory$"):
        check_output_dir(tmp_path / "afile", "--out")
    with pytest.raises(AxnetError, match=r"^--out-dir .*afile/sub: cannot be created: '.*afile' is a file"):
        check_output_dir(tmp_path / "afile" / "sub", "--out-dir")


def test_check_output_dir_refuses_an_unwritable_directory(tmp_path, monkeypatch):
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:  # the real thing where permissions bind
        os.chmod(target, 0o500)
        try:
            with pytest.raises(AxnetError, match="--out .*ro: cannot write there"):
                check_output_dir(target, "--out")
        finally:
            os.chmod(target, 0o700)

    def read_only(directory, base):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files, "open_temp", read_only)
    with pytest.raises(AxnetError, match=r"^--out .*ro: cannot write there \(Read-only file system\)$"):
        check_output_dir(target, "--out")


# ---- disk full and I/O errors ---------------------------------------------------------------------------------------------

class FailingFile(io.FileIO):
    """A real file whose writes fail with `code` once `limit` bytes are written (a disk filling up)."""

    limit, code = 100, errno.ENOSPC

    def write(self, data):
        if self.tell() + len(data) > self.limit:
            raise OSError(self.code, os.strerror(self.code))
        return super().write(data)


def failing_fdopen(code, limit=100):
    real = os.fdopen

    def fdopen(fd, mode="r", **kwargs):
        if "b" in mode:
            raw = type("F", (FailingFile,), {"limit": limit, "code": code})(fd, "w")
            return io.BufferedWriter(raw, buffer_size=16)
        return real(fd, mode, **kwargs)
    return fdopen


@pytest.mark.parametrize("code, name", [(errno.ENOSPC, "ENOSPC"), (errno.EIO, "EIO")])
def test_disk_errors_are_one_line_and_leave_the_old_file(tmp_path, monkeypatch, code, name):
    path = tmp_path / "last.pt"
    path.write_bytes(b"good checkpoint")
    monkeypatch.setattr(files.os, "fdopen", failing_fdopen(code))
    with pytest.raises(AxnetError) as e:
        with atomic_write(path, "wb") as f:
            np.save(f, np.zeros(1000))
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot write: ") and f"({name})" in msg and "unchanged" in msg
    assert "\n" not in msg
    assert path.read_bytes() == b"good checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_torch_save_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "best.pt"
    path.write_bytes(b"good")
    monkeypatch.setattr(files.os, "fdopen", failing_fdopen(errno.ENOSPC, limit=4096))
    with pytest.raises(AxnetError, match=r"best.pt: cannot write: No space left on device \(ENOSPC\)"):
        with atomic_write(path, "wb") as f:
            torch.save({"w": torch.zeros(10000)}, f)  # torch turns the OSError into a RuntimeError
    assert path.read_bytes() == b"good" and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_write(tmp_path / "x.txt") as f:
            f.write("x")
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_reporting_write_errors_for_direct_writers(tmp_path):
    with pytest.raises(AxnetError, match=r"x.bin: cannot write: No space left on device \(ENOSPC\)"):
        with reporting_write_errors(tmp_path / "x.bin"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_npz_streams_into_a_fifo_and_reads_back(tmp_path):
    from lutgen.formats import load_npz, save_npz
    from lutgen.lut import Lut

    lut = Lut(table=np.arange(16, dtype=np.int64).reshape(4, 4), operands=[("a", 2), ("b", 2)],
              outputs=[f"o[{k}]" for k in range(5)])
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    save_npz(lut, fifo)  # zip written to an unseekable stream
    reader.join(10)
    (tmp_path / "copy.npz").write_bytes(got[0])
    assert np.array_equal(load_npz(tmp_path / "copy.npz").table, lut.table)
