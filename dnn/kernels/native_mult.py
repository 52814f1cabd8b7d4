"""The multiplier layers on the compiled table kernels (csrc/table.c): operands, tables and zero-point terms.

The kernels are shared with the LUT adder layers; this module turns a quantized multiplier convolution into their
arguments. A multiplier's value table is stored value-major as int16 (minus an offset when its range needs it, e.g.
an unsigned 8-bit product up to 65025) or int32, so a tap reads Ogp/16 vectors of 32 bytes; sums are int32. The
zero-point terms and the scales are applied in float64 by the kernel's epilogue, exactly as the torch version
(`dnn.kernels.mult_ops.lut_conv_forward_torch`) does, so both round once, identically, to float32.
"""
from __future__ import annotations

import numpy as np
import torch

from dnn.kernels import native


def integer_table(mult):
    """(matrix, offset, bound): the value table minus `offset` as int16 (or int32) value-major tensor, and the largest
    |entry| it holds; None when the entries do not fit int32. Cached on the multiplier."""
    cache = mult._cache
    if "integer" not in cache:
        values = np.asarray(mult.values, dtype=np.int64)
        lo, hi = int(values.min()), int(values.max())
        entry = None
        if hi - lo < 1 << 16:
            offset = 0 if -(1 << 15) <= lo and hi < 1 << 15 else lo + (1 << 15)
            shifted = values - offset
            entry = (torch.from_numpy(shifted.astype(np.int16)), offset, int(np.abs(shifted).max()))
        elif max(-lo, hi) < 1 << 31:
            entry = (torch.from_numpy(values.astype(np.int32)), 0, max(-lo, hi))
        cache["integer"] = entry
    return cache["integer"]


def operands(qx, qw, mult, geom, z_x, padded=None):
    """(padded activation indices, (O, Kg) weight indices): table rows of q_x (padding with z_x) and of q_w; the
    activations' are built unless `padded` (the forward's) is given."""
    qmin_a, qmin_b = mult.qrange(0)[0], mult.qrange(1)[0]
    if padded is None:
        padded = native.pad_index((qx.detach() - qmin_a).to(torch.int32), geom, int(z_x) - qmin_a)
    wi = (qw.detach().reshape(qw.shape[0], -1) - qmin_b).to(torch.int32)
    return padded, wi


def conv_forward(qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w, state=None):
    """Compiled `lut_conv_forward`: (N, O, Ho, Wo) float32.

    With I the activation index (q_x - qmin) and T the table minus `offset`, the integer result is
    sum_k T + K offset - z_w (sum_k I + K qmin) - z_x sum_k q_w + K z_x z_w: the kernel adds a[o] + b[o] sum_k I to
    its int32 sums in float64 and scales by s[o] = s_x s_w[o]; every term is an integer below 2^53, so exact.
    With grad="lut" the padded indices are left in `state` (a dict) for the backward.
    """
    mat, offset, _ = integer_table(mult)
    padded, wi = operands(qx, qw, mult, geom, z_x)
    O, K = wi.shape
    qmin_a = mult.qrange(0)[0]
    zx = float(z_x)
    zw = z_w.detach().to(torch.float64).reshape(-1).expand(O)
    sum_w = qw.detach().reshape(O, -1).to(torch.float64).sum(1)
    affine = torch.stack([K * offset - zw * (K * qmin_a) - zx * sum_w + K * zx * zw, -zw,
                          s_x.detach().to(torch.float64) * s_w.detach().to(torch.float64).reshape(-1).expand(O)])
    if state is not None and mult.grad == "lut":
        state["padded"] = padded
    out_size = geom.output_size(*qx.shape[2:])
    return native.table_sums(padded, mat, wi, groups, geom, out_size, affine)


def conv_backward(qx, qw, grad, scale, mult, geom, groups, z_x, z_w, needs, state=None):
    """Compiled gradient-LUT backward: (d/dq_x, d/dq_w) for the output gradient `grad` (N, O, Ho, Wo) and
    `scale` (O,) = d output / d integer sum, so gs = grad * scale is d loss / d (integer sum):

    d/dq_x[m, k] = sum_o gs[m, o] (dAM/dA(q_x, q_w[o, k]) - z_w[o]) and
    d/dq_w[o, k] = sum_m gs[m, o] (dAM/dB(q_x[m, k], q_w[o, k]) - z_x), folded back onto the input by the kernel.
    """
    tables = mult.tables("cpu")
    padded, wi = operands(qx, qw, mult, geom, z_x, (state or {}).get("padded"))
    O = wi.shape[0]
    ma = tables["grad_a"] if needs[0] else None
    bias = -z_w.detach().to(torch.float32).reshape(-1).expand(O) if needs[0] else None
    mw = tables["grad_b"] - float(z_x) if needs[1] else None
    rows = native.grad_rows(grad, groups, scale)
    out_size = tuple(grad.shape[2:])
    gx, gw = native.table_grads(padded, ma, bias, mw, wi, groups, geom, tuple(qx.shape), rows, out_size)
    return (gx.to(qx.dtype) if gx is not None else None,
            gw.reshape(qw.shape).to(qw.dtype) if gw is not None else None)
