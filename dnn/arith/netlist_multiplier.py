"""`NetlistMultiplier`: a multiplier netlist of any width up to 32x32 bits in ApproxConv2d/ApproxLinear, no table.

The layers quantize as for a `LutMultiplier` (`dnn.layers.mult_layers`: unsigned with zero points, or signed) and
ask the multiplier for the exact sums sum_k P(q_x[m, k], q_w[o, k]); this back-end computes them by evaluating the
circuit on every (activation, weight) pair: a fused compiled bit-sliced kernel per circuit on CPU
(`dnn.kernels.netlist_native.mult_sums`), torch bitwise ops elsewhere (`product_sums_torch`). An ApproxConv2d on
CPU asks `conv_product` instead: the same kernel reads the padded image itself and folds the zero-point terms in, so
no patch matrix is unfolded. The activation is the FIRST operand, the weight the second; the product is the word of
all outputs (read as two's complement in signed mode). Gradients are straight-through.
"""
from __future__ import annotations

import torch

from circuits.errors import AxnetError
from dnn.arith.lut_multiplier import as_signed, check_product_reading
from dnn.arith.netlist_circuit import TwoOperandCircuit
from dnn.kernels import netlist_torch
from dnn.kernels import triton as triton_kernels
from dnn.kernels.mult_ops import FLOAT64_EXACT, per_output

MODES = ("unsigned", "signed")
MAX_OUTPUTS = 62  # product words and their sums over a patch stay inside int64


class NetlistMultiplier:
    """A two-operand multiplier netlist (.blif/.pla path or Netlist) evaluated on every pair.

    `mode` "unsigned" (operands 0..2^n-1, zero points) or "signed" (two's complement operands and product);
    `weights` "tensor" or "channel" (weight quantization scales, as for LutMultiplier); `grad` "ste".
    """

    grad = "ste"
    half_window = None

    def __init__(self, circuit, mode="unsigned", weights="tensor", grad="ste"):
        self.source = TwoOperandCircuit(circuit, "multiplier")
        self.mode = mode or "unsigned"
        if self.mode not in MODES:
            raise AxnetError(f"mode '{mode}': expected 'unsigned' or 'signed'")
        if weights not in ("tensor", "channel"):
            raise AxnetError(f"weights '{weights}': expected 'tensor' or 'channel' (weight quantization scales)")
        if grad != "ste":
            raise AxnetError(f"grad '{grad}': a netlist multiplier has straight-through gradients only (grad=ste); "
                             "make a LUT of a narrow multiplier for grad=lut")
        self.weights = weights
        self.widths = list(self.source.widths)
        self.out_bits = self._check_outputs()
        self.circuit, self.sha256, self.path = self.source.netlist.name, self.source.sha256, self.source.path
        self.program = self.source.program(self.out_bits)
        self._check_reading()
        lo, hi = self.product_range()
        self.max_abs = max(abs(lo), abs(hi))

    def _check_outputs(self):
        wa, wb = self.widths
        outs, where = len(self.source.netlist.outputs), self.source.label
        if self.mode == "signed" and min(wa, wb) < 2:
            raise AxnetError(f"signed multiplier layers take operands of 2 to 32 bits, this one has {wa}x{wb}",
                             path=where)
        if outs > MAX_OUTPUTS:
            raise AxnetError(f"{outs} outputs: a multiplier layer reads at most {MAX_OUTPUTS} product bits",
                             path=where)
        if outs <= max(wa, wb) + 1:
            raise AxnetError(f"{outs} outputs for {wa}x{wb}-bit operands is an adder's result, not a product (a "
                             f"multiplier has {wa + wb}); use it in an adder layer: --arith circuit:FILE", path=where)
        return outs

    def qrange(self, operand):
        """(qmin, qmax) of operand 0 (activations) or 1 (weights)."""
        n = self.widths[operand]
        if self.mode == "signed":
            return -(1 << (n - 1)), (1 << (n - 1)) - 1
        return 0, (1 << n) - 1

    def _check_reading(self, samples=256):
        """Refuse a mode that reads sampled products far from a*b when the other mode reads them close."""
        gen = torch.Generator().manual_seed(0)
        wa, wb = self.widths
        a = torch.randint(0, 1 << wa, (samples,), generator=gen)
        b = torch.randint(0, 1 << wb, (samples,), generator=gen)
        p = netlist_torch.evaluate_lanes(self.program, [a, b], [wa, wb])
        check_product_reading(a, b, p, (wa, wb), self.out_bits, self.mode, self.source.label)

    def product_range(self):
        """Smallest and largest value a product word can take as read (not the circuit's actual range)."""
        if self.mode == "signed":
            return -(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1
        return 0, (1 << self.out_bits) - 1

    @property
    def spec(self):
        text = f"circuit:{self.path or self.source.label}:mode={self.mode}"
        return text + (":weights=channel" if self.weights == "channel" else "")

    def describe(self):
        wa, wb = self.widths
        per = ", per-channel weights" if self.weights == "channel" else ""
        return f"circuit:{self.source.label} {self.mode} {wa}x{wb}-bit netlist, grad=ste{per}"

    def __repr__(self):
        return f"NetlistMultiplier({self.describe()})"

    def tables(self, device):
        raise AxnetError(f"{self.describe()}: a netlist multiplier has no product table (this operation needs a "
                         "LUT multiplier, lut:FILE)")

    def product_sums(self, qx, qw):
        """sum_k P(qx[m, k], qw[o, k]) exactly, float64 (M, O); qx (M, K) and qw (O, K) integer-valued."""
        from dnn.kernels import netlist_native
        qx, qw = qx.detach(), qw.detach()
        sums = None
        if qx.device.type == "cpu" and netlist_native.enabled():
            sums = netlist_native.mult_sums(self.program, qx, qw, self.widths, self.out_bits,
                                            self.mode == "signed")
        if sums is None and triton_kernels.use(qx, qw):  # CUDA: one generated Triton kernel per circuit
            from dnn.kernels.triton import netlist as triton_netlist
            sums = triton_netlist.product_sums(self.program, qx, qw, self.widths, self.mode == "signed")
        if sums is None:
            sums = product_sums_torch(self.program, qx, qw, self.widths, self.out_bits, self.mode == "signed")
        return sums.to(torch.float64)

    def conv_product(self, qx, qw, geom, groups, s_x, z_x, s_w, z_w):
        """The layer product s_x s_w[o] (sum P(q_x, q_w[o]) - z_w sum q_x - z_x sum q_w + K z_x z_w), float64
        (N, O, Ho, Wo), on the compiled convolution kernel (`netlist_native.mult_conv`): read straight from the
        image padded with z_x, the zero-point terms folded in as exact integers. The same values as the unfolded
        product (`ApproxConv2d.product_conv`); None where that path must serve: not CPU, native code off, terms
        that could reach 2^53 or activations their dtype does not hold exactly, a signed layer with weight zero points.
        """
        from dnn.kernels import netlist_native
        if qx.device.type != "cpu" or not netlist_native.enabled():
            return None
        wa, wb = self.widths
        o, k = qw.shape[0], qw[0].numel()
        if k * ((1 << self.out_bits) + (3 << (wa + wb))) >= FLOAT64_EXACT or 1 << wa > 2 / torch.finfo(qx.dtype).eps:
            return None  # (the unfolded path's padding, (q_x - z_x) + z_x, is then not exact either)
        zw = per_output(z_w, o).to(torch.int64)
        x_zero = int(z_x)
        corr = (k * x_zero) * zw - x_zero * qw.detach().reshape(o, -1).to(torch.int64).sum(1)
        if not bool(zw.any()):
            zw = None
        elif self.mode == "signed":
            return None  # the kernel's patch sums are of two's-complement patterns, not of signed values
        scale = s_x.detach().to(torch.float64) * per_output(s_w, o)
        return netlist_native.mult_conv(self.program, qx.detach(), qw.detach(), geom, groups, self.widths,
                                        self.out_bits, self.mode == "signed", x_zero, (corr, zw, scale))


def product_sums_torch(program, qx, qw, widths, out_bits, signed, chunk=1 << 22):
    """Torch reference of `netlist_native.mult_sums`: the activations bit-sliced once (rows as lanes), each weight
    bit a broadcast word, products unpacked and summed exactly in int64 (any device)."""
    m, k = qx.shape
    o = qw.shape[0]
    x_planes = netlist_torch.pack_planes((qx.to(torch.int64) & ((1 << widths[0]) - 1)).t().contiguous(),
                                         widths[0])[:, None]  # wa, 1, K, Mw
    w_planes = netlist_torch.broadcast_planes(qw.to(torch.int64) & ((1 << widths[1]) - 1), widths[1])[..., None]
    out = torch.empty(m, o, dtype=torch.int64, device=qx.device)
    o_step = max(1, min(o, chunk // max(1, k * m)))
    for o0 in range(0, o, o_step):
        planes = netlist_torch.run_program(program, [*x_planes, *w_planes[:, o0:o0 + o_step]])
        words = netlist_torch.unpack_planes(torch.stack(torch.broadcast_tensors(*planes)), m)  # o, K, M
        if signed:
            words = as_signed(words, out_bits)
        out[:, o0:o0 + o_step] = words.sum(1).t()
    return out
