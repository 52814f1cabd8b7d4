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

import torch
import torch.nn.functional as F
from torch import nn

from circuits.errors import AxnetError
from dnn.arith.mult_quant import check_finite, quant_params, quantize
from dnn.kernels.adder_ops import Geometry
from dnn.kernels.mult_ops import (lut_accumulate, lut_conv_backward, lut_conv_forward, lut_grad_a,
                                  lut_grad_b, patches, zero_point_fold)


class LutProduct(torch.autograd.Function):
    """sum_k AM(q_x[m, k], q_w[o, k]) over quantized values (float tensors holding integers), exact forward."""

    @staticmethod
    def forward(ctx, qx, qw, mult, accum=None):
        qmin_a, _ = mult.qrange(0)
        qmin_b, _ = mult.qrange(1)
        iw = (qw.detach() - qmin_b).to(torch.int64)
        if accum is None and hasattr(mult, "product_sums"):  # a netlist multiplier evaluates its own products
            acc = mult.product_sums(qx, qw)
        elif accum is None:
            acc = lut_accumulate(qx.detach(), iw, mult.tables(qx.device)["values"], mult.max_abs, shift=-qmin_a)
        else:  # the products summed through the accumulator circuit; the backward stays the exact sum's
            acc = accum.mult_sums(mult, qx, qw)
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
        return gx, gw, None, None


class LutConv(torch.autograd.Function):
    """The whole quantized layer product: s_x s_w (sum_k AM(q_x, q_w) - zero-point terms) over (N, C, H, W) quantized
    activations and (O, C/groups, kh, kw) quantized weights, exact forward; see `dnn.kernels.mult_ops`."""

    @staticmethod
    def forward(ctx, qx, qw, mult, geom, groups, s_x, z_x, s_w, z_w):
        ctx.mult, ctx.geom, ctx.groups, ctx.state = mult, geom, groups, {}
        ctx.save_for_backward(qx, qw, s_x, z_x, s_w, z_w)
        return lut_conv_forward(qx.detach(), qw.detach(), mult, geom, groups, s_x, z_x, s_w, z_w, state=ctx.state)

    @staticmethod
    def backward(ctx, g):
        qx, qw, s_x, z_x, s_w, z_w = ctx.saved_tensors
        gx, gw = lut_conv_backward(qx, qw, g, ctx.mult, ctx.geom, ctx.groups, s_x, z_x, s_w, z_w,
                                   ctx.needs_input_grad[:2], state=ctx.state)
        return gx, gw, None, None, None, None, None, None, None


class NetlistConv(LutConv):
    """The layer product computed by a netlist multiplier's own convolution kernel (`conv_product`), given as `y`;
    LutConv's straight-through backward (a float convolution's at (q_x - z_x, q_w - z_w), scaled)."""

    @staticmethod
    def forward(ctx, qx, qw, y, mult, geom, groups, s_x, z_x, s_w, z_w):
        ctx.mult, ctx.geom, ctx.groups, ctx.state = mult, geom, groups, {}
        ctx.save_for_backward(qx, qw, s_x, z_x, s_w, z_w)
        return y

    @staticmethod
    def backward(ctx, g):
        gx, gw = LutConv.backward(ctx, g)[:2]
        return gx, gw, None, None, None, None, None, None, None, None


class ApproxMixin:
    """Quantization and LUT product shared by ApproxConv2d and ApproxLinear."""

    def init_approx(self, mult, accum=None):
        """Set the multiplier, the accumulator (None: exact sums; see `dnn.arith.accumulate`) and the calibrated
        activation range (NaN = dynamic, measured every forward)."""
        self.mult = mult
        self.accum = accum
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
        """s_x s_w [sum AM(q_x, q_w) - z_w sum q_x - z_x sum q_w + K z_x z_w] for cols (M, K), qw (O, K).

        The reference composition (LutProduct and the zero-point terms through autograd) that `LutConv`, which the
        layers run, is tested against."""
        acc = LutProduct.apply(cols, qw, self.mult, getattr(self, "accum", None))
        return zero_point_fold(acc, cols, qw, self.mult, s_x, z_x, s_w, z_w)

    def folds_tables(self):
        """True when the product is a value table that `LutConv` folds (no accumulator circuit, no netlist)."""
        return getattr(self, "accum", None) is None and not hasattr(self.mult, "product_sums")

    def exact_or_observe(self, x):
        """True when the layer runs as its float base class (no multiplier, or calibrating)."""
        if self.observer is not None:
            self.observer.update(x.detach())
            return True
        if self.mult is None and getattr(self, "accum", None) is not None:
            raise AxnetError(f"accumulator {self.accum.spec}: {type(self).__name__} has no multiplier to take "
                             "products from (float); give it one, e.g. --mult lut:FILE")
        return self.mult is None or x.numel() == 0  # an empty batch has no range to quantize with


class ApproxConv2d(ApproxMixin, nn.Conv2d):
    """nn.Conv2d whose products come from `mult` (a LutMultiplier); with mult=None a plain nn.Conv2d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, mult=None, accum=None):
        if isinstance(padding, str):
            raise AxnetError(f"ApproxConv2d padding '{padding}': give the padding as numbers")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.init_approx(mult, accum)

    def forward(self, x):
        if self.exact_or_observe(x):
            return super().forward(x)
        check_finite(x, "input", self)
        check_finite(self.weight, "weight", self)
        qx, s_x, z_x = self.quantize_input(x)
        qw, s_w, z_w = self.quantize_weight()
        if self.folds_tables():
            geom = Geometry(self.kernel_size, self.stride, self.padding, self.dilation)
            y = LutConv.apply(qx, qw, self.mult, geom, self.groups, s_x, z_x, s_w, z_w).to(x.dtype)
        else:
            y = self.direct_product(qx, qw, s_x, z_x, s_w, z_w)
            y = (self.product_conv(qx, qw, s_x, z_x, s_w, z_w) if y is None else y).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def direct_product(self, qx, qw, s_x, z_x, s_w, z_w):
        """The layer product on a netlist multiplier's convolution kernel, read straight from the image (no unfold),
        with the straight-through backward; None where it does not serve (an accumulator circuit, another device,
        native code off): `product_conv` then gives the same values."""
        conv = getattr(self.mult, "conv_product", None)
        if conv is None or getattr(self, "accum", None) is not None:
            return None
        geom = Geometry(self.kernel_size, self.stride, self.padding, self.dilation)
        y = conv(qx.detach(), qw.detach(), geom, self.groups, s_x, z_x, s_w, z_w)
        if y is None or not torch.is_grad_enabled() or not (qx.requires_grad or qw.requires_grad):
            return y
        return NetlistConv.apply(qx, qw, y, self.mult, geom, self.groups, s_x, z_x, s_w, z_w)

    def product_conv(self, qx, qw, s_x, z_x, s_w, z_w):
        """The layer product through `approx_matmul` per group on the unfolded input: the path of accumulators and
        multipliers without a value table (where `direct_product` does not serve), and the reference `LutConv` and
        `direct_product` are tested against."""
        ph, pw = self.padding
        # pad with the zero point: the padded taps are exactly x = 0, as in a float convolution
        padded = F.pad(qx - z_x, (pw, pw, ph, ph)) + z_x
        cols, h_out, w_out = patches(padded, self.kernel_size, self.stride, self.dilation)  # (N*L, C*kh*kw)
        N = qx.shape[0]
        G = self.groups
        Kg = cols.shape[1] // G
        Og = self.out_channels // G
        outs = []
        for g in range(G):
            wg = qw[g * Og:(g + 1) * Og].reshape(Og, Kg)
            sg, zg = (s_w, z_w) if s_w.dim() == 0 else (s_w[g * Og:(g + 1) * Og], z_w[g * Og:(g + 1) * Og])
            y = self.approx_matmul(cols[:, g * Kg:(g + 1) * Kg], wg, s_x, z_x, sg, zg)
            outs.append(y.reshape(N, h_out * w_out, Og).transpose(1, 2))
        return torch.cat(outs, 1).reshape(N, self.out_channels, h_out, w_out)

    def extra_repr(self):
        text = super().extra_repr()
        text += f", mult={self.mult.describe()}" if self.mult is not None else ""
        return text + (f", accum={self.accum.describe()}" if getattr(self, "accum", None) is not None else "")


class ApproxLinear(ApproxMixin, nn.Linear):
    """nn.Linear whose products come from `mult` (a LutMultiplier); with mult=None a plain nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, mult=None, accum=None):
        super().__init__(in_features, out_features, bias=bias)
        self.init_approx(mult, accum)

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
        rows = qx.shape[0]
        if not self.folds_tables():
            y = self.approx_matmul(qx, qw, s_x, z_x, s_w, z_w).to(x.dtype)
        else:
            y = LutConv.apply(qx.reshape(rows, -1, 1, 1), qw.reshape(*qw.shape, 1, 1), self.mult, Geometry((1, 1)),
                              1, s_x, z_x, s_w, z_w).reshape(rows, -1).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self):
        text = super().extra_repr()
        text += f", mult={self.mult.describe()}" if self.mult is not None else ""
        return text + (f", accum={self.accum.describe()}" if getattr(self, "accum", None) is not None else "")

