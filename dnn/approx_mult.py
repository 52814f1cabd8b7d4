"""Approximate-multiplier layers: convolutions and linear layers whose products come from a multiplier LUT.

Activations are the LUT's first operand (A) and weights its second (B), as in the AppMult work. Two quantization
modes:

- unsigned (AppMult): affine x = s_x (q_x - z_x), w = s_w (q_w - z_w) with q in [0, 2^n - 1]; then
  sum_k x w = s_x s_w [sum_k AM(q_x, q_w) - z_w sum_k q_x - z_x sum_k q_w + K z_x z_w]. Only the q_x q_w product
  goes through the approximate multiplier; the zero-point terms are exact.
- signed (AdaPT): symmetric per-tensor scales, zero points 0, q in [-2^(n-1), 2^(n-1) - 1], the LUT read in two's
  complement.

The forward is exact to the LUT: the integer accumulation sum_k AM(q_x, q_w) is computed exactly (float32 partial
sums kept below 2^24, accumulated in float64). The fast path folds the weights into per-position tables
T[k, v, o] = AM(v, q_w[o, k]) and sums table rows with `embedding_bag`, never looping over elements in Python.
Gradients are straight-through ("ste": the exact product's gradients) or read from gradient LUTs ("lut").
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from circuits.errors import AxnetError

MAX_OPERAND_BITS = 10  # folded tables hold K * 2^n * Cout entries; wider operands make them impractically large
FLOAT32_EXACT = 1 << 24  # float32 represents every integer up to this exactly
FLOAT64_EXACT = 1 << 53
TABLE_BLOCK = 1 << 23  # entries per folded weight-table block (32 MiB of float32)
GATHER_BLOCK = 1 << 22  # entries per gathered (rows, k, o) block in the LUT-gradient backward
MODES = ("unsigned", "signed")
GRADS = ("ste", "lut")


# ---- the multiplier ----------------------------------------------------------------------------------------------


def load_lut_file(path):
    """Read a LUT file through lutgen (axnet .npz, AppMult text files, AdaPT C header)."""
    from lutgen.formats import load_lut
    return load_lut(path)


class LutMultiplier:
    """A multiplier LUT prepared for the layers: values in numeric operand order, optional gradient tables.

    `lut` is a `lutgen.lut.Lut` or a path; `mode` is "unsigned" or "signed" (None: as the LUT says); `grad` is
    "ste" or "lut" (gradients from the file, or computed with `lutgen.gradient.gradient_lut` when `half_window`
    is given); `weights` is "tensor" (one weight scale per layer) or "channel" (one per output channel).
    One object may be shared by any number of layers.
    """

    def __init__(self, lut, mode=None, grad="ste", half_window=None, weights="tensor"):
        source = None
        if isinstance(lut, (str, os.PathLike)):
            source = os.fspath(lut)
            lut = load_lut_file(lut)
        self.source = source
        self.lut = lut
        self.mode = check_mode(lut, mode, source)
        self.grad = check_grad_option(grad)
        self.half_window = half_window
        if weights not in ("tensor", "channel"):
            raise AxnetError(f"weights '{weights}': expected 'tensor' or 'channel' (weight quantization scales)")
        self.weights = weights
        self.widths = [int(w) for _, w in lut.operands]
        self.circuit = getattr(lut, "circuit", "") or ""
        self.sha256 = getattr(lut, "sha256", None)
        self.values = numeric_table(lut.table, self.widths, lut.signed)
        self.max_abs = int(np.abs(self.values).max())
        if self.max_abs >= FLOAT64_EXACT:
            raise AxnetError(f"LUT '{self.circuit}' holds values up to {self.max_abs}, too large to accumulate "
                             "exactly", path=source)
        self.grad_a = self.grad_b = None
        if self.grad == "lut":
            ga, gb = gradient_tables(lut, half_window, source)
            self.grad_a = numeric_table(ga, self.widths, lut.signed).astype(np.float32)
            self.grad_b = numeric_table(gb, self.widths, lut.signed).astype(np.float32)
        self._cache = {}

    def qrange(self, operand):
        """(qmin, qmax) of operand 0 (activations) or 1 (weights) in numeric values."""
        n = self.widths[operand]
        if self.mode == "signed":
            return -(1 << (n - 1)), (1 << (n - 1)) - 1
        return 0, (1 << n) - 1

    def tables(self, device):
        """The value table (and gradient tables) as tensors on `device`, cached per device."""
        key = str(device)
        if key not in self._cache:
            dtype = torch.float32 if self.max_abs <= FLOAT32_EXACT else torch.float64
            entry = {"values": torch.as_tensor(self.values, dtype=dtype, device=device)}
            if self.grad_a is not None:
                entry["grad_a"] = torch.as_tensor(self.grad_a, device=device)
                entry["grad_b"] = torch.as_tensor(self.grad_b, device=device)
            self._cache[key] = entry
        return self._cache[key]

    def describe(self):
        """One line for logs and reports."""
        wa, wb = self.widths
        window = f", half_window={self.half_window}" if self.half_window is not None else ""
        per = ", per-channel weights" if self.weights == "channel" else ""
        return (f"lut:{self.circuit or self.source or '(unnamed)'} {self.mode} {wa}x{wb}-bit, "
                f"grad={self.grad}{window}{per}")

    def __repr__(self):
        return f"LutMultiplier({self.describe()})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def check_mode(lut, mode, source):
    """The quantization mode, checked against the LUT's operand count, signedness and widths."""
    operands = list(lut.operands)
    if len(operands) != 2:
        raise AxnetError(f"a multiplier LUT needs exactly two operands (activation, weight); "
                         f"LUT '{lut.circuit}' has {len(operands)}", path=source)
    lut_mode = "signed" if lut.signed else "unsigned"
    if mode is None:
        mode = lut_mode
    if mode not in MODES:
        raise AxnetError(f"mode '{mode}': expected 'unsigned' or 'signed'")
    if mode != lut_mode:
        raise AxnetError(f"mode '{mode}' does not match LUT '{lut.circuit}', which is {lut_mode}", path=source)
    for name, width in operands:
        if not 1 <= int(width) <= MAX_OPERAND_BITS or (mode == "signed" and int(width) < 2):
            raise AxnetError(f"operand '{name}' of LUT '{lut.circuit}' is {width} bits wide; {mode} multiplier "
                             f"layers take {2 if mode == 'signed' else 1} to {MAX_OPERAND_BITS} bits", path=source)
    return mode


def check_grad_option(grad):
    """'ste' or 'lut', or a one-line error naming the option."""
    if grad not in GRADS:
        raise AxnetError(f"grad '{grad}': expected 'ste' or 'lut'")
    return grad


def numeric_table(table, widths, signed):
    """Reorder a raw-pattern-indexed table so index i of each axis is numeric value qmin + i."""
    table = np.asarray(table)
    if not signed:
        return table.copy()
    orders = []
    for n in widths:
        v = np.arange(1 << n)
        orders.append(np.argsort(np.where(v >= 1 << (n - 1), v - (1 << n), v), kind="stable"))
    return table[np.ix_(orders[0], orders[1])]


def gradient_tables(lut, half_window, source):
    """(dAM/dA, dAM/dB) tables in raw pattern order: from the LUT, or computed for `half_window`."""
    grads = getattr(lut, "grads", None)
    meta = getattr(lut, "grad_meta", None) or {}
    if half_window is None:
        if not grads:
            raise AxnetError(f"grad 'lut' needs gradient LUTs, but LUT '{lut.circuit}' carries none; give "
                             "half_window to compute them", path=source)
    elif not grads or meta.get("half_window") != half_window or meta.get("method", "diff") != "diff":
        if int(half_window) < 0:
            raise AxnetError(f"half_window {half_window}: must be 0 or more")
        from lutgen.gradient import gradient_lut
        grads = gradient_lut(lut, int(half_window)).grads
    names = [name for name, _ in lut.operands]
    out = []
    for name in names:
        g = grads.get(name) if grads else None
        if g is None or np.shape(g) != np.shape(lut.table):
            raise AxnetError(f"LUT '{lut.circuit}' has no gradient table for operand '{name}' shaped like its "
                             "forward table", path=source)
        if not np.all(np.isfinite(g)):
            raise AxnetError(f"gradient table for operand '{name}' of LUT '{lut.circuit}' is not finite",
                             path=source)
        out.append(np.asarray(g, dtype=np.float32))
    return out


# ---- integer accumulation: fast path and reference ----------------------------------------------------------------


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


def lut_accumulate(ix, iw, values, max_abs, shift=0):
    """acc[m, o] = sum_k values[ix[m, k] + shift, iw[o, k]] exactly, as float64 (M, O).

    iw is a long index tensor; ix a long tensor, or a float tensor of integers moved to indices by `shift`.
    """
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


class LutProduct(torch.autograd.Function):
    """sum_k AM(q_x[m, k], q_w[o, k]) over quantized values (float tensors holding integers), exact forward."""

    @staticmethod
    def forward(ctx, qx, qw, mult):
        qmin_a, _ = mult.qrange(0)
        qmin_b, _ = mult.qrange(1)
        iw = (qw.detach() - qmin_b).to(torch.int64)
        tables = mult.tables(qx.device)
        acc = lut_accumulate(qx.detach(), iw, tables["values"], mult.max_abs, shift=-qmin_a)
        ctx.mult = mult
        ctx.dtypes = (qx.dtype, qw.dtype)
        ctx.save_for_backward(qx.detach(), qw.detach())
        return acc

    @staticmethod
    def backward(ctx, g):
        qx, qw = ctx.saved_tensors
        mult = ctx.mult
        g = g.to(torch.float32)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = None
        if mult.grad == "ste":
            if need_x:
                gx = g @ qw.to(torch.float32)
            if need_w:
                gw = g.t() @ qx.to(torch.float32)
        else:
            tables = mult.tables(qx.device)
            shift = -mult.qrange(0)[0]
            iw = (qw - mult.qrange(1)[0]).to(torch.int64)
            if need_x:
                gx = lut_grad_a(qx, iw, g, tables["grad_a"], shift)
            if need_w:
                gw = lut_grad_b(qx, iw, g, tables["grad_b"], shift)
        gx = gx.to(ctx.dtypes[0]) if gx is not None else None
        gw = gw.to(ctx.dtypes[1]) if gw is not None else None
        return gx, gw, None


# ---- quantization --------------------------------------------------------------------------------------------------


def round_ste(t):
    """Round to the nearest integer; the gradient passes straight through."""
    return t + (torch.round(t) - t).detach()


def quant_params(lo, hi, qmin, qmax, mode):
    """(scale, zero point) for the range [lo, hi] (0-dim tensors), widened to include 0 so 0 is exact."""
    lo = torch.clamp(lo.detach().to(torch.float32), max=0.0)
    hi = torch.clamp(hi.detach().to(torch.float32), min=0.0)
    if mode == "signed":
        scale = torch.maximum(-lo, hi) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale, zero


def quantize(t, scale, zero, qmin, qmax):
    """q = clamp(round(t / scale) + zero, qmin, qmax) with straight-through rounding (zero gradient when clipped)."""
    return torch.clamp(round_ste(t / scale) + zero, qmin, qmax)


def check_finite(t, what, layer):
    """A one-line AxnetError when a layer's input or weight holds NaN or Inf."""
    if not bool(torch.isfinite(t).all()):
        raise AxnetError(f"{type(layer).__name__}({layer.extra_repr()}): {what} contains NaN or Inf")


class ApproxMixin:
    """Quantization and LUT product shared by ApproxConv2d and ApproxLinear."""

    def init_approx(self, mult):
        """Set the multiplier and the calibrated activation range (NaN = dynamic, measured every forward)."""
        self.mult = mult
        self.register_buffer("act_range", torch.full((2,), float("nan")))
        self.observer = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Accept plain Conv2d/Linear checkpoints, which have no act_range (the range stays dynamic)."""
        key = prefix + "act_range"
        if key not in state_dict:
            state_dict = dict(state_dict)
            state_dict[key] = torch.full((2,), float("nan"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def calibrated(self):
        """Whether a calibrated activation range is set (else the range is measured every forward)."""
        return bool(torch.isfinite(self.act_range).all())

    def input_range(self, x):
        """(lo, hi) of the activations: calibrated, or this batch's min and max."""
        if self.calibrated:
            return self.act_range[0], self.act_range[1]
        x = x.detach()
        return x.min(), x.max()

    def quantize_input(self, x):
        """(q_x, s_x, z_x): x quantized for the multiplier's first operand."""
        qmin, qmax = self.mult.qrange(0)
        lo, hi = self.input_range(x)
        scale, zero = quant_params(lo, hi, qmin, qmax, self.mult.mode)
        return quantize(x, scale, zero, qmin, qmax), scale, zero

    def quantize_weight(self):
        """(q_w, s_w, z_w): the weight quantized for the multiplier's second operand.

        s_w and z_w are 0-dim for per-tensor scales, or one entry per output channel (shape (O,)).
        """
        qmin, qmax = self.mult.qrange(1)
        w = self.weight
        flat = w.detach().reshape(w.shape[0], -1)
        if self.mult.weights == "channel":
            scale, zero = quant_params(flat.min(1).values, flat.max(1).values, qmin, qmax, self.mult.mode)
            shape = (-1,) + (1,) * (w.dim() - 1)
            return quantize(w, scale.view(shape), zero.view(shape), qmin, qmax), scale, zero
        scale, zero = quant_params(flat.min(), flat.max(), qmin, qmax, self.mult.mode)
        return quantize(w, scale, zero, qmin, qmax), scale, zero

    def approx_matmul(self, cols, qw, s_x, z_x, s_w, z_w):
        """s_x s_w [sum AM(q_x, q_w) - z_w sum q_x - z_x sum q_w + K z_x z_w] for cols (M, K), qw (O, K)."""
        K = cols.shape[1]
        acc = LutProduct.apply(cols, qw, self.mult)
        bound = K * max(abs(q) for q in self.mult.qrange(0) + self.mult.qrange(1))
        wide = torch.float32 if bound <= FLOAT32_EXACT else torch.float64  # sums of integers stay exact
        sum_x = cols.to(wide).sum(1, keepdim=True).to(torch.float64)
        sum_w = qw.to(wide).sum(1).to(torch.float64)
        z_x, z_w = z_x.to(torch.float64), z_w.to(torch.float64)
        inner = acc - z_w * sum_x - z_x * sum_w + K * z_x * z_w
        return inner * (s_x.to(torch.float64) * s_w.to(torch.float64))

    def exact_or_observe(self, x):
        """True when the layer runs as its float base class (no multiplier, or calibrating)."""
        if self.observer is not None:
            self.observer.update(x.detach())
            return True
        return self.mult is None or x.numel() == 0  # an empty batch has no range to quantize with


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


class ApproxConv2d(ApproxMixin, nn.Conv2d):
    """nn.Conv2d whose products come from `mult` (a LutMultiplier); with mult=None a plain nn.Conv2d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, mult=None):
        if isinstance(padding, str):
            raise AxnetError(f"ApproxConv2d padding '{padding}': give the padding as numbers")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.init_approx(mult)

    def forward(self, x):
        if self.exact_or_observe(x):
            return super().forward(x)
        check_finite(x, "input", self)
        check_finite(self.weight, "weight", self)
        qx, s_x, z_x = self.quantize_input(x)
        qw, s_w, z_w = self.quantize_weight()
        ph, pw = self.padding
        # pad with the zero point: the padded taps are exactly x = 0, as in a float convolution
        padded = F.pad(qx - z_x, (pw, pw, ph, ph)) + z_x
        cols, h_out, w_out = patches(padded, self.kernel_size, self.stride, self.dilation)  # (N*L, C*kh*kw)
        N = x.shape[0]
        G = self.groups
        Kg = cols.shape[1] // G
        Og = self.out_channels // G
        outs = []
        for g in range(G):
            wg = qw[g * Og:(g + 1) * Og].reshape(Og, Kg)
            sg, zg = (s_w, z_w) if s_w.dim() == 0 else (s_w[g * Og:(g + 1) * Og], z_w[g * Og:(g + 1) * Og])
            y = self.approx_matmul(cols[:, g * Kg:(g + 1) * Kg], wg, s_x, z_x, sg, zg)
            outs.append(y.reshape(N, h_out * w_out, Og).transpose(1, 2))
        y = torch.cat(outs, 1).to(x.dtype).reshape(N, self.out_channels, h_out, w_out)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self):
        text = super().extra_repr()
        return text + (f", mult={self.mult.describe()}" if self.mult is not None else "")


class ApproxLinear(ApproxMixin, nn.Linear):
    """nn.Linear whose products come from `mult` (a LutMultiplier); with mult=None a plain nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, mult=None):
        super().__init__(in_features, out_features, bias=bias)
        self.init_approx(mult)

    def forward(self, x):
        if self.exact_or_observe(x):
            return super().forward(x)
        check_finite(x, "input", self)
        check_finite(self.weight, "weight", self)
        if x.shape[-1] != self.in_features:
            raise AxnetError(f"ApproxLinear({self.extra_repr()}): input has {x.shape[-1]} features, "
                             f"expected {self.in_features}")
        qx, s_x, z_x = self.quantize_input(x.reshape(-1, self.in_features))
        qw, s_w, z_w = self.quantize_weight()
        y = self.approx_matmul(qx, qw, s_x, z_x, s_w, z_w).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self):
        text = super().extra_repr()
        return text + (f", mult={self.mult.describe()}" if self.mult is not None else "")


APPROX_LAYERS = (ApproxConv2d, ApproxLinear)


def approx_layers(model):
    """(name, layer) for every approximate-multiplier layer in `model`."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, APPROX_LAYERS)]


def set_mult(model, mult):
    """Give every approximate-multiplier layer the same multiplier (None: float); returns how many were set."""
    layers = approx_layers(model)
    for _, layer in layers:
        layer.mult = mult
    return len(layers)


def parse_mult(text):
    """A multiplier from a CLI string: float | lut:PATH[:grad=lut|ste][:w=W][:mode=unsigned|signed][:weights=...].

    Returns None for "float". grad defaults to "lut" when a half window w is given, else "ste".
    """
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind == "float" and not rest:
        return None
    usage = (f"--mult '{text}': expected float or "
             "lut:PATH[:grad=lut|ste][:w=W][:mode=unsigned|signed][:weights=tensor|channel]")
    if kind != "lut" or not rest:
        raise AxnetError(usage)
    parts = rest.split(":")
    keys = ("grad", "w", "mode", "weights")
    tail = 0
    while tail < len(parts) - 1 and parts[-1 - tail].partition("=")[0] in keys:
        tail += 1
    path = ":".join(parts[:len(parts) - tail])
    options = {}
    for part in parts[len(parts) - tail:]:
        key, _, value = part.partition("=")
        if key in options or not value:
            raise AxnetError(usage)
        options[key] = value
    half_window = None
    if "w" in options:
        try:
            half_window = int(options["w"])
        except ValueError:
            raise AxnetError(f"--mult '{text}': w must be an integer half window") from None
    grad = options.get("grad", "lut" if half_window is not None else "ste")
    return LutMultiplier(path, mode=options.get("mode"), grad=grad, half_window=half_window,
                         weights=options.get("weights", "tensor"))


# ---- calibration ---------------------------------------------------------------------------------------------------


class RangeObserver:
    """Collects an activation range over batches: running min/max, or a percentile over a sample of values."""

    SAMPLE = 1 << 18  # values kept per batch for percentile calibration

    def __init__(self, method, percentile, mode):
        self.method, self.percentile, self.mode = method, percentile, mode
        self.lo, self.hi = math.inf, -math.inf
        self.samples = []
        self.generator = torch.Generator().manual_seed(0)

    def update(self, x):
        """Record one batch of a layer's inputs."""
        x = x.reshape(-1).to(torch.float32).cpu()
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise AxnetError("calibration batch gives a layer NaN or Inf inputs")
        if self.method == "max":
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
            return
        if x.numel() > self.SAMPLE:
            x = x[torch.randint(0, x.numel(), (self.SAMPLE,), generator=self.generator)]
        self.samples.append(x.numpy())

    def range(self):
        """(lo, hi) for the layer's act_range, or None when the layer saw no input."""
        if self.method == "max":
            return None if self.lo > self.hi else (self.lo, self.hi)
        if not self.samples:
            return None
        values = np.concatenate(self.samples)
        p = self.percentile
        if self.mode == "signed":
            amax = float(np.percentile(np.abs(values), p))
            return -amax, amax
        return float(np.percentile(values, 100.0 - p)), float(np.percentile(values, p))


def calibrate_mult(model, batches, method="max", percentile=99.99):
    """Set each approximate-multiplier layer's activation range from float forwards over `batches`.

    `batches` yields input tensors or (input, target) pairs. method "max" takes the min and max seen; "percentile"
    takes the given percentile of |x| (signed mode) or the (100-p, p) percentiles of x (unsigned mode).
    Returns the number of layers calibrated.
    """
    if method not in ("max", "percentile"):
        raise AxnetError(f"calibration method '{method}': expected 'max' or 'percentile'")
    if not 50.0 < float(percentile) <= 100.0:
        raise AxnetError(f"calibration percentile {percentile}: expected a value in (50, 100]")
    layers = [(n, m) for n, m in approx_layers(model) if m.mult is not None]
    if not layers:
        raise AxnetError("calibrate_mult: the model has no approximate-multiplier layer with a multiplier set")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for _, layer in layers:
        layer.observer = RangeObserver(method, float(percentile), layer.mult.mode)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                seen += 1
    finally:
        observers = [(layer, layer.observer) for _, layer in layers]
        for layer, _ in observers:
            layer.observer = None
        model.train(was_training)
    if seen == 0:
        raise AxnetError("calibrate_mult: no calibration batches given")
    count = 0
    for layer, observer in observers:
        r = observer.range()
        if r is not None:
            layer.act_range.copy_(torch.tensor(r, dtype=layer.act_range.dtype))
            count += 1
    return count


def clear_calibration(model):
    """Return every approximate-multiplier layer to dynamic activation ranges."""
    for _, layer in approx_layers(model):
        layer.act_range.fill_(float("nan"))
