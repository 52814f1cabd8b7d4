"""Build-on-first-use loader of the compiled CPU kernels in `dnn/kernels/csrc/`.

The C files are compiled together with the system C compiler into one shared library, cached under `$AXNET_CACHE`
(default `~/.cache/axnet/kernels`) by a hash of the sources, the flags and the CPU, and called through ctypes: the
build takes about a second and needs no torch headers (docs/ARCHITECTURE.md says why this beats
`torch.utils.cpp_extension` here). If no compiler is found, the build fails, or `AXNET_NATIVE=0` is set,
`available()` is False and the torch references in `dnn.kernels.adder_ops` run instead.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from simulator.native import compiler as find_compiler
from simulator.native import cpu_signature

__all__ = ["load", "available", "error", "sources", "CSRC"]

CSRC = Path(__file__).resolve().parent / "csrc"


def kernel_names():
    """Every exported (non-static) void function of the C sources: the kernels ctypes may call."""
    names = []
    for path in sources():
        names += re.findall(r"^void\s+(\w+)\s*\(", path.read_text(), flags=re.MULTILINE)
    return names


def sources():
    """The C files of the library, in a fixed order."""
    return sorted(CSRC.glob("*.c"))


def source_key():
    """Cache key: the C sources and headers, the flags and the CPU."""
    digest = hashlib.sha256()
    for path in sorted(CSRC.glob("*.[ch]")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update((" ".join(_FLAGS) + cpu_signature()).encode())
    return digest.hexdigest()[:16]


_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
_STATE = {"lib": None, "error": None, "tried": False}


def _cache_dir():
    return Path(os.environ.get("AXNET_CACHE", Path.home() / ".cache" / "axnet")) / "kernels"


def _build(target):
    """Compile the C sources into `target` atomically (a temporary file renamed into place)."""
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        result = subprocess.run([compiler, *_FLAGS, f"-I{CSRC}", *map(str, sources()), "-o", str(out)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:500]}")
        os.replace(out, target)


def load():
    """The ctypes library, building it on first use; None when it cannot be had (the reason is in `error()`)."""
    if _STATE["tried"]:
        return _STATE["lib"]
    _STATE["tried"] = True
    if os.environ.get("AXNET_NATIVE", "1") == "0":
        _STATE["error"] = "disabled by AXNET_NATIVE=0"
        return None
    key = source_key()
    target = _cache_dir() / f"adder_kernels_{key}.so"
    try:
        if not target.exists():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _STATE["error"] = str(exc)
        return None
    for name in kernel_names():
        getattr(lib, name).restype = None
    _STATE["lib"] = lib
    return lib


def available():
    """True when the compiled kernels are loaded (or could be built now)."""
    return load() is not None


def error():
    """Why the compiled kernels are not available, or None."""
    load()
    return _STATE["error"]
