"""Approximate accumulation (issue 11): every path bit-exact against a plain Python loop over the terms, exact
accumulators reproduce today's layers, gradients are the exact sum's, and bad accumulators are one-line errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from circuits.blif import write_blif
from circuits.errors import AxnetError
from circuits.generators import array_multiplier, loa_adder, ripple_carry_adder, signed_array_multiplier
from dnn import (Accumulator, Adder2d, AdderLinear, ApproxConv2d, ApproxLinear, CellAdder, ExactInt, LutMultiplier,
                 NetlistAdder, parse_accum, set_accum)
from dnn.kernels import accum_native
from dnn.kernels.adder_ops import Geometry
from dnn.layers.mult_layers import patches
from lutgen.lut import build_lut

PATHS = ["torch"] + (["native", "scalar"] if accum_native.load(Accumulator("loa:8:k=2")._source(4)) is not None
                     else [])


@pytest.fixture(autouse=True)
def _byte_tables():
    yield
    accum_native.BYTE_TABLES = True


def sums(acc, backend, xq, wq, geom, path):
    """adder_sums on `path`; "scalar" is the compiled kernel without the byte-table lookup."""
    accum_native.BYTE_TABLES = path != "scalar"
    return acc.adder_sums(backend, xq, wq, geom, path="native" if path == "scalar" else path)


def hand_adder_sums(acc, backend, xq, wq, geom):
    """A plain loop: for every output, the terms |d| in F.unfold order (channel, row, column; padding x = 0),
    accumulated one circuit call at a time."""
    n, c, h, w = xq.shape
    o = wq.shape[0]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.padding, geom.dilation
    ho, wo = geom.output_size(h, w)
    diff = lambda wv, xv: int(acc_pair(backend, wv, xv))
    out = torch.zeros(n, o, ho, wo, dtype=torch.float64)
    for b in range(n):
        for f in range(o):
            for y in range(ho):
                for x in range(wo):
                    terms = []
                    for ch in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                yy, xx = y * sh - ph + i * dh, x * sw - pw + j * dw
                                xv = int(xq[b, ch, yy, xx]) if 0 <= yy < h and 0 <= xx < w else 0
                                terms.append(abs(diff(int(wq[f, ch, i, j]), xv)))
                    out[b, f, y, x] = loop_accumulate(acc, terms, signed=acc.signed)
    return out


def acc_pair(backend, wv, xv):
    from dnn.arith.accumulate import pair_differences
    return pair_differences(backend, torch.tensor([wv]), torch.tensor([xv]))[0]


def loop_accumulate(acc, terms, signed):
    mask = (1 << acc.bits) - 1
    terms = [t & mask for t in terms]
    if acc.order == "sequential":
        value = 0
        for t in terms:
            value = acc.add_int(value, t)
    else:
        while len(terms) > 1:
            terms = [acc.add_int(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)] + \
                    ([terms[-1]] if len(terms) % 2 else [])
        value = terms[0]
    if signed and value >= 1 << (acc.bits - 1):
        value -= 1 << acc.bits
    return value


@pytest.fixture(scope="module")
def loa_blif(tmp_path_factory):
    path = tmp_path_factory.mktemp("acc") / "loa12_k5.blif"
    write_blif(loa_adder(12, 5), path)
    return str(path)


def quantized(backend, shape_x, shape_w, seed):
    g = torch.Generator().manual_seed(seed)
    q = backend.qmax
    return (torch.randint(-q, q + 1, shape_x, generator=g).float(),
            torch.randint(-q, q + 1, shape_w, generator=g).float())


@pytest.mark.parametrize("order", ["sequential", "tree"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("spec", ["blif", "eta1:11:k=4", "rca:10:cell=ama1:k=6", "trunc:12:k=3"])
def test_adder_layer_paths_match_a_plain_loop(order, signed, spec, loa_blif):
    acc = Accumulator(loa_blif if spec == "blif" else spec, order=order, signed=signed)
    backend = CellAdder("maj", approx_bits=2, width=6)
    geom = Geometry((3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    xq, wq = quantized(backend, (2, 3, 5, 6), (4, 3, 3, 2), seed=len(spec) + signed)
    want = hand_adder_sums(acc, backend, xq, wq, geom)
    assert torch.equal(acc.adder_sums(backend, xq, wq, geom, path="reference"), want)
    for path in PATHS:
        assert torch.equal(sums(acc, backend, xq, wq, geom, path), want), path


@pytest.mark.parametrize("backend", [ExactInt(6), ExactInt(11), CellAdder("ama3", approx_bits=3, width=7),
                                     NetlistAdder(ripple_carry_adder(6, "ama1", 2)),
                                     NetlistAdder(ripple_carry_adder(10, "ama1", 3), table_bits=0),
                                     CellAdder("maj", approx_bits=4, width=14)])
def test_every_adder_back_end_gives_its_terms(backend):
    acc = Accumulator("loa:16:k=3", order="tree")
    geom = Geometry((2, 2), padding=(1, 0))
    xq, wq = quantized(backend, (1, 2, 3, 3), (3, 2, 2, 2), seed=3)
    want = hand_adder_sums(acc, backend, xq, wq, geom)
    for path in ["reference"] + PATHS:
        assert torch.equal(sums(acc, backend, xq, wq, geom, path), want), path


def mult_luts():
    unsigned = LutMultiplier(build_lut(array_multiplier(4, 3)))
    signed = LutMultiplier(build_lut(signed_array_multiplier(4, 4), signed=True))
    return [unsigned, signed]


@pytest.mark.parametrize("order", ["sequential", "tree"])
@pytest.mark.parametrize("mult", mult_luts(), ids=["unsigned", "signed"])
def test_multiplier_paths_match_a_plain_loop(order, mult, loa_blif):
    acc = Accumulator(loa_blif, order=order)
    g = torch.Generator().manual_seed(5)
    (a0, a1), (b0, b1) = mult.qrange(0), mult.qrange(1)
    qx = torch.randint(a0, a1 + 1, (2, 3, 4, 4), generator=g).float()
    qw = torch.randint(b0, b1 + 1, (5, 3, 2, 2), generator=g).float()
    cols, _, _ = patches(F.pad(qx, (1, 1, 1, 1)), (2, 2), (1, 1), (1, 1))  # (M, K), F.unfold column order
    w2 = qw.reshape(5, -1)
    want = torch.tensor([[loop_accumulate(acc, [int(mult.values[int(x) - a0, int(w) - b0]) for x, w in zip(row, f)],
                                          signed=True) for f in w2] for row in cols], dtype=torch.float64)
    for path in ["reference"] + PATHS:
        accum_native.BYTE_TABLES = path != "scalar"
        got = acc.mult_sums(mult, cols, w2, path="native" if path == "scalar" else path)
        assert torch.equal(got, want), path


def adder_pair(cls, accum, seed):
    torch.manual_seed(seed)
    if cls is Adder2d:
        plain = Adder2d(3, 5, 3, padding=1, arith=ExactInt(8))
        x = torch.randn(2, 3, 6, 6)
    else:
        plain = AdderLinear(20, 7, arith=ExactInt(8))
        x = torch.randn(4, 20)
    other = type(plain)(*((3, 5, 3) if cls is Adder2d else (20, 7)), **({"padding": 1} if cls is Adder2d else {}),
                        arith=ExactInt(8), accum=accum)
    other.load_state_dict(plain.state_dict())
    return plain, other, x


@pytest.mark.parametrize("cls", [Adder2d, AdderLinear])
@pytest.mark.parametrize("order", ["sequential", "tree"])
def test_exact_wide_accumulator_is_todays_adder_layer(cls, order):
    plain, other, x = adder_pair(cls, Accumulator("rca:16:k=0", order=order), seed=1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), other(xb)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad) and torch.equal(plain.weight.grad, other.weight.grad)


@pytest.mark.parametrize("cls", [ApproxConv2d, ApproxLinear])
@pytest.mark.parametrize("mult", mult_luts(), ids=["unsigned", "signed"])
def test_exact_wide_accumulator_is_todays_multiplier_layer(cls, mult):
    torch.manual_seed(2)
    args, x = ((3, 4, 3), torch.randn(2, 3, 5, 5)) if cls is ApproxConv2d else ((12, 6), torch.randn(3, 12))
    kw = {"padding": 1} if cls is ApproxConv2d else {}
    plain = cls(*args, mult=mult, **kw)
    other = cls(*args, mult=mult, accum=Accumulator("rca:20:k=0", order="tree"), **kw)
    other.load_state_dict(plain.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), other(xb)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    # the same straight-through gradients; the exact conv layer computes them in one fused kernel (another
    # summation order), so they agree to rounding
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.weight.grad, other.weight.grad, rtol=1e-5, atol=1e-4)


def test_approximate_accumulator_changes_forward_not_backward():
    plain, other, x = adder_pair(Adder2d, Accumulator("loa:16:k=8"), seed=4)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), other(xb)
    assert not torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    assert torch.equal(xa.grad, xb.grad) and torch.equal(plain.weight.grad, other.weight.grad)


def test_truncation_of_every_bit_gives_zero_and_set_accum_reaches_every_layer():
    model = torch.nn.Sequential(Adder2d(1, 2, 3, arith=ExactInt(8)), torch.nn.Flatten(), AdderLinear(8, 3,
                                arith=ExactInt(8)))
    assert set_accum(model, Accumulator("trunc:16:k=16")) == 2
    assert torch.equal(model(torch.randn(2, 1, 4, 4)), torch.zeros(2, 3))


def test_wrapping_follows_the_register():
    acc = Accumulator("rca:4:k=0")  # 4-bit exact: sums wrap modulo 16
    cols = torch.tensor([[0, 1, 2]])
    pair = torch.tensor([[7, 5, 9]])
    for path in ["reference"] + PATHS:
        accum_native.BYTE_TABLES = path != "scalar"
        path = "native" if path == "scalar" else path
        assert acc.accumulate(cols, torch.zeros(1, 3, dtype=torch.long), pair, False, path).item() == 21 % 16


def test_bad_accumulators_are_one_line_errors(tmp_path):
    with pytest.raises(AxnetError, match="order 'zigzag'"):
        Accumulator("loa:16:k=4", order="zigzag")
    with pytest.raises(AxnetError, match="two operands"):
        Accumulator(ripple_carry_adder(8, carry_in=True))
    path = tmp_path / "mul.blif"
    write_blif(array_multiplier(4, 3), path)
    with pytest.raises(AxnetError, match="equal width") as err:
        Accumulator(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    layer = Adder2d(2, 2, 3, arith=ExactInt(8), accum=Accumulator("loa:6:k=2"))  # |d| reaches 126: 7 bits
    with pytest.raises(AxnetError, match="narrower than a single term"):
        layer(torch.randn(1, 2, 4, 4))
    with pytest.raises(AxnetError, match="no integer arithmetic"):
        Adder2d(2, 2, 3, accum=Accumulator("loa:16:k=2"))(torch.randn(1, 2, 4, 4))
    with pytest.raises(AxnetError, match="--accum 'loa:16:k=x'"):
        parse_accum("loa:16:k=x")
    with pytest.raises(AxnetError, match="not sequential or tree"):
        parse_accum("loa:16:k=2:order=up")
    with pytest.raises(AxnetError, match="no such file"):
        parse_accum("nothere.blif")


def test_parse_accum_specs():
    acc = parse_accum("trunc:16:k=4:order=tree")
    assert (acc.bits, acc.order, acc.spec) == (16, "tree", "trunc:16:k=4:order=tree")
    assert parse_accum("none") is None
    assert parse_accum("rca:12:cell=ama2:k=3").bits == 12


def test_a_multiplier_without_a_product_table_is_refused_in_one_line():
    from dnn.arith.netlist_multiplier import NetlistMultiplier
    mult = NetlistMultiplier(array_multiplier(12, 12))
    layer = ApproxLinear(4, 3, mult=mult, accum=Accumulator("loa:32:k=2"))
    with pytest.raises(AxnetError, match="no product table"):
        layer(torch.randn(2, 4))


def test_order_matters_only_for_non_associative_accumulators():
    """LOA (OR low part, AND carry) and truncation are associative and commutative, so the tree equals the MAC
    unit exactly; a ripple with MAJ cells is not, so the two orders differ (the tree order is really taken)."""
    backend = ExactInt(8)
    xq, wq = quantized(backend, (2, 8, 5, 5), (4, 8, 3, 3), seed=9)
    geom = Geometry((3, 3), padding=(1, 1))
    for spec in ("loa:16:k=3", "trunc:16:k=2"):
        seq, tree = (Accumulator(spec, order=o).adder_sums(backend, xq, wq, geom) for o in ("sequential", "tree"))
        assert torch.equal(seq, tree), spec
    seq, tree = (Accumulator("rca:16:cell=maj:k=4", order=o).adder_sums(backend, xq, wq, geom)
                 for o in ("sequential", "tree"))
    assert not torch.equal(seq, tree)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 11, 16, 17, 31, 33, 64, 100])
def test_tree_of_every_length_matches_the_plain_loop(k):
    acc = Accumulator("rca:12:cell=maj:k=5", order="tree")  # not associative: every pairing shows
    g = torch.Generator().manual_seed(k)
    pair = torch.randint(0, 200, (6, 50), generator=g)
    cols = torch.randint(0, 50, (70, k), generator=g)
    w_index = torch.randint(0, 6, (3, k), generator=g)
    want = acc.accumulate(cols, w_index, pair, False, "reference")
    for path in PATHS:
        accum_native.BYTE_TABLES = path != "scalar"
        assert torch.equal(acc.accumulate(cols, w_index, pair, False, "native" if path == "scalar" else path),
                           want), path
