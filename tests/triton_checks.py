"""Checks of the Triton kernels against the torch references, run under Triton's interpreter on CPU tensors.

`tests/test_triton_kernels.py` runs this file in a subprocess with TRITON_INTERPRET=1 and AXNET_TRITON=force (the
interpreter must be on before triton is imported, which must not leak into the other tests) and turns each entry of
the JSON it prints into one test. Run by hand: `TRITON_INTERPRET=1 AXNET_TRITON=force python tests/triton_checks.py
[NAME...]`. Shapes are tiny: the interpreter runs every program instance in numpy. On a machine with a GPU the same
checks run compiled, on CUDA tensors: `AXNET_CHECK_DEVICE=cuda python tests/triton_checks.py` (the test file does
that too when CUDA is available).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnn.kernels import adder_ops  # noqa: E402
from dnn.kernels.adder_ops import Geometry  # noqa: E402

GEOMETRIES = [  # (geometry, input shape N, C, H, W): padding, stride, dilation, 1x1, and more pixels than one block
    (Geometry((3, 3), (1, 1), (1, 1)), (2, 2, 7, 6)),
    (Geometry((3, 2), (2, 1), (0, 1), (1, 2)), (2, 2, 9, 8)),
    (Geometry((1, 1)), (70, 5, 1, 1)),
]
FILTERS = 37  # more than one block of filters (32)


DEVICE = torch.device(os.environ.get("AXNET_CHECK_DEVICE", "cpu"))  # cuda: the compiled kernels on a GPU


def _gen(seed):
    """A random generator on the checks' device (with it, the factory functions need no device argument)."""
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _close(got, want, terms, magnitude):
    """Equal to float32 rounding: |got - want| within a few ulps of the largest partial sum of `terms` terms."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    bound = 4 * torch.finfo(torch.float32).eps * terms * magnitude + 1e-30
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    assert err <= bound, f"max error {err:.3g} beyond float32 rounding bound {bound:.3g}"


def _kernels():
    from dnn.kernels.triton import adder
    return adder


def _taps(geom, c):
    return c * geom.kernel[0] * geom.kernel[1]


def check_l1_forward_float():
    gen = _gen(1)
    for geom, shape in GEOMETRIES:
        x = torch.randn(*shape, generator=gen)
        w = torch.randn(FILTERS, shape[1], *geom.kernel, generator=gen)
        want = adder_ops.l1_forward_torch(x, w, geom)
        _close(_kernels().l1_forward(x, w, geom), want, _taps(geom, shape[1]), 8.0)


def check_l1_forward_integer_bits():
    """Integer-valued operands (the ExactInt back-end): the same bits as the reference, float32 and float64."""
    gen = _gen(2)
    for dtype, cases in ((torch.float32, GEOMETRIES), (torch.float64, GEOMETRIES[:1])):
        for geom, shape in cases:
            x = torch.randint(-127, 128, shape, generator=gen).to(dtype)
            w = torch.randint(-127, 128, (FILTERS, shape[1], *geom.kernel), generator=gen).to(dtype)
            got = _kernels().l1_forward(x, w, geom)
            assert got.dtype == dtype and torch.equal(got, adder_ops.l1_forward_torch(x, w, geom))


def check_l1_input_grad():
    gen = _gen(3)
    for geom, shape in GEOMETRIES:
        x = torch.randn(*shape, generator=gen)
        w = torch.randn(FILTERS, shape[1], *geom.kernel, generator=gen)
        g = torch.randn(shape[0], FILTERS, *geom.output_size(*shape[2:]), generator=gen)
        want = adder_ops.l1_input_grad_torch(x, w, g, geom)
        _close(_kernels().l1_input_grad(x, w, g, geom), want, FILTERS * _taps(geom, 1), 4.0)


def _table_case(gen, geom, shape, values=11, weight_values=13):
    """Activation indices, (O, K) weight indices, an integer (V, Vw) matrix and an output gradient."""
    index = torch.randint(0, values, shape, generator=gen, dtype=torch.int32)
    wi = torch.randint(0, weight_values, (FILTERS, _taps(geom, shape[1])), generator=gen, dtype=torch.int32)
    mat = torch.randint(-50, 51, (values, weight_values), generator=gen)
    grad = torch.randn(shape[0], FILTERS, *geom.output_size(*shape[2:]), generator=gen)
    return index, wi, mat, grad


def check_table_forward_bits():
    gen = _gen(4)
    for dtype, cases in ((torch.float32, GEOMETRIES), (torch.float64, GEOMETRIES[:1])):
        for geom, shape in cases:
            index, wi, mat, _ = _table_case(gen, geom, shape)
            got = _kernels().table_forward(index, wi, mat, geom, 5, dtype)
            want = adder_ops.table_forward_torch(index, adder_ops.fold_table(mat.to(dtype), wi), geom, 5)
            assert got.dtype == dtype and torch.equal(got, want)


def check_table_backward():
    gen = _gen(5)
    for geom, shape in GEOMETRIES:
        index, wi, mat, grad = _table_case(gen, geom, shape)
        ma, mw = mat.float(), torch.randn(mat.shape, generator=gen)
        grad_x, grad_w = _kernels().table_backward(index, wi, ma, mw, grad, geom, 5)
        want_x = adder_ops.table_input_grad_torch(index, adder_ops.fold_table(ma, wi), grad, geom, 5)
        _close(grad_x, want_x, FILTERS * _taps(geom, 1), 50 * 4.0)
        hits = adder_ops.table_scatter_torch(index, grad, geom, 5, mat.shape[0])
        want_w = (hits * adder_ops.fold_table(mw, wi)).sum(1).t()
        pixels = shape[0] * grad.shape[2] * grad.shape[3]
        _close(grad_w, want_w, pixels, 4.0 * 4.0)
        only_w = _kernels().table_backward(index, wi, None, mw, grad, geom, 5)
        assert only_w[0] is None and torch.equal(only_w[1], grad_w)
        saved, _kernels().PIXELS_PER_SLICE = _kernels().PIXELS_PER_SLICE, 64  # several slices of pixels
        try:
            sliced = _kernels().table_backward(index, wi, None, mw, grad, geom, 5)[1]
        finally:
            _kernels().PIXELS_PER_SLICE = saved
        _close(sliced, want_w, pixels, 4.0 * 4.0)


def _layer_step(make_arith, geom_kw, shape, seed):
    """(output, input gradient, weight gradient) of one Adder2d step, for the paths AXNET_TRITON selects."""
    from dnn import Adder2d
    torch.manual_seed(seed)
    layer = Adder2d(shape[1], 6, 3, **geom_kw)
    layer.arith = make_arith()
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=_gen(seed)))
    return y.detach(), x.grad, layer.weight.grad


def _compare_layer(make_arith, exact_bits):
    """The layer on the Triton kernels against the layer on the torch references (compiled CPU kernels off)."""
    from dnn.kernels import native
    native.available = lambda: False
    for geom_kw, shape in (({"padding": 1}, (2, 3, 6, 5)), ({"stride": 2, "dilation": 2}, (2, 2, 9, 9))):
        os.environ["AXNET_TRITON"] = "0"
        want = _layer_step(make_arith, geom_kw, shape, 7)
        os.environ["AXNET_TRITON"] = "force"
        with _Counting(_kernels(), ["l1_forward", "l1_input_grad", "table_forward", "table_backward"]) as count:
            got = _layer_step(make_arith, geom_kw, shape, 7)
        assert count.calls, "the layer never reached a Triton kernel"
        for name, a, b in zip(("output", "input grad", "weight grad"), got, want):
            if exact_bits and name == "output":
                assert torch.equal(a, b), name
            else:
                _close(a, b, 6 * 27 * shape[0] * 81, max(1.0, b.abs().max().item()))


def check_layer_exact_float():
    _compare_layer(lambda: None, exact_bits=False)


def check_layer_exact_int():
    from dnn import ExactInt
    _compare_layer(lambda: ExactInt(8), exact_bits=True)


def check_layer_lut_adder_grad_lut():
    from circuits.generators import ripple_carry_adder
    from dnn import LutAdder
    from lutgen.lut import build_lut
    lut = build_lut(ripple_carry_adder(6, "ama2", 3))
    _compare_layer(lambda: LutAdder(lut, grad="lut", half_window=1), exact_bits=True)
    _compare_layer(lambda: LutAdder(lut, grad="ste"), exact_bits=True)


class _Counting:
    """Counts the calls of a Triton kernels module's entry points within the block, so a check can tell that the
    dispatchers really took the Triton path."""

    def __init__(self, module, names):
        self.module, self.names, self.calls = module, names, {}

    def __enter__(self):
        self.saved = {name: getattr(self.module, name) for name in self.names}
        for name, fn in self.saved.items():
            def counted(*args, _fn=fn, _name=name, **kw):
                self.calls[_name] = self.calls.get(_name, 0) + 1
                return _fn(*args, **kw)
            setattr(self.module, name, counted)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(self.module, name, fn)


class _TorchPath:
    """Within the block the dispatchers pick the torch references (AXNET_TRITON=0), then Triton again."""

    def __enter__(self):
        os.environ["AXNET_TRITON"] = "0"

    def __exit__(self, *exc):
        os.environ["AXNET_TRITON"] = "force"


def _mult_case(gen, rows, positions, filters, bits_a=4, bits_b=3, signed=True):
    """Quantized activations (floats holding integers, as the layers pass them), weight indices, an integer-valued
    multiplier table and gradient tables, and an output gradient."""
    na, nb = 1 << bits_a, 1 << bits_b
    qmin = -(na // 2) if signed else 0
    qx = (torch.randint(0, na, (rows, positions), generator=gen) + qmin).float()
    iw = torch.randint(0, nb, (filters, positions), generator=gen)
    a = torch.arange(na)[:, None] + qmin
    b = torch.arange(nb)[None, :] - nb // 2
    values = (a * b + torch.randint(-2, 3, (na, nb), generator=gen)).float()  # a multiplier with errors
    grads = torch.randn(na, nb, generator=gen), torch.randn(na, nb, generator=gen)
    g = torch.randn(rows, filters, generator=gen)
    return qx, iw, values, grads, g, -qmin


MULT_CASES = [(5, 3, 2), (70, 9, 37), (130, 20, 5)]  # (rows M, positions K, filters O): partial and several blocks


def check_mult_accumulate_bits():
    from dnn.kernels import mult_ops
    from dnn.kernels.triton import mult
    gen = _gen(6)
    for rows, positions, filters in MULT_CASES:
        for dtype in (torch.float32, torch.float64):
            qx, iw, values, _, _, shift = _mult_case(gen, rows, positions, filters)
            values = values.to(dtype)
            max_abs = int(values.abs().max())
            got = mult.lut_accumulate(qx, iw, values, max_abs, shift)
            exact = mult_ops.reference_accumulate((qx + shift).long(), iw, values.long())
            assert got.dtype == torch.float64 and torch.equal(got, exact.double())
            with _TorchPath():
                assert torch.equal(got, mult_ops.lut_accumulate(qx, iw, values, max_abs, shift))
    qx, iw, values, _, _, shift = _mult_case(gen, 6, 4, 3)  # the float64 accumulator: sums beyond 2^24
    big = values * float(1 << 22)
    got = mult.lut_accumulate(qx, iw, big.double(), int(big.abs().max()), shift)
    assert torch.equal(got, mult_ops.reference_accumulate((qx + shift).long(), iw, big.long()).double())


def check_mult_lut_gradients():
    from dnn.kernels import mult_ops
    from dnn.kernels.triton import mult
    gen = _gen(7)
    for rows, positions, filters in MULT_CASES:
        qx, iw, _, (grad_a, grad_b), g, shift = _mult_case(gen, rows, positions, filters)
        got_a = mult.lut_grad_a(qx, iw, g, grad_a, shift)
        got_b = mult.lut_grad_b(qx, iw, g, grad_b, shift)
        with _TorchPath():
            want_a = mult_ops.lut_grad_a(qx, iw, g, grad_a, shift)
            want_b = mult_ops.lut_grad_b(qx, iw, g, grad_b, shift)
        _close(got_a, want_a, filters, 16.0)
        _close(got_b, want_b, rows, 16.0)


def check_mult_grad_b_slices():
    """More rows than one program's slice: the partial sums of the slices add up to the whole reduction."""
    from dnn.kernels import mult_ops
    from dnn.kernels.triton import mult
    gen = _gen(8)
    qx, iw, _, (_, grad_b), g, shift = _mult_case(gen, 150, 2, 3)
    saved, mult.ROWS_PER_SLICE = mult.ROWS_PER_SLICE, 64
    try:
        got = mult.lut_grad_b(qx, iw, g, grad_b, shift)
    finally:
        mult.ROWS_PER_SLICE = saved
    with _TorchPath():
        _close(got, mult_ops.lut_grad_b(qx, iw, g, grad_b, shift), 150, 16.0)


def _mult_layer_step(mult, seed):
    """(output, input gradient, weight gradient) of an ApproxConv2d and an ApproxLinear step on `mult`."""
    from dnn import ApproxConv2d, ApproxLinear
    torch.manual_seed(seed)
    conv = ApproxConv2d(3, 5, 3, padding=1, stride=(1, 2), mult=mult)
    linear = ApproxLinear(12, 4, mult=mult)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    z = torch.randn(3, 12, requires_grad=True)
    outputs = [conv(x), linear(z)]
    grads = torch.autograd.grad(outputs, [x, z, conv.weight, linear.weight],
                                [torch.randn(y.shape, generator=_gen(seed)) for y in outputs])
    return [y.detach() for y in outputs] + list(grads)


def check_mult_layers():
    """ApproxConv2d and ApproxLinear on the Triton kernels against the torch references: forward exact to the LUT
    (the same bits), gradients (straight-through and gradient LUT) to float32 rounding."""
    from dnn import LutMultiplier
    from dnn.kernels import native
    from lutgen.lut import Lut
    native.available = lambda: False  # the references are the torch paths
    rng = np.random.default_rng(9)
    table = rng.integers(-500, 500, size=(32, 32))
    lut = Lut(table=table, operands=[("a", 5), ("b", 5)], outputs=[], signed=True)
    for grad in ("ste", "lut"):
        mult = LutMultiplier(lut, grad=grad, half_window=1 if grad == "lut" else None)
        with _TorchPath():
            want = _mult_layer_step(mult, 10)
        from dnn.kernels.triton import mult as kernels
        with _Counting(kernels, ["lut_accumulate", "lut_grad_a", "lut_grad_b"]) as count:
            got = _mult_layer_step(mult, 10)
        assert count.calls.get("lut_accumulate") == 2, count.calls
        if grad == "lut":
            assert count.calls.get("lut_grad_a") == 2 and count.calls.get("lut_grad_b") == 2, count.calls
        for i, (a, b) in enumerate(zip(got, want)):
            if i < 2:
                assert torch.equal(a, b), f"output {i}"
            else:
                _close(a, b, 500, max(1.0, b.abs().max().item()))


def check_netlist_lanes():
    """Generated per-circuit kernels against the torch bitwise engine and the netlist's own evaluation: adders with
    approximate cells, a truncated adder (constant outputs), a multiplier; lanes not a multiple of a program's."""
    from circuits.generators import array_multiplier, ripple_carry_adder, truncated_adder
    from dnn.kernels import netlist_torch
    from dnn.kernels.triton import netlist
    from simulator.program import compile_netlist
    gen = _gen(11)
    for circuit, widths in ((ripple_carry_adder(6, "ama2", 3), [6, 6]), (truncated_adder(5, 2), [5, 5]),
                            (array_multiplier(4, 3), [4, 3]), (ripple_carry_adder(3, carry_in=True), [3, 3, 1])):
        program = compile_netlist(circuit)
        operands = [torch.randint(-(1 << 12), 1 << 12, (3, 211), generator=gen) for _ in widths]
        got = netlist.evaluate_lanes(program, operands, widths)
        with _TorchPath():
            want = netlist_torch.evaluate_lanes(program, operands, widths)
        assert got.shape == want.shape and torch.equal(got, want)
        with _Counting(netlist, ["evaluate_lanes"]) as count:  # the torch engine's entry point dispatches here
            assert torch.equal(netlist_torch.evaluate_lanes(program, operands, widths), want)
        assert count.calls == {"evaluate_lanes": 1}
        for lane in range(0, 211 * 3, 97):  # the netlist itself, lane by lane
            pattern, offset = 0, 0
            for values, width in zip(operands, widths):
                pattern |= (int(values.reshape(-1)[lane]) & ((1 << width) - 1)) << offset
                offset += width
            assert circuit.evaluate_int(pattern) == int(got.reshape(-1)[lane])


def check_accumulate():
    """Sequential and tree accumulation through approximate accumulators (LOA, truncated, maj-cell ripple) against
    the torch bit-plane path and the plain-loop reference, and through Accumulator.accumulate's dispatch."""
    from dnn.arith import accumulate as accumulate_module
    from dnn.arith.accumulate import Accumulator
    from dnn.kernels.triton import accum
    gen = _gen(12)
    accumulate_module.accum_native.MAX_BITS = 0  # the compiled CPU kernels off: auto then means Triton (forced)
    for spec in ("loa:10:k=3", "trunc:9:k=2", "rca:12:cell=maj:k=4"):
        for order in ("sequential", "tree"):
            acc = Accumulator(spec, order=order)
            cols = torch.randint(0, 9, (37, 7), generator=gen)  # (M, K) activation indices
            w_index = torch.randint(0, 5, (19, 7), generator=gen)  # (O, K) weight indices
            pair = torch.randint(0, 1 << (acc.bits - 3), (5, 9), generator=gen)  # term values
            want = acc.accumulate(cols, w_index, pair, False, path="torch")
            with _Counting(accum, ["accumulate"]) as count:
                got = acc.accumulate(cols, w_index, pair, False, path="auto")
            assert count.calls == {"accumulate": 1}, f"{spec} {order}: dispatch did not reach Triton"
            assert got.dtype == want.dtype == torch.float64, f"{spec} {order}: {got.dtype}"  # torch.equal ignores it
            assert torch.equal(got, want), f"{spec} {order}"
            few = acc.accumulate(cols[:3], w_index, pair, False, path="reference")
            assert torch.equal(got[:3], few), f"{spec} {order}: reference"
            if spec.startswith("loa"):  # read as two's complement
                signed = acc.accumulate(cols, w_index, pair, True, path="auto")
                assert torch.equal(signed, acc.accumulate(cols, w_index, pair, True, path="torch"))


def check_accumulate_adder_layer():
    """An exact 8-bit adder layer summed through an exact 16-bit accumulator in both orders: Triton (auto) equals
    the torch path and the plain sums. A whole eval through such an accumulator fell to chance on an H200."""
    from dnn.arith import accumulate as accumulate_module
    from dnn.arith.accumulate import Accumulator
    from dnn.arith.base import ExactInt
    from dnn.kernels.triton import accum
    accumulate_module.accum_native.MAX_BITS = 0  # the compiled CPU kernels off: auto then means Triton (forced)
    gen = _gen(15)
    backend = ExactInt(8)
    for geom, shape in GEOMETRIES[:2]:
        xq = torch.randint(-backend.qmax, backend.qmax + 1, shape, generator=gen).float()
        wq = torch.randint(-backend.qmax, backend.qmax + 1, (5, shape[1], *geom.kernel), generator=gen).float()
        plain = backend.abs_sums(xq, wq, geom)
        for order in ("sequential", "tree"):
            acc = Accumulator("rca:16:k=0", order=order)
            with _Counting(accum, ["accumulate"]) as count:
                got = acc.adder_sums(backend, xq, wq, geom)
            assert count.calls == {"accumulate": 1}, f"{order}: dispatch did not reach Triton"
            assert got.dtype == torch.float64, f"{order}: {got.dtype} (the layer multiplies the sums by its step)"
            assert torch.equal(got, acc.adder_sums(backend, xq, wq, geom, path="torch")), order
            assert torch.equal(got.to(plain.dtype), plain), f"{order}: not the plain sums"


def check_cell_adder_layer():
    """A 16-bit ripple with 4 approximate cells (CellAdder, beyond its table) on the generated Triton adder kernel:
    the layer's dispatch reaches it, and it equals the word-level chain and the chained-table ripple in torch."""
    from dnn.arith.cell_adder import CellAdder, chain_add
    from dnn.kernels import native, netlist_native
    from dnn.kernels.triton import netlist
    gen = _gen(16)
    saved = native.available, netlist_native.enabled
    native.available = netlist_native.enabled = lambda: False  # the compiled CPU kernels off: Triton serves (forced)
    try:
        for cell in ("maj", "ama2"):
            adder = CellAdder(cell, 4, 16)
            for geom, shape in GEOMETRIES[:2]:
                xq = torch.randint(-adder.qmax, adder.qmax + 1, shape, generator=gen).float()
                wq = torch.randint(-adder.qmax, adder.qmax + 1, (5, shape[1], *geom.kernel), generator=gen).float()
                with _Counting(netlist, ["adder_abs_sums"]) as count:
                    got = adder.abs_sums(xq, wq, geom)
                assert count.calls == {"adder_abs_sums": 1}, f"{cell}: dispatch did not reach Triton"
                assert torch.equal(got, adder.pairwise_sums(xq, wq, geom)), f"{cell}: not the ripple"
                if adder.masks is not None:
                    chained = adder.pairwise_sums(xq, wq, geom, lambda a, b: chain_add(a, b, adder.masks, 16))
                    assert torch.equal(got, chained), f"{cell}: not the word chain"
    finally:
        native.available, netlist_native.enabled = saved


def check_netlist_adder_layer():
    """The generated adder-layer kernel of a wide (12-bit) approximate adder against NetlistAdder's torch path, and
    the layer's dispatch to it when the compiled CPU kernel is off."""
    from circuits.generators import ripple_carry_adder
    from dnn.arith.netlist_adder import NetlistAdder, adder_sums_torch
    from dnn.kernels import netlist_native
    from dnn.kernels.triton import netlist
    gen = _gen(13)
    adder = NetlistAdder(ripple_carry_adder(12, "ama2", 4))
    assert adder.diff is None  # beyond the domain table: the per-pair path
    for geom, shape in GEOMETRIES[:2]:
        xq = torch.randint(-adder.qmax, adder.qmax + 1, shape, generator=gen).float()
        wq = torch.randint(-adder.qmax, adder.qmax + 1, (5, shape[1], *geom.kernel), generator=gen).float()
        got = netlist.adder_abs_sums(adder.program, xq, wq, geom, adder.bits)
        assert torch.equal(got, adder_sums_torch(adder.program, xq, wq, geom, adder.bits))
    netlist_native.usable = lambda *args: False
    with _Counting(netlist, ["adder_abs_sums"]) as count:
        sums = adder.abs_sums(xq, wq, geom)
    assert count.calls == {"adder_abs_sums": 1} and torch.equal(sums, got.to(sums.dtype))


def check_netlist_multiplier_layer():
    """The generated multiplier-layer kernel (unsigned and signed, a plain array multiplier and one with its low
    product bits cut) against NetlistMultiplier's torch path, and the back-end's dispatch to it."""
    from circuits.generators import array_multiplier, signed_array_multiplier
    from circuits.netlist import Netlist
    from dnn.arith.netlist_multiplier import NetlistMultiplier, product_sums_torch
    from dnn.kernels import netlist_native
    from dnn.kernels.triton import netlist
    gen = _gen(14)
    for mode in ("unsigned", "signed"):
        exact = (signed_array_multiplier if mode == "signed" else array_multiplier)(5, 4)
        cut = Netlist(exact.name + "_cut", exact.inputs, exact.outputs, dict(exact.nodes), exact.source)
        for name in exact.outputs[:2]:  # the two low product bits tied to 0: an approximate multiplier
            cut.nodes[name] = type(cut.nodes[name])(name, (), (), 1)
        for circuit in (exact, cut):
            mult = NetlistMultiplier(circuit, mode=mode)
            lo, hi = mult.qrange(0)
            qx = torch.randint(lo, hi + 1, (45, 6), generator=gen).float()
            lo, hi = mult.qrange(1)
            qw = torch.randint(lo, hi + 1, (17, 6), generator=gen).float()
            want = product_sums_torch(mult.program, qx, qw, mult.widths, mult.out_bits, mode == "signed")
            got = netlist.product_sums(mult.program, qx, qw, mult.widths, mode == "signed")
            assert torch.equal(got, want), f"{circuit.name} {mode}"
    netlist_native.enabled = lambda: False
    with _Counting(netlist, ["product_sums"]) as count:
        sums = mult.product_sums(qx, qw)
    assert count.calls == {"product_sums": 1} and torch.equal(sums, want.double())


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def main(names):
    """Run the named checks (all by default) and print {name: None or the failure's traceback} as JSON."""
    torch.set_num_threads(1)
    torch.set_default_device(DEVICE)  # every tensor a check makes lives there (layers and tables included)
    np.random.seed(0)
    results = {}
    for name in names or CHECKS:
        start = time.perf_counter()
        try:
            CHECKS[name]()
            results[name] = None
        except Exception:  # noqa: BLE001 - every failure is reported, with its traceback, to the test of its name
            results[name] = traceback.format_exc()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
