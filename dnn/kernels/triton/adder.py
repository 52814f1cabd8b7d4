"""Triton kernels of the AdderNet layers: the same maths as `dnn.kernels.adder_ops` (whose dispatchers call these for
CUDA tensors), computed as direct convolutions that never unfold the input.

- `l1_forward`:     Y[n,o,p]  = -sum_k |X[n,k,p] - W[o,k]|            one program per (pixel block, filter block)
- `l1_input_grad`:  GX[n,c,h,w] = sum_{taps, o} G * clamp(W - X, -1, 1)   one program per input-pixel block, so the
                    fold onto the input is a plain sum over the taps that read the pixel (no atomics, deterministic)
- `table_forward`:  Y[n,o,p]  = sum_k M[I[n,k,p], Wi[o,k]]             the weights are never folded into per-tap
                    tables: each program gathers from the (V, Vw) matrix M, which stays in L1/L2
- `table_backward`: GX as for l1 with A[I, Wi[o,k]] in place of the clamp, and GW[o,k] = sum_{n,p} G[n,o,p] *
                    B[I[n,k,p], Wi[o,k]] as reductions per (tap, filter block, pixel slice): no atomics

The full-precision weight gradient of the exact layer is a plain correlation (`adder_ops.l1_weight_grad`), which
cuDNN already computes at GEMM speed; it has no Triton kernel. Sums run in the tensors' own dtype (float32, or
float64 for the integer back-ends' wide sums), so integer-valued inputs give the same bits as the references.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_P, BLOCK_O, BLOCK_Q = 64, 32, 64  # output pixels x filters per program; input pixels per backward program
BLOCK_O_GRAD = 16  # filters per step of the input-gradient loop: 140 registers on sm_90, where 32 took 255 and spilled
NUM_WARPS = 4
PIXELS_PER_SLICE = 4096  # output pixels per program of the table weight gradient: enough programs at any K and O


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
    n = p // (HO * WO)
    r = p % (HO * WO)
    h0 = (r // WO) * SH - PH
    w0 = (r % WO) * SW - PW
    x_base = x_ptr + n.to(tl.int64) * C * H * W + h0 * W + w0
    w_base = w_ptr + o * (C * KH * KW)
    acc = tl.zeros([BP, BO], dtype=x_ptr.dtype.element_ty)
    for k in range(C * KH * KW):  # one runtime loop over the taps: unrolled taps cost 255 registers and spills
        j = k % KW
        i = (k // KW) % KH
        c = k // (KW * KH)
        h = h0 + i * DH
        w = w0 + j * DW
        valid = pm & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        xv = tl.load(x_base + (c * H + i * DH) * W + j * DW, mask=valid, other=0.0)
        wv = tl.load(w_base + k, mask=om, other=0.0)
        acc += tl.abs(xv[:, None] - wv[None, :])
    out = (n.to(tl.int64)[:, None] * O + o[None, :]) * (HO * WO) + r[:, None]
    tl.store(y_ptr + out, -acc, mask=pm[:, None] & om[None, :])


@triton.jit
def _input_grad_kernel(x_ptr, idx_ptr, w_ptr, wi_ptr, g_ptr, gx_ptr, N, C, H, W, O, VW, HO, WO, SH, SW, PH, PW, DH,
                       DW, KH: tl.constexpr, KW: tl.constexpr, TABLE: tl.constexpr, BQ: tl.constexpr,
                       BO: tl.constexpr):
    """GX of input pixels q = ((n*C + c)*H + h)*W + w: sum over the taps (i, j) that read q and the filters o of
    G[n,o,ho,wo] * clamp(W[o,c,i,j] - X[q], -1, 1) (l1), or * A[I[q], Wi[o, (c*KH+i)*KW+j]] (TABLE, A: w_ptr)."""
    q = tl.program_id(0) * BQ + tl.arange(0, BQ)
    qm = q < N * C * H * W
    w_in = q % W
    h_in = (q // W) % H
    c = (q // (W * H)) % C
    n = (q // (W * H * C)).to(tl.int64)
    if TABLE:
        row = tl.load(idx_ptr + q, mask=qm, other=0).to(tl.int64) * VW
        acc = tl.zeros([BQ], dtype=w_ptr.dtype.element_ty)
    else:
        xv = tl.load(x_ptr + q, mask=qm, other=0.0)
        acc = tl.zeros([BQ], dtype=x_ptr.dtype.element_ty)
    g_base = g_ptr + n * O * (HO * WO)
    for t in range(KH * KW):  # a runtime loop: unrolled taps kept every tap's loads live (255 registers, spills)
        i = t // KW
        j = t % KW
        th = h_in + PH - i * DH
        tw = w_in + PW - j * DW
        ho = th // SH
        wo = tw // SW
        valid = qm & (th >= 0) & (tw >= 0) & (th % SH == 0) & (tw % SW == 0) & (ho < HO) & (wo < WO)
        k = c * (KH * KW) + t
        pixel = g_base + ho * WO + wo
        for o0 in range(0, O, BO):
            o = o0 + tl.arange(0, BO)
            m2 = valid[:, None] & (o < O)[None, :]
            g = tl.load(pixel[:, None] + o[None, :] * (HO * WO), mask=m2, other=0.0)
            taps = k[:, None] + o[None, :] * (C * KH * KW)  # (o, k) of the weight, row-major (O, K)
            if TABLE:
                col = tl.load(wi_ptr + taps, mask=m2, other=0)
                slope = tl.load(w_ptr + row[:, None] + col, mask=m2, other=0.0)
            else:
                wv = tl.load(w_ptr + taps, mask=m2, other=0.0)
                slope = tl.minimum(tl.maximum(wv - xv[:, None], -1.0), 1.0)
            acc += tl.sum(g * slope, axis=1)
    tl.store(gx_ptr + q, acc, mask=qm)


@triton.jit
def _tap_rows(idx_ptr, p, k, N, C, H, W, HO, WO, SH, SW, PH, PW, DH, DW, PAD, KH: tl.constexpr, KW: tl.constexpr):
    """(n, ho, wo, v, pm): the output pixels p, and the index v their tap k reads (PAD on a padding tap)."""
    pm = p < N * HO * WO
    n, ho, wo = _pixel(p, HO, WO)
    n = n.to(tl.int64)
    j = k % KW
    i = (k // KW) % KH
    c = k // (KW * KH)
    h = ho * SH - PH + i * DH
    w = wo * SW - PW + j * DW
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    v = tl.load(idx_ptr + ((n * C + c) * H + h) * W + w, mask=pm & inside, other=0)
    return n, ho, wo, tl.where(inside, v, PAD).to(tl.int64), pm


@triton.jit
def _table_forward_kernel(idx_ptr, wi_ptr, m_ptr, y_ptr, N, C, H, W, O, VW, HO, WO, SH, SW, PH, PW, DH, DW, PAD,
                          KH: tl.constexpr, KW: tl.constexpr, BP: tl.constexpr, BO: tl.constexpr):
    """Y[n,o,p] = sum_k M[I[n,k,p], Wi[o,k]]: the weights are never folded into per-tap tables, M stays in cache."""
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    om = o < O
    K = C * KH * KW
    acc = tl.zeros([BP, BO], dtype=y_ptr.dtype.element_ty)
    for k in range(K):
        n, ho, wo, v, pm = _tap_rows(idx_ptr, p, k, N, C, H, W, HO, WO, SH, SW, PH, PW, DH, DW, PAD, KH, KW)
        col = tl.load(wi_ptr + o * K + k, mask=om, other=0)
        m2 = pm[:, None] & om[None, :]
        acc += tl.load(m_ptr + v[:, None] * VW + col[None, :], mask=m2, other=0).to(y_ptr.dtype.element_ty)
    n, ho, wo = _pixel(p, HO, WO)
    out = (n.to(tl.int64)[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None]
    tl.store(y_ptr + out, acc, mask=(p < N * HO * WO)[:, None] & om[None, :])


@triton.jit
def _table_weight_grad_kernel(idx_ptr, wi_ptr, m_ptr, g_ptr, gw_ptr, N, C, H, W, O, VW, HO, WO, SH, SW, PH, PW, DH,
                              DW, PAD, PIXELS, KH: tl.constexpr, KW: tl.constexpr, BP: tl.constexpr,
                              BO: tl.constexpr):
    """GW[s, o, k] = sum over slice s of the pixels (n, p) of G[n,o,p] * B[I[n,k,p], Wi[o,k]]: one program per
    (tap, filter block, slice of PIXELS pixels), a plain reduction (no scatter into per-tap tables, no atomics)."""
    k = tl.program_id(0)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    part = tl.program_id(2)
    om = o < O
    K = C * KH * KW
    col = tl.load(wi_ptr + o * K + k, mask=om, other=0)
    acc = tl.zeros([BO], dtype=gw_ptr.dtype.element_ty)
    for p0 in range(part * PIXELS, tl.minimum(part * PIXELS + PIXELS, N * HO * WO), BP):
        p = p0 + tl.arange(0, BP)
        n, ho, wo, v, pm = _tap_rows(idx_ptr, p, k, N, C, H, W, HO, WO, SH, SW, PH, PW, DH, DW, PAD, KH, KW)
        m2 = pm[:, None] & om[None, :]
        g = tl.load(g_ptr + (n[:, None] * O + o[None, :]) * (HO * WO) + (ho * WO + wo)[:, None], mask=m2, other=0.0)
        slope = tl.load(m_ptr + v[:, None] * VW + col[None, :], mask=m2, other=0.0)
        acc += tl.sum(g * slope, axis=0)
    tl.store(gw_ptr + (part * O + o) * K + k, acc, mask=om)


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


def _input_grad(x, index, matrix, wi, grad_out, geom, table):
    """Shared launcher of the two input-gradient kernels (`x` and the weights for l1; `index`, A and Wi for tables)."""
    source = index if table else x
    n, c, h, w = source.shape
    o = grad_out.shape[1]
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    dtype = matrix.dtype
    gx = torch.empty(n, c, h, w, dtype=dtype, device=source.device)
    if gx.numel():
        grid = (triton.cdiv(gx.numel(), BLOCK_Q),)
        _input_grad_kernel[grid](x, index, matrix, wi, grad_out.to(dtype).contiguous(), gx, n, c, h, w, o,
                                 matrix.shape[-1], ho, wo, *_geometry(geom), KH=geom.kernel[0], KW=geom.kernel[1],
                                 TABLE=table, BQ=BLOCK_Q, BO=BLOCK_O_GRAD, num_warps=NUM_WARPS)
    return gx


def l1_input_grad(x, weight, grad_out, geom):
    """GX = sum_o G * clamp(W - X, -1, 1) summed over the taps that read each input pixel, shaped like x."""
    x = x.contiguous()
    weight = weight.to(x.dtype).contiguous()
    return _input_grad(x, x, weight, weight, grad_out, geom, table=False)


def _indices(index, wi):
    """Contiguous int32 activation and weight indices."""
    return index.contiguous().to(torch.int32), wi.contiguous().to(torch.int32)


def table_forward(index, wi, mat, geom, pad_index, dtype):
    """Y[n,o,p] = sum_k mat[I[n,k,p], wi[o,k]] as (N, O, Ho, Wo) in `dtype` (exact: the caller picks float64 when
    the sums may reach 2^24); padding taps read row `pad_index`."""
    index, wi = _indices(index, wi)
    mat = mat.contiguous()
    n, c, h, w = index.shape
    o = wi.shape[0]
    ho, wo = geom.output_size(h, w)
    y = torch.empty(n, o, ho, wo, dtype=dtype, device=index.device)
    if y.numel():
        grid = (triton.cdiv(n * ho * wo, BLOCK_P), triton.cdiv(o, BLOCK_O))
        _table_forward_kernel[grid](index, wi, mat, y, n, c, h, w, o, mat.shape[1], ho, wo, *_geometry(geom),
                                    int(pad_index), KH=geom.kernel[0], KW=geom.kernel[1], BP=BLOCK_P, BO=BLOCK_O,
                                    num_warps=NUM_WARPS)
    return y


def table_backward(index, wi, ma, mw, grad_out, geom, pad_index):
    """(GX, GW): GX = sum_o G * ma[I, wi[o,k]] folded onto the input, GW[o,k] = sum_{n,p} G * mw[I, wi[o,k]]
    (float32, (O, K)); either matrix may be None, and its gradient is then None."""
    index, wi = _indices(index, wi)
    grad_out = grad_out.float().contiguous()
    n, c, h, w = index.shape
    o, k = wi.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    grad_x = grad_w = None
    if ma is not None:
        grad_x = _input_grad(index, index, ma.float().contiguous(), wi, grad_out, geom, table=True)
    if mw is not None:
        mw = mw.float().contiguous()
        slices = max(1, triton.cdiv(n * ho * wo, PIXELS_PER_SLICE))
        parts = torch.zeros(slices, o, k, dtype=torch.float32, device=index.device)
        if parts.numel():
            grid = (k, triton.cdiv(o, BLOCK_O), slices)
            _table_weight_grad_kernel[grid](index, wi, mw, grad_out, parts, n, c, h, w, o, mw.shape[1], ho, wo,
                                            *_geometry(geom), int(pad_index), PIXELS_PER_SLICE, KH=geom.kernel[0],
                                            KW=geom.kernel[1], BP=BLOCK_P, BO=BLOCK_O, num_warps=NUM_WARPS)
        grad_w = parts.sum(0)  # the slices' partial sums, added in a fixed order: deterministic
    return grad_x, grad_w
