"""The compiled accumulator kernel: C generated per accumulator circuit, built and cached on first use.

`c_source(program, a_inputs, b_inputs, bits, term_bits)` writes the circuit's word-op program (`simulator.program`)
as one inlined C function over bit planes and includes the fixed harness `csrc/accum_kernel.h`, which keeps the
accumulators of 64 * lanes outputs bit-sliced across all K steps (see that file). The library is built by
`simulator.native.load_library` (cached on disk by a hash of the source, headers, flags, compiler and CPU).
`indexed_accumulate` is the entry point; it returns None when native code is off or cannot be built, and the
caller then runs the torch path (`dnn.kernels.accum_ops`), which computes the same integers.
"""
from __future__ import annotations

import ctypes
import threading

import torch

from dnn.kernels.build import CSRC
from simulator.c_emit import c_circuit_function

_MEMO = {}
_LOCK = threading.Lock()
MAX_BITS = 32  # terms travel as uint32 table entries
BYTE_TABLES = True  # False forces the scalar gather + transpose (tests run both on an AVX-512 VBMI machine)


def term_class(term_bits):
    """The smallest of 8, 16, 32 at or above `term_bits`: the transpose skips stages above it."""
    for tb in (8, 16, 32):
        if term_bits <= tb:
            return tb
    raise ValueError(f"terms of {term_bits} bits are beyond the compiled kernel ({MAX_BITS} bits)")


def c_source(program, a_inputs, b_inputs, out_slots, bits, term_bits):
    """The translation unit for one accumulator: input position a_inputs[j] is bit j of the running value,
    b_inputs[j] bit j of the term; out_slots[j] holds result bit j after the steps."""
    source = {pos: f"a[{j}]" for j, pos in enumerate(a_inputs)}
    source.update({pos: f"b[{j}]" for j, pos in enumerate(b_inputs)})
    inputs = [source[i] for i in range(program.n_inputs)]
    circuit = c_circuit_function(program, "acc_circuit", "accv", "ACCV_ZERO", "ACCV_ONES",
                                 params="const accv *a, const accv *b, accv *out", inputs=inputs, outputs=out_slots)
    lines = ['#include "accum_types.h"', f"#define ACC_BITS {bits}", f"#define ACC_TB {term_class(term_bits)}",
             circuit, '#include "accum_kernel.h"', ""]
    return "\n".join(lines)


def load(source):
    """The ctypes functions {"indexed", "image"} for this source, or None (no compiler, AXNET_NATIVE=0, a failed
    build)."""
    with _LOCK:
        if source in _MEMO:
            return _MEMO[source]
    try:
        from simulator.native import load_library
    except ImportError:
        lib = None
    else:
        lib = load_library("accum", source, CSRC)
    fn = None
    if lib is not None:
        c_i64, c_ptr, c_int, c_i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int32
        fn = {"indexed": lib.acc_indexed, "image": lib.acc_image}
        fn["indexed"].argtypes = [c_ptr, c_i64, c_i64, c_ptr, c_i64, c_ptr, c_ptr, c_i64, c_int, c_int, c_ptr, c_int]
        fn["image"].argtypes = [c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_ptr, c_i32, c_ptr, c_i64, c_ptr, c_ptr,
                                c_i64, c_int, c_int, c_ptr, c_int]
        for f in fn.values():
            f.restype = None
    with _LOCK:
        _MEMO[source] = fn
    return fn


def byte_tables(pair, term_bits):
    """The term table as (rows, tb / 8, 256) uint8 (byte b of each pattern, rows padded to 256 entries) for the
    AVX-512 VBMI lookup, or None when a row has more than 256 entries or terms more than 16 bits."""
    tb = term_class(term_bits)
    if pair.shape[1] > 256 or tb > 16 or not BYTE_TABLES:
        return None
    out = torch.zeros(pair.shape[0], tb // 8, 256, dtype=torch.uint8)
    for b in range(tb // 8):
        out[:, b, :pair.shape[1]] = ((pair >> (8 * b)) & 255).to(torch.uint8)
    return out


def term_tables(pair, term_bits):
    """(uint32 patterns as int32, byte tables or None) of a term table, as the kernels read them; callers cache it."""
    table = pair.to(torch.int64).to(torch.int32).contiguous()  # the uint32 pattern bits, reinterpreted
    return table, byte_tables(pair.to(torch.int64), term_bits)


def indexed_accumulate(source, cols_t, w_index, tables, tree, signed):
    """out[m, o] accumulated from terms pair[w_index[o, k], cols_t[k, m]] (CPU tensors), as float64 (M, O); None
    when the compiled kernel is not available. `pair` holds the term patterns already reduced to the accumulator's
    bits (`tables`: its `term_tables`); cols_t and w_index are int32 row and column numbers into it."""
    fn = load(source)
    if fn is None:
        return None
    cols_t = cols_t.to(torch.int32).contiguous()
    w_index = w_index.to(torch.int32).contiguous()
    table, tables8 = tables
    k, m = cols_t.shape
    o = w_index.shape[0]
    out = torch.empty(m, o, dtype=torch.float64)
    fn["indexed"](cols_t.data_ptr(), m, k, w_index.data_ptr(), o, table.data_ptr(),
                  None if tables8 is None else tables8.data_ptr(), table.shape[1], int(tree), int(signed),
                  out.data_ptr(), torch.get_num_threads())
    return out


def image_accumulate(source, index, geom, pad_index, w_index, tables, tree, signed):
    """The same for a convolution: activation indices read from the (N, C, H, W) `index` image through `geom`
    (padding taps read `pad_index`), never unfolded; returns float64 (N, O, Ho, Wo) or None."""
    fn = load(source)
    if fn is None:
        return None
    index = index.to(torch.int32).contiguous()
    w_index = w_index.to(torch.int32).contiguous()
    table, tables8 = tables
    n, c, h, w = index.shape
    ho, wo = geom.output_size(h, w)
    padded = None
    if tables8 is not None:  # indices < 256: a padded byte image spares the kernel its bounds checks
        (ph, pw) = geom.padding
        padded = torch.nn.functional.pad(index, (pw, pw, ph, ph), value=int(pad_index))
        padded = padded.to(torch.uint8).contiguous()
    g = torch.tensor([*geom.kernel, *geom.stride, *geom.padding, *geom.dilation, ho, wo], dtype=torch.int64)
    out = torch.empty(n, w_index.shape[0], ho, wo, dtype=torch.float64)
    fn["image"](index.data_ptr(), None if padded is None else padded.data_ptr(), n, c, h, w, g.data_ptr(),
                int(pad_index), w_index.data_ptr(), w_index.shape[0],
                table.data_ptr(), None if tables8 is None else tables8.data_ptr(), table.shape[1], int(tree),
                int(signed), out.data_ptr(), torch.get_num_threads())
    return out
