"""Checks of the Triton kernels against the torch references, run under Triton's interpreter on CPU tensors.

`tests/test_triton_kernels.py` runs this file in a subprocess with TRITON_INTERPRET=1 and AXNET_TRITON=force (the
interpreter must be on before triton is imported, which must not leak into the other tests) and turns each entry of
the JSON it prints into one test. Run by hand: `TRITON_INTERPRET=1 AXNET_TRITON=force python tests/triton_checks.py
[NAME...]`. Shapes are tiny: the interpreter runs every program instance in numpy.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnn.kernels import adder_ops  # noqa: E402
from dnn.kernels.adder_ops import Geometry  # noqa: E402

GEOMETRIES = [  # (geometry, input shape N, C, H, W): padding, stride, dilation, 1x1, and more pixels than one block
    (Geometry((3, 3), (1, 1), (1, 1)), (2, 3, 7, 6)),
    (Geometry((3, 2), (2, 1), (0, 1), (1, 2)), (3, 2, 9, 8)),
    (Geometry((1, 1)), (70, 5, 1, 1)),
]
FILTERS = 37  # more than one block of filters (32)


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
    gen = torch.Generator().manual_seed(1)
    for geom, shape in GEOMETRIES:
        x = torch.randn(*shape, generator=gen)
        w = torch.randn(FILTERS, shape[1], *geom.kernel, generator=gen)
        want = adder_ops.l1_forward_torch(x, w, geom)
        _close(_kernels().l1_forward(x, w, geom), want, _taps(geom, shape[1]), 8.0)


def check_l1_forward_integer_bits():
    """Integer-valued operands (the ExactInt back-end): the same bits as the reference, float32 and float64."""
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        for geom, shape in GEOMETRIES:
            x = torch.randint(-127, 128, shape, generator=gen).to(dtype)
            w = torch.randint(-127, 128, (FILTERS, shape[1], *geom.kernel), generator=gen).to(dtype)
            got = _kernels().l1_forward(x, w, geom)
            assert got.dtype == dtype and torch.equal(got, adder_ops.l1_forward_torch(x, w, geom))


def check_l1_input_grad():
    gen = torch.Generator().manual_seed(3)
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
    gen = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.float64):
        for geom, shape in GEOMETRIES:
            index, wi, mat, _ = _table_case(gen, geom, shape)
            got = _kernels().table_forward(index, wi, mat, geom, 5, dtype)
            want = adder_ops.table_forward_torch(index, adder_ops.fold_table(mat.to(dtype), wi), geom, 5)
            assert got.dtype == dtype and torch.equal(got, want)


def check_table_backward():
    gen = torch.Generator().manual_seed(5)
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


def _layer_step(make_arith, geom_kw, shape, seed):
    """(output, input gradient, weight gradient) of one Adder2d step, for the paths AXNET_TRITON selects."""
    from dnn import Adder2d
    torch.manual_seed(seed)
    layer = Adder2d(shape[1], 6, 3, **geom_kw)
    layer.arith = make_arith()
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)))
    return y.detach(), x.grad, layer.weight.grad


def _compare_layer(make_arith, exact_bits):
    """The layer on the Triton kernels against the layer on the torch references (compiled CPU kernels off)."""
    from dnn.kernels import native
    native.available = lambda: False
    for geom_kw, shape in (({"padding": 1}, (2, 3, 6, 5)), ({"stride": 2, "dilation": 2}, (2, 2, 9, 9))):
        os.environ["AXNET_TRITON"] = "0"
        want = _layer_step(make_arith, geom_kw, shape, 7)
        os.environ["AXNET_TRITON"] = "force"
        got = _layer_step(make_arith, geom_kw, shape, 7)
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


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def main(names):
    """Run the named checks (all by default) and print {name: None or the failure's traceback} as JSON."""
    torch.set_num_threads(1)
    np.random.seed(0)
    results = {}
    for name in names or CHECKS:
        try:
            CHECKS[name]()
            results[name] = None
        except Exception:  # noqa: BLE001 - every failure is reported, with its traceback, to the test of its name
            results[name] = traceback.format_exc()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
