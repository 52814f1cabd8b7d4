"""Integer accumulation of the multiplier layers in torch: sum_k AM(q_x, q_w) exactly, and its LUT gradients.

The fast path folds the weights into per-position tables T[k, v, o] = AM(v, q_w[o, k]) and sums table rows with
`embedding_bag`, never looping over elements in Python; `reference_accumulate` is the plain elementwise reference.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dnn.kernels import triton as triton_kernels

FLOAT32_EXACT = 1 << 24  # float32 represents every integer up to this exactly
FLOAT64_EXACT = 1 << 53
TABLE_BLOCK = 1 << 23  # entries per folded weight-table block (32 MiB of float32)
GATHER_BLOCK = 1 << 22  # entries per gathered (rows, k, o) block in the LUT-gradient backward


def block_size(K, Na, O, max_abs):
    """Positions per folded block: partial sums stay exact and the block table stays within TABLE_BLOCK."""
    limit = FLOAT32_EXACT if max_abs <= FLOAT32_EXACT else FLOAT64_EXACT
    exact = max(1, limit // max(max_abs, 1))
    memory = max(1, TABLE_BLOCK // max(Na * O, 1))
    return max(1, min(K, exact, memory))


def fold_block(table, iw_block):
    """T[k, v, o] = table[v, iw[o, k]] flattened to (kb * Na, O): the weights folded into per-position tables."""
    Na, Nb = table.shape
    O, kb = iw_block.shape
    index = torch.arange(0, Na * Nb, Nb, device=iw_block.device).view(1, Na, 1) + iw_block.t().reshape(kb, 1, O)
    return table.reshape(-1).index_select(0, index.reshape(-1)).view(kb * Na, O)


def flat_rows(ix_block, Na, shift=0):
    """Row of the folded table for each (m, k): k * Na + ix[m, k] + shift, as int64.

    `ix_block` may be a long tensor or a float tensor holding integers (the quantized values themselves, with
    `shift` = -qmin), so no full-size index tensor needs to exist beside the quantized activations.
    """
    kb = ix_block.shape[1]
    if ix_block.is_floating_point() and ix_block.dtype != torch.float64:
        ix_block = ix_block.to(torch.float32)  # exact for every row index of a block (< 2^24)
    offsets = torch.arange(kb, device=ix_block.device, dtype=ix_block.dtype) * Na + shift
    return (ix_block + offsets).to(torch.int64)


def _triton(*tensors):
    """The Triton kernels module (`dnn.kernels.triton.mult`) when it should serve these tensors, else None."""
    if not triton_kernels.use(*tensors):
        return None
    from dnn.kernels.triton import mult
    return mult


def lut_accumulate(ix, iw, values, max_abs, shift=0):
    """acc[m, o] = sum_k values[ix[m, k] + shift, iw[o, k]] exactly, as float64 (M, O).

    iw is a long index tensor; ix a long tensor, or a float tensor of integers moved to indices by `shift`.
    """
    if kernels := _triton(ix, iw, values):
        return kernels.lut_accumulate(ix, iw, values, max_abs, shift)
    M, K = ix.shape
    O = iw.shape[0]
    Na = values.shape[0]
    kb = block_size(K, Na, O, max_abs)
    acc = None
    for k0 in range(0, K, kb):
        table = fold_block(values, iw[:, k0:k0 + kb])
        part = F.embedding_bag(flat_rows(ix[:, k0:k0 + kb], Na, shift), table, mode="sum").to(torch.float64)
        acc = part if acc is None else acc.add_(part)
    return acc


def reference_accumulate(ix, iw, values, rows_per_step=256):
    """Slow, obviously correct reference: gather every (x, w) pair in int64 and sum over k."""
    values = torch.as_tensor(np.asarray(values), dtype=torch.int64) if not torch.is_tensor(values) else \
        values.to(torch.int64)
    values = values.to(ix.device)
    out = []
    for m0 in range(0, ix.shape[0], rows_per_step):
        a = ix[m0:m0 + rows_per_step, None, :]
        out.append(values[a, iw[None, :, :]].sum(-1))
    return torch.cat(out) if out else torch.zeros(0, iw.shape[0], dtype=torch.int64)


def lut_grad_a(ix, iw, g, grad_a, shift=0):
    """dL/dq_x[m, k] = sum_o g[m, o] * dAM/dA(q_x[m, k], q_w[o, k]): rows of folded gradient tables, dotted with g."""
    if kernels := _triton(ix, iw, g, grad_a):
        return kernels.lut_grad_a(ix, iw, g, grad_a, shift)
    M, K = ix.shape
    O = iw.shape[0]
    Na = grad_a.shape[0]
    out = torch.empty(M, K, dtype=torch.float32, device=ix.device)
    kb = max(1, min(K, TABLE_BLOCK // max(Na * O, 1)))
    for k0 in range(0, K, kb):
        table = fold_block(grad_a, iw[:, k0:k0 + kb])
        rows = flat_rows(ix[:, k0:k0 + kb], Na, shift)
        width = rows.shape[1]
        mb = max(1, GATHER_BLOCK // max(width * O, 1))
        for m0 in range(0, M, mb):
            picked = F.embedding(rows[m0:m0 + mb], table)  # (mb, kb, O)
            out[m0:m0 + mb, k0:k0 + width] = torch.bmm(picked, g[m0:m0 + mb, :, None]).squeeze(2)
    return out


def scatter_rows(rows, g, n_rows):
    """S[r, o] = sum of g[m, o] over the (m, k) with rows[m, k] = r: sort the rows once, then sum bags of g."""
    flat = rows.reshape(-1)
    order = torch.argsort(flat)
    counts = torch.bincount(flat, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    source = torch.div(order, rows.shape[1], rounding_mode="floor")  # the m of each sorted (m, k)
    return F.embedding_bag(source, g, offsets, mode="sum")


def lut_grad_b(ix, iw, g, grad_b, shift=0):
    """dL/dq_w[o, k] = sum_m g[m, o] * dAM/dB(q_x[m, k], q_w[o, k]).

    The output gradient is first scattered into per-position tables G[k, v, o] = sum over m with q_x[m, k] = v of
    g[m, o]; the chain rule through the gradient LUT then costs only K * 2^n * O.
    """
    if kernels := _triton(ix, iw, g, grad_b):
        return kernels.lut_grad_b(ix, iw, g, grad_b, shift)
    M, K = ix.shape
    O = iw.shape[0]
    Na = grad_b.shape[0]
    out = torch.empty(O, K, dtype=torch.float32, device=ix.device)
    kb = max(1, min(K, TABLE_BLOCK // max(Na * O, 1)))
    for k0 in range(0, K, kb):
        rows = flat_rows(ix[:, k0:k0 + kb], Na, shift)
        width = rows.shape[1]
        scattered = scatter_rows(rows, g, width * Na)
        slope = fold_block(grad_b, iw[:, k0:k0 + kb])  # (kb * Na, O)
        out[:, k0:k0 + width] = (scattered * slope).reshape(width, Na, O).sum(1).t()
    return out
