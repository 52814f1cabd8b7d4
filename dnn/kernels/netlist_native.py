"""Compiled netlist kernels of the layers: one C library per circuit, generated from its `simulator.program.Program`.

The circuit becomes a static inline function (every step one bit-sliced vector operation) that reads a weight's
bit words and a tile's planes in place (`circuit_function`), placed in front of a fixed harness from `csrc/`
(`netlist_layer.h`: the fused AdderNet forward and the operands made in C; `netlist_grad.h`: its grad="diff"
backward; `netlist_mult.h`: the multiplier's convolution read from the padded image and its (M, K) product). The
library is built with the simulator's `simulator.native.load_library`, so it is cached on disk by a hash of the
source, the headers, the flags, the compiler and the CPU, and `AXNET_NATIVE=0` or a missing compiler turns it off
(callers then use the torch version in `dnn.arith.netlist_adder.adder_sums_torch`, which runs the same algorithm).
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from simulator.c_emit import c_circuit_function

CSRC = Path(__file__).resolve().parent / "csrc"
_MEMO = {}
_TEXT = {}  # (id(program), function name) -> (program, C text)
_LOCK = threading.Lock()


def circuit_function(program, name, words):
    """C text of `static inline void name(const uint64_t *words, const nlv *planes, nlv *out)` running the program's
    steps, one bit-sliced vector operation each: with words = (first, count), inputs first .. first + count - 1 are
    0/~0 words to broadcast (a weight's bits) and the others planes read in place (a tile's), so no input array is
    stored and reloaded per tap and filter. Made once per program (a few milliseconds for a multiplier's 800 steps,
    which every layer call would otherwise pay)."""
    key = (id(program), name, words)
    with _LOCK:
        if key in _TEXT and _TEXT[key][0] is program:
            return _TEXT[key][1]
    text = _circuit_text(program, name, words)
    with _LOCK:
        _TEXT[key] = (program, text)  # the program is kept alive, so its id is not reused
    return text


def _circuit_text(program, name, words):
    first, count = words
    inputs, plane = [], 0
    for i in range(program.n_inputs):
        if first <= i < first + count:
            inputs.append(f"NLV_ZERO + words[{i - first}]")
        else:
            inputs.append(f"planes[{plane}]")
            plane += 1
    return c_circuit_function(program, name, "nlv", "NLV_ZERO", "NLV_ONES",
                              params="const uint64_t *restrict words, const nlv *restrict planes, nlv *restrict out",
                              inputs=inputs)


def adder_source(program, bits):
    """The translation unit of the fused adder-layer kernel for an n-bit adder program (inputs a then b)."""
    return "\n".join(['#include "netlist_vec.h"', f"#define NL_BITS {bits}",
                      circuit_function(program, "nl_circuit_wx", (0, bits)), '#include "netlist_layer.h"', ""])


def adder_grad_source(program, bits):
    """The adder kernel's translation unit plus the fused grad="diff" backward (`csrc/netlist_grad.h`)."""
    return adder_source(program, bits) + '#include "netlist_grad.h"\n'


def mult_source(program, widths, out_bits, signed):
    """The translation unit of the product-sum kernel for a multiplier program (inputs: activation, then weight)."""
    return "\n".join(['#include "netlist_vec.h"', f"#define NL_WA {widths[0]}", f"#define NL_WB {widths[1]}",
                      f"#define NL_OUT {out_bits}", f"#define NL_SIGNED {int(bool(signed))}",
                      circuit_function(program, "nl_circuit_xw", (widths[0], widths[1])),
                      '#include "netlist_mult.h"', ""])


def _library(source, entry="nl_adder_forward"):
    """The loaded library for `source`, or None (no compiler, AXNET_NATIVE=0, build failure)."""
    with _LOCK:
        if source in _MEMO:
            return _MEMO[source]
    from simulator import native
    lib = native.load_library("netlist_layer", source, CSRC)
    if lib is not None:
        getattr(lib, entry).restype = None
    with _LOCK:
        _MEMO[source] = lib
    return lib


def enabled():
    """True unless native code is switched off or there is no compiler."""
    from simulator import native
    return native.enabled() and native.compiler() is not None


def usable(x, bits):
    """True when the compiled kernel may serve tensor x (CPU) for an adder of `bits` bits."""
    return x.device.type == "cpu" and bits <= 32 and enabled()


def _ints(*values):
    return [ctypes.c_int(int(v)) for v in values]


def accumulator_bits(k, bits):
    """Planes of a bit-sliced accumulator that holds the sum of k values of |d| <= 2^(bits-1)."""
    return (k << (bits - 1)).bit_length()


def adder_operands(lib, xq, wq, geom, bits):
    """The compiled kernels' operands, made in C (`nl_adder_prepare`): the padded image of -x patterns (uint32 as
    int32) and the (O, K, bits) 0/~0 words of w's bits."""
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ph, pw = geom.padding
    k = wq[0].numel()
    if xq.dtype != torch.float32 or wq.dtype != torch.float32:  # float64 values past 2^24 would round in float32
        return _patterns(-xq.to(torch.int64), bits, (pw, pw, ph, ph)), _weight_planes(wq, bits)
    patterns = torch.empty(n, c, h + 2 * ph, w + 2 * pw, dtype=torch.int32)
    planes = torch.empty(o, k, bits, dtype=torch.int64)
    x, wf = xq.contiguous(), wq.reshape(o, k).contiguous()
    lib.nl_adder_prepare.restype = None
    lib.nl_adder_prepare(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(wf.data_ptr()),
                         ctypes.c_void_p(patterns.data_ptr()), ctypes.c_void_p(planes.data_ptr()),
                         *_ints(n, c, h, w, ph, pw, o), ctypes.c_long(k), ctypes.c_int(torch.get_num_threads()))
    return patterns, planes


def adder_abs_sums(program, xq, wq, geom, bits):
    """sum_k |C(w, -x)| per output as int64 (N, O, Ho, Wo) on the compiled kernel; None when it cannot be built."""
    lib = _library(adder_source(program, bits))
    if lib is None:
        return None
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    ph, pw = geom.padding
    acc_bits = accumulator_bits(wq[0].numel(), bits)
    if acc_bits > 64:
        return None
    patterns, planes = adder_operands(lib, xq, wq, geom, bits)
    out = torch.empty(n, o, ho, wo, dtype=torch.int64)
    lib.nl_adder_forward(ctypes.c_void_p(patterns.data_ptr()), ctypes.c_void_p(planes.data_ptr()),
                         ctypes.c_void_p(out.data_ptr()), *_ints(n, c, h + 2 * ph, w + 2 * pw, o),
                         *_ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo), ctypes.c_int(acc_bits),
                         ctypes.c_int(torch.get_num_threads()))
    return out


def mult_sums(program, qx, qw, widths, out_bits, signed):
    """out[m, o] = sum_k P(qx[m, k], qw[o, k]) as int64 (M, O) for integer-valued qx (M, K) and qw (O, K), P the
    multiplier's product (its first `out_bits` outputs, read as signed when `signed`); None when it cannot be built.
    """
    lib = _library(mult_source(program, widths, out_bits, signed), "nl_mult_forward")
    m, k = qx.shape
    acc_bits = _mult_acc_bits(k, out_bits, signed)
    if lib is None or acc_bits > 64:
        return None
    x = _patterns(qx, widths[0])
    planes = _weight_planes(qw, widths[1])
    out = torch.empty(m, qw.shape[0], dtype=torch.int64)
    lib.nl_mult_forward(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(planes.data_ptr()),
                        ctypes.c_void_p(out.data_ptr()), ctypes.c_long(m), ctypes.c_long(k), ctypes.c_int(qw.shape[0]),
                        ctypes.c_int(acc_bits), ctypes.c_int(torch.get_num_threads()))
    return out


def _mult_acc_bits(k, out_bits, signed):
    """Planes of the bit-sliced accumulator of k products of `out_bits` bits (plus a sign plane when signed)."""
    return (k * (1 << out_bits)).bit_length() + (1 if signed else 0)


def _patterns(q, bits, pad=None, value=0):
    """The low `bits` bits of each value of the integer-valued q as a contiguous int32 tensor (uint32 patterns in
    C), optionally padded by `pad` (F.pad order) with `value` first."""
    t = q.to(torch.int32) if bits < 32 else q.to(torch.int64)  # int32: no int64 copy for the usual widths
    if pad is not None:
        t = torch.nn.functional.pad(t, pad, value=int(value))
    return (t & ((1 << bits) - 1)).to(torch.int32).contiguous()


def _weight_planes(qw, bits):
    """(O, K, bits) words 0 or ~0: bit i of the weight qw[o, k] (qw (O, ...) flattened per filter), the layout the
    kernels read (`broadcast_planes`, filter-major)."""
    from dnn.kernels.netlist_torch import broadcast_planes
    return broadcast_planes(qw.reshape(qw.shape[0], -1).to(torch.int64), bits).permute(1, 2, 0).contiguous()


def mult_conv(program, qx, qw, geom, groups, widths, out_bits, signed, x_pad=0, fold=None):
    """Product sums of a convolution on the compiled kernel, read straight from the padded image: S[n, o, p] =
    sum over the patch of P(x, w[o]) for integer-valued qx (N, C, H, W) padded with `x_pad` and qw (O, C/groups,
    kh, kw), as int64 (N, O, Ho, Wo). With fold = (corr, zw, scale) (O,) int64, int64 or None, float64: the float64
    (S + corr[o] - zw[o] X) * scale[o] instead, X the pixel's sum of x over its patch (exact while every term stays
    below 2^53; the caller checks). None when the kernel cannot be built."""
    lib = _library(mult_source(program, widths, out_bits, signed), "nl_mult_conv")
    n, c, h, w = qx.shape
    o = qw.shape[0]
    k = qw[0].numel()
    acc_bits = _mult_acc_bits(k, out_bits, signed)
    if lib is None or acc_bits > 64:
        return None
    lib.nl_mult_conv.restype = None
    ho, wo = geom.output_size(h, w)
    ph, pw = geom.padding
    x = _patterns(qx, widths[0], (pw, pw, ph, ph), x_pad)
    planes = _weight_planes(qw, widths[1])
    ptr = lambda t: ctypes.c_void_p(None if t is None else t.data_ptr())  # noqa: E731
    corr = zw = scale = None
    if fold is not None:
        corr, zw, scale = (None if t is None else t.contiguous() for t in fold)
    out = torch.empty(n, o, ho, wo, dtype=torch.int64 if fold is None else torch.float64)
    lib.nl_mult_conv(ptr(x), ptr(planes), ptr(out), ctypes.c_int(fold is not None), ptr(corr), ptr(zw), ptr(scale),
                     ctypes.c_long(n), *_ints(c // groups, h + 2 * ph, w + 2 * pw, o, groups, *geom.kernel,
                                              *geom.stride, *geom.dilation, ho, wo, acc_bits),
                     ctypes.c_int(torch.get_num_threads()))
    return out


def adder_diff_backward(program, xq, wq, step, grad_out, geom, bits, qmax, half_window, needs=(True, True)):
    """(grad_x, grad_w) of the grad="diff" backward on the compiled kernel (CPU), or None when it cannot be built.

    The w neighbours and divisors of the shrink rule come from `window_points` (one per weight); the kernel finds
    those of c = -x per pair, evaluates the circuit at all eight neighbours bit-sliced, applies the chain rule and
    folds the column gradients back onto the image. `needs` (input, weight): a gradient not needed is not computed
    and comes back as None.
    """
    lib = _library(adder_grad_source(program, bits), "nl_adder_diff_backward")
    if lib is None:
        return None
    from dnn.kernels.netlist_torch import window_points
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    mask = (1 << bits) - 1
    ph, pw = geom.padding
    patterns = adder_operands(lib, xq, wq, geom, bits)[0]
    w_int = wq.reshape(o, -1).to(torch.int64)
    k = w_int.shape[1]
    up1, up0, dn0, dn1, den = window_points(w_int + qmax, 2 * qmax + 1, half_window)
    w_patterns = (w_int & mask).to(torch.int32).contiguous()  # uint32 in C
    neighbours = torch.stack([(v - qmax) & mask for v in (up1, up0, dn0, dn1)], -1).to(torch.int32).contiguous()
    denw = den.to(torch.float32).contiguous()
    g = grad_out.float().contiguous()
    threads = torch.get_num_threads()
    # cols: scratch the kernel writes in full; neither is touched without an input gradient
    cols = torch.empty((n, k, ho * wo) if needs[0] else (1,), dtype=torch.float32)
    grad_x = torch.empty((n, c, h, w) if needs[0] else (1,), dtype=torch.float32)
    grad_w = torch.zeros(threads, o, k, dtype=torch.float64)
    ptr = lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731
    lib.nl_adder_diff_backward(ptr(patterns), ptr(w_patterns), ptr(neighbours), ptr(denw), ptr(g), ptr(cols),
                               ptr(grad_x), ptr(grad_w), *_ints(n, c, h + 2 * ph, w + 2 * pw, o),
                               *_ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo, ph, pw),
                               *_ints(qmax, half_window), ctypes.c_float(float(step)),
                               *_ints(bool(needs[0]), bool(needs[1]), threads))
    return (grad_x if needs[0] else None), (grad_w.sum(0).float().reshape(wq.shape) if needs[1] else None)
