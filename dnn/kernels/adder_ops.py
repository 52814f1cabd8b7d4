"""The arithmetic kernels behind the AdderNet layers, written once for every back-end.

Everything is phrased as a 2-D "convolution" over an input (N, C, H, W) and weights (O, C, kh, kw); a linear layer is
the 1x1 case. Each kernel has a plain-torch version that runs on any device (CPU or CUDA) and, on CPU, a compiled
OpenMP version from `dnn.kernels.native` when it is available; on CUDA, the Triton kernels of
`dnn.kernels.triton.adder` when triton is installed. The torch versions are also the slow references the tests
compare the compiled ones against.

Kernels (K = C*kh*kw patch taps, L = output pixels, V = values an activation index can take):
- `l1_forward`:    Y[n,o,p]  = -sum_k |X[n,k,p] - W[o,k]|                       (exact AdderNet forward)
- `l1_input_grad`: GX[n,k,p] = sum_o G[n,o,p] * clamp(W[o,k] - X[n,k,p], -1, 1)  (the authors' HardTanh backward)
- `l1_weight_grad`: GW[o,k]  = sum_{n,p} G[n,o,p] * (X[n,k,p] - W[o,k])           (full-precision backward, a GEMM)
- `table_forward`: Y[n,o,p]  = sum_k T[k, I[n,k,p], o], T[k,v,o] = M[v, Wi[o,k]]   (weights folded into tables)
- `table_backward`: GX[n,k,p] = sum_o G[n,o,p] * A[k, I[n,k,p], o] (input gradient) and
                    GW[o,k]   = sum_v H[k,v,o] * B[k,v,o], H[k,v,o] = sum_{n,p : I[n,k,p] = v} G[n,o,p], one pass
X and I are never unfolded by the compiled kernels; the torch versions unfold in chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dnn.kernels import native as native_kernels
from dnn.kernels import triton as triton_kernels

CHUNK_ELEMENTS = 1 << 24  # temporaries of the torch paths stay below ~64 MB of float32
FLOAT32_EXACT = 1 << 24  # integer sums below this are exact in float32


@dataclass(frozen=True)
class Geometry:
    """Convolution geometry: kernel size, stride, padding and dilation, each a (height, width) pair."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def output_size(self, h, w):
        """(Ho, Wo) of the output for an (h, w) input."""
        sizes = []
        for size, k, s, p, d in zip((h, w), self.kernel, self.stride, self.padding, self.dilation):
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(sizes)

    def unfold(self, x):
        """im2col: (N, C, H, W) -> (N, C*kh*kw, L). Zero padding gives zero taps."""
        return F.unfold(x, self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def fold(self, cols, h, w):
        """Sum the columns back onto an (h, w) image: the adjoint of `unfold`."""
        return F.fold(cols, (h, w), self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)


def _use_native(*tensors):
    """True when every tensor is on the CPU and the compiled kernels loaded (and Triton is not forced on CPU)."""
    return all(t.device.type == "cpu" for t in tensors) and native_kernels.available() and \
        not triton_kernels.use(*tensors)


def _triton(*tensors):
    """The Triton kernels module (`dnn.kernels.triton.adder`) when it should serve these tensors, else None."""
    if not triton_kernels.use(*tensors):
        return None
    from dnn.kernels.triton import adder
    return adder


def _chunk(total, per_item):
    """How many items of `per_item` elements fit in one temporary of CHUNK_ELEMENTS."""
    return max(1, min(total, CHUNK_ELEMENTS // max(1, per_item)))


# -- exact float kernels ---------------------------------------------------------------------------------------------
def native_exact(x, weight):
    """True when the compiled exact kernels serve these tensors (CPU, float32, kernels built)."""
    return _use_native(x, weight) and x.dtype == torch.float32


def l1_forward(x, weight, geom, native=None, padded=None):
    """Y = -sum_k |X_col - W| as (N, O, Ho, Wo), in the dtype of x; never builds the (N, O, K, L) difference.
    `padded` (native only): x's `native_kernels.pad_input` buffers, when the caller keeps them for the backward."""
    if native is None:
        native = native_exact(x, weight)
    if native:
        return native_kernels.l1_forward(x, weight, geom, padded)
    if kernels := _triton(x, weight):
        return kernels.l1_forward(x, weight, geom)
    return l1_forward_torch(x, weight, geom)


def l1_forward_torch(x, weight, geom):
    """Torch version: cdist with p=1 between unfolded patches and filters, chunked over the batch."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    filters = weight.reshape(o, -1)
    out = x.new_empty(n, ho * wo, o)
    k = filters.shape[1]
    step = _chunk(n, k * ho * wo)
    for start in range(0, n, step):
        cols = geom.unfold(x[start:start + step]).transpose(1, 2)
        out[start:start + step] = torch.cdist(cols, filters.unsqueeze(0).expand(cols.shape[0], o, k), p=1)
    return -out.transpose(1, 2).reshape(n, o, ho, wo)


def l1_input_grad(x, weight, grad_out, geom, native=None):
    """GX = sum_o G * clamp(W - X, -1, 1) folded back onto the input, shaped like x."""
    if native is None:
        native = native_exact(x, weight) and grad_out.device.type == "cpu"
    if native:
        return native_kernels.l1_input_grad(x.shape, weight, grad_out.contiguous(), geom,
                                            native_kernels.pad_input(x, geom))
    if kernels := _triton(x, weight, grad_out):
        return kernels.l1_input_grad(x, weight, grad_out, geom)
    return l1_input_grad_torch(x, weight, grad_out, geom)


def l1_input_grad_torch(x, weight, grad_out, geom):
    """Torch version, chunked over the batch and the patch taps."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    filters = weight.reshape(o, -1)
    k = filters.shape[1]
    g = grad_out.reshape(n, o, -1)
    length = g.shape[2]
    grad_cols = x.new_empty(n, k, length)
    k_step = _chunk(k, o * length)
    n_step = _chunk(n, o * length * k_step)
    for start in range(0, n, n_step):
        cols = geom.unfold(x[start:start + n_step])
        gs = g[start:start + n_step]
        for k0 in range(0, k, k_step):
            diff = filters[None, :, k0:k0 + k_step, None] - cols[:, None, k0:k0 + k_step, :]
            grad_cols[start:start + n_step, k0:k0 + k_step] = torch.einsum("nokl,nol->nkl", diff.clamp_(-1, 1), gs)
    return geom.fold(grad_cols, h, w)


def l1_weight_grad(x, weight, grad_out, geom, padded_image=None):
    """GW = G @ X_col^T - W * rowsum(G): the full-precision weight gradient as one convolution-weight GEMM.
    Given x already zero-padded (`padded_image`, x may then be None), the GEMM reads it with no padding of its own,
    which is faster on CPU."""
    if padded_image is not None:
        x, padding = padded_image, (0, 0)
    else:
        padding = geom.padding
    correlation = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride=geom.stride, padding=padding,
                                              dilation=geom.dilation)
    return correlation - weight * grad_out.sum(dim=(0, 2, 3)).view(-1, 1, 1, 1)


# -- table kernels (weights folded into per-tap tables) --------------------------------------------------------------
def fold_table(mat, wi):
    """(K, V, O) tables T[k, v, o] = mat[v, wi[o, k]] from a value-major (V, Vw) matrix and (O, K) weight indices."""
    return mat[:, wi.long()].permute(2, 0, 1).contiguous()


def native_table_sums(index, mat, wi):
    """True when the compiled integer table forward serves these tensors: CPU, and sums exact in float32."""
    bound = int(mat.abs().max()) * wi.shape[1] if mat.numel() else 0
    return _use_native(index, mat) and not mat.is_floating_point() and bound < FLOAT32_EXACT


def table_forward(index, wi, mat, geom, pad_index, native=None):
    """Y[n,o,p] = sum_k T[k, I[n,k,p], o] as (N, O, Ho, Wo), with T[k, v, o] = mat[v, wi[o, k]].

    `index` (N, C, H, W) int holds each activation's row in the tables (0..V-1); padding taps read row `pad_index`.
    `mat` is a value-major integer (V, Vw) matrix, `wi` (O, K) the weights' indices. Integer sums are exact: float32
    when they stay below 2^24 (the compiled kernel, int32 accumulators), else float64 (torch).
    """
    if native is None:
        native = native_table_sums(index, mat, wi)
    if native:
        o = wi.shape[0]
        affine = torch.zeros(3, o, dtype=torch.float64)
        affine[2] = 1.0
        small = mat.to(torch.int16) if int(mat.abs().max()) < 1 << 15 else mat.to(torch.int32)
        return native_kernels.table_sums(native_kernels.pad_index(index, geom, pad_index), small, wi, 1, geom,
                                         geom.output_size(*index.shape[2:]), affine)
    bound = int(mat.abs().max()) * wi.shape[1] if mat.numel() else 0
    dtype = torch.float32 if bound < FLOAT32_EXACT else torch.float64
    if kernels := _triton(index, wi, mat):
        return kernels.table_forward(index, wi, mat, geom, pad_index, dtype)
    return table_forward_torch(index, fold_table(mat.to(dtype), wi), geom, pad_index)


def _unfold_index(index, geom, pad_index):
    """im2col of an integer index image, padding taps set to `pad_index`: (N, K, L) int64."""
    shifted = (index.to(torch.float64) - pad_index)  # zero padding then maps back to pad_index
    cols = geom.unfold(shifted)
    return cols.round_().to(torch.int64) + pad_index


def table_forward_torch(index, table, geom, pad_index):
    """Torch version: embedding_bag sums table rows, chunked over the batch."""
    n, _, h, w = index.shape
    k, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    flat = table.reshape(k * v, o)
    offsets = (torch.arange(k, device=index.device) * v).view(1, k, 1)
    out = table.new_empty(n, ho * wo, o)
    step = _chunk(n, 2 * k * ho * wo)
    for start in range(0, n, step):
        rows = (_unfold_index(index[start:start + step], geom, pad_index) + offsets).transpose(1, 2)
        out[start:start + step] = F.embedding_bag(rows.reshape(-1, k), flat, mode="sum").view(-1, ho * wo, o)
    return out.transpose(1, 2).reshape(n, o, ho, wo)


def table_input_grad_torch(index, table, grad_out, geom, pad_index):
    """Torch version: gather the table rows each tap reads and dot them with the output gradient, in chunks."""
    n, c, h, w = index.shape
    k, v, o = table.shape
    g = grad_out.reshape(n, o, -1).transpose(1, 2)  # N, L, O
    length = g.shape[1]
    grad_cols = table.new_empty(n, k, length)
    flat = table.reshape(k * v, o)
    offsets = (torch.arange(k, device=index.device) * v).view(1, k, 1)
    step = _chunk(n, k * length * o)
    for start in range(0, n, step):
        rows = _unfold_index(index[start:start + step], geom, pad_index) + offsets  # n, K, L
        gathered = flat[rows]  # n, K, L, O
        grad_cols[start:start + step] = torch.einsum("nklo,nlo->nkl", gathered, g[start:start + step])
    return geom.fold(grad_cols, h, w)


def table_scatter_torch(index, grad_out, geom, pad_index, values):
    """Torch version: index_add of the output gradient rows into a (K*V, O) table, chunked over the batch."""
    n, c, h, w = index.shape
    o = grad_out.shape[1]
    k = c * geom.kernel[0] * geom.kernel[1]
    g = grad_out.reshape(n, o, -1).transpose(1, 2)  # N, L, O
    length = g.shape[1]
    out = grad_out.new_zeros(k * values, o)
    offsets = (torch.arange(k, device=index.device) * values).view(1, k, 1)
    step = _chunk(n, k * length * o)
    for start in range(0, n, step):
        rows = _unfold_index(index[start:start + step], geom, pad_index) + offsets  # n, K, L
        src = g[start:start + step].unsqueeze(1).expand(-1, k, -1, -1)  # n, K, L, O
        out.index_add_(0, rows.reshape(-1), src.reshape(-1, o))
    return out.view(k, values, o)


def table_backward(index, wi, ma, mw, grad_out, geom, pad_index, native=None):
    """(GX, GW): GX[n,c,h,w] = the input gradient through tables A[k,v,o] = ma[v, wi[o,k]], and
    GW[o,k] = sum_v H[k,v,o] * mw[v, wi[o,k]] with H the gradient into the tables (`table_scatter_torch`).

    `ma` and `mw` are value-major float (V, Vw) matrices; either may be None (that gradient is not computed). The
    compiled kernel does both in one pass over the input; the torch references are `table_input_grad_torch` and
    `table_scatter_torch`.
    """
    if native is None:
        native = _use_native(index, grad_out, *(m for m in (ma, mw) if m is not None))
    if native:
        rows = native_kernels.grad_rows(grad_out, 1)
        return native_kernels.table_grads(native_kernels.pad_index(index, geom, pad_index), ma, None, mw, wi, 1,
                                          geom, tuple(index.shape), rows, tuple(grad_out.shape[2:]))
    if kernels := _triton(index, wi, grad_out):
        return kernels.table_backward(index, wi, ma, mw, grad_out, geom, pad_index)
    grad_x = grad_w = None
    if ma is not None:
        grad_x = table_input_grad_torch(index, fold_table(ma.float(), wi), grad_out, geom, pad_index)
    if mw is not None:
        hits = table_scatter_torch(index, grad_out.float(), geom, pad_index, mw.shape[0])
        grad_w = (hits * fold_table(mw.float(), wi)).sum(1).t()
    return grad_x, grad_w
