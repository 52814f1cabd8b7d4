"""Triton GPU kernels of the dnn layers (the optional extra `axnet[gpu]`), one module per kernel family.

- `adder`: the exact AdderNet forward and HardTanh input gradient, the LUT adder table forward and table backward
  (beside the torch references of `dnn.kernels.adder_ops`, whose dispatchers call them).
- `mult`: the LUT multiplier accumulation and its gradient-LUT backward (beside `dnn.kernels.mult_ops`).
- `netlist`: a `simulator.program.Program` as generated kernels: per-lane bit-sliced evaluation (beside
  `dnn.kernels.netlist_torch`) and the forward of netlist adder and multiplier layers (beside `dnn.arith.netlist_*`).
- `accum`: approximate accumulation through an accumulator circuit (beside `dnn.kernels.accum_ops`).

Selection (`use`): the kernels run for CUDA tensors when `triton` imports and one tiny kernel, run once per device,
gives the right answer; otherwise (no C compiler for Triton's launcher, a GPU Triton does not support) the torch
paths run, after one warning. The torch paths stay the reference and the fallback. `AXNET_TRITON=0` switches the
kernels off; `AXNET_TRITON=force` also runs them on CPU tensors, which needs Triton's interpreter
(`TRITON_INTERPRET=1`, set before triton is imported): that is how the test suite checks every kernel on a machine
without a GPU.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import threading
import warnings

from circuits.errors import AxnetError

__all__ = ["installed", "interpreting", "mode", "use", "works"]

MODES = ("auto", "0", "force")
_PROBED = {}  # device -> None when the kernels work there, else why not
_PROBE_LOCK = threading.Lock()


@functools.cache
def installed():
    """True when the `triton` package can be imported (looked up once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting():
    """True when Triton's interpreter is on (kernels then run on CPU tensors, in numpy, slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def mode():
    """`AXNET_TRITON`: auto (CUDA tensors only; the default), 0 (never) or force (CPU tensors too, interpreted)."""
    value = os.environ.get("AXNET_TRITON", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise AxnetError(f"AXNET_TRITON={value}: expected one of {', '.join(MODES)}")
    return value


def use(*tensors):
    """True when the Triton kernels should serve these tensors: all on CUDA (or all on CPU when forced)."""
    chosen = mode()
    if chosen == "0" or not installed() or not tensors:
        return False
    devices = {t.device.type for t in tensors}
    if devices == {"cuda"}:
        return works(tensors[0].device)
    if chosen == "force" and devices == {"cpu"}:
        if not interpreting():
            raise AxnetError("AXNET_TRITON=force on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
                             "before triton is imported")
        return works(tensors[0].device)
    return False


def run_probe(device):
    """One exact AdderNet forward on a 1x1 image: raises unless Triton compiles, launches and computes -|1 - 0|."""
    import torch

    from dnn.kernels.adder_ops import Geometry
    from dnn.kernels.triton import adder
    y = adder.l1_forward(torch.ones(1, 1, 1, 1, device=device), torch.zeros(1, 1, 1, 1, device=device),
                         Geometry((1, 1)))
    if y.item() != -1.0:
        raise RuntimeError(f"the probe kernel computed {y.item()} instead of -1")


def works(device):
    """True when the Triton kernels run correctly on `device` (probed once; a failure warns once and is kept)."""
    key = str(device)
    if key not in _PROBED:
        with _PROBE_LOCK:
            if key not in _PROBED:
                try:
                    run_probe(device)
                    _PROBED[key] = None
                except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path here
                    _PROBED[key] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    warnings.warn(f"Triton kernels are off on {key} ({_PROBED[key]}); the torch path runs instead",
                                  RuntimeWarning, stacklevel=3)
    return _PROBED[key] is None
