"""Triton kernels of the AdderNet layers: the same maths as `dnn.kernels.adder_ops` (whose dispatchers call these for
CUDA tensors), computed as direct convolutions that never unfold the input.

- `l1_forward`:     Y[n,o,p]  = -sum_k |X[n,k,p] - W[o,k]|            one program per (pixel block, filter block)
- `l1_input_grad`:  GX[n,c,h,w] = sum_{taps, o} G * clamp(W - X, -1, 1)   one program per input-pixel block, so the
                    fold onto the input is a plain sum over the taps that read the pixel (no atomics, deterministic)
- `table_forward`:  Y[n,o,p]  = sum_k T[k, I[n,k,p], o]                 rows of the folded tables gathered from L2
- `table_backward`: GX as for l1 with B[k, I, o] in place of the clamp, and H[k,v,o] += G[n,o,p] for I[n,k,p] = v
                    (float atomics: the order of the additions, not the result beyond float32 rounding, varies)

The full-precision weight gradient of the exact layer is a plain correlation (`adder_ops.l1_weight_grad`), which
cuDNN already computes at GEMM speed; it has no Triton kernel. Sums run in the tensors' own dtype (float32, or
float64 for the integer back-ends' wide sums), so integer-valued inputs give the same bits as the references.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_P, BLOCK_O, BLOCK_Q = 64, 32, 64  # output pixels x filters per program; input pixels per backward program
NUM_WARPS = 4


@triton.jit
def _pixel(p, HO, WO):
    """(n, ho, wo) of flattened output pixels p = (n * HO + ho) * WO + wo."""
    n = p // (HO * WO)
    r = p % (HO * WO)
    return n, r // WO, r % WO


@triton.jit
def _l1_forward_kernel(x_ptr, w_ptr, y_ptr, N, C, H, W, O, HO, WO, SH, SW, PH, PW, DH, DW,
                       KH: tl.constexpr, KW: tl.constexpr, BP: tl.constexpr, BO: tl.constexpr):
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    pm = p < N * HO * WO
    om = o < O
    n, ho, wo = _pixel(p, HO, WO)
    n = n.to(tl.int64)
    acc = tl.zeros([BP, BO], dtype=x_ptr.dtype.element_ty)
    for c in range(C):
        for i in tl.static_range(KH):
            for j in tl.static_range(KW):
                h = ho * SH - PH + i * DH
                w = wo * SW - PW + j * DW
                valid = pm & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                xv = tl.load(x_ptr + ((n * C + c) * H + h) * W + w, mask=valid, other=0.0)
                wv = tl.load(w_ptr + ((o * C + c) * KH + i) * KW + j, mask=om, other=0.0)
                acc += tl.abs(xv[:, None] - wv[None, :])
    out = (n[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None]
    tl.store(y_ptr + out, -acc, mask=pm[:, None] & om[None, :])


@triton.jit
def _input_grad_kernel(x_ptr, idx_ptr, w_ptr, g_ptr, gx_ptr, N, C, H, W, O, V, HO, WO, SH, SW, PH, PW, DH, DW,
                       KH: tl.constexpr, KW: tl.constexpr, TABLE: tl.constexpr, BQ: tl.constexpr,
                       BO: tl.constexpr):
    """GX of input pixels q = ((n*C + c)*H + h)*W + w: sum over the taps (i, j) that read q and the filters o of
    G[n,o,ho,wo] * clamp(W[o,c,i,j] - X[q], -1, 1) (l1), or * B[(c*KH+i)*KW+j, I[q], o] (TABLE)."""
    q = tl.program_id(0) * BQ + tl.arange(0, BQ)
    qm = q < N * C * H * W
    w_in = q % W
    h_in = (q // W) % H
    c = (q // (W * H)) % C
    n = (q // (W * H * C)).to(tl.int64)
    if TABLE:
        v = tl.load(idx_ptr + q, mask=qm, other=0).to(tl.int64)
        acc = tl.zeros([BQ], dtype=w_ptr.dtype.element_ty)
    else:
        xv = tl.load(x_ptr + q, mask=qm, other=0.0)
        acc = tl.zeros([BQ], dtype=x_ptr.dtype.element_ty)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            th = h_in + PH - i * DH
            tw = w_in + PW - j * DW
            ho = th // SH
            wo = tw // SW
            valid = qm & (th >= 0) & (tw >= 0) & (th % SH == 0) & (tw % SW == 0) & (ho < HO) & (wo < WO)
            k = (c * KH + i) * KW + j
            for o0 in range(0, O, BO):
                o = o0 + tl.arange(0, BO)
                m2 = valid[:, None] & (o < O)[None, :]
                g = tl.load(g_ptr + (n[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None], mask=m2,
                            other=0.0)
                if TABLE:
                    slope = tl.load(w_ptr + (k[:, None].to(tl.int64) * V + v[:, None]) * O + o[None, :], mask=m2,
                                    other=0.0)
                else:
                    wv = tl.load(w_ptr + k[:, None] + o[None, :] * (C * KH * KW), mask=m2, other=0.0)
                    slope = tl.minimum(tl.maximum(wv - xv[:, None], -1.0), 1.0)
                acc += tl.sum(g * slope, axis=1)
    tl.store(gx_ptr + q, acc, mask=qm)


@triton.jit
def _table_forward_kernel(idx_ptr, t_ptr, y_ptr, N, C, H, W, O, V, HO, WO, SH, SW, PH, PW, DH, DW, PAD,
                          KH: tl.constexpr, KW: tl.constexpr, BP: tl.constexpr, BO: tl.constexpr):
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    pm = p < N * HO * WO
    om = o < O
    n, ho, wo = _pixel(p, HO, WO)
    n = n.to(tl.int64)
    acc = tl.zeros([BP, BO], dtype=t_ptr.dtype.element_ty)
    for c in range(C):
        for i in tl.static_range(KH):
            for j in tl.static_range(KW):
                h = ho * SH - PH + i * DH
                w = wo * SW - PW + j * DW
                inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
                v = tl.load(idx_ptr + ((n * C + c) * H + h) * W + w, mask=pm & inside, other=0)
                v = tl.where(inside, v, PAD).to(tl.int64)
                k = (c * KH + i) * KW + j
                rows = (k * V + v) * O
                acc += tl.load(t_ptr + rows[:, None] + o[None, :], mask=pm[:, None] & om[None, :], other=0.0)
    out = (n[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None]
    tl.store(y_ptr + out, acc, mask=pm[:, None] & om[None, :])


@triton.jit
def _table_scatter_kernel(idx_ptr, g_ptr, h_ptr, N, C, H, W, O, V, HO, WO, SH, SW, PH, PW, DH, DW, PAD,
                          KH: tl.constexpr, KW: tl.constexpr, BP: tl.constexpr, BO: tl.constexpr):
    """H[k, v, o] += G[n, o, p] for every output pixel p whose tap k reads index v (padding taps read PAD)."""
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    k = tl.program_id(1)
    j = k % KW
    i = (k // KW) % KH
    c = k // (KW * KH)
    pm = p < N * HO * WO
    n, ho, wo = _pixel(p, HO, WO)
    n = n.to(tl.int64)
    h = ho * SH - PH + i * DH
    w = wo * SW - PW + j * DW
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    v = tl.load(idx_ptr + ((n * C + c) * H + h) * W + w, mask=pm & inside, other=0)
    rows = (k.to(tl.int64) * V + tl.where(inside, v, PAD).to(tl.int64)) * O
    for o0 in range(0, O, BO):
        o = o0 + tl.arange(0, BO)
        m2 = pm[:, None] & (o < O)[None, :]
        g = tl.load(g_ptr + (n[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None], mask=m2, other=0.0)
        tl.atomic_add(h_ptr + rows[:, None] + o[None, :], g, mask=m2)


def _geometry(geom):
    (sh, sw), (ph, pw), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, ph, pw, dh, dw


def l1_forward(x, weight, geom):
    """Y = -sum_k |X_col - W| as (N, O, Ho, Wo) in x's dtype (float32 or float64)."""
    x, weight = x.contiguous(), weight.to(x.dtype).contiguous()
    n, c, h, w = x.shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    y = x.new_empty(n, o, ho, wo)
    if y.numel():
        grid = (triton.cdiv(n * ho * wo, BLOCK_P), triton.cdiv(o, BLOCK_O))
        _l1_forward_kernel[grid](x, weight, y, n, c, h, w, o, ho, wo, *_geometry(geom), KH=geom.kernel[0],
                                 KW=geom.kernel[1], BP=BLOCK_P, BO=BLOCK_O, num_warps=NUM_WARPS)
    return y


def _input_grad(x, index, matrix, grad_out, geom, values, table):
    """Shared launcher of the two input-gradient kernels (`x` for l1, `index` and tables for the table layer)."""
    source = index if table else x
    n, c, h, w = source.shape
    o = grad_out.shape[1]
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    dtype = matrix.dtype if table else x.dtype
    gx = torch.empty(n, c, h, w, dtype=dtype, device=source.device)
    if gx.numel():
        grid = (triton.cdiv(gx.numel(), BLOCK_Q),)
        _input_grad_kernel[grid](x, index, matrix, grad_out.to(dtype).contiguous(), gx, n, c, h, w, o, values, ho,
                                 wo, *_geometry(geom), KH=geom.kernel[0], KW=geom.kernel[1], TABLE=table,
                                 BQ=BLOCK_Q, BO=BLOCK_O, num_warps=NUM_WARPS)
    return gx


def l1_input_grad(x, weight, grad_out, geom):
    """GX = sum_o G * clamp(W - X, -1, 1) summed over the taps that read each input pixel, shaped like x."""
    x = x.contiguous()
    return _input_grad(x, x, weight.to(x.dtype).contiguous(), grad_out, geom, 0, table=False)


def _check_index(index, table):
    index = index.contiguous()
    if index.dtype not in (torch.int32, torch.int64):
        index = index.to(torch.int32)
    return index, table.contiguous()


def table_forward(index, table, geom, pad_index):
    """Y[n,o,p] = sum_k T[k, I[n,k,p], o] as (N, O, Ho, Wo) in the table's dtype; padding taps read `pad_index`."""
    index, table = _check_index(index, table)
    n, c, h, w = index.shape
    _, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    y = table.new_empty(n, o, ho, wo)
    if y.numel():
        grid = (triton.cdiv(n * ho * wo, BLOCK_P), triton.cdiv(o, BLOCK_O))
        _table_forward_kernel[grid](index, table, y, n, c, h, w, o, v, ho, wo, *_geometry(geom), int(pad_index),
                                    KH=geom.kernel[0], KW=geom.kernel[1], BP=BLOCK_P, BO=BLOCK_O,
                                    num_warps=NUM_WARPS)
    return y


def table_backward(index, table, grad_out, geom, pad_index):
    """(GX, H): input gradient sum_o G * B[k, I, o] folded onto the input (table dtype), and the gradient into the
    tables H[k, v, o] = sum of G over the pixels whose tap k reads v (grad_out's dtype)."""
    index, table = _check_index(index, table)
    grad_out = grad_out.contiguous()
    n, c, h, w = index.shape
    k, v, o = table.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    grad_x = _input_grad(index, index, table, grad_out, geom, v, table=True)
    hits = grad_out.new_zeros(k, v, o)
    if grad_out.numel():
        grid = (triton.cdiv(n * ho * wo, BLOCK_P), k)
        _table_scatter_kernel[grid](index, grad_out, hits, n, c, h, w, o, v, ho, wo, *_geometry(geom),
                                    int(pad_index), KH=geom.kernel[0], KW=geom.kernel[1], BP=BLOCK_P, BO=BLOCK_O,
                                    num_warps=NUM_WARPS)
    return grad_x, hits
