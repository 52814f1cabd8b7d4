"""Conformance with the published AppMult files: forward LUTs from the BLIF netlists and gradient LUTs (boundary
"appmult") must match every `A B value` line, as /work/shared/tools/check_appmult.py checks through the CLI."""
import re
from pathlib import Path

import numpy as np
import pytest

from circuits.blif import read_blif
from lutgen.formats import APPMULT_TITLES, read_appmult, write_appmult
from lutgen.gradient import gradient_lut
from lutgen.lut import build_lut

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "appmult"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AppMult fixtures not found at {FIXTURES}")
STEMS = sorted(p.name[: -len("_sop.blif")] for p in FIXTURES.glob("*_sop.blif")) if FIXTURES.is_dir() else []


def numeric_sections(path):
    """{title: ['A B value', ...]} with whitespace normalised, as the published checker compares them."""
    out, current = {}, None
    for line in Path(path).read_text().splitlines():
        text = line.strip()
        if text in APPMULT_TITLES:
            current = out.setdefault(text, [])
        elif current is not None and text:
            current.append(" ".join(text.split()))
    return out


def gradient_file(stem):
    (path,) = FIXTURES.glob(f"{stem}_lutfp+bp_avg_*.txt")
    return path, int(re.search(r"_avg_(\d+)_\d+\.txt$", path.name).group(1))


def test_all_three_fixture_circuits_are_present():
    assert len(STEMS) == 3


@pytest.mark.parametrize("stem", STEMS)
def test_forward_lut_from_blif_matches_published_file(stem, tmp_path):
    lut = build_lut(read_blif(FIXTURES / f"{stem}_sop.blif"))
    published = read_appmult(FIXTURES / f"{stem}_lutfp.txt")
    assert lut.operands[0][1] == lut.operands[1][1] == published.widths[0]
    assert np.array_equal(lut.table, published.table)
    out = tmp_path / "fwd.txt"
    write_appmult(lut, out)
    assert numeric_sections(out) == numeric_sections(FIXTURES / f"{stem}_lutfp.txt")


@pytest.mark.parametrize("stem", STEMS)
def test_gradient_lut_matches_published_file_bit_for_bit(stem, tmp_path):
    path, w = gradient_file(stem)
    grad = gradient_lut(read_appmult(FIXTURES / f"{stem}_lutfp.txt"), w, boundary="appmult")
    published = read_appmult(path)
    for name in ("a", "b"):
        assert np.array_equal(np.round(grad.grads[name] * 16), published.grads[name] * 16)
    out = tmp_path / "bp.txt"
    write_appmult(grad, out)
    assert numeric_sections(out) == numeric_sections(path)
