"""LUT file formats: axnet's .npz, the published AppMult text files, CSV, and AdaPT's C header.

One module per format (`npz`, `appmult`, `csvfile`, `adapt`); this package picks the reader (`load_lut`) and the
writer (`save_lut`). Every reader raises a one-line AxnetError naming the file (and line) for malformed input,
including a value that does not fit the LUT's declared output bits; every writer goes through `atomic_write`, so
a failure never leaves a partial file.
"""
from __future__ import annotations

from pathlib import Path

from circuits.errors import AxnetError
from lutgen.formats.adapt import _ADAPT_DECL, check_adapt_shape, read_adapt_header, write_adapt_header
from lutgen.formats.appmult import APPMULT_TITLES, check_appmult_shape, read_appmult, write_appmult
from lutgen.formats.common import AXNET_VERSION, circuit_name_from_path, first_line
from lutgen.formats.csvfile import read_csv, write_csv
from lutgen.formats.npz import lut_from_arrays, lut_meta, load_npz, save_npz

__all__ = ["AXNET_VERSION", "APPMULT_TITLES", "load_lut", "save_lut", "sniff_reader", "load_npz", "save_npz",
           "read_appmult", "write_appmult", "read_csv", "write_csv", "read_adapt_header", "write_adapt_header",
           "check_adapt_shape", "check_appmult_shape", "circuit_name_from_path", "first_line", "lut_meta",
           "lut_from_arrays", "READERS", "WRITERS"]

READERS = {".npz": load_npz, ".txt": read_appmult, ".csv": read_csv, ".h": read_adapt_header,
           ".hpp": read_adapt_header}
WRITERS = {"npz": save_npz, "appmult": write_appmult, "csv": write_csv, "adapt": write_adapt_header}


def load_lut(path):
    """Read a LUT from any supported format, chosen by extension and, failing that, by content."""
    p = Path(path)
    try:
        if not p.exists():
            raise AxnetError("no such file", path=path)
        if p.is_dir():
            raise AxnetError("is a directory, not a LUT file", path=path)
        if p.stat().st_size == 0:
            raise AxnetError("empty file", path=path)
    except OSError as e:
        raise AxnetError(f"cannot read: {e.strerror}", path=path) from None
    if p.suffix.lower() in (".blif", ".pla"):
        raise AxnetError("this is a circuit, not a LUT: make its LUT with `axnet simulate` first", path=path)
    reader = READERS.get(p.suffix.lower()) or sniff_reader(p)
    return reader(path)


def sniff_reader(p):
    """Guess the format of a file whose extension does not say: zip magic, AppMult title, C declaration, CSV."""
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise AxnetError(f"cannot read: {e.strerror}", path=p) from None
    if head.startswith(b"PK"):
        return load_npz
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if APPMULT_TITLES[0] in text:
        return read_appmult
    if _ADAPT_DECL.search(text):
        return read_adapt_header
    first = text.splitlines()[0] if text.splitlines() else ""
    if "," in first and "value" in [h.strip() for h in first.split(",")]:
        return read_csv
    raise AxnetError("unknown LUT format: expected .npz, an AppMult .txt, a .csv or an AdaPT .h header", path=p)


def save_lut(lut, path, fmt="npz"):
    """Write `lut` in format `fmt` (npz, appmult, csv or adapt)."""
    if fmt not in WRITERS:
        raise AxnetError(f"--format '{fmt}': expected one of {', '.join(WRITERS)}")
    WRITERS[fmt](lut, path)
