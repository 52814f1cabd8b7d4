"""Triton kernels of the LUT multiplier layers: the same maths as `dnn.kernels.mult_ops` (whose functions call these
for CUDA tensors), gathering straight from the multiplier's (Na, Nb) tables, which stay in L1/L2, instead of folding
the weights into per-position tables.

- `lut_accumulate`: acc[m,o] = sum_k AM[ix[m,k] + s, iw[o,k]]            exact: float32 partial sums while they stay
                    below 2^24, else float64; returned as float64 (M, O)
- `lut_grad_a`:     gx[m,k]  = sum_o g[m,o] * GA[ix[m,k] + s, iw[o,k]]   one program per (row block, position)
- `lut_grad_b`:     gw[o,k]  = sum_m g[m,o] * GB[ix[m,k] + s, iw[o,k]]   one program per (position, filter block,
                    slice of rows); the slices' partial sums are added in torch, so the result is deterministic
The straight-through backward is two plain matrix products (cuBLAS), which need no kernel of their own.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

FLOAT32_EXACT = 1 << 24  # float32 partial sums of integers stay exact below this (mult_ops imports this module)
BLOCK_M, BLOCK_O = 64, 32
ROWS_PER_SLICE = 4096  # rows of the weight-gradient reduction per program: enough programs for a GPU at any K, O
NUM_WARPS = 4


@triton.jit
def _accumulate_kernel(ix_ptr, iw_ptr, t_ptr, out_ptr, M, K, O, NB, SHIFT, WIDE: tl.constexpr, BM: tl.constexpr,
                       BO: tl.constexpr):
    m = tl.program_id(0) * BM + tl.arange(0, BM)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    mm = m < M
    om = o < O
    m64 = m.to(tl.int64)
    if WIDE:
        acc = tl.zeros([BM, BO], dtype=tl.float64)
    else:
        acc = tl.zeros([BM, BO], dtype=tl.float32)
    for k in range(K):
        row = tl.load(ix_ptr + m64 * K + k, mask=mm, other=0).to(tl.int64) + SHIFT
        col = tl.load(iw_ptr + o * K + k, mask=om, other=0)
        value = tl.load(t_ptr + row[:, None] * NB + col[None, :], mask=mm[:, None] & om[None, :], other=0)
        acc += value.to(acc.dtype)
    tl.store(out_ptr + m64[:, None] * O + o[None, :], acc.to(tl.float64), mask=mm[:, None] & om[None, :])


@triton.jit
def _grad_a_kernel(ix_ptr, iw_ptr, g_ptr, t_ptr, out_ptr, M, K, O, NB, SHIFT, BM: tl.constexpr, BO: tl.constexpr):
    m = tl.program_id(0) * BM + tl.arange(0, BM)
    k = tl.program_id(1)
    mm = m < M
    m64 = m.to(tl.int64)
    row = tl.load(ix_ptr + m64 * K + k, mask=mm, other=0).to(tl.int64) + SHIFT
    acc = tl.zeros([BM], dtype=tl.float32)
    for o0 in range(0, O, BO):
        o = o0 + tl.arange(0, BO)
        m2 = mm[:, None] & (o < O)[None, :]
        col = tl.load(iw_ptr + o * K + k, mask=o < O, other=0)
        g = tl.load(g_ptr + m64[:, None] * O + o[None, :], mask=m2, other=0.0)
        slope = tl.load(t_ptr + row[:, None] * NB + col[None, :], mask=m2, other=0.0)
        acc += tl.sum(g * slope, axis=1)
    tl.store(out_ptr + m64 * K + k, acc, mask=mm)


@triton.jit
def _grad_b_kernel(ix_ptr, iw_ptr, g_ptr, t_ptr, out_ptr, M, K, O, NB, SHIFT, ROWS, BM: tl.constexpr,
                   BO: tl.constexpr):
    k = tl.program_id(0)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    part = tl.program_id(2)
    om = o < O
    col = tl.load(iw_ptr + o * K + k, mask=om, other=0)
    acc = tl.zeros([BO], dtype=tl.float32)
    for m0 in range(part * ROWS, tl.minimum(part * ROWS + ROWS, M), BM):
        m = m0 + tl.arange(0, BM)
        mm = m < M
        m64 = m.to(tl.int64)
        m2 = mm[:, None] & om[None, :]
        row = tl.load(ix_ptr + m64 * K + k, mask=mm, other=0).to(tl.int64) + SHIFT
        g = tl.load(g_ptr + m64[:, None] * O + o[None, :], mask=m2, other=0.0)
        slope = tl.load(t_ptr + row[:, None] * NB + col[None, :], mask=m2, other=0.0)
        acc += tl.sum(g * slope, axis=0)
    tl.store(out_ptr + (part * O + o) * K + k, acc, mask=om)


def _operands(ix, iw, table):
    return ix.contiguous(), iw.contiguous(), table.contiguous()


def lut_accumulate(ix, iw, values, max_abs, shift=0):
    """acc[m, o] = sum_k values[ix[m, k] + shift, iw[o, k]] exactly, as float64 (M, O); ix long or integer-valued
    float, iw long."""
    ix, iw, values = _operands(ix, iw, values)
    M, K = ix.shape
    O = iw.shape[0]
    out = torch.empty(M, O, dtype=torch.float64, device=ix.device)
    if out.numel():
        wide = values.dtype == torch.float64 or K * max(int(max_abs), 1) > FLOAT32_EXACT
        grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(O, BLOCK_O))
        _accumulate_kernel[grid](ix, iw, values, out, M, K, O, values.shape[1], int(shift), WIDE=wide, BM=BLOCK_M,
                                 BO=BLOCK_O, num_warps=NUM_WARPS)
    elif K == 0:
        out.zero_()
    return out


def lut_grad_a(ix, iw, g, grad_a, shift=0):
    """dL/dq_x[m, k] = sum_o g[m, o] * grad_a[ix[m, k] + shift, iw[o, k]], float32 (M, K)."""
    ix, iw, grad_a = _operands(ix, iw, grad_a.float())
    M, K = ix.shape
    O = iw.shape[0]
    out = torch.zeros(M, K, dtype=torch.float32, device=ix.device)
    if out.numel() and O:
        _grad_a_kernel[(triton.cdiv(M, BLOCK_M), K)](ix, iw, g.float().contiguous(), grad_a, out, M, K, O,
                                                     grad_a.shape[1], int(shift), BM=BLOCK_M, BO=BLOCK_O,
                                                     num_warps=NUM_WARPS)
    return out


def lut_grad_b(ix, iw, g, grad_b, shift=0):
    """dL/dq_w[o, k] = sum_m g[m, o] * grad_b[ix[m, k] + shift, iw[o, k]], float32 (O, K)."""
    ix, iw, grad_b = _operands(ix, iw, grad_b.float())
    M, K = ix.shape
    O = iw.shape[0]
    slices = max(1, triton.cdiv(M, ROWS_PER_SLICE))
    parts = torch.zeros(slices, O, K, dtype=torch.float32, device=ix.device)
    if parts.numel() and M:
        _grad_b_kernel[(K, triton.cdiv(O, BLOCK_O), slices)](ix, iw, g.float().contiguous(), grad_b, parts, M, K, O,
                                                             grad_b.shape[1], int(shift), ROWS_PER_SLICE,
                                                             BM=BLOCK_M, BO=BLOCK_O, num_warps=NUM_WARPS)
    return parts.sum(0)
