"""The compiled netlist engine: one native bit-sliced kernel per circuit, with numpy doing the same work without it.

`compile_native(netlist)` turns the circuit's program (`simulator.program`) into C: every signal a vector of
64 * lanes patterns (`simulator/csrc/axn_types.h`), every step one vector operation, in topological order, inside
one function that the fixed harness `simulator/csrc/axn_engine.h` wraps with the entry points (exhaustive planes,
tables, per-lane evaluation). The library is built once per circuit, keyed by a hash of the generated source (and
headers, flags, compiler and CPU) and cached on disk by `simulator.native`; it loads in milliseconds when cached and
builds in about a second for adder-sized circuits. Without a compiler, with `AXNET_NATIVE=0`, or when the build
fails, every function here computes the same result with numpy (the reference the tests compare against);
`simulator.torch_engine` has the same per-lane evaluation in torch.

Per-lane entry points take numpy arrays, or torch CPU tensors (anything with `data_ptr()`; torch is never imported
here), and return the packed output word per lane as int64.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from simulator import native
from simulator.c_emit import c_circuit_function
from simulator.evaluator import Evaluator
from simulator.program import Program, compile_netlist

CSRC = Path(__file__).resolve().parent / "csrc"
_INLINE_STEPS = 3000  # bigger circuits get a called (not inlined) function: each entry point would copy it
_MEMO = {}  # generated source -> NativeCircuit or None
_MEMO_LOCK = threading.Lock()
_SMALL = 1 << 14  # below this many lanes a per-lane call runs on one thread
_NUMPY_LANES = 1 << 14  # lanes per numpy pass of the fallback
_PENDING_WORK = {}  # generated source -> gate-pattern evaluations requested while not built
_BY_PROGRAM = {}  # id(program) -> (program, NativeCircuit or None)
# A build takes about 0.3-0.5 s; numpy evaluates ~1e9 gate-patterns in that time, so smaller jobs skip the compiler.
BUILD_WORK = 1 << 30


def _program(netlist_or_program):
    return netlist_or_program if isinstance(netlist_or_program, Program) else compile_netlist(netlist_or_program)


def c_source(program):
    """The generated translation unit for a program: the circuit function, then the harness."""
    n_in, n_out = program.n_inputs, program.n_outputs
    inline = "always_inline" if len(program.steps) <= _INLINE_STEPS else "noinline"
    lines = ['#include "axn_types.h"', f"#define AXN_N_IN {n_in}", f"#define AXN_N_OUT {n_out}",
             c_circuit_function(program, "axn_circuit", "axv", "AXV_ZERO", "AXV_ONES", inline=inline),
             '#include "axn_engine.h"', ""]
    return "\n".join(lines)


class NativeCircuit:
    """ctypes front of one circuit's compiled library."""

    def __init__(self, lib, program):
        self.lib = lib
        self.n_inputs = program.n_inputs
        self.n_outputs = program.n_outputs
        self.lanes = lib.axn_lanes()
        self.group = 64 * self.lanes  # patterns per evaluation; axn_table starts should be multiples of it
        c_i64, c_u64, c_ptr, c_int = ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int
        signatures = {"axn_planes": [c_u64, c_i64, c_ptr, c_i64],
                      "axn_eval_planes": [c_ptr, c_i64, c_i64, c_ptr, c_i64],
                      "axn_table": [c_u64, c_i64, c_ptr, c_int],
                      "axn_eval_patterns": [c_ptr, c_i64, c_ptr, c_int],
                      "axn_eval_operands": [c_int, c_ptr, c_ptr, c_ptr, c_i64, c_ptr, c_int]}
        for name, args in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, None
        self.table_function = ctypes.cast(lib.axn_table, ctypes.c_void_p).value  # for lutgen's C reductions

    def planes(self, start_word, words, out=None):
        """Output planes (n_outputs x words, uint64) of the exhaustive words start_word .. start_word + words - 1."""
        out = np.empty((self.n_outputs, words), dtype=np.uint64) if out is None else out
        self.lib.axn_planes(int(start_word), int(words), out.ctypes.data, out.strides[0] // 8 if out.ndim == 2
                            else words)
        return out

    def eval_planes(self, in_planes, out=None):
        """Output planes from explicit input planes (n_inputs x words, C-contiguous uint64 rows)."""
        in_planes = np.ascontiguousarray(in_planes, dtype=np.uint64)
        words = in_planes.shape[1]
        out = np.empty((self.n_outputs, words), dtype=np.uint64) if out is None else out
        self.lib.axn_eval_planes(in_planes.ctypes.data, words, words, out.ctypes.data, out.strides[0] // 8)
        return out

    def table(self, start, n, out, threads=1):
        """out[q] = output word of pattern start + q for q < n (out: int64, contiguous)."""
        self.lib.axn_table(int(start), int(n), out.ctypes.data, int(threads))
        return out


def compile_native(netlist_or_program, work=None):
    """The NativeCircuit for a netlist or program, built or loaded on first use; None when native code is off or
    cannot be built (`native.last_error()` says why).

    With `work` (gate-pattern evaluations the caller is about to do) a circuit that is not built yet is only built
    once the work asked for it, summed over calls, is worth a compilation (BUILD_WORK); numpy does smaller jobs.
    """
    program = _program(netlist_or_program)
    known = _BY_PROGRAM.get(id(program))
    if known is not None and known[0] is program:  # repeated calls with one Program skip code generation
        return known[1]
    if program.n_outputs > 64:
        return None
    source = c_source(program)
    remember = _remember if isinstance(netlist_or_program, Program) else (lambda _program, circuit: circuit)
    with _MEMO_LOCK:
        if source in _MEMO:
            return remember(program, _MEMO[source])
        if work is not None and not native.is_cached("circuit", source, CSRC):
            _PENDING_WORK[source] = _PENDING_WORK.get(source, 0) + int(work)
            if _PENDING_WORK[source] < BUILD_WORK:
                return None
    lib = native.load_library("circuit", source, CSRC)
    circuit = NativeCircuit(lib, program) if lib is not None else None
    with _MEMO_LOCK:
        _MEMO[source] = circuit
    return remember(program, circuit)


def forget_all():
    """Drop every memoised circuit (tests and benchmarks that switch caches or compilers)."""
    with _MEMO_LOCK:
        _MEMO.clear()
        _BY_PROGRAM.clear()
        _PENDING_WORK.clear()


def _remember(program, circuit):
    """Memoise a built (or failed) circuit by Program identity; the entry keeps the program alive, so its id is
    never reused by another object while the entry exists."""
    if circuit is not None or native.last_error() is not None:
        _BY_PROGRAM[id(program)] = (program, circuit)
    return circuit


def select_native(program, backend="auto", work=None):
    """The NativeCircuit to use for `backend` "auto" (when worth it for `work`), "native" (required) or "numpy"
    (None)."""
    if backend == "numpy":
        return None
    if backend not in ("auto", "native"):
        raise AxnetError(f"backend '{backend}': expected auto, native or numpy")
    circuit = compile_native(program, work=work if backend == "auto" else None)
    if circuit is None and backend == "native":
        why = native.last_error() if program.n_outputs <= 64 else f"{program.n_outputs} outputs (at most 64)"
        raise AxnetError(f"the compiled netlist engine is not available: {why}")
    return circuit


# ---------------------------------------------------------------------------------------------------------------
# Per-lane evaluation
# ---------------------------------------------------------------------------------------------------------------

def _default_threads(n):
    return 1 if n < _SMALL else max(1, min(os.cpu_count() or 1, 64))


def _is_tensor(x):
    return not isinstance(x, np.ndarray) and hasattr(x, "data_ptr")


def _lane_buffer(x, what):
    """(address, element size, length, keep-alive) of a contiguous int32/int64 array or CPU tensor, zero-copy."""
    if _is_tensor(x):
        dtype = str(x.dtype)
        if getattr(x, "device", None) is not None and x.device.type != "cpu":
            raise AxnetError(f"{what}: the compiled engine needs CPU tensors, got one on {x.device}")
        if x.is_floating_point() or x.is_complex():
            raise AxnetError(f"{what}: expected integer values, got a tensor of {x.dtype}")
        if dtype not in ("torch.int64", "torch.int32") or not x.is_contiguous():
            x = x.contiguous().long()
            dtype = "torch.int64"
        return x.data_ptr(), 8 if dtype == "torch.int64" else 4, int(x.numel()), x
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise AxnetError(f"{what}: expected integer values, got an array of {arr.dtype}")
    if arr.dtype not in (np.int64, np.int32, np.uint64, np.uint32) or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    return arr.ctypes.data, arr.dtype.itemsize, int(arr.size), arr


def _new_output(like, n, out):
    """The int64 result buffer: `out` when given, else a tensor for tensor input, else a numpy array."""
    if out is not None:
        ok = (str(out.dtype) == "torch.int64" and out.is_contiguous() and out.device.type == "cpu"
              and out.numel() == n) if _is_tensor(out) else (
            isinstance(out, np.ndarray) and out.dtype == np.int64 and out.flags.c_contiguous
            and out.flags.writeable and out.size == n)
        if not ok:
            raise AxnetError(f"out= must be a writable contiguous int64 array (or CPU tensor) of {n} elements")
        return out
    if _is_tensor(like):
        torch = sys.modules["torch"]
        return torch.empty(n, dtype=torch.int64)
    return np.empty(n, dtype=np.int64)


def operand_widths(n_inputs, n_operands, widths=None):
    """Widths of consecutive operand input groups: `widths`, or the inputs split evenly."""
    if widths is None:
        if n_operands == 0 or n_inputs % n_operands:
            raise AxnetError(f"{n_operands} operand arrays cannot split {n_inputs} inputs evenly; pass widths=")
        widths = [n_inputs // n_operands] * n_operands
    widths = [int(w) for w in widths]
    if len(widths) != n_operands or any(w < 1 for w in widths) or sum(widths) != n_inputs:
        raise AxnetError(f"operand widths {widths} do not cover the circuit's {n_inputs} inputs "
                         f"with {n_operands} operand arrays")
    return widths


def evaluate_patterns(netlist, patterns, threads=None, out=None, backend="auto"):
    """Output word per lane for the packed input pattern per lane (bits above the inputs ignored), as int64."""
    return evaluate_operands(netlist, [patterns], None, threads=threads, out=out, backend=backend,
                             _packed=True)


def evaluate_operands(netlist, operand_values, widths=None, threads=None, out=None, backend="auto", _packed=False):
    """Output word per lane when operand k (consecutive inputs, `widths[k]` of them, LSB first, in input order)
    takes the value operand_values[k][lane]; only the low widths[k] bits of each value count (two's complement for
    negative values). Arrays: int32/int64 numpy arrays or CPU tensors of one common length. Returns int64 (a tensor
    when the operands are tensors) with bit k = output k; circuits of at most 64 inputs and 64 outputs.

    backend: "auto" (compiled when available, else numpy), "native" (error when unavailable) or "numpy".
    Pass a `simulator.program.Program` (compile_netlist(netlist)) when calling repeatedly: a netlist is compiled
    again on every call, a Program finds its kernel by identity.
    """
    program = netlist if isinstance(netlist, Program) else compile_netlist(netlist)
    if program.n_inputs > 64 or program.n_outputs > 64:
        raise AxnetError(f"per-lane evaluation packs at most 64 inputs and 64 outputs per lane; the circuit has "
                         f"{program.n_inputs} inputs and {program.n_outputs} outputs")
    n_ops = len(operand_values)
    widths = [max(program.n_inputs, 1)] if _packed else operand_widths(program.n_inputs, n_ops, widths)
    bufs = [_lane_buffer(v, f"operand {k}") for k, v in enumerate(operand_values)]
    n = bufs[0][2] if bufs else 0
    if any(b[2] != n for b in bufs):
        raise AxnetError(f"operand arrays differ in length: {[b[2] for b in bufs]}")
    circuit = select_native(program, backend, work=n * (len(program.steps) + 64))
    result = _new_output(operand_values[0] if operand_values else None, n, out)
    if circuit is None:
        values = [_as_numpy(b[3]) for b in bufs]
        words = numpy_evaluate_operands(program, values, widths)
        _as_numpy(result)[...] = words
        return result
    res_ptr = result.data_ptr() if _is_tensor(result) else result.ctypes.data
    ptrs = (ctypes.c_void_p * n_ops)(*[b[0] for b in bufs])
    sizes = (ctypes.c_int * n_ops)(*[b[1] for b in bufs])
    wid = (ctypes.c_int * n_ops)(*widths)
    threads = _default_threads(n) if threads is None else int(threads)
    circuit.lib.axn_eval_operands(n_ops, ptrs, sizes, wid, n, res_ptr, threads)
    return result


def _as_numpy(x):
    return x.numpy() if _is_tensor(x) else np.asarray(x)


# ---------------------------------------------------------------------------------------------------------------
# numpy reference of the per-lane path
# ---------------------------------------------------------------------------------------------------------------

def patterns_to_planes(patterns, n_inputs):
    """Input planes (n_inputs x words, uint64) of packed patterns: bit q of plane i is bit i of patterns[q]."""
    p = np.ascontiguousarray(patterns, dtype=np.uint64)
    words = -(-p.size // 64)
    padded = np.zeros(words * 64, dtype=np.uint64)
    padded[:p.size] = p
    bits = np.unpackbits(padded.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")  # (lanes, 64)
    planes = np.packbits(np.ascontiguousarray(bits[:, :n_inputs].T), axis=1, bitorder="little")
    return planes.view(np.uint64).reshape(n_inputs, words)


def planes_to_lanes(planes, n):
    """Packed word per lane (uint64) from output planes: bit k of lane q is bit q of plane k."""
    planes = np.ascontiguousarray(planes, dtype=np.uint64)
    n_planes, words = planes.shape
    if n_planes == 0:
        return np.zeros(n, dtype=np.uint64)
    bits = np.unpackbits(planes.view(np.uint8).reshape(n_planes, -1), axis=1, bitorder="little")
    full = np.zeros((64, bits.shape[1]), dtype=np.uint8)
    full[:n_planes] = bits
    words_out = np.packbits(np.ascontiguousarray(full.T), axis=1, bitorder="little").view(np.uint64).ravel()
    return words_out[:n]


def pack_operands(values, widths):
    """The packed pattern per lane: sum((v_k mod 2^w_k) << offset_k), as uint64."""
    n = np.asarray(values[0]).size if values else 0
    pattern = np.zeros(n, dtype=np.uint64)
    off = 0
    for v, w in zip(values, widths):
        mask = np.uint64((1 << w) - 1 if w < 64 else 0xFFFFFFFFFFFFFFFF)
        pattern |= (np.asarray(v).astype(np.int64).view(np.uint64) & mask) << np.uint64(off)
        off += w
    return pattern


def numpy_evaluate_operands(program, values, widths):
    """Reference per-lane evaluation in numpy: pack, transpose to planes, run the program, transpose back, in
    chunks of _NUMPY_LANES lanes so the bit matrices stay in cache."""
    pattern = pack_operands(values, widths)
    n = pattern.size
    out = np.zeros(n, dtype=np.int64)
    ev = None
    for lo in range(0, n, _NUMPY_LANES):
        part = pattern[lo:lo + _NUMPY_LANES]
        planes = patterns_to_planes(part, program.n_inputs)
        if ev is None or ev.words != planes.shape[1]:
            ev = Evaluator(program, planes.shape[1], exhaustive=False)
        ev.set_inputs(planes)
        outputs = np.array(ev.run(), dtype=np.uint64).reshape(program.n_outputs, -1)
        out[lo:lo + part.size] = planes_to_lanes(outputs, part.size).view(np.int64)
    return out
