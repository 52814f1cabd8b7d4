"""Integer accumulation of the multiplier layers in torch: sum_k AM(q_x, q_w) exactly, and its LUT gradients.

The fast path folds the weights into per-position tables T[k, v, o] = AM(v, q_w[o, k]) and sums table rows with
`embedding_bag`, never looping over elements in Python; `reference_accumulate` is the plain elementwise reference.
The layer-level ops `lut_conv_forward` / `lut_conv_backward` decide here, once each, between the compiled CPU
kernels (`dnn.kernels.native_mult`, csrc/table.c) and these torch versions, which stay the reference and the CUDA path.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dnn.kernels import native as native_kernels
from dnn.kernels import native_mult
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


# -- the multiplier convolution: dispatchers and torch versions (a linear layer is the 1x1 case) ----------------------
def patches(padded, kernel_size, stride, dilation):
    """im2col as one strided view and one copy: (N*Ho*Wo, C*kh*kw) rows, channel-major like F.unfold columns."""
    padded = padded.contiguous()
    N, C, H, W = padded.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    h_out = (H - dh * (kh - 1) - 1) // sh + 1
    w_out = (W - dw * (kw - 1) - 1) // sw + 1
    sN, sC, sH, sW = padded.stride()
    view = padded.as_strided((N, h_out, w_out, C, kh, kw), (sN, sH * sh, sW * sw, sC, sH * dh, sW * dw))
    return view.reshape(N * h_out * w_out, C * kh * kw), h_out, w_out


def per_output(t, outputs):
    """A 0-dim (per-tensor) or (O,) (per-channel) quantization parameter as (O,) float64."""
    return t.detach().to(torch.float64).reshape(-1).expand(outputs)


def lut_matmul(cols, qw, mult, s_x, z_x, s_w, z_w):
    """s_x s_w [sum_k AM(q_x, q_w) - z_w sum q_x - z_x sum q_w + K z_x z_w] for cols (M, K), qw (O, K), float64."""
    iw = (qw - mult.qrange(1)[0]).to(torch.int64)
    acc = lut_accumulate(cols, iw, mult.tables(cols.device)["values"], mult.max_abs, shift=-mult.qrange(0)[0])
    return zero_point_fold(acc, cols, qw, mult, s_x, z_x, s_w, z_w)


def zero_point_fold(acc, cols, qw, mult, s_x, z_x, s_w, z_w):
    """s_x s_w [acc - z_w sum q_x - z_x sum q_w + K z_x z_w], float64: the layer product from the product sums acc
    (M, O) of cols (M, K) and qw (O, K), the activation sums taken exactly."""
    K = cols.shape[1]
    bound = K * max(abs(q) for q in mult.qrange(0) + mult.qrange(1))
    wide = torch.float32 if bound <= FLOAT32_EXACT else torch.float64  # sums of integers stay exact
    sum_x = cols.to(wide).sum(1, keepdim=True).to(torch.float64)
    sum_w = qw.to(wide).sum(1).to(torch.float64)
    z_x, z_w = z_x.to(torch.float64), z_w.to(torch.float64)
    inner = acc - z_w * sum_x - z_x * sum_w + K * z_x * z_w
    return inner * (s_x.to(torch.float64) * s_w.to(torch.float64))


def padded_patches(qx, geom, z_x):
    """(cols, Ho, Wo): the quantized input padded with its zero point (padded taps are x = 0) and unfolded."""
    ph, pw = geom.padding
    return patches(F.pad(qx - z_x, (pw, pw, ph, ph)) + z_x, geom.kernel, geom.stride, geom.dilation)


def lut_conv_forward_torch(qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w):
    """Torch version of `lut_conv_forward`: unfold, then `lut_matmul` per group (any device, any float dtype)."""
    cols, ho, wo = padded_patches(qx, geom, z_x)
    N, O = qx.shape[0], qw.shape[0]
    Kg, Og = cols.shape[1] // groups, O // groups
    outs = []
    for g in range(groups):
        part = slice(g * Og, (g + 1) * Og)
        sg, zg = (s_w, z_w) if s_w.dim() == 0 else (s_w[part], z_w[part])
        y = lut_matmul(cols[:, g * Kg:(g + 1) * Kg], qw[part].reshape(Og, Kg), mult, s_x, z_x, sg, zg)
        outs.append(y.reshape(N, ho * wo, Og).transpose(1, 2))
    return torch.cat(outs, 1).to(qx.dtype).reshape(N, O, ho, wo)


def native_conv(qx, qw, mult):
    """True when the compiled table kernels serve this layer: CPU float32 and int32 sums that cannot overflow."""
    if qx.device.type != "cpu" or qx.dtype != torch.float32 or qx.numel() == 0 or not native_kernels.available():
        return False
    table = native_mult.integer_table(mult)
    return table is not None and qw[0].numel() * table[2] < 1 << 31


def lut_conv_forward(qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w, native=None, state=None):
    """y[n, o, p] = s_x s_w[o] (sum_k AM(q_x, q_w[o]) - z_w sum q_x - z_x sum q_w + K z_x z_w), (N, O, Ho, Wo).

    qx (N, C, H, W) and qw (O, C/groups, kh, kw) hold quantized values (floats); padding taps are x = z_x. The
    integer sum is exact and scaled in float64, then rounded once to qx's dtype, by either version.
    """
    if native is None:
        native = native_conv(qx, qw, mult)
    if native:
        return native_mult.conv_forward(qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w, state)
    return lut_conv_forward_torch(qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w)


def ste_conv_backward(qx, qw, gs, geom, groups, z_x, z_w, needs):
    """Straight-through gradients: the float convolution's backward at (q_x - z_x, q_w - z_w) (the exact product's
    slopes and the zero-point terms), one compiled torch call on any device."""
    wz = qw - per_output(z_w, qw.shape[0]).to(qw.dtype).view(-1, 1, 1, 1)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        gs.to(qx.dtype), qx - z_x.to(qx.dtype), wz, None, list(geom.stride), list(geom.padding),
        list(geom.dilation), False, [0, 0], groups, [bool(needs[0]), bool(needs[1]), False])
    return gx, gw


def lut_conv_backward_torch(qx, qw, gs, mult, geom, groups, z_x, z_w, needs):
    """Torch version of the gradient-LUT backward: `lut_grad_a` / `lut_grad_b` per group on the unfolded input, the
    zero-point terms, and the column gradients folded back onto the input."""
    tables = mult.tables(qx.device)
    shift = -mult.qrange(0)[0]
    cols, ho, wo = padded_patches(qx, geom, z_x)
    N, C, H, W = qx.shape
    O = qw.shape[0]
    Kg, Og = cols.shape[1] // groups, O // groups
    rows = gs.float().permute(0, 2, 3, 1).reshape(-1, O)
    zw = per_output(z_w, O).float()
    gcols = torch.zeros_like(cols, dtype=torch.float32) if needs[0] else None
    gw = torch.empty(O, Kg, dtype=torch.float32, device=qx.device) if needs[1] else None
    for g in range(groups):
        part, ks = slice(g * Og, (g + 1) * Og), slice(g * Kg, (g + 1) * Kg)
        iw = (qw[part].reshape(Og, Kg) - mult.qrange(1)[0]).to(torch.int64)
        gg, cg = rows[:, part].contiguous(), cols[:, ks]
        if needs[0]:
            gcols[:, ks] = lut_grad_a(cg, iw, gg, tables["grad_a"], shift) - (gg * zw[part]).sum(1, keepdim=True)
        if needs[1]:
            gw[part] = lut_grad_b(cg, iw, gg, tables["grad_b"], shift) - float(z_x) * gg.sum(0)[:, None]
    gx = None
    if needs[0]:
        ph, pw = geom.padding
        folded = F.fold(gcols.reshape(N, ho * wo, -1).transpose(1, 2), (H + 2 * ph, W + 2 * pw), geom.kernel,
                        dilation=geom.dilation, stride=geom.stride)
        gx = folded[:, :, ph:ph + H, pw:pw + W].to(qx.dtype)
    return gx, (gw.reshape(qw.shape).to(qw.dtype) if gw is not None else None)


def lut_conv_backward(qx, qw, grad, mult, geom, groups, s_x, z_x, s_w, z_w, needs, native=None, state=None):
    """(d/dq_x, d/dq_w) of `lut_conv_forward` for the output gradient `grad`: straight-through ("ste": a float
    convolution backward) or through the gradient LUTs ("lut": compiled table kernel or the torch version).
    `state` is the dict the forward was given (the compiled forward leaves its padded activation indices there)."""
    scale = per_output(s_w, qw.shape[0]) * s_x.detach().to(torch.float64)  # d (layer output) / d (integer sum)
    if mult.grad == "lut":
        if native is None:
            native = native_conv(qx, qw, mult)
        if native:  # the kernel's gradient rows are scaled as they are laid out
            return native_mult.conv_backward(qx, qw, grad, scale, mult, geom, groups, z_x, z_w, needs, state)
    gs = (grad.to(torch.float64) * scale.view(1, -1, 1, 1)).to(torch.float32)  # d loss / d (integer sum)
    if mult.grad == "ste":
        return ste_conv_backward(qx, qw, gs, geom, groups, z_x, z_w, needs)
    return lut_conv_backward_torch(qx, qw, gs, mult, geom, groups, z_x, z_w, needs)
