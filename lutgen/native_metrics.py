"""Exhaustive error metrics reduced in C, block by block, right after the circuit's compiled kernel.

`lutgen/csrc/axm_metrics.c` (built once per machine by `simulator.native`, like the circuit kernels) calls the
circuit's `axn_table` entry through a function pointer for a few thousand patterns at a time and folds the output
words into the same partial sums as `lutgen.bitslice_metrics.BlockReducer`, float sums included operation for
operation, so results are bit-identical to the numpy path (tests compare them). `plan(...)` says whether a run
qualifies: exhaustive, operands consecutive from input 0 (the reciprocal-table layout), |e| < 2^32, and both the
compiled circuit and this library available; otherwise the numpy reduction runs.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from simulator import native
from simulator.engine import select_native
from simulator.ordered_map import ordered_map
from simulator.program import compile_netlist

CSRC = Path(__file__).resolve().parent / "csrc"
_REFS = {"add": 0, "sub": 1, "mul": 2}
_CHUNK = 1 << 15  # the numpy reduction's float chunk (bitslice_metrics._CHUNK): chunks must line up with it
_TASK_PATTERNS = 1 << 22  # patterns per worker task (several blocks)


def _library():
    lib = native.load_library("metrics", (CSRC / "axm_metrics.c").read_text(), CSRC, opt="-O3")
    if lib is not None:
        lib.axm_block.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64,
                                  ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
        lib.axm_block.restype = ctypes.c_int
    return lib


@dataclass
class Plan:
    """Everything one axm_block call needs besides the block: the circuit, the library and the parameters."""

    lib: object
    circuit: object
    params: np.ndarray
    recip: np.ndarray = field(repr=False)
    run: int


def plan(netlist, operands, reference, signed, carry, segments, fit_bits=0, backend="auto"):
    """A Plan for the C reduction, or None when this run must use the numpy one."""
    if backend == "numpy" or segments is None or len(operands) not in (2, 3):
        return None
    lo, hi, recip, run = segments.table
    wa, wb = operands[0].width, operands[1].width
    n_out = len(netlist.outputs)
    out_signed = bool(signed) or reference == "sub"
    if reference == "mul":
        a_max, b_max = (1 << (wa - 1), 1 << (wb - 1)) if signed else ((1 << wa) - 1, (1 << wb) - 1)
        exact_max = a_max * b_max
    else:
        exact_max = max(abs(lo), abs(hi))
    if n_out > 62 or exact_max + (1 << n_out) >= 1 << 32:
        return None
    program = compile_netlist(netlist)
    n_patterns = 1 << program.n_inputs
    circuit = select_native(program, backend, work=n_patterns * max(len(program.steps), 1))
    lib = _library() if circuit is not None else None
    if lib is None and backend == "native":
        raise AxnetError(f"the compiled metrics reduction is not available: {native.last_error()}")
    if lib is None:
        return None
    params = np.array([_REFS[reference], wa, wb, int(carry), int(bool(signed)), n_out, int(out_signed),
                       int(fit_bits), 0, lo], dtype=np.int64)
    return Plan(lib, circuit, params, np.ascontiguousarray(recip, dtype=np.float64), run)


def _block_sums(pl, start, n):
    """Partial sums of patterns [start, start + n) in the dict form `lutgen.metrics._merge` takes."""
    params = pl.params.copy()
    params[8] = min(pl.run, n, _CHUNK)
    ires = np.zeros(10, dtype=np.uint64)
    fres = np.zeros(2, dtype=np.float64)
    status = pl.lib.axm_block(pl.circuit.table_function, params.ctypes.data, pl.recip.ctypes.data, start, n,
                              ires.ctypes.data, fres.ctypes.data)
    if status != 0:
        raise MemoryError("the metrics kernel could not allocate its buffers")
    v = [int(x) for x in ires]
    sum_e = v[4] | (v[5] << 64)
    if sum_e >> 127:
        sum_e -= 1 << 128
    return {"count": v[0], "n_err": v[1], "sum_abs": v[2] | (v[3] << 64), "sum_e": sum_e,
            "sum_sq": v[6] | (v[7] << 64), "wce": v[8], "n_rel": v[9], "sum_rel": float(fres[0]),
            "max_rel": float(fres[1])}


def map_native_blocks(pl, n_blocks, per_block, threads=2, progress=None):
    """Yield the partial sums of every exhaustive block in order; worker threads run the C kernel (no GIL)."""
    batch = max(1, min(_TASK_PATTERNS // per_block, n_blocks // (4 * max(threads, 1)) or 1))

    def work(first):
        return [_block_sums(pl, b * per_block, per_block) for b in range(first, min(first + batch, n_blocks))]

    for results in ordered_map(work, range(0, n_blocks, batch), threads):
        for part in results:
            if progress is not None:
                progress(per_block)
            yield part
