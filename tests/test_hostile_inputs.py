"""Issue 12 (Tests): mutated BLIF, PLA, .npz, AppMult, CSV and AdaPT files raise only AxnetError, never another
exception. Each test starts from a valid file, applies hypothesis-drawn byte and token mutations, and reads it."""
import json
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits.blif import read_blif
from circuits.errors import AxnetError
from circuits.pla import read_pla
from lutgen.formats import (load_lut, read_adapt_header, read_appmult, read_csv, save_npz, write_adapt_header,
                            write_appmult, write_csv)
from lutgen.gradient import gradient_lut
from lutgen.lut import Lut, pattern_values

WORKDIR = tempfile.mkdtemp(prefix="axnet-hostile-")
# 80 mutated files per reader in the suite (about a second each); AXNET_FUZZ_EXAMPLES=2000 for a deeper hunt.
FUZZ = settings(max_examples=int(os.environ.get("AXNET_FUZZ_EXAMPLES", "80")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Fragments a hostile or broken file might contain: directives, huge or odd numbers, separators, control bytes.
TOKENS = [b".model", b".inputs", b".outputs", b".names", b".subckt", b".end", b".conn", b".latch", b".exdc",
          b".i", b".o", b".p", b".ilb", b".ob", b".type fr", b".type r", b".e", b"$true", b"$undef", b"a=", b"=",
          b"-", b"~", b"0", b"1", b"2", b"11 1", b"0 0", b"\\\n", b"#", b"\n", b" ", b"\t", b",", b"{", b"}", b";",
          b"/*", b"*/", b"//", b"0x", b"0xFFFFFFFFFFFFFFFFFFFFFFFF", b"-9223372036854775809", b"9" * 30, b"9" * 5000,
          b"1e400", b"nan", b"inf", b"-inf", b"value", b"grad_a", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"PK\x03\x04",
          "é".encode(), b"\r\n", b"[256]", b"LUT for approximate multiplier:",
          b"LUT for the gradient of the approximate multiplier w.r.t. the first operand:",
          b"half smoothing window size for grad_a: 99999999999"]

mutation = st.tuples(st.integers(0, 5), st.floats(0, 1), st.one_of(st.binary(max_size=6), st.sampled_from(TOKENS)))
mutations = st.lists(mutation, min_size=1, max_size=6)


def mutate(data, ops):
    """Apply (kind, where, payload) edits: delete, insert, overwrite, truncate, duplicate a slice, swap halves."""
    for kind, where, payload in ops:
        i = min(int(where * len(data)), len(data))
        n = max(1, len(payload))
        if kind == 0:
            data = data[:i] + data[i + n:]
        elif kind == 1:
            data = data[:i] + payload + data[i:]
        elif kind == 2:
            data = data[:i] + payload + data[i + len(payload):]
        elif kind == 3:
            data = data[:i]
        elif kind == 4:
            data = data[:i] + data[i:i + 40 * n] + data[i:]
        else:
            data = data[i:] + data[:i]
    return data


def read_only_axnet_errors(reader, data, suffix):
    """Write `data` to a file and read it: success or AxnetError are fine, any other exception fails the test."""
    path = os.path.join(WORKDIR, "case" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reader(path)
        except AxnetError as e:
            assert "\n" not in str(e), str(e)


def seed_bytes(writer, lut, suffix):
    path = os.path.join(WORKDIR, "seed" + suffix)
    writer(lut, path)
    with open(path, "rb") as f:
        return f.read()


def small_lut(width=2, signed=False, grads=True):
    v = pattern_values(width, signed)
    lut = Lut(table=np.multiply.outer(v, v).astype(np.int64), operands=[("a", width), ("b", width)],
              outputs=[f"o[{k}]" for k in range(2 * width)], signed=signed, circuit="m")
    return gradient_lut(lut, 1) if grads else lut


BLIF = b"""# hierarchical, with constants, continuations and off-set covers
.model top
.inputs a[0] a[1] \\
 b[0] b[1]
.outputs s[0] s[1] s[2]
.subckt fa a=a[0] b=b[0] cin=$false s=s[0] cout=c1
.subckt fa a=a[1] b=b[1] cin=c1 s=s[1] cout=s[2]
.names dead.A dead.Y
1 1
.end
.model fa
.inputs a b cin
.outputs s cout
.names a b cin s
100 1
010 1
001 1
111 1
.names a b cin cout
00- 0
0-0 0
-00 0
.end
"""

PLA = b""".i 3
.o 2
.ilb a b c
.ob y z
.type fr
.p 3
1-0 10
01- 01
000 00
.e
"""


@FUZZ
@given(mutations)
def test_mutated_blif_raises_only_axnet_errors(ops):
    read_only_axnet_errors(read_blif, mutate(BLIF, ops), ".blif")


@FUZZ
@given(mutations)
def test_mutated_pla_raises_only_axnet_errors(ops):
    read_only_axnet_errors(read_pla, mutate(PLA, ops), ".pla")


APPMULT = seed_bytes(write_appmult, small_lut(), "_lutfp+bp_avg_1_1.txt")
CSV = seed_bytes(write_csv, small_lut(signed=True), ".csv")
NPZ = seed_bytes(lambda lut, p: save_npz(lut, p), small_lut(), ".npz")
ADAPT = seed_bytes(write_adapt_header, small_lut(8, signed=True, grads=False), ".h")


@pytest.mark.parametrize("reader, seed, suffix", [(read_appmult, APPMULT, ".txt"), (read_csv, CSV, ".csv"),
                                                  (read_adapt_header, ADAPT, ".h"), (load_lut, NPZ, ".npz")],
                         ids=["appmult", "csv", "adapt-header", "npz"])
@FUZZ
@given(ops=mutations)
def test_a_mutated_lut_file_raises_only_axnet_errors(reader, seed, suffix, ops):
    read_only_axnet_errors(reader, mutate(seed, ops), suffix)


@FUZZ
@given(mutations, st.sampled_from([".dat", ".txt", ".csv", ".h", ".npz"]))
def test_any_mutated_lut_under_any_name_raises_only_axnet_errors(ops, suffix):
    seed = [APPMULT, CSV, NPZ, ADAPT][len(ops) % 4]
    read_only_axnet_errors(load_lut, mutate(seed, ops), suffix)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
meta_keys = st.sampled_from(["operands", "outputs", "signed", "circuit", "sha256", "half_window", "boundary",
                             "method", "reference"])
arrays = st.sampled_from([
    np.zeros((4, 4), np.int64), np.zeros((2, 2), np.uint64) + np.uint64(2**63), np.zeros((4, 4), np.float32),
    np.zeros((4, 4, 2), np.int8), np.zeros((), np.int64), np.array("text"), np.zeros((0,), np.int64),
    np.ones((2, 2), bool), np.zeros((4, 4), np.complex64)])


@FUZZ
@given(st.dictionaries(meta_keys, json_values, max_size=5), arrays, st.booleans(), st.booleans(),
       st.sampled_from(["lut", "meta", "grad_a", "grad_b", "x"]))
def test_npz_with_arbitrary_meta_and_arrays_raises_only_axnet_errors(meta, table, meta_as_json, add_grads, extra):
    operands = [{"name": "a", "width": 2}, {"name": "b", "width": 2}]
    meta = dict({"operands": operands, "outputs": ["o"] * 4}, **meta)
    members = {"lut": table, "meta": np.array(json.dumps(meta) if meta_as_json else "not json {")}
    if add_grads:
        members["grad_a"] = members["grad_b"] = np.zeros((4, 4), np.float32)
    members[extra] = table
    path = os.path.join(WORKDIR, "built.npz")
    np.savez(path, **members)
    with open(path, "rb") as f:
        read_only_axnet_errors(load_lut, f.read(), ".npz")
