"""Integer back-ends: bit-exact forwards against slow references, gradient modes, and bad-input errors."""
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.errors import AxnetError
from circuits.generators import ripple_carry_adder
from circuits.library import cell_truth_table
from dnn import Adder2d, AdderLinear, CellAdder, ExactInt, LutAdder, parse_arith, set_arith
from dnn.kernels import native as native_kernels
from dnn.kernels.adder_ops import Geometry
from dnn.arith.cell_adder import ripple_add, ripple_tables
from dnn.arith.lut_adder import adder_view, lut_gather_sums
from dnn.arith.quant import integer_range
from lutgen.formats import save_npz
from lutgen.gradient import gradient_lut
from lutgen.lut import Lut, build_lut

# REFERENCE.md section 6, rows A B Cin = 000..111, entries (sum, cout)
AMA2 = [(1, 0), (1, 0), (1, 0), (0, 1), (1, 0), (0, 1), (0, 1), (0, 1)]
AMA5 = [(0, 0), (0, 0), (1, 0), (1, 0), (0, 1), (0, 1), (1, 1), (1, 1)]
EXACT = [(0, 0), (1, 0), (1, 0), (0, 1), (1, 0), (0, 1), (0, 1), (1, 1)]


def python_ripple(a, b, rows, approx_bits, width):
    """Bit by bit ripple-carry addition of Python ints: the obviously-correct reference."""
    carry, total = 0, 0
    for i in range(width):
        ai, bi = (a >> i) & 1, (b >> i) & 1
        if i < approx_bits:
            s, carry = rows[ai * 4 + bi * 2 + carry]
        else:
            s, carry = ai ^ bi ^ carry, (ai & bi) | (ai & carry) | (bi & carry)
        total |= s << i
    return total


def signed(word, width):
    return word - (1 << width) if word >= 1 << (width - 1) else word


def slow_sums(xq, wq, geom, difference):
    """sum_k |difference(w, x)| over unfolded patches with a Python function of two ints."""
    cols = geom.unfold(xq.double()).long()
    filters = wq.reshape(wq.shape[0], -1).long()
    n, k, length = cols.shape
    out = torch.zeros(n, filters.shape[0], length, dtype=torch.int64)
    for i in range(n):
        for o in range(filters.shape[0]):
            for p in range(length):
                out[i, o, p] = sum(abs(difference(int(filters[o, j]), int(cols[i, j, p]))) for j in range(k))
    return out.view(n, filters.shape[0], *geom.output_size(*xq.shape[2:]))


def test_bundled_cells_match_the_reference_tables():
    assert cell_truth_table("ama2") == AMA2 and cell_truth_table("ama5") == AMA5
    assert cell_truth_table("exact") == EXACT


@pytest.mark.parametrize("rows", [EXACT, AMA2, AMA5], ids=["exact", "ama2", "ama5"])
def test_ripple_add_equals_python_ripple_on_random_32_bit_values(rows):
    rng = random.Random(5)
    a = [rng.getrandbits(32) for _ in range(300)]
    b = [rng.getrandbits(32) for _ in range(300)]
    ta, tb = torch.tensor(a), torch.tensor(b)
    for k in (0, 1, 5, 8, 13, 20, 31, 32):
        got = ripple_add(ta, tb, ripple_tables(rows, k), k, 32).tolist()
        assert got == [python_ripple(x, y, rows, k, 32) for x, y in zip(a, b)], k


def test_k_zero_is_exact_addition():
    rng = random.Random(6)
    a = torch.tensor([rng.getrandbits(32) for _ in range(200)])
    b = torch.tensor([rng.getrandbits(32) for _ in range(200)])
    assert torch.equal(ripple_add(a, b, ripple_tables(AMA2, 0), 0, 32), (a + b) & 0xFFFFFFFF)


def _quantized_pair(seed, qmax, shape=(2, 2, 5, 6), out=3, kernel=3):
    g = torch.Generator().manual_seed(seed)
    xq = torch.randint(-qmax, qmax + 1, shape, generator=g).float()
    wq = torch.randint(-qmax, qmax + 1, (out, shape[1], kernel, kernel), generator=g).float()
    return xq, wq


@pytest.mark.parametrize("width, cell, k", [(32, "ama2", 9), (32, "maj", 24), (32, "ama5", 0), (32, "ama1", 32),
                                           (32, "ama2", 6), (24, "maj", 8), (10, "ama4", 6), (20, "ama3", 17)])
def test_cell_adder_layer_sums_equal_python_ripple(width, cell, k):
    adder = CellAdder(cell, k, width)
    rows = cell_truth_table(cell)
    geom = Geometry((3, 3), (1, 1), (1, 1))
    xq, wq = _quantized_pair(7, adder.qmax)
    mask = (1 << width) - 1
    expected = slow_sums(xq, wq, geom, lambda w, x: signed(python_ripple(w & mask, -x & mask, rows, k, width), width))
    assert torch.equal(adder.abs_sums(xq, wq, geom).long(), expected)  # folded, compiled or exact path
    assert torch.equal(adder.pairwise_sums(xq, wq, geom).long(), expected)  # the torch per-pair path
    if width <= 32 and native_kernels.available():
        compiled = native_kernels.cell_forward(xq, wq, geom, adder.chunks, k, width)
        assert torch.equal(compiled.long(), expected)


@settings(max_examples=20, deadline=None)
@given(bits=st.sampled_from([3, 4, 6, 8, 11, 16, 20, 26, 31, 32, 40, 48]), seed=st.integers(0, 2**16),
       stride=st.integers(1, 2), padding=st.integers(0, 2))
def test_exact_int_sums_are_bit_exact(bits, seed, stride, padding):
    adder = ExactInt(bits)
    geom = Geometry((3, 3), (stride, stride), (padding, padding))
    xq, wq = _quantized_pair(seed, adder.qmax)
    cols = geom.unfold(xq.double()).long()
    filters = wq.reshape(3, -1).long()
    expected = (filters[None, :, :, None] - cols[:, None]).abs().sum(2).view(2, 3, *geom.output_size(5, 6))
    assert torch.equal(adder.abs_sums(xq, wq, geom).long(), expected)


def _adder_lut(width=8, cell="exact", k=0):
    return build_lut(ripple_carry_adder(width, cell, k))


@pytest.mark.parametrize("cell, k", [("exact", 0), ("ama1", 4), ("ama5", 7)])
def test_lut_adder_equals_plain_gather(cell, k):
    lut = _adder_lut(8, cell, k)
    adder = LutAdder(lut)
    geom = Geometry((3, 3), (2, 1), (1, 2), (1, 2))
    xq, wq = _quantized_pair(8, adder.qmax, shape=(3, 3, 7, 9), out=10)
    expected = lut_gather_sums(lut.table, 8, xq, wq, geom)
    assert torch.equal(adder.abs_sums(xq, wq, geom).long(), expected)
    mask = 255
    slow = slow_sums(xq[:1, :, :4, :4], wq[:2], geom,
                     lambda w, x: signed(int(lut.table[w & mask, -x & mask]) & mask, 8))
    assert torch.equal(lut_gather_sums(lut.table, 8, xq[:1, :, :4, :4], wq[:2], geom), slow)


def test_lut_adder_matches_cell_adder_of_the_same_circuit():
    lut = _adder_lut(8, "ama3", 5)
    assert torch.equal(LutAdder(lut).diff, CellAdder("ama3", 5, 8).diff)


def test_exact_lut_equals_exact_int_layer_output():
    torch.manual_seed(9)
    layer = Adder2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    layer.arith = ExactInt(8)
    expected = layer(x)
    layer.arith = LutAdder(_adder_lut(8))
    assert torch.equal(layer(x), expected)
    layer.arith = CellAdder("ama2", 0, 32)
    assert torch.equal(layer(x), Adder2d.forward(_with_arith(layer, ExactInt(32)), x))


def _with_arith(layer, arith):
    layer.arith = arith
    return layer


def _grads(layer, x, grad_out):
    x = x.clone().requires_grad_(True)
    layer.weight.grad = None
    layer(x).backward(grad_out)
    return x.grad, layer.weight.grad


def test_lut_gradients_of_an_exact_adder_are_the_authors():
    torch.manual_seed(10)
    layer = Adder2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 5, 5)
    grad_out = torch.randn(2, 3, 5, 5)
    lut = _adder_lut(8)
    layer.arith = LutAdder(lut, grad="ste")
    ste = _grads(layer, x, grad_out)
    layer.arith = LutAdder(lut, grad="lut", half_window=1)
    with_lut = _grads(layer, x, grad_out)
    for a, b in zip(ste, with_lut):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_lut_gradients_follow_the_documented_chain_rule():
    """dy/dw = -d * G_a(w, -x), dy/dx = HardTanh(d) * G_b(w, -x), against a float64 per-pair implementation."""
    torch.manual_seed(11)
    lut = gradient_lut(_adder_lut(6, "ama2", 3), 1)
    adder = LutAdder(lut, grad="lut")
    layer = Adder2d(2, 3, 3, stride=2, padding=1, arith=adder)
    layer.scale = torch.tensor(2.0)
    x = torch.randn(2, 2, 7, 6)
    grad_out = torch.randn(2, 3, 4, 3)
    gx, gw = _grads(layer, x, grad_out)
    step = 2.0 / adder.qmax
    geom = layer.geometry
    xq = torch.clamp(torch.round(x / step), -adder.qmax, adder.qmax)
    wq = torch.clamp(torch.round(layer.weight.detach() / step), -adder.qmax, adder.qmax)
    mask = 63
    w_pat = (wq.reshape(3, -1).long() & mask)[None, :, :, None]
    nx_pat = ((-geom.unfold(xq.double()).long()) & mask)[:, None]
    table = torch.from_numpy(lut.table)
    words = table[w_pat, nx_pat] & mask
    d = torch.where(words >= 32, words - 64, words).double() * step
    q = adder.qmax  # the layer's slope tables are indexed [w + qmax, x + qmax] (checked on their own below)
    w_idx = (wq.reshape(3, -1).long() + q)[None, :, :, None]
    x_idx = (geom.unfold(xq.double()).long() + q)[:, None]
    ga = adder.grad_w_slope.double()[w_idx, x_idx]
    gb = adder.grad_x_slope.double()[w_idx, x_idx]
    g = grad_out.double().reshape(2, 3, 1, -1)
    expected_gw = (g * -d * ga).sum((0, 3)).view(layer.weight.shape)
    expected_gx = geom.fold((g * d.clamp(-1, 1) * gb).sum(1), 7, 6)
    torch.testing.assert_close(gw.double(), expected_gw, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx.double(), expected_gx, rtol=1e-5, atol=1e-4)


def test_cell_adder_ste_gradients_equal_exact_int():
    torch.manual_seed(12)
    layer = AdderLinear(6, 4)
    x = torch.randn(5, 6)
    grad_out = torch.randn(5, 4)
    layer.arith = ExactInt(32)
    expected = _grads(layer, x, grad_out)
    layer.arith = CellAdder("ama2", 12, 32)
    for a, b in zip(expected, _grads(layer, x, grad_out)):
        torch.testing.assert_close(a, b)


def test_lut_from_files(tmp_path):
    lut = _adder_lut(6, "ama1", 2)
    save_npz(lut, tmp_path / "add6.npz")
    save_npz(gradient_lut(lut, 2), tmp_path / "add6_grad.npz")
    plain = parse_arith(f"lut:{tmp_path / 'add6.npz'}")
    assert isinstance(plain, LutAdder) and plain.bits == 6 and plain.grad == "ste"
    assert torch.equal(plain.diff, LutAdder(lut).diff)
    graded = parse_arith(f"lut:{tmp_path / 'add6_grad.npz'}:grad=lut")
    assert graded.grad == "lut" and graded.grad_w_slope is not None
    computed = parse_arith(f"lut:{tmp_path / 'add6.npz'}:w=2")
    assert torch.equal(computed.grad_x_slope, graded.grad_x_slope)


def test_parse_arith_forms():
    assert parse_arith("float") is None
    assert parse_arith("exact:8").qmax == integer_range(8) == 63
    cell = parse_arith("cell:ama2:k=12")
    assert (cell.cell, cell.approx_bits, cell.bits) == ("ama2", 12, 32)
    assert parse_arith("cell:maj:k=3:width=16").bits == 16
    model = torch.nn.Sequential(Adder2d(1, 2, 3), torch.nn.ReLU(), AdderLinear(2, 2))
    assert set_arith(model, cell) == 2 and model[2].arith is cell


@pytest.mark.parametrize("text", ["", "exact:x", "cell:ama2", "cell:ama2:k=40", "cell:ama2:k=3:depth=2", "lut:",
                                  "cell:nosuchcell:k=2", "mult:3"])
def test_parse_arith_errors(text):
    with pytest.raises(AxnetError):
        parse_arith(text)


def test_lut_with_three_operands_is_refused():
    lut = build_lut(ripple_carry_adder(4, carry_in=True))
    with pytest.raises(AxnetError, match="exactly two operands"):
        LutAdder(lut)


def test_lut_of_unequal_or_unfit_width_is_refused():
    unequal = Lut(np.zeros((16, 8), dtype=np.int64), [("a", 4), ("b", 3)], ["s0"])
    with pytest.raises(AxnetError, match="equal width"):
        LutAdder(unequal)
    tiny = Lut(np.zeros((4, 4), dtype=np.int64), [("a", 2), ("b", 2)], ["s0"])
    with pytest.raises(AxnetError, match="does not fit"):
        LutAdder(tiny)


def test_multiplier_lut_is_not_taken_for_an_adder():
    """A 7-bit product needs 14 bits; an adder layer would silently compute garbage with it."""
    a, b = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    product = Lut((a * b).astype(np.int64), [("a", 7), ("b", 7)], [f"o[{k}]" for k in range(14)])
    with pytest.raises(AxnetError, match="not an adder LUT"):
        LutAdder(product)
    LutAdder(Lut((a + b).astype(np.int64), [("a", 7), ("b", 7)], [f"s[{k}]" for k in range(8)]))  # fits


def test_gradient_file_not_matching_its_lut_is_refused(tmp_path):
    lut = gradient_lut(_adder_lut(5), 1)
    wrong_shape = lut.with_grads({"a": lut.grads["a"][:, :8], "b": lut.grads["b"]}, lut.grad_meta)
    with pytest.raises(AxnetError, match="shape"):
        LutAdder(wrong_shape, grad="lut")
    wrong_names = lut.with_grads({"x": lut.grads["a"], "b": lut.grads["b"]}, lut.grad_meta)
    with pytest.raises(AxnetError, match="do not match"):
        LutAdder(wrong_names, grad="lut")
    save_npz(_adder_lut(5), tmp_path / "plain.npz")
    with pytest.raises(AxnetError, match="no gradient|none"):
        LutAdder(tmp_path / "plain.npz", grad="lut")


def test_non_finite_input_to_a_quantized_layer_is_an_error():
    layer = Adder2d(1, 2, 3, arith=ExactInt(8))
    x = torch.randn(1, 1, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    with pytest.raises(AxnetError, match="non-finite"):
        layer(x)
    layer.arith = None
    assert torch.isnan(layer(x)).any()  # float mode just propagates, like nn.Conv2d


def test_cell_adder_refuses_lut_gradients_and_bad_k():
    with pytest.raises(AxnetError):
        CellAdder("maj", 2, 32, grad="lut")
    with pytest.raises(AxnetError):
        CellAdder("maj", 33, 32)


def test_lut_gradient_backward_is_reproducible():
    """Same inputs, same gradients bit for bit (the per-thread table sums use a fixed split)."""
    torch.manual_seed(13)
    layer = Adder2d(4, 8, 3, padding=1, arith=LutAdder(gradient_lut(_adder_lut(6, "ama2", 2), 1), grad="lut"))
    x = torch.randn(6, 4, 9, 9)
    grad_out = torch.randn(6, 8, 9, 9)
    first = _grads(layer, x, grad_out)
    for _ in range(3):
        again = _grads(layer, x, grad_out)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("from_file", [False, True])
def test_exact_adder_lut_gradients_are_one_across_zero(from_file, tmp_path):
    """An unsigned exact-adder LUT (with carry-out) gives slope 1 everywhere the layer reads it, also where w or -x
    crosses 0: the layer differentiates its signed n-bit reading, not raw patterns (where 0 and -1 lie 2^n apart)."""
    lut = _adder_lut(8)
    if from_file:  # a gradient file made from the unsigned LUT, as `axnet gradlut adder.npz` writes it
        path = tmp_path / "g.npz"
        save_npz(gradient_lut(lut, 2), path)
        adder = LutAdder(str(path), grad="lut")
        assert adder.half_window == 2
    else:
        adder = LutAdder(lut, grad="lut", half_window=2)
    torch.testing.assert_close(adder.grad_w_slope, torch.ones_like(adder.grad_w_slope))
    torch.testing.assert_close(adder.grad_x_slope, torch.ones_like(adder.grad_x_slope))


def test_layer_slopes_are_the_windowed_difference_of_the_signed_reading():
    """Inside the layer's domain (away from its edges) the slopes equal `gradient_lut` of the n-bit signed view,
    looked up at (w, -x)."""
    lut = _adder_lut(6, "ama2", 3)
    adder = LutAdder(lut, grad="lut", half_window=1)
    view = gradient_lut(adder_view(lut, 6), 1)
    q, inner = adder.qmax, np.arange(-adder.qmax + 2, adder.qmax - 1)
    w, x = np.meshgrid(inner, inner, indexing="ij")
    got_w = adder.grad_w_slope.numpy()[w + q, x + q]
    got_x = adder.grad_x_slope.numpy()[w + q, x + q]
    np.testing.assert_array_equal(got_w, view.grads["a"][w & 63, (-x) & 63])
    np.testing.assert_array_equal(got_x, view.grads["b"][w & 63, (-x) & 63])
