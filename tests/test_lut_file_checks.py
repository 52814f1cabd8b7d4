"""Issue 12 items 12-14 for LUT files: values that do not fit, broken or hostile .npz files, BOMs, --operands,
and the reference guess."""
import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from circuits.blif import parse_blif, read_blif
from circuits.errors import AxnetError
from circuits.pla import read_pla
from lutgen.formats import load_lut, load_npz, read_adapt_header, save_lut, save_npz, write_adapt_header
from lutgen.lut import Lut, pattern_values
from lutgen.operands import parse_widths
from lutgen.reference import guess_from_widths, guess_reference


def adder_lut(width=8, signed=False):
    v = pattern_values(width, signed)
    return Lut(table=np.add.outer(v, v).astype(np.int64), operands=[("a", width), ("b", width)],
               outputs=[f"s[{k}]" for k in range(width + 1)], signed=signed, circuit="add")


def mul_lut(width=8, signed=False):
    v = pattern_values(width, signed)
    return Lut(table=np.multiply.outer(v, v).astype(np.int64), operands=[("a", width), ("b", width)],
               outputs=[f"p[{k}]" for k in range(2 * width)], signed=signed, circuit="mul")


def write_npz(path, table, meta):
    np.savez(path, lut=table, meta=np.array(json.dumps(meta)))


def meta_for(width, outputs, signed=False):
    return {"operands": [{"name": "a", "width": width}, {"name": "b", "width": width}],
            "outputs": [f"o[{k}]" for k in range(outputs)], "signed": signed}


# ---- item 12: values that do not fit the declared output bits ------------------------------------------------------

def test_npz_value_beyond_its_output_bits_is_refused_naming_file_and_entry(tmp_path):
    table = np.add.outer(np.arange(4), np.arange(4)).astype(np.int64)
    table[2, 3] = 1 << 62
    path = tmp_path / "big.npz"
    write_npz(path, table, meta_for(2, 3))
    with pytest.raises(AxnetError) as e:
        load_lut(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "[a=2, b=3] = 4611686018427387904" in msg and "3 unsigned" in msg
    assert "\n" not in msg
    table[2, 3] = 8  # one more than 3 unsigned bits hold
    write_npz(path, table, meta_for(2, 3))
    with pytest.raises(AxnetError, match=r"\[a=2, b=3\] = 8 .*\(0\.\.7\)"):
        load_lut(path)
    table[2, 3] = -1  # negative in an unsigned LUT
    write_npz(path, table, meta_for(2, 3))
    with pytest.raises(AxnetError, match=r"= -1 "):
        load_lut(path)
    table[2, 3] = 5
    write_npz(path, table, meta_for(2, 3))
    assert load_lut(path).table[2, 3] == 5


def test_npz_signed_and_unnamed_outputs_and_uint64(tmp_path):
    path = tmp_path / "s.npz"
    table = np.zeros((4, 4), np.int64)
    table[3, 1] = -5  # signed 3 bits hold -4..3; operand pattern 3 of 2 signed bits reads -1
    write_npz(path, table, meta_for(2, 3, signed=True))
    with pytest.raises(AxnetError, match=r"\[a=-1, b=1\] = -5 .*3 signed"):
        load_lut(path)
    table[3, 1] = 1 << 62  # no output names: the 62-bit limit of any LUT entry
    write_npz(path, table, meta_for(2, 0))
    with pytest.raises(AxnetError, match="62 unsigned"):
        load_lut(path)
    huge = np.zeros((4, 4), np.uint64)
    huge[0, 1] = (1 << 63) + 5  # would wrap to a negative int64 if cast before the check
    write_npz(path, huge, meta_for(2, 0))
    with pytest.raises(AxnetError, match=str((1 << 63) + 5)):
        load_lut(path)


def test_text_formats_refuse_values_that_do_not_fit(tmp_path):
    appmult = tmp_path / "m_lutfp.txt"
    body = ["LUT for approximate multiplier:"] + [f"{a} {b} {a * b}" for a in range(2) for b in range(2)]
    body[4] = f"1 1 {1 << 70}"
    appmult.write_text("\n".join(body) + "\n")
    with pytest.raises(AxnetError, match=rf"m_lutfp.txt:5: result {1 << 70} is outside"):
        load_lut(appmult)
    body[4] = "1 1 -1"
    appmult.write_text("\n".join(body) + "\n")
    with pytest.raises(AxnetError, match=r"m_lutfp.txt:5: result -1 is outside 0\.\."):
        load_lut(appmult)
    csv = tmp_path / "t.csv"
    rows = ["a,b,value"] + [f"{a},{b},{a + b}" for a in range(2) for b in range(2)]
    rows[3] = f"1,0,{1 << 62}"
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(AxnetError, match=r"t.csv:4: value 4611686018427387904 is outside"):
        load_lut(csv)
    rows[3] = f"1,0,{1 << 64}"  # beyond int64 too: a one-line error, not an OverflowError
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(AxnetError, match=r"t.csv:4:"):
        load_lut(csv)


def adapt_text(values, type_name="int16_t"):
    body = ",\n".join("{" + ",".join(map(str, r)) + "}" for r in values.tolist())
    return f"{type_name} lut[256][256] = {{\n{body}\n}};\n"


def test_adapt_entries_must_fit_the_declared_type(tmp_path):
    values = mul_lut(8, signed=True).table.copy()
    values[255, 2] = 40000
    path = tmp_path / "big.h"
    path.write_text(adapt_text(values))
    with pytest.raises(AxnetError, match=r"big.h:1: entry \[a=-1, b=2\] = 40000 does not fit the declared int16_t"):
        read_adapt_header(path)
    path.write_text(adapt_text(values, "int32_t"))
    assert read_adapt_header(path).table[255, 2] == 40000
    values[0, 0] = 0  # below: 2^70 in a `long` table read through the careful tokenizer (a comment in the body)
    text = adapt_text(values, "long").replace("{\n{0,", "{ /* careful path */\n{" + str(1 << 70) + ",", 1)
    path.write_text(text)
    with pytest.raises(AxnetError, match=rf"big.h:1: entry \[a=0, b=0\] = {1 << 70} does not fit the declared long"):
        read_adapt_header(path)


# ---- item 13: non-zip, truncated and hostile .npz files; BOMs ---------------------------------------------------------

def test_non_zip_and_truncated_npz_get_axnet_messages(tmp_path):
    bad = tmp_path / "text.npz"
    bad.write_text("hello, this is not a zip\n")
    with pytest.raises(AxnetError) as e:
        load_lut(bad)
    assert "not a zip archive" in str(e.value) and "allow_pickle" not in str(e.value)
    npy = tmp_path / "plain.npz"  # a bare .npy under an .npz name
    np.save(open(npy, "wb"), np.zeros(3))
    with pytest.raises(AxnetError, match="not a zip archive"):
        load_lut(npy)
    good = tmp_path / "good.npz"
    save_npz(mul_lut(4), good)
    data = good.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 30, 40):
        short = tmp_path / f"cut{cut}.npz"
        short.write_bytes(data[:cut])
        with pytest.raises(AxnetError) as e:
            load_lut(short)
        assert str(e.value).startswith(str(short)) and "allow_pickle" not in str(e.value)
        assert "\n" not in str(e.value)


def test_npy_header_larger_than_its_member_is_refused(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)})
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("lut.npy", buf.getvalue() + b"\0" * 64)
        z.writestr("meta.npy", b"")
    with pytest.raises(AxnetError, match="truncated"):
        load_npz(path)


class Hostile:
    """Unpickling this creates a marker file: proof that a reader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_in_an_npz_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    in_zip = tmp_path / "obj.npz"
    np.savez(in_zip, lut=np.array([Hostile(marker)], dtype=object), meta=np.array(json.dumps(meta_for(1, 2))))
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Hostile(marker)))
    as_meta = tmp_path / "meta.npz"
    np.savez(as_meta, lut=np.zeros((2, 2), np.int64), meta=np.array([Hostile(marker)], dtype=object))
    for path in (in_zip, raw, as_meta):
        with pytest.raises(AxnetError, match=path.name):
            load_lut(path)
    # control: the same pickle does run when loaded unsafely, so the test would notice
    assert not marker.exists()
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_utf8_bom_is_accepted_in_blif_and_pla(tmp_path):
    blif = tmp_path / "and.blif"
    blif.write_bytes("\ufeff.model and\n.inputs a b\n.outputs y\n.names a b y\n11 1\n.end\n".encode("utf-8"))
    net = read_blif(blif)
    assert net.name == "and" and [net.evaluate_int(p) for p in range(4)] == [0, 0, 0, 1]
    pla = tmp_path / "and.pla"
    pla.write_bytes("\ufeff.i 2\n.o 1\n11 1\n.e\n".encode("utf-8"))
    assert [read_pla(pla).evaluate_int(p) for p in range(4)] == [0, 0, 0, 1]
    with pytest.raises(AxnetError):  # a BOM anywhere else is still not BLIF
        parse_blif(".model x\n.inputs a\n.outputs y\n\ufeff.names a y\n1 1\n")


# ---- item 14: --operands and the reference guess -------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["8,,8", ",8", "8,8,", "8,x", "8,0", "", " , "])
def test_operands_with_an_empty_or_bad_field_are_refused(text):
    with pytest.raises(AxnetError, match="--operands"):
        parse_widths(text)


def test_operands_accept_spaces():
    assert parse_widths("8, 8 ,1") == [8, 8, 1]


def test_adapt_header_of_an_adder_guesses_add(tmp_path):
    path = tmp_path / "add8s.h"
    write_adapt_header(adder_lut(8, signed=True), path)
    lut = load_lut(path)
    assert len(lut.outputs) == 16  # AdaPT's int16_t: the shape alone would say "multiplier"
    assert guess_from_widths(lut.operands, len(lut.outputs))[0] == "mul"
    ref, why = guess_reference(lut)
    assert ref == "add" and "values" in why
    write_adapt_header(mul_lut(8, signed=True), path)
    assert guess_reference(load_lut(path))[0] == "mul"


def test_a_recorded_reference_wins_and_survives_adapt_and_npz(tmp_path):
    lut = adder_lut(8, signed=True)
    lut.extra["reference"] = "sub"
    write_adapt_header(lut, tmp_path / "x.h")
    assert guess_reference(load_lut(tmp_path / "x.h")) == ("sub", "recorded in the LUT file")
    save_lut(lut, tmp_path / "x.npz")
    assert guess_reference(load_lut(tmp_path / "x.npz"))[0] == "sub"


def test_guess_from_values_for_unsigned_and_approximate_tables():
    assert guess_reference(mul_lut(7))[0] == "mul"
    noisy = adder_lut(6)
    noisy.table[::3] ^= 1  # an approximate adder is still an adder
    assert guess_reference(noisy)[0] == "add"
    carry = Lut(table=np.zeros((4, 4, 2), np.int64), operands=[("a", 2), ("b", 2), ("cin", 1)], outputs=["s"] * 3)
    assert guess_reference(carry)[0] == "add"
    assert guess_from_widths([("a", 7), ("b", 7)], 14)[0] == "mul"
    assert guess_from_widths([("a", 8), ("b", 8)], 9)[0] == "add"


def test_sampled_value_distances_agree_with_the_full_table():
    from lutgen.reference import value_distances

    lut = mul_lut(10)  # 2^20 entries: the guess samples 2^16 of them
    lut.table[:, ::7] += 1000
    v = lut.operand_values(0).astype(np.float64)
    full_add = np.mean(np.abs(lut.table - np.add.outer(v, v)))
    full_mul = np.mean(np.abs(lut.table - np.multiply.outer(v, v)))
    d_add, d_mul = value_distances(lut)
    assert abs(d_add - full_add) < 0.02 * full_add and abs(d_mul - full_mul) < 0.05 * full_mul
    assert guess_reference(lut)[0] == "mul"


@pytest.mark.parametrize("suffix", [".csv", ".txt", ".h", ".blif", ".pla"])
def test_a_file_holding_only_a_bom_is_empty(tmp_path, suffix):
    """Found by the fuzz run: a lone UTF-8 BOM once reached the CSV parser as a file with no lines."""
    from circuits.read import read_circuit
    from lutgen.formats import load_lut
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf\n")
    reader = read_circuit if suffix in (".blif", ".pla") else load_lut
    with pytest.raises(AxnetError, match="empty file"):
        reader(path)
