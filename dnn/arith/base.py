"""What every integer back-end of the AdderNet layers shares, and the exact one (`ExactInt`).

Every back-end quantizes activations x and weights w of a layer with ONE shared scale (see `dnn.arith.quant`) to integers
in [-qmax, qmax], qmax = 2^(n-2) - 1 for an n-bit adder (the signed (n-1)-bit range, so the n-bit difference never
overflows), computes per tap the difference `d = C(w, -x)` with its adder C on n-bit two's-complement patterns
(w is the FIRST operand, -x the SECOND; the low n output bits are read as signed), and then `|d|` and the sum over the
patch exactly. The layer output is `-step * sum |d|` with `step = scale / qmax`. Zero-padding taps are x = 0.

Gradients (`grad=`):
- "ste": straight-through rounding and the exact operation's slopes, i.e. the AdderNet surrogate gradients at the
  dequantized values: dy/dw = x - w (full precision), dy/dx = HardTanh(w - x).
- "lut" (LutAdder): the circuit's gradient LUTs G_a, G_b (windowed difference) multiply the AdderNet surrogates.
  With d = C(w, -x): dd/dw = G_a(w, -x) and dd/dx = -G_b(w, -x). The surrogate of y = -|d| is, as in AdderNet,
  -d for the weight path (full precision instead of sign) and -HardTanh(d) for the input path, so
  dy/dw = -d * G_a(w, -x) and dy/dx = HardTanh(d) * G_b(w, -x), with d in real units (step * integer d).
  With an exact circuit (G = 1, d = w - x) this is exactly the authors' backward.
"""
from __future__ import annotations

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.kernels import adder_ops
from dnn.kernels import native as native_kernels
from dnn.arith.quant import abs_max, check_finite, integer_range, layer_scale, quantize

FLOAT32_EXACT = 1 << 24  # integer sums below this are exact in float32
MIN_LUT_BITS, MAX_LUT_BITS = 3, 12
ELEMENTWISE_CHUNK = 1 << 21  # int64 elements per temporary in the per-pair (cell adder) path


def _signed(values, bits):
    """Read the low `bits` bits of integer array `values` as two's complement."""
    low = values & ((1 << bits) - 1)
    return np.where(low >= (1 << (bits - 1)), low - (1 << bits), low)


class IntegerAdderFunction(torch.autograd.Function):
    """Quantize x and w with one step, sum |C(w, -x)| exactly on the back-end, and back-propagate per `grad`."""

    @staticmethod
    def forward(ctx, x, weight, step, geom, backend, accum=None):
        xq = quantize(x, step, backend.qmax)
        wq = quantize(weight, step, backend.qmax)
        # an approximate accumulator changes the forward only: the backward stays the exact sum's (straight-through)
        sums = backend.abs_sums(xq, wq, geom) if accum is None else accum.adder_sums(backend, xq, wq, geom)
        ctx.save_for_backward(xq, wq, step)
        ctx.geom, ctx.backend = geom, backend
        return (sums * -step.to(sums.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xq, wq, step = ctx.saved_tensors
        grad_out = grad_out.contiguous().float()
        grad_x, grad_w = ctx.backend.backward(xq, wq, step, grad_out, ctx.geom, ctx.needs_input_grad[:2])
        return grad_x, grad_w, None, None, None, None


def _ste_backward(xq, wq, step, grad_out, geom, needs):
    """AdderNet surrogate gradients at the dequantized values (straight-through rounding)."""
    x_hat, w_hat = xq * step, wq * step
    grad_x = adder_ops.l1_input_grad(x_hat, w_hat, grad_out, geom) if needs[0] else None
    grad_w = adder_ops.l1_weight_grad(x_hat, w_hat, grad_out, geom) if needs[1] else None
    return grad_x, grad_w


class _Backend:
    """What every back-end shares: the quantized autograd path, describe() and the spec string."""

    bits = 8
    grad = "ste"
    sha256 = None

    @property
    def qmax(self):
        return integer_range(self.bits)

    def conv(self, x, weight, geom, scale, accum=None):
        """The layer operation on this back-end: -step * sum |C(w, -x)| with the layer's shared scale; the sum
        through `accum` (a `dnn.arith.accumulate.Accumulator`) when given."""
        x_max, w_max = abs_max(x), abs_max(weight)
        check_finite(x, "input", x_max)
        check_finite(weight, "weight", w_max)
        step = (layer_scale(x, weight, scale, x_max, w_max) / self.qmax).to(x.device)
        return IntegerAdderFunction.apply(x.float(), weight, step, geom, self, accum)

    def backward(self, xq, wq, step, grad_out, geom, needs):
        return _ste_backward(xq, wq, step, grad_out, geom, needs)

    def __repr__(self):
        return f"{type(self).__name__}({self.spec})"


class ExactInt(_Backend):
    """Exact integer arithmetic on the same quantization grid as an n-bit adder: the baseline for approximate runs."""

    def __init__(self, bits=8):
        bits = int(bits)
        if not 3 <= bits <= 48:
            raise AxnetError(f"exact:{bits}: the adder width must be between 3 and 48 bits")
        self.bits = bits

    @property
    def spec(self):
        return f"exact:{self.bits}"

    def describe(self):
        return f"exact {self.bits}-bit integer adder (operands in +-{self.qmax}, one shared scale per layer)"

    def abs_sums(self, xq, wq, geom):
        """sum_k |w - x| exactly: float32 when the bound allows it, else float64."""
        bound = 2 * self.qmax * wq[0].numel()
        if bound < FLOAT32_EXACT:
            return -adder_ops.l1_forward(xq.contiguous(), wq.contiguous(), geom)
        if self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available():
            return native_kernels.cell_forward(xq, wq, geom, [], 0, self.bits)  # integer kernel, no approximate cell
        return -adder_ops.l1_forward(xq.double().contiguous(), wq.double().contiguous(), geom)


class _TableAdder(_Backend):
    """A back-end whose difference d(w, v) over the whole quantized domain is a (V, V) matrix (V = 2*qmax + 1).

    The forward folds the layer's weights into per-tap tables T[k, v, o] = |d(w[o, k], v)| and sums table rows.
    """

    diff = None  # torch int64 (V, V): d for weight value index i and activation value index j (value = index - qmax)
    grad_w_slope = grad_x_slope = None  # float32 (V, V): G_a(w, -x) and G_b(w, -x), for grad="lut"

    def _weight_index(self, wq):
        """(O, K) int32: each weight's row of `diff` (value + qmax)."""
        return (wq.reshape(wq.shape[0], -1) + self.qmax).to(torch.int32)

    def _index(self, xq):
        return (xq + self.qmax).to(torch.int32).contiguous()

    def abs_sums(self, xq, wq, geom):
        """sum_k |d(w, x)| exactly, by summing table rows T[k, v, o] = |d(w[o, k], v)| (folded in the kernel)."""
        mat = self.diff.abs().t().contiguous().to(xq.device)  # value-major: [activation index, weight index]
        return adder_ops.table_forward(self._index(xq), self._weight_index(wq), mat, geom, self.qmax)

    def backward(self, xq, wq, step, grad_out, geom, needs):
        if self.grad == "ste":
            return _ste_backward(xq, wq, step, grad_out, geom, needs)
        d = self.diff.to(device=grad_out.device, dtype=torch.float32) * step  # circuit difference, real units
        input_slopes = (d.clamp(-1, 1) * self.grad_x_slope.to(d.device)).t() if needs[0] else None
        weight_slopes = (-d * self.grad_w_slope.to(d.device)).t() if needs[1] else None
        if input_slopes is None and weight_slopes is None:
            return None, None
        grad_x, grad_w = adder_ops.table_backward(self._index(xq), self._weight_index(wq), input_slopes,
                                                  weight_slopes, grad_out, geom, self.qmax)
        return grad_x, (grad_w.reshape(wq.shape) if grad_w is not None else None)
