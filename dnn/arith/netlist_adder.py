"""`NetlistAdder`: an AdderNet back-end that evaluates any two-operand adder netlist (3 to 32 bits) on every pair.

Semantics are `LutAdder`'s (`dnn.arith.base`): operands in the signed (n-1)-bit range with the layer's shared scale,
d = C(w, -x) on n-bit two's-complement patterns (w the FIRST operand), the low n outputs read as signed, |d| and the
sum exact. Adders of up to `TABLE_BITS` bits are evaluated once over the whole quantized domain and run on the folded
tables exactly as a LUT of the same circuit would; wider ones are evaluated on every (x, w) pair: a fused compiled
bit-sliced kernel per circuit on CPU (`dnn.kernels.netlist_native`), torch bitwise ops elsewhere
(`dnn.kernels.netlist_torch`).

Gradients: "ste" (the AdderNet surrogates, as every back-end), or "diff": the windowed difference of
REFERENCE.md section 4 with the shrink rule at the ends of the operand range, taken of the layer's reading of the
circuit over [-qmax, qmax] on both axes exactly as `LutAdder(..., grad="lut")` takes it of a table
(`dnn.arith.lut_adder.layer_slopes`), but computed on the fly by evaluating the circuit at the neighbouring operand
values when there is no table.
"""
from __future__ import annotations

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn.arith.base import ELEMENTWISE_CHUNK, FLOAT32_EXACT, _ste_backward, _TableAdder
from dnn.arith.netlist_circuit import TwoOperandCircuit
from dnn.kernels import netlist_torch
from dnn.kernels.netlist_torch import window_points
from dnn.kernels import triton as triton_kernels

TABLE_BITS = 8  # up to here the (V, V) domain table (V = 2^(n-1) - 1) is cheaper than per-pair evaluation
GRADS = ("ste", "diff")


class NetlistAdder(_TableAdder):
    """Any two-operand n-bit adder netlist (n = 3..32) as the layer's subtraction d = C(w, -x).

    `circuit`: a .blif/.pla path or a Netlist whose inputs form two n-bit operands (w first) and whose first n
    outputs are the sum bits (a carry-out beyond them is ignored). `grad`: "ste" or "diff" (then `half_window`,
    default 2). `table_bits`: widest adder run through the domain table (0 forces per-pair evaluation).
    """

    def __init__(self, circuit, grad="ste", half_window=None, table_bits=TABLE_BITS):
        if grad not in GRADS:
            raise AxnetError(f"grad='{grad}': expected 'ste' or 'diff'")
        self.source = TwoOperandCircuit(circuit, "adder")
        self.bits = self._check_adder(self.source)
        self.grad = grad
        self.half_window = None if grad == "ste" else int(2 if half_window is None else half_window)
        if self.half_window is not None and self.half_window < 0:
            raise AxnetError(f"half window {half_window}: expected a non-negative integer")
        self.sha256, self.path = self.source.sha256, self.source.path
        self.program = self.source.program(self.bits)
        self.table_bits = int(table_bits)
        if self.bits <= self.table_bits:
            self._build_tables()

    @staticmethod
    def _check_adder(source):
        (wa, wb), where = source.widths, source.label
        outs = len(source.netlist.outputs)
        if wa != wb:
            raise AxnetError(f"an adder layer needs two operands of equal width, but this circuit has {wa} and {wb} "
                             "bits", path=where)
        if not 3 <= wa <= 32:
            raise AxnetError(f"a {wa}-bit adder does not fit an adder layer: the width must be 3 to 32 bits "
                             f"(operands use the signed (n-1)-bit range)", path=where)
        if outs < wa:
            raise AxnetError(f"a {wa}-bit adder needs at least {wa} outputs (the low {wa} sum bits), but this circuit "
                             f"has {outs}", path=where)
        if outs > wa + 1:
            raise AxnetError(f"{outs} outputs for {wa}-bit operands is more than the {wa + 1} of an adder (a "
                             "multiplier? use it in a multiplier layer: --mult circuit:FILE)", path=where)
        return wa

    # -- the difference on given operand values ----------------------------------------------------------------------
    def differences(self, w, x):
        """d = C(w, -x) read as signed n-bit, for broadcastable integer-valued tensors w and x (int64 result)."""
        mask = (1 << self.bits) - 1
        a, b = torch.broadcast_tensors(w.to(torch.int64) & mask, (-x.to(torch.int64)) & mask)
        words = evaluate_pairs(self.program, a.contiguous(), b.contiguous(), self.bits)
        half = 1 << (self.bits - 1)
        low = words & mask
        return torch.where(low >= half, low - (1 << self.bits), low)

    def _build_tables(self):
        """The (V, V) difference over the quantized domain and, for grad="diff", the slopes LutAdder would use."""
        values = torch.arange(-self.qmax, self.qmax + 1, dtype=torch.int64)
        self.diff = self.differences(values[:, None], values[None, :])
        if self.grad == "diff":
            from lutgen.gradient import shrink_gradient
            reading = self.diff.numpy()[:, ::-1]  # columns c = -x from -qmax to qmax
            slope_w = shrink_gradient(reading, self.half_window, 0)[:, ::-1]
            slope_c = shrink_gradient(reading, self.half_window, 1)[:, ::-1]
            self.grad_w_slope = torch.from_numpy(np.ascontiguousarray(slope_w))
            self.grad_x_slope = torch.from_numpy(np.ascontiguousarray(slope_c))

    # -- back-end interface ------------------------------------------------------------------------------------------
    @property
    def spec(self):
        text = f"circuit:{self.path or self.source.label}"
        return text + (f":grad=diff:w={self.half_window}" if self.grad == "diff" else "")

    def describe(self):
        how = "domain table" if self.diff is not None else "per-pair netlist evaluation"
        return (f"{self.bits}-bit adder netlist {self.source.label} as d = C(w, -x), operands in +-{self.qmax}, "
                f"{how}, grad={self.grad}" + (f" (half window {self.half_window})" if self.grad == "diff" else ""))

    def abs_sums(self, xq, wq, geom):
        """sum_k |C(w, -x)| exactly (float32 below 2^24, else float64)."""
        if self.diff is not None:
            return super().abs_sums(xq, wq, geom)
        sums = kernel_abs_sums(self.program, xq, wq, geom, self.bits)
        if sums is None:
            sums = self.pairwise_sums(xq, wq, geom)
        bound = (1 << (self.bits - 1)) * wq[0].numel()
        return sums.to(torch.float32 if bound < FLOAT32_EXACT else torch.float64)

    def pairwise_sums(self, xq, wq, geom):
        """Reference: sum_k |d| with d evaluated for every (x, w) pair in torch bitwise ops (any device), int64."""
        return adder_sums_torch(self.program, xq, wq, geom, self.bits)

    def backward(self, xq, wq, step, grad_out, geom, needs):
        if self.grad == "ste":
            return _ste_backward(xq, wq, step, grad_out, geom, needs)
        if self.diff is not None:
            return super().backward(xq, wq, step, grad_out, geom, needs)
        from dnn.kernels import netlist_native
        if netlist_native.usable(xq, self.bits) and grad_out.device.type == "cpu":
            grads = netlist_native.adder_diff_backward(self.program, xq, wq, step, grad_out, geom, self.bits,
                                                       self.qmax, self.half_window, needs)
            if grads is not None:
                return grads
        return self.diff_backward(xq, wq, step, grad_out, geom, needs)

    def slopes(self, w, c):
        """(G_w, G_c): float32 windowed-difference slopes of the circuit at (w, c), c = -x, evaluated on the fly."""
        size, qmax = 2 * self.qmax + 1, self.qmax
        out = []
        for along_w in (True, False):
            index = (w if along_w else c) + qmax
            up1, up0, dn0, dn1, den = window_points(index, size, self.half_window)
            total = 0
            for point, sign in ((up1, 1), (up0, 1), (dn0, -1), (dn1, -1)):
                value = point - qmax
                d = self.differences(value, -c) if along_w else self.differences(w, -value)
                total = total + sign * d
            out.append((total.double() / den).float())
        return out

    def diff_backward(self, xq, wq, step, grad_out, geom, needs):
        """Per-pair chain rule of `dnn.arith.base` with the on-the-fly slopes, chunked over images and filters: the
        torch reference of `netlist_native.adder_diff_backward` (any device)."""
        n, o = xq.shape[0], wq.shape[0]
        w = wq.reshape(o, -1).to(torch.int64)[None, :, :, None]  # 1, O, K, 1
        k = w.shape[2]
        g = grad_out.reshape(n, o, -1)
        length = g.shape[2]
        grad_cols = torch.zeros(n, k, length, dtype=torch.float32, device=xq.device) if needs[0] else None
        grad_w = torch.zeros(o, k, dtype=torch.float32, device=xq.device)
        o_step = max(1, min(o, ELEMENTWISE_CHUNK // (4 * k * length)))
        for i in range(n):
            c = -geom.unfold(xq[i:i + 1].double()).to(torch.int64)[:, None]  # 1, 1, K, L
            for o0 in range(0, o, o_step):
                wo, gi = w[:, o0:o0 + o_step], g[i:i + 1, o0:o0 + o_step, None, :]  # gi: 1, o, 1, L
                d = self.differences(wo, -c).float() * step
                slope_w, slope_c = self.slopes(wo, c)
                if needs[0]:
                    grad_cols[i] += (gi * (d.clamp(-1, 1) * slope_c)).sum(1)[0]
                grad_w[o0:o0 + o_step] += (gi * (-d * slope_w)).sum(3)[0]
        grad_x = geom.fold(grad_cols, *xq.shape[2:]) if needs[0] else None
        return grad_x, (grad_w.reshape(wq.shape) if needs[1] else None)


def kernel_abs_sums(program, xq, wq, geom, bits):
    """sum_k |C(w, -x)| (int64) on a generated kernel of the adder program: compiled C on CPU, Triton on CUDA; None
    where neither serves (no compiler, native code off, another device), and the caller's torch path runs."""
    from dnn.kernels import netlist_native
    if netlist_native.usable(xq, bits):
        sums = netlist_native.adder_abs_sums(program, xq, wq, geom, bits)
        if sums is not None:
            return sums
    if triton_kernels.use(xq, wq):  # CUDA: one generated Triton kernel per circuit
        from dnn.kernels.triton import netlist as triton_netlist
        return triton_netlist.adder_abs_sums(program, xq, wq, geom, bits)
    return None


def evaluate_pairs(program, a, b, bits):
    """Output word per pair of the two-operand circuit `program` (int64 tensors of patterns, one shape): the
    compiled per-lane engine of the simulator on CPU when it is available, else torch bitwise ops."""
    if a.device.type == "cpu":
        try:
            from simulator import engine
        except ImportError:  # an older simulator without the compiled engine
            engine = None
        if engine is not None and engine.compile_native(program) is not None:
            return engine.evaluate_operands(program, [a.reshape(-1), b.reshape(-1)], [bits, bits]).view(a.shape)
    return netlist_torch.evaluate_lanes(program, [a, b], [bits, bits])


def adder_sums_torch(program, xq, wq, geom, bits):
    """sum_k |C(w, -x)| per output (int64, (N, O, Ho, Wo)): activations bit-sliced once per image, each weight a
    broadcast word, the circuit run on packed words in torch (the compiled kernel's algorithm, any device)."""
    n, o = xq.shape[0], wq.shape[0]
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    w_planes = netlist_torch.broadcast_planes(wq.reshape(o, -1).to(torch.int64) & mask, bits)[..., None]  # n,O,K,1
    ho, wo = geom.output_size(*xq.shape[2:])
    out = torch.empty(n, o, ho * wo, dtype=torch.int64, device=xq.device)
    o_step = max(1, min(o, ELEMENTWISE_CHUNK // max(1, w_planes.shape[2] * ho * wo)))
    for i in range(n):
        cols = geom.unfold(xq[i:i + 1].double())[0].to(torch.int64)  # K, L
        x_planes = netlist_torch.pack_planes((-cols) & mask, bits)[:, None]  # n, 1, K, W
        for o0 in range(0, o, o_step):
            planes = netlist_torch.run_program(program, [*w_planes[:, o0:o0 + o_step], *x_planes])
            planes = torch.stack(torch.broadcast_tensors(*planes))
            low = netlist_torch.unpack_planes(planes, ho * wo)
            out[i, o0:o0 + o_step] = torch.where(low >= half, low - (1 << bits), low).abs_().sum(1)
    return out.view(n, o, ho, wo)
