"""LUT file formats: round trips through npz, AppMult text, CSV and the AdaPT header, and malformed files."""
import json
import re

import numpy as np
import pytest

from circuits.errors import AxnetError
from lutgen.formats import (load_lut, load_npz, read_adapt_header, read_appmult, read_csv, save_lut, save_npz,
                            write_adapt_header, write_appmult, write_csv)
from lutgen.gradient import gradient_lut
from lutgen.lut import Lut, pattern_values


def approx_mult_lut(width=3, signed=False, seed=0):
    """An exact product with some deterministic noise, so round trips check values and not a formula."""
    v = pattern_values(width, signed)
    noise = np.random.default_rng(seed).integers(-3, 4, size=(1 << width, 1 << width))
    table = np.multiply.outer(v, v) + (noise if signed else np.abs(noise))
    return Lut(table=table.astype(np.int64), operands=[("a", width), ("b", width)],
               outputs=[f"o[{k}]" for k in range(2 * width)], signed=signed, circuit="noisy_mul", sha256="ab" * 32)


def assert_same(got, want, grads=True):
    assert np.array_equal(got.table, want.table) and got.table.dtype == np.int64
    assert got.operands == want.operands and got.signed == want.signed
    if grads:
        assert (got.grads is None) == (want.grads is None)
        for name in (want.grads or {}):
            assert got.grads[name].dtype == np.float32
            assert np.array_equal(got.grads[name], want.grads[name])


def test_npz_round_trip_keeps_table_gradients_and_meta(tmp_path):
    lut = gradient_lut(approx_mult_lut(4, signed=True), 2)
    path = tmp_path / "m.npz"
    save_npz(lut, path)
    got = load_npz(path)
    assert_same(got, lut)
    assert got.grad_meta == {"half_window": 2, "boundary": "shrink", "method": "diff"}
    assert got.outputs == lut.outputs and got.circuit == "noisy_mul" and got.sha256 == "ab" * 32
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["grad_a", "grad_b", "lut", "meta"]
        meta = json.loads(str(data["meta"]))
    assert meta["operands"] == [{"name": "a", "width": 4}, {"name": "b", "width": 4}]
    assert meta["signed"] is True and meta["axnet_version"] and meta["half_window"] == 2
    assert_same(load_lut(path), lut)


def test_npz_without_gradients_and_with_three_operands(tmp_path):
    table = np.arange(4 * 4 * 2, dtype=np.int64).reshape(4, 4, 2)
    lut = Lut(table=table, operands=[("a", 2), ("b", 2), ("cin", 1)], outputs=[f"s[{k}]" for k in range(5)])
    save_npz(lut, tmp_path / "c.npz")
    got = load_lut(tmp_path / "c.npz")
    assert_same(got, lut) and got.grads is None and got.grad_meta is None


def test_malformed_npz_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(AxnetError, match="bad.npz") as e:
        load_lut(bad)
    assert "\n" not in str(e.value)
    # an object array would need unpickling: refused, not executed
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, lut=np.zeros((2, 2), np.int64), meta=np.array([{"x": 1}], dtype=object))
    with pytest.raises(AxnetError, match="pickled.npz"):
        load_npz(pickled)
    no_meta = tmp_path / "nometa.npz"
    np.savez(no_meta, lut=np.zeros((2, 2), np.int64))
    with pytest.raises(AxnetError, match="no 'meta'"):
        load_npz(no_meta)
    wrong = tmp_path / "shape.npz"
    np.savez(wrong, lut=np.zeros((4, 2), np.int64),
             meta=np.array(json.dumps({"operands": [{"name": "a", "width": 1}, {"name": "b", "width": 1}]})))
    with pytest.raises(AxnetError, match="shape"):
        load_npz(wrong)
    with pytest.raises(AxnetError, match="no such file"):
        load_lut(tmp_path / "missing.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(AxnetError, match="empty"):
        load_lut(tmp_path / "empty.npz")


def test_appmult_round_trip_rounds_gradients_to_sixteenths(tmp_path):
    lut = gradient_lut(approx_mult_lut(3), 1, boundary="appmult")
    path = tmp_path / "m_lutfp+bp_avg_1_1.txt"
    write_appmult(lut, path)
    got = read_appmult(path)
    assert_same(got, lut, grads=False)
    for name in "ab":
        assert np.array_equal(got.grads[name] * 16, np.round(lut.grads[name] * 16))
    assert got.grad_meta["half_window"] == 1 and got.grad_meta["boundary"] == "appmult"
    lines = path.read_text().splitlines()
    title = lines.index("LUT for approximate multiplier:")
    assert lines[title + 1: title + 3] == [f"0 0 {lut.table[0, 0]}", f"0 1 {lut.table[0, 1]}"]
    assert lines[title + 9] == f"1 0 {lut.table[1, 0]}"  # A is the outer loop
    fwd = tmp_path / "m_lutfp.txt"
    write_appmult(approx_mult_lut(3), fwd)
    assert read_appmult(fwd).grads is None and load_lut(fwd).table.shape == (8, 8)


def test_appmult_gradient_rounding_is_half_even(tmp_path):
    lut = approx_mult_lut(2)
    half = np.full((4, 4), 0.5 / 16, np.float32)  # 16 g = 0.5 rounds to 0
    half[0, 1] = 1.5 / 16  # rounds to 2
    half[0, 2] = -2.5 / 16  # rounds to -2
    write_appmult(lut.with_grads({"a": half, "b": half}, {"half_window": 0, "boundary": "appmult",
                                                          "method": "diff"}), tmp_path / "h.txt")
    got = read_appmult(tmp_path / "h.txt")
    assert got.grads["a"][0, 0] == 0 and got.grads["a"][0, 1] * 16 == 2 and got.grads["a"][0, 2] * 16 == -2


@pytest.mark.parametrize("body, message, line", [
    ("LUT for approximate multiplier:\n0 0 0\n0 1 0\n1 0 0\n", "2^(2n) lines", 4),
    ("LUT for approximate multiplier:\n0 0 0\n0 1 0\n1 1 0\n1 0 0\n", "expected operands 1 0", 4),
    ("x\nLUT for approximate multiplier:\n0 0 0\n0 1 zero\n1 0 0\n1 1 0\n", "three integers", 4),
    ("just a header\n", "no 'LUT for approximate multiplier:'", None),
])
def test_malformed_appmult_names_file_and_line(tmp_path, body, message, line):
    path = tmp_path / "bad_lutfp.txt"
    path.write_text(body)
    with pytest.raises(AxnetError, match=re.escape(message)) as e:
        read_appmult(path)
    where = f"{path}:{line}:" if line else f"{path}:"
    assert str(e.value).startswith(where) and "\n" not in str(e.value)


def test_appmult_refuses_shapes_it_cannot_hold(tmp_path):
    with pytest.raises(AxnetError, match="two operands"):
        write_appmult(Lut(table=np.zeros((2, 2, 2), np.int64), operands=[("a", 1), ("b", 1), ("c", 1)],
                          outputs=[]), tmp_path / "x.txt")
    with pytest.raises(AxnetError, match="unsigned"):
        write_appmult(approx_mult_lut(2, signed=True), tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("signed", [False, True])
def test_csv_round_trip(tmp_path, signed):
    lut = gradient_lut(approx_mult_lut(3, signed=signed), 1)
    write_csv(lut, tmp_path / "m.csv")
    got = read_csv(tmp_path / "m.csv")
    assert_same(got, lut)
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0] == "a,b,value,grad_a,grad_b" and len(rows) == 1 + 64
    first = rows[1].split(",")
    assert first[:3] == ["0", "0", str(lut.table[0, 0])]
    if signed:  # operand columns hold values, so raw pattern 7 reads -1
        assert rows[1 + 7 * 8].split(",")[0] == "-1"
    assert_same(load_lut(tmp_path / "m.csv"), lut)


def test_csv_without_gradients_and_malformed(tmp_path):
    lut = approx_mult_lut(2)
    write_csv(lut, tmp_path / "f.csv")
    assert read_csv(tmp_path / "f.csv").grads is None
    text = (tmp_path / "f.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(AxnetError, match="short.csv"):
        read_csv(tmp_path / "short.csv")
    (tmp_path / "junk.csv").write_text("\n".join(text[:3] + ["1,x,3"] + text[4:]) + "\n")
    with pytest.raises(AxnetError, match="junk.csv:4:"):
        read_csv(tmp_path / "junk.csv")


def test_adapt_header_round_trip_and_index_order(tmp_path):
    lut = approx_mult_lut(8, signed=True)
    path = tmp_path / "mul8s.h"
    write_adapt_header(lut, path)
    text = path.read_text()
    assert "int16_t lut[256][256]" in text
    got = read_adapt_header(path)
    assert_same(got, lut, grads=False)
    # row 255 is operand -1 and row 128 is -128 (two's-complement index order)
    rows = text[text.index("{\n") + 2:].splitlines()
    assert rows[255].strip().rstrip(",").strip("{}").split(", ")[1] == str(lut.table[255, 1])
    assert lut.table[255, 1] == got.table[255, 1] and abs(got.table[128, 128] - 128 * 128) <= 3
    assert_same(load_lut(path), lut, grads=False)


def test_adapt_header_reader_accepts_other_spellings_and_refuses_bad_ones(tmp_path):
    values = np.arange(65536, dtype=np.int64).reshape(256, 256) % 1000 - 500
    body = ",\n".join("{" + ",".join(map(str, r)) + "}" for r in values.tolist())
    path = tmp_path / "other.h"
    path.write_text(f"/* comment */\nconst short lut[256][256] = {{\n{body}\n}};\n")
    assert np.array_equal(read_adapt_header(path).table, values)
    path.write_text(f"int16_t lut[256][256] = {{\n{body}\n}};\n".replace("{", "", 2))
    with pytest.raises(AxnetError, match="other.h"):
        read_adapt_header(path)
    short = ",\n".join("{" + ",".join(map(str, r)) + "}" for r in values.tolist()[:255])
    path.write_text(f"int16_t lut[256][256] = {{\n{short}\n}};\n")
    with pytest.raises(AxnetError, match=r"other.h:\d+: 255 rows"):
        read_adapt_header(path)


def test_adapt_refuses_non_8bit_or_unsigned(tmp_path):
    with pytest.raises(AxnetError, match="signed LUT over two 8-bit"):
        write_adapt_header(approx_mult_lut(7, signed=True), tmp_path / "x.h")
    with pytest.raises(AxnetError, match="unsigned"):
        write_adapt_header(approx_mult_lut(8), tmp_path / "x.h")
    assert not (tmp_path / "x.h").exists()


def test_load_lut_sniffs_content_when_the_extension_says_nothing(tmp_path):
    lut = approx_mult_lut(3)
    for fmt in ("npz", "appmult", "csv"):
        path = tmp_path / f"lut_{fmt}.dat"
        save_lut(lut, path, fmt)
        assert_same(load_lut(path), lut, grads=False)
    (tmp_path / "what.dat").write_text("hello\n")
    with pytest.raises(AxnetError, match="unknown LUT format"):
        load_lut(tmp_path / "what.dat")


def test_failed_write_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("precious\n")
    with pytest.raises(AxnetError):
        save_lut(approx_mult_lut(2, signed=True), path, "appmult")
    assert path.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
