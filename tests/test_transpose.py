"""The 64 x 64 bit transpose of the netlist kernels (`csrc/netlist_vec.h`): the GFNI version the AVX-512 build uses,
the butterfly and the narrow one (values below 2^bits) against a plain numpy transpose."""
import ctypes

import numpy as np
import pytest

from dnn.kernels.netlist_native import CSRC
from simulator import native

SOURCE = """#include "netlist_vec.h"
void t_fast(uint64_t *x) { nlv v[64]; memcpy(v, x, sizeof v); nl_transpose(v); memcpy(x, v, sizeof v); }
void t_butterfly(uint64_t *x) { nlv v[64]; memcpy(v, x, sizeof v); nl_transpose_butterfly(v); memcpy(x, v, sizeof v); }
int t_lanes(void) { return NL_LANES; }
#define NARROW(B) void t_narrow##B(uint64_t *x) { nlv v[64]; memcpy(v, x, sizeof v); nl_transpose_narrow(v, B); \
                                                  memcpy(x, v, sizeof v); }
NARROW(3) NARROW(12) NARROW(16) NARROW(32)
"""


def reference(rows):
    """rows (64, lanes) uint64: in every lane, bit r of row c becomes bit c of row r."""
    bits = (rows[:, :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)  # row c, lane, bit r
    out = bits.transpose(2, 1, 0)  # row r, lane, bit c
    return (out << np.arange(64, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)


def test_both_transposes_equal_the_plain_one():
    lib = native.load_library("transpose_test", SOURCE, CSRC)
    if lib is None:
        pytest.skip("no C compiler")
    lanes = lib.t_lanes()
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 2 ** 63, (64, lanes), dtype=np.uint64) * np.uint64(2) + np.uint64(1),
             np.zeros((64, lanes), np.uint64), np.full((64, lanes), ~np.uint64(0)),
             np.eye(64, dtype=np.uint64)[:, :lanes] << np.arange(lanes, dtype=np.uint64)]
    for rows in cases:
        want = reference(rows)
        for fn in (lib.t_fast, lib.t_butterfly):
            x = np.ascontiguousarray(rows.copy())
            fn(ctypes.c_void_p(x.ctypes.data))
            assert np.array_equal(x, want)


@pytest.mark.parametrize("bits", [3, 12, 16, 32])
def test_the_narrow_transpose_gives_the_low_planes(bits):
    """Rows of values below 2^bits: planes 0 .. bits - 1 are those of the full transpose (the rest is scratch)."""
    lib = native.load_library("transpose_test", SOURCE, CSRC)
    if lib is None:
        pytest.skip("no C compiler")
    rng = np.random.default_rng(bits)
    rows = rng.integers(0, 2 ** bits, (64, lib.t_lanes()), dtype=np.uint64)
    x = np.ascontiguousarray(rows.copy())
    getattr(lib, f"t_narrow{bits}")(ctypes.c_void_p(x.ctypes.data))
    assert np.array_equal(x[:bits], reference(rows)[:bits])
