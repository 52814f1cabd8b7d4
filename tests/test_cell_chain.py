"""Cell adders in word arithmetic (issue 10, part 4): `chain_add` (torch) and csrc/cell_chain.c against the slow
references `ripple_add` / `CellAdder.pairwise_sums` and today's compiled `cell_forward`, and the old path for cells
whose carry is not monotone in the carry in."""
import itertools
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.library import CELLS
from dnn import Adder2d, AdderLinear, CellAdder
from dnn.arith.cell_adder import carry_monotone, chain_add, chain_masks, chain_mode, ripple_add, ripple_tables
from dnn.kernels import native as native_kernels
from dnn.kernels.adder_ops import Geometry

needs_native = pytest.mark.skipif(not native_kernels.available(),
                                  reason=f"compiled kernels unavailable: {native_kernels.error()}")

BUNDLED = sorted(CELLS)
KS = (0, 1, 7, 8, 9, 20, 31, 32)


def monotone_tables():
    """Every 8-row table whose carry is monotone in the carry in (sum bits free): 3^4 carries x 2^8 sums, sampled."""
    carries = [(0, 0), (0, 1), (1, 1)]  # (cout at cin 0, cout at cin 1)
    rng = random.Random(3)
    tables = []
    for carry in itertools.product(carries, repeat=4):
        sums = rng.getrandbits(8)
        tables.append([((sums >> (ab * 2 + cin)) & 1, carry[ab][cin]) for ab in range(4) for cin in (0, 1)])
    return tables


def edge_patterns(width):
    top = 1 << (width - 1)
    values = {0, 1, 2, 3, top - 1, top, top + 1, (1 << width) - 1, (1 << width) - 2, 0x5555555555555,
              0xAAAAAAAAAAAAA, top | 1, (top - 1) ^ 1}
    return sorted(v & ((1 << width) - 1) for v in values)


def random_table(seed):
    tables = monotone_tables()
    return tables[seed % len(tables)]


def check_chain_add(rows, width, a, b):
    for k in range(width + 1):
        masks = chain_masks(rows, k, width)
        expected = ripple_add(a, b, ripple_tables(rows, k), k, width)
        assert torch.equal(chain_add(a, b, masks, width), expected), (rows, width, k)


def test_monotone_carry_is_recognised():
    assert all(carry_monotone(CELLS[name]) for name in BUNDLED)
    assert all(carry_monotone(rows) for rows in monotone_tables())
    assert len(monotone_tables()) == 81
    assert not carry_monotone(NON_MONOTONE)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("width", [3, 5, 8, 13, 16, 24, 31, 32, 33, 48])
def test_chain_add_equals_ripple_add_for_bundled_cells(name, width):
    g = torch.Generator().manual_seed(width)
    edges = torch.tensor(edge_patterns(width))
    a = torch.cat([edges.repeat_interleave(len(edges)), torch.randint(0, 1 << width, (400,), generator=g)])
    b = torch.cat([edges.repeat(len(edges)), torch.randint(0, 1 << width, (400,), generator=g)])
    check_chain_add(CELLS[name], width, a, b)


@settings(max_examples=20, deadline=None)
@given(table=st.integers(0, 80), width=st.integers(3, 48), seed=st.integers(0, 2**16))
def test_chain_add_equals_ripple_add_for_random_monotone_tables(table, width, seed):
    rows = random_table(table)
    g = torch.Generator().manual_seed(seed)
    edges = torch.tensor(edge_patterns(width))
    a = torch.cat([edges.repeat_interleave(len(edges)), torch.randint(0, 1 << width, (64,), generator=g)])
    b = torch.cat([edges.repeat(len(edges)), torch.randint(0, 1 << width, (64,), generator=g)])
    check_chain_add(rows, width, a, b)


def test_chain_modes_cover_every_kernel_variant():
    modes = {CellAdder(name, 5, 32).chain_mode for name in BUNDLED}
    assert modes == {0, 1, 2, 3} and CellAdder("maj", 0, 32).chain_mode == 3  # k = 0: exact, b-free d, one addition
    assert {chain_mode(chain_masks(rows, 9, 20), 20) for rows in monotone_tables()} >= {0, 1, 2}


def operands(width, x_shape, w_shape, seed, full=False):
    """Quantized operands, or (full) any width-bit values, edge values included (float64: exact up to 2^53)."""
    g = torch.Generator().manual_seed(seed)
    high = (1 << (width - 1)) if full else (1 << (width - 2)) - 1
    low = -high if not full else -(1 << (width - 1))
    x = torch.randint(low, high, x_shape, generator=g).double()
    w = torch.randint(low, high, w_shape, generator=g).double()
    if full:
        x.view(-1)[:4] = torch.tensor([low, high - 1, 0, -1], dtype=torch.float64)
        w.view(-1)[:4] = torch.tensor([high - 1, low, low, 1], dtype=torch.float64)
    return x, w


# (C, O, kernel, stride, padding, dilation, N, H, W)
SHAPES = [(3, 5, 3, 1, 1, 1, 2, 7, 9), (2, 9, (2, 3), (2, 1), (1, 0), 1, 1, 8, 5), (4, 3, 3, 2, 2, 2, 3, 9, 6),
          (1, 4, 1, 1, 0, 1, 2, 3, 37), (2, 6, 3, 3, 1, (1, 2), 1, 11, 40),
          (2, 5, 3, 1, 1, 1, 1, 4, 30), (2, 3, 3, 2, 1, 1, 2, 5, 52)]  # the last two: whole rows per pass (Wo 30, 26)


@needs_native
@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("width", [13, 16, 31, 32])
def test_compiled_chain_equals_the_references(name, width):
    for i, k in enumerate(KS):
        if k > width:
            continue
        adder = CellAdder(name, k, width)
        C, O, kernel, stride, padding, dilation, N, H, W = SHAPES[i % len(SHAPES)]
        pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
        geom = Geometry(pair(kernel), pair(stride), pair(padding), pair(dilation))
        x, w = operands(width, (N, C, H, W), (O, C, *pair(kernel)), seed=k + width, full=i % 2 == 1)
        got = adder.abs_sums(x, w, geom)
        assert got.dtype == torch.float64 and got.shape == (N, O, *geom.output_size(H, W))
        assert torch.equal(got, adder.pairwise_sums(x, w, geom)), (name, width, k)
        assert torch.equal(got, native_kernels.cell_forward(x, w, geom, adder.chunks, k, width)), (name, width, k)


@needs_native
@settings(max_examples=15, deadline=None)
@given(table=st.integers(0, 80), width=st.sampled_from([13, 16, 31, 32]), k=st.integers(0, 32),
       seed=st.integers(0, 2**16))
def test_compiled_chain_equals_the_reference_for_random_monotone_tables(table, width, k, seed):
    adder = CellAdder(random_table(table), min(k, width), width)
    geom = Geometry((3, 2), (1, 2), (2, 1), (1, 2))
    x, w = operands(width, (2, 3, 7, 10), (6, 3, 3, 2), seed=seed, full=seed % 2 == 1)
    assert torch.equal(adder.abs_sums(x, w, geom), adder.pairwise_sums(x, w, geom))


@needs_native
@pytest.mark.parametrize("name", ["maj", "ama1", "ama5"])
def test_compiled_chain_is_exact_over_many_taps_and_extreme_differences(name):
    # 300 and 600 channels: the 32-bit accumulators are flushed every 255 taps; full-range values make |d| = 2^31
    for c, width, k in ((300, 32, 0), (300, 32, 32), (600, 31, 9)):
        adder = CellAdder(name, k, width)
        geom = Geometry((1, 1))
        x, w = operands(width, (2, c, 2, 3), (5, c, 1, 1), seed=c, full=True)
        x[0, :, 0, 0] = -(1 << (width - 1))
        w[0] = 0  # with k = 0, d = 0 - x = -2^(width-1) (modulo 2^width) at every tap
        got = adder.abs_sums(x, w, geom)
        assert torch.equal(got, adder.pairwise_sums(x, w, geom))
        assert k or got[0, 0, 0, 0] == c * (1 << (width - 1))


def test_torch_chain_path_without_compiled_kernels(monkeypatch):
    from dnn.arith import cell_adder
    from dnn.kernels import netlist_native
    monkeypatch.setattr(native_kernels, "available", lambda: False)
    monkeypatch.setattr(netlist_native, "enabled", lambda: False)  # nor the ripple's generated netlist kernel
    calls = []
    monkeypatch.setattr(cell_adder, "chain_add", lambda *args: calls.append(1) or chain_add(*args))
    geom = Geometry((3, 3), (1, 2), (1, 1))
    for name, width, k in (("maj", 32, 20), ("ama1", 40, 33), ("ama4", 16, 16), ("exact", 20, 0)):
        adder = CellAdder(name, k, width)
        x, w = operands(width, (2, 3, 6, 7), (4, 3, 3, 3), seed=width)
        calls.clear()
        assert torch.equal(adder.abs_sums(x, w, geom), adder.pairwise_sums(x, w, geom))
        assert calls, (name, width, k)  # the word chain in torch served


@pytest.mark.parametrize("name, k, width", [("maj", 9, 32), ("ama2", 32, 32), ("ama3", 0, 16), ("ama5", 20, 31)])
def test_layers_through_the_chain_equal_the_reference(name, k, width):
    torch.manual_seed(k)
    adder = CellAdder(name, k, width)
    conv = Adder2d(3, 5, 3, stride=2, padding=1, arith=adder)
    linear = AdderLinear(7, 4, arith=adder)
    x, v = torch.randn(2, 3, 9, 8), torch.randn(6, 7)
    with torch.no_grad():
        y_conv, y_linear = conv(x), linear(v)
        calls = []
        adder.abs_sums = lambda xq, wq, geom: calls.append(1) or adder.pairwise_sums(xq, wq, geom)
        assert torch.equal(conv(x), y_conv) and torch.equal(linear(v), y_linear) and len(calls) == 2


# cout(0, 1, 0) = 1 but cout(0, 1, 1) = 0: a carry that falls as the carry in rises
NON_MONOTONE = [(0, 0), (1, 0), (1, 1), (0, 0), (1, 0), (0, 1), (0, 1), (1, 1)]


def test_non_monotone_cell_keeps_the_old_path():
    adder = CellAdder(NON_MONOTONE, 12, 32)
    assert adder.masks is None and adder.chain_mode is None
    geom = Geometry((3, 3), (1, 1), (1, 1))
    x, w = operands(32, (2, 2, 5, 4), (3, 2, 3, 3), seed=1)
    assert torch.equal(adder.abs_sums(x, w, geom), adder.pairwise_sums(x, w, geom))
    # and the word formula would be wrong for it: the chain of (g, p) is not this cell's ripple
    a, b = torch.arange(256).repeat_interleave(256), torch.arange(256).repeat(256)
    chained = chain_add(a, b, chain_masks(NON_MONOTONE, 8, 8), 8)
    assert not torch.equal(chained, ripple_add(a, b, ripple_tables(NON_MONOTONE, 8), 8, 8))
    layer = Adder2d(2, 3, 3, padding=1, arith=adder)
    assert torch.isfinite(layer(torch.randn(1, 2, 5, 5))).all()
