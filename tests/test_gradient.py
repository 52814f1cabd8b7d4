"""Gradient LUTs: analytic slopes of exact operations, and both boundary rules against slow loop references."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from circuits.errors import AxnetError
from lutgen.gradient import gradient_lut
from lutgen.lut import Lut, pattern_values


def exact_lut(op, wa, wb=None, signed=False):
    """A LUT of an exact operation built straight from numbers (no circuit needed)."""
    wb = wa if wb is None else wb
    a = pattern_values(wa, signed)[:, None]
    b = pattern_values(wb, signed)[None, :]
    table = {"add": a + b, "mul": a * b, "sub": a - b}[op]
    return Lut(table=np.ascontiguousarray(table), operands=[("a", wa), ("b", wb)], outputs=[], signed=signed)


def slow_shrink(values, w):
    """Loop reference along the last axis: half window h = min(w, i-1, n-2-i), one-sided at the two ends."""
    rows, n = values.shape
    g = np.zeros((rows, n))
    for r in range(rows):
        L = [int(x) for x in values[r]]
        for i in range(n):
            if i == 0:
                g[r, i] = L[1] - L[0]
            elif i == n - 1:
                g[r, i] = L[n - 1] - L[n - 2]
            else:
                h = min(w, i - 1, n - 2 - i)
                smooth_next = sum(L[i + 1 - h: i + 2 + h]) / (2 * h + 1)
                smooth_prev = sum(L[i - 1 - h: i + h]) / (2 * h + 1)
                g[r, i] = (smooth_next - smooth_prev) / 2
    return g


def slow_appmult(table, w):
    """Loop reference of the published rule: float32 means, float32 difference, range/N outside the interior."""
    n = table.shape[0]
    L = table.astype(np.int64)

    def mean(vals):
        return np.float32(sum(int(v) for v in vals) / (2 * w + 1))

    ga = np.zeros((n, n), np.float32)
    gb = np.zeros((n, n), np.float32)
    for a in range(n):
        for b in range(n):
            if w + 1 <= b <= n - 2 - w:
                gb[a, b] = (mean(L[a, b - w + 1: b + w + 2]) - mean(L[a, b - w - 1: b + w])) / np.float32(2)
            else:
                gb[a, b] = np.float32(L[a].max() - L[a].min()) / np.float32(n)
            if w + 1 <= a <= n - 2 - w:
                ga[a, b] = (mean(L[a - w + 1: a + w + 2, b]) - mean(L[a - w - 1: a + w, b])) / np.float32(2)
            else:
                ga[a, b] = np.float32(L[b].max() - L[b].min()) / np.float32(n)  # the tool reads row b
    return ga, gb


@pytest.mark.parametrize("boundary", ["shrink", "appmult"])
@pytest.mark.parametrize("w", [0, 1, 3])
def test_exact_adder_and_multiplier_interior_slopes(boundary, w):
    n = 32
    inner = slice(w + 1, n - 1 - w)
    add = gradient_lut(exact_lut("add", 5), w, boundary=boundary)
    assert np.all(add.grads["a"][inner, :] == 1) and np.all(add.grads["b"][:, inner] == 1)
    mul = gradient_lut(exact_lut("mul", 5), w, boundary=boundary)
    a = np.arange(n)[:, None]
    b = np.arange(n)[None, :]
    assert np.array_equal(mul.grads["a"][inner, :], np.broadcast_to(b, (n, n))[inner, :])
    assert np.array_equal(mul.grads["b"][:, inner], np.broadcast_to(a, (n, n))[:, inner])
    assert add.grads["a"].dtype == np.float32 and add.grad_meta == {"half_window": w, "boundary": boundary,
                                                                     "method": "diff"}


def test_shrink_is_exact_everywhere_for_linear_slices():
    """With shrinking windows an exact multiplier's slopes hold at the edges too (no flat constants)."""
    mul = gradient_lut(exact_lut("mul", 4, 6), 3)
    a = np.arange(16)[:, None].astype(np.float32)
    b = np.arange(64)[None, :].astype(np.float32)
    assert np.array_equal(mul.grads["a"], np.broadcast_to(b, (16, 64)))
    assert np.array_equal(mul.grads["b"], np.broadcast_to(a, (16, 64)))


def test_signed_lut_is_differentiated_in_numeric_order():
    """A signed multiplier's slope is the other operand's value everywhere, including across the 011..1/100..0
    wrap, and the result stays indexed by raw patterns."""
    lut = exact_lut("mul", 5, signed=True)
    g = gradient_lut(lut, 2)
    va = pattern_values(5, True)
    assert np.array_equal(g.grads["a"], np.broadcast_to(va[None, :], (32, 32)).astype(np.float32))
    assert np.array_equal(g.grads["b"], np.broadcast_to(va[:, None], (32, 32)).astype(np.float32))
    sub = gradient_lut(exact_lut("sub", 4, signed=True), 1)
    assert np.all(sub.grads["a"] == 1) and np.all(sub.grads["b"] == -1)


@settings(max_examples=25, deadline=None)
@given(wa=st.integers(1, 5), wb=st.integers(1, 5), w=st.integers(0, 5), signed=st.booleans(), seed=st.integers(0, 99))
def test_shrink_matches_loop_reference(wa, wb, w, signed, seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(-500, 500, size=(1 << wa, 1 << wb))
    lut = Lut(table=table, operands=[("x", wa), ("y", wb)], outputs=[], signed=signed)
    got = gradient_lut(lut, w)
    oa, ob = np.argsort(pattern_values(wa, signed)), np.argsort(pattern_values(wb, signed))
    numeric = table[np.ix_(oa, ob)]
    want_b = slow_shrink(numeric, w)
    want_a = slow_shrink(numeric.T, w).T
    ia, ib = np.argsort(oa), np.argsort(ob)
    np.testing.assert_allclose(got.grads["y"], want_b[np.ix_(ia, ib)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.grads["x"], want_a[np.ix_(ia, ib)], rtol=1e-6, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(width=st.integers(2, 5), w=st.integers(0, 4), seed=st.integers(0, 99))
def test_appmult_boundary_matches_loop_reference_bit_for_bit(width, w, seed):
    table = np.random.default_rng(seed).integers(0, 4000, size=(1 << width, 1 << width))
    got = gradient_lut(Lut(table=table, operands=[("a", width), ("b", width)], outputs=[]), w, boundary="appmult")
    want_a, want_b = slow_appmult(table, w)
    assert np.array_equal(got.grads["a"], want_a)
    assert np.array_equal(got.grads["b"], want_b)


def test_ste_gives_the_exact_operation_gradient():
    lut = exact_lut("mul", 3, signed=True)
    g = gradient_lut(lut, method="ste", reference="mul")
    v = pattern_values(3, True).astype(np.float32)
    assert np.array_equal(g.grads["a"], np.broadcast_to(v[None, :], (8, 8)))
    assert np.array_equal(g.grads["b"], np.broadcast_to(v[:, None], (8, 8)))
    sub = gradient_lut(lut, method="ste", reference="sub")
    assert np.all(sub.grads["a"] == 1) and np.all(sub.grads["b"] == -1)
    assert g.grad_meta["method"] == "ste" and g.grad_meta["reference"] == "mul"
    with pytest.raises(AxnetError, match="--reference"):
        gradient_lut(lut, method="ste")


def test_bad_requests_are_refused():
    three = Lut(table=np.zeros((4, 4, 2), np.int64), operands=[("a", 2), ("b", 2), ("cin", 1)], outputs=[])
    with pytest.raises(AxnetError, match="exactly two operands"):
        gradient_lut(three, 1)
    lut = exact_lut("add", 3)
    with pytest.raises(AxnetError, match="--half-window"):
        gradient_lut(lut, -1)
    with pytest.raises(AxnetError, match="--half-window"):
        gradient_lut(lut, None)
    with pytest.raises(AxnetError, match="equal width"):
        gradient_lut(exact_lut("add", 3, 4), 1, boundary="appmult")
    with pytest.raises(AxnetError, match="--boundary"):
        gradient_lut(lut, 1, boundary="flat")
