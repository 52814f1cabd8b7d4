"""Building and loading small C libraries with the system compiler, cached on disk (no torch, no build tools).

`load_library(name, source_text, include_dir)` compiles `source_text` (which may `#include` headers from
`include_dir`) into a shared library under `$AXNET_CACHE` (default `~/.cache/axnet`)`/engine`, keyed by a hash of
the source, every header in `include_dir`, the flags, the compiler's version and this CPU; the library is written
to a temporary file and renamed into place, so concurrent processes never see half a file. A failed build is
recorded next to it (`<key>.err`, the compiler's message), reported once as a NativeBuildWarning, and not retried
for the same key; `AXNET_NATIVE=0` or a missing compiler turns native code off. Callers get None and fall back to
numpy (or torch); `last_error()` says why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

# -ffp-contract=off: no fused multiply-adds, so float results round exactly like numpy's separate operations.
FLAGS = ["-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11", "-ffp-contract=off",
         "-fno-strict-aliasing"]
_LOCK = threading.Lock()
_LOADED = {}  # key -> ctypes.CDLL or None
_ERRORS = {}  # key -> reason
_STATE = {"last_error": None}


class NativeBuildWarning(UserWarning):
    """A compiled kernel failed to build (once per library and process); numpy or torch does the work instead."""


def enabled():
    """False when the user switched native code off with AXNET_NATIVE=0."""
    return os.environ.get("AXNET_NATIVE", "1") != "0"


def cache_dir():
    return Path(os.environ.get("AXNET_CACHE", Path.home() / ".cache" / "axnet")) / "engine"


def compiler():
    """The C compiler to use ($CC, else gcc, else cc), or None."""
    return os.environ.get("CC") or _find_compiler(os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _find_compiler(path):
    """gcc or cc on `path` (the PATH scan is cached: every layer call asks)."""
    return shutil.which("gcc", path=path) or shutil.which("cc", path=path)


@functools.cache
def _compiler_version(cc):
    try:
        result = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else f"{cc} (no version)"
    except (OSError, subprocess.SubprocessError):
        return f"{cc} (does not run)"


@functools.cache
def cpu_signature():
    """This CPU's feature line, so a cache shared between machines never loads a foreign -march build."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform
    return platform.processor() + platform.machine()


@functools.cache
def _headers_digest(include_dir):
    h = hashlib.sha256()
    for path in sorted(Path(include_dir).glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def library_key(name, source_text, include_dir, cc, opt="-O2"):
    """Cache key of a build: source, headers, flags, compiler version and CPU."""
    text = "\0".join([source_text, _headers_digest(str(include_dir)), opt, " ".join(FLAGS), _compiler_version(cc),
                      cpu_signature()])
    return f"{name}_{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _build(cc, source_text, include_dir, target, opt):
    """Compile into `target` atomically; raises RuntimeError with the compiler's message on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / (target.stem + ".c")
        src.write_text(source_text)
        out = Path(tmp) / target.name
        try:
            result = subprocess.run([cc, opt, *FLAGS, f"-I{include_dir}", str(src), "-o", str(out)],
                                    capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"{cc} could not run: {exc}") from None
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed: {result.stderr.strip()[:2000]}")
        os.replace(out, target)


def is_cached(name, source_text, include_dir, opt="-O2"):
    """True when this library is already loaded or built on disk (so using it costs no compilation)."""
    cc = compiler()
    if not enabled() or cc is None:
        return False
    key = library_key(name, source_text, include_dir, cc, opt)
    return _LOADED.get(key) is not None or (cache_dir() / f"{key}.so").exists()


def load_library(name, source_text, include_dir, opt="-O2"):
    """The ctypes library for this source, built on first use with optimisation `opt`; None when native code is
    unavailable."""
    if not enabled():
        _STATE["last_error"] = "native code disabled by AXNET_NATIVE=0"
        return None
    cc = compiler()
    if cc is None:
        _STATE["last_error"] = "no C compiler (gcc or cc) on PATH"
        return None
    key = library_key(name, source_text, include_dir, cc, opt)
    with _LOCK:
        if key in _LOADED:
            if _LOADED[key] is None:
                _STATE["last_error"] = _ERRORS.get(key)
            return _LOADED[key]
        target = cache_dir() / f"{key}.so"
        failed = target.with_suffix(".err")
        lib = None
        try:
            if failed.exists():
                raise RuntimeError(f"an earlier build failed (see {failed}): "
                                   + failed.read_text(errors="replace")[:300])
            if not target.exists():
                try:
                    _build(cc, source_text, include_dir, target, opt)
                except RuntimeError as exc:
                    _record_failure(failed, str(exc))
                    warnings.warn(f"axnet: could not build the compiled {name} kernel, using the slower fallback: "
                                  f"{str(exc).splitlines()[0][:200]}", NativeBuildWarning, stacklevel=2)
                    raise
            lib = ctypes.CDLL(str(target))
            _STATE["last_error"] = None
        except (OSError, RuntimeError) as exc:
            _ERRORS[key] = str(exc)
            _STATE["last_error"] = str(exc)
        _LOADED[key] = lib
        return lib


def _record_failure(path, message):
    """Keep the compiler's message next to where the library would be (best effort)."""
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(message + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def last_error():
    """Why the most recent native load returned None (or None when it did not)."""
    return _STATE["last_error"]
