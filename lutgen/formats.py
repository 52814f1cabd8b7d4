"""LUT file formats: axnet's .npz, the published AppMult text files, CSV, and AdaPT's C header.

npz layout (docs/ARCHITECTURE.md): `lut` int64 with one axis per operand, `meta` a JSON string, and for gradient
files one float32 `grad_<operand>` per operand. Every reader raises a one-line AxnetError naming the file (and line)
for malformed input; every writer goes through `atomic_write`, so a failure never leaves a partial file.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np

from circuits.errors import AxnetError
from circuits.files import read_text
from lutgen.files import atomic_write
from lutgen.lut import Lut, pattern_values

AXNET_VERSION = "0.1.0"

# ---- npz ------------------------------------------------------------------------------------------------------------


def lut_meta(lut):
    """The JSON-able description stored beside the table."""
    meta = dict(lut.extra)
    meta.update({
        "operands": [{"name": n, "width": int(w)} for n, w in lut.operands],
        "outputs": list(lut.outputs),
        "signed": bool(lut.signed),
        "circuit": lut.circuit,
        "sha256": lut.sha256,
        "axnet_version": AXNET_VERSION,
    })
    if lut.grad_meta is not None:
        meta.update(lut.grad_meta)
    return meta


def save_npz(lut, path):
    """Write `lut` (and its gradients, if any) as an uncompressed .npz, atomically."""
    arrays = {"lut": np.asarray(lut.table, dtype=np.int64), "meta": np.array(json.dumps(lut_meta(lut)))}
    for name, grad in (lut.grads or {}).items():
        arrays[f"grad_{name}"] = np.asarray(grad, dtype=np.float32)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


GRAD_META_KEYS = ("half_window", "boundary", "method", "reference")
BASE_META_KEYS = ("operands", "outputs", "signed", "circuit", "sha256", "axnet_version")


def load_npz(path):
    """Read an axnet .npz LUT without unpickling anything; a malformed file is a one-line AxnetError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise AxnetError("no such file", path=path) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AxnetError(f"not a readable .npz LUT ({first_line(e)})", path=path) from None
    for key in ("lut", "meta"):
        if key not in arrays:
            raise AxnetError(f"malformed LUT file: no '{key}' array", path=path)
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (ValueError, TypeError) as e:
        raise AxnetError(f"malformed LUT file: 'meta' is not JSON ({first_line(e)})", path=path) from None
    return lut_from_arrays(arrays, meta, path)


def lut_from_arrays(arrays, meta, path):
    """Check the npz arrays against their meta and build the Lut."""
    table = arrays["lut"]
    if not isinstance(meta, dict):
        raise AxnetError("malformed LUT file: 'meta' is not a JSON object", path=path)
    if table.dtype.kind not in "iu":
        raise AxnetError(f"malformed LUT file: 'lut' has dtype {table.dtype}, expected int64", path=path)
    try:
        operands = [(str(o["name"]), int(o["width"])) for o in meta["operands"]]
    except (KeyError, TypeError, ValueError):
        raise AxnetError("malformed LUT file: meta 'operands' must be a list of {name, width}", path=path) from None
    expected = tuple(1 << w for _, w in operands)
    if table.shape != expected:
        raise AxnetError(f"malformed LUT file: 'lut' has shape {table.shape} but the operands "
                         f"{', '.join(f'{n}:{w}' for n, w in operands)} need {expected}", path=path)
    grads = {}
    for name, _ in operands:
        if f"grad_{name}" in arrays:
            g = arrays[f"grad_{name}"]
            if g.shape != table.shape or g.dtype.kind != "f":
                raise AxnetError(f"malformed LUT file: 'grad_{name}' has shape {g.shape} dtype {g.dtype}, "
                                 f"expected float32 {table.shape}", path=path)
            grads[name] = g.astype(np.float32, copy=False)
    if grads and len(grads) != len(operands):
        raise AxnetError("malformed LUT file: gradient arrays for only some operands", path=path)
    grad_meta = {k: meta[k] for k in GRAD_META_KEYS if k in meta} if grads else None
    extra = {k: v for k, v in meta.items() if k not in BASE_META_KEYS + GRAD_META_KEYS}
    return Lut(table=table.astype(np.int64, copy=False), operands=operands, outputs=list(meta.get("outputs", [])),
               signed=bool(meta.get("signed", False)), circuit=str(meta.get("circuit") or ""),
               sha256=meta.get("sha256"), grads=grads or None, grad_meta=grad_meta, extra=extra)


def first_line(e):
    """The first line of an exception's message, so wrapped errors stay one line."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- AppMult text files ----------------------------------------------------------------------------------------------

APPMULT_TITLES = (
    "LUT for approximate multiplier:",
    "LUT for the gradient of the approximate multiplier w.r.t. the first operand:",
    "LUT for the gradient of the approximate multiplier w.r.t. the second operand:",
)
_HALF_WINDOW_INFO = re.compile(r"half smoothing window size for grad_([ab]):\s*(\d+)")
_HALF_WINDOW_NAME = re.compile(r"_avg_(\d+)_(\d+)$")


def read_appmult(path):
    """Read a `*_lutfp.txt` (forward) or `*_lutfp+bp_avg_W_W.txt` (forward + two gradient sections) file.

    Lines before the first section title are header and ignored. The operand width n comes from the line count
    (2^(2n) lines per section, A the outer loop); gradients are stored as int16 round(16*g) and read back as g.
    """
    lines = read_text_lines(path)
    sections, half_windows = split_appmult_sections(lines, path)
    forward = sections.get(APPMULT_TITLES[0])
    if forward is None:
        raise AxnetError(f"not an AppMult LUT file: no '{APPMULT_TITLES[0]}' line", path=path)
    n = appmult_width(forward, path)
    table = appmult_values(forward, n, path)
    lut = Lut(table=table, operands=[("a", n), ("b", n)], outputs=[f"o[{k}]" for k in range(max(2 * n, output_bits(table)))],
              circuit=circuit_name_from_path(path))
    grad_sections = [sections.get(t) for t in APPMULT_TITLES[1:]]
    if any(s is not None for s in grad_sections):
        if any(s is None for s in grad_sections):
            missing = APPMULT_TITLES[1] if grad_sections[0] is None else APPMULT_TITLES[2]
            raise AxnetError(f"gradient file without the section '{missing}'", path=path)
        grads = {}
        for name, rows in zip(("a", "b"), grad_sections):
            if len(rows) != len(forward):
                raise AxnetError(f"gradient section for '{name}' has {len(rows)} lines, expected {len(forward)}",
                                 path=path, line=rows[-1][0] if rows else None)
            grads[name] = (appmult_values(rows, n, path).astype(np.float32) / np.float32(16)).astype(np.float32)
        w = half_windows.get("a", half_window_from_name(path))
        lut = lut.with_grads(grads, {"half_window": w, "boundary": "appmult", "method": "diff"})
    return lut


def read_text_lines(path):
    """The file's lines, with a one-line error for a missing, empty or binary file."""
    return read_text(path, "LUT file").splitlines()


def split_appmult_sections(lines, path):
    """{title: [(line number, 'A B V'), ...]} plus half windows named by INFO lines."""
    sections, current, half_windows = {}, None, {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if text in APPMULT_TITLES:
            if text in sections:
                raise AxnetError(f"section '{text}' appears twice", path=path, line=number)
            current = sections[text] = []
        elif current is None:
            m = _HALF_WINDOW_INFO.search(text)
            if m:
                half_windows[m.group(1)] = int(m.group(2))
        elif text:
            current.append((number, text))
    return sections, half_windows


def appmult_width(rows, path):
    """n such that the section holds 2^(2n) lines."""
    count = len(rows)
    n = (count.bit_length() - 1) // 2
    if count == 0 or count != 1 << (2 * n) or n == 0:
        raise AxnetError(f"LUT section has {count} lines; an AppMult LUT has 2^(2n) lines (4, 16, 64, ...)",
                         path=path, line=rows[-1][0] if rows else None)
    return n


def appmult_values(rows, n, path):
    """Check that line i reads `i // N  i % N  value` and return the values as an (N, N) int64 table."""
    size = 1 << n
    values = np.empty(size * size, dtype=np.int64)
    for i, (number, text) in enumerate(rows):
        parts = text.split()
        try:
            a, b, v = (int(t) for t in parts)
        except ValueError:
            raise AxnetError(f"expected 'A B value' (three integers), got '{text[:60]}'", path=path,
                             line=number) from None
        if a != i // size or b != i % size:
            raise AxnetError(f"expected operands {i // size} {i % size} (A outer, B inner), got {a} {b}",
                             path=path, line=number)
        values[i] = v
    return values.reshape(size, size)


def output_bits(table):
    """Bits needed for the largest unsigned value in `table` (at least 1)."""
    return max(1, int(table.max()).bit_length()) if table.size else 1


def half_window_from_name(path):
    """W from a `..._avg_W_W.txt` file name, else None."""
    m = _HALF_WINDOW_NAME.search(Path(path).stem)
    return int(m.group(1)) if m else None


def circuit_name_from_path(path):
    """The circuit name a LUT file stands for: its stem without `_lutfp...` or `_sop` suffixes."""
    stem = Path(path).name
    for suffix in ("_lutfp", "_sop"):
        if suffix in stem:
            return stem[: stem.index(suffix)]
    return Path(path).stem


def check_appmult_shape(lut):
    """The AppMult format holds unsigned LUTs over two operands of the same width."""
    if lut.table.ndim != 2:
        raise AxnetError(f"--format appmult needs a LUT with two operands; this one has {lut.table.ndim} "
                         f"({', '.join(lut.names)})")
    if lut.widths[0] != lut.widths[1]:
        raise AxnetError(f"--format appmult needs two operands of equal width, got {lut.widths[0]} and "
                         f"{lut.widths[1]}")
    if lut.signed:
        raise AxnetError("--format appmult holds unsigned LUTs only; this LUT is signed (use --format npz or csv)")


def appmult_section(title, table):
    """One section: its title, then `A B value` for A outer, B inner."""
    size = table.shape[0]
    a = np.repeat(np.arange(size), size)
    b = np.tile(np.arange(size), size)
    body = "\n".join(f"{x} {y} {v}" for x, y, v in zip(a.tolist(), b.tolist(), table.ravel().tolist()))
    return f"{title}\n{body}\n"


def round_half_even_x16(grad):
    """The int16 stored in AppMult gradient files: round-half-even of 16*g."""
    scaled = np.round(np.asarray(grad, dtype=np.float32) * np.float32(16))
    if scaled.size and (scaled.min() < -32768 or scaled.max() > 32767):
        raise AxnetError("--format appmult: a gradient exceeds the int16 range of the format (|16 g| > 32767)")
    return scaled.astype(np.int16)


def write_appmult(lut, path):
    """Write the forward LUT, and the two gradient sections if present, in the AppMult text format."""
    check_appmult_shape(lut)
    header = [f"INFO: written by axnet {AXNET_VERSION} from circuit {lut.circuit or '(unnamed)'}"
              + (f" (sha256 {lut.sha256})" if lut.sha256 else "")]
    parts = [appmult_section(APPMULT_TITLES[0], lut.table)]
    if lut.grads:
        gm = lut.grad_meta or {}
        if gm.get("half_window") is not None:
            header += [f"INFO: half smoothing window size for grad_a: {gm['half_window']}",
                       f"INFO: half smoothing window size for grad_b: {gm['half_window']}"]
        header.append(f"INFO: gradient method {gm.get('method')}, boundary {gm.get('boundary')}")
        for title, name in zip(APPMULT_TITLES[1:], lut.names):
            parts.append(appmult_section(title, round_half_even_x16(lut.grads[name])))
    with atomic_write(path, "w") as f:
        f.write("\n".join(header) + "\n")
        for part in parts:
            f.write(part)


# ---- CSV ------------------------------------------------------------------------------------------------------------


def write_csv(lut, path):
    """One row per operand combination: operand values (signed if the LUT is), the result, then any gradients."""
    names = lut.names
    header = names + ["value"] + ([f"grad_{n}" for n in names] if lut.grads else [])
    grids = np.meshgrid(*[lut.operand_values(k) for k in range(len(names))], indexing="ij")
    columns = [g.ravel() for g in grids] + [lut.table.ravel()]
    grad_cols = [np.asarray(lut.grads[n], dtype=np.float32).ravel() for n in names] if lut.grads else []
    with atomic_write(path, "w", newline="") as f:
        f.write(",".join(header) + "\n")
        chunk = 1 << 16
        for start in range(0, lut.table.size, chunk):
            ints = [c[start:start + chunk].tolist() for c in columns]
            floats = [[f"{x:.9g}" for x in c[start:start + chunk].tolist()] for c in grad_cols]
            rows = zip(*ints, *floats)
            f.write("".join(",".join(map(str, r)) + "\n" for r in rows))


def read_csv(path):
    """Read a CSV written by `write_csv`: operand widths and signedness come from the values each column takes."""
    lines = read_text_lines(path)
    header = [h.strip() for h in lines[0].split(",")]
    if "value" not in header:
        raise AxnetError("CSV LUT header must name operand columns, then 'value', then optional grad_<operand> "
                         f"columns; got '{lines[0][:80]}'", path=path, line=1)
    k = header.index("value")
    names, grad_names = header[:k], header[k + 1:]
    if not names:
        raise AxnetError("CSV LUT has no operand columns before 'value'", path=path, line=1)
    if grad_names and grad_names != [f"grad_{n}" for n in names]:
        raise AxnetError(f"CSV gradient columns must be {', '.join('grad_' + n for n in names)}", path=path, line=1)
    ints, floats = parse_csv_rows(lines, len(names) + 1, len(grad_names), path)
    widths, signed = csv_operand_widths(ints[:, :len(names)], names, path)
    shape = tuple(1 << w for w in widths)
    index = tuple(ints[:, j] & (shape[j] - 1) for j in range(len(names)))
    flat = np.ravel_multi_index(index, shape)
    if len(flat) != int(np.prod(shape)) or len(np.unique(flat)) != len(flat):
        raise AxnetError(f"CSV LUT must list every combination of {', '.join(names)} exactly once "
                         f"({int(np.prod(shape))} rows), found {len(flat)} rows", path=path)
    table = np.empty(shape, dtype=np.int64)
    table.reshape(-1)[flat] = ints[:, len(names)]
    lut = Lut(table=table, operands=list(zip(names, widths)), outputs=[], signed=signed,
              circuit=circuit_name_from_path(path))
    if grad_names:
        grads = {}
        for j, n in enumerate(names):
            g = np.empty(shape, dtype=np.float32)
            g.reshape(-1)[flat] = floats[:, j]
            grads[n] = g
        lut = lut.with_grads(grads, {"half_window": None, "boundary": None, "method": None})
    return lut


def parse_csv_rows(lines, n_int, n_float, path):
    """Integer and float columns of every data row, with file:line for a malformed row."""
    ints, floats = [], []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cells = raw.split(",")
        if len(cells) != n_int + n_float:
            raise AxnetError(f"expected {n_int + n_float} comma-separated fields, got {len(cells)}", path=path,
                             line=number)
        try:
            ints.append([int(c) for c in cells[:n_int]])
            floats.append([float(c) for c in cells[n_int:]])
        except ValueError:
            raise AxnetError(f"non-numeric field in '{raw[:60]}'", path=path, line=number) from None
    if not ints:
        raise AxnetError("CSV LUT has a header but no rows", path=path)
    return np.array(ints, dtype=np.int64), np.array(floats, dtype=np.float32).reshape(len(ints), n_float)


def csv_operand_widths(values, names, path):
    """Width of each operand column (2^w distinct values) and whether the columns are signed."""
    signed = bool((values < 0).any())
    widths = []
    for j, name in enumerate(names):
        col = values[:, j]
        count = len(np.unique(col))
        w = count.bit_length() - 1
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
        if w < 1 or count != 1 << w or col.min() != lo or col.max() != hi:
            kind = "signed" if signed else "unsigned"
            raise AxnetError(f"CSV column '{name}' takes {count} values from {col.min()} to {col.max()}, not "
                             f"every {kind} value of some width", path=path)
        widths.append(w)
    return widths, signed


# ---- AdaPT C header ---------------------------------------------------------------------------------------------------

_ADAPT_DECL = re.compile(r"\b(\w+)\s*\[\s*256\s*\]\s*\[\s*256\s*\]\s*=\s*\{")
_ADAPT_TOKEN = re.compile(r"\s*(?:(//[^\n]*|/\*.*?\*/)|([{},])|([-+]?\s*(?:0[xX][0-9a-fA-F]+|\d+))|(;)|(\S))", re.S)


def check_adapt_shape(lut):
    """AdaPT loads 8-bit signed two-operand LUTs whose results fit int16."""
    if lut.table.ndim != 2 or lut.widths != [8, 8] or not lut.signed:
        kind = "signed" if lut.signed else "unsigned"
        raise AxnetError("--format adapt needs a signed LUT over two 8-bit operands (AdaPT's int16_t "
                         f"lut[256][256]); this one is {kind} over {', '.join(f'{n}:{w}' for n, w in lut.operands)}")
    if lut.table.min() < -32768 or lut.table.max() > 32767:
        raise AxnetError("--format adapt: a result does not fit AdaPT's int16_t entries")


def write_adapt_header(lut, path):
    """Write `int16_t lut[256][256]`, indexed by the operands' raw two's-complement patterns (0..127, -128..-1)."""
    check_adapt_shape(lut)
    a, b = lut.names
    rows = ",\n".join("    {" + ", ".join(map(str, row)) + "}" for row in lut.table.tolist())
    text = (f"// AdaPT approximate multiplier LUT written by axnet {AXNET_VERSION}\n"
            f"// circuit {lut.circuit or '(unnamed)'}" + (f", sha256 {lut.sha256}" if lut.sha256 else "") + "\n"
            f"// lut[{a}][{b}]: index = 8-bit two's-complement pattern (0..127 are 0..127, 128..255 are -128..-1)\n"
            "#include <stdint.h>\n\n"
            f"int16_t lut[256][256] = {{\n{rows}\n}};\n")
    with atomic_write(path, "w") as f:
        f.write(text)


def read_adapt_header(path):
    """Read a C header declaring `T name[256][256] = {{...}, ...};` as a signed 8x8-bit LUT."""
    text = "\n".join(read_text_lines(path))
    m = _ADAPT_DECL.search(text)
    if not m:
        raise AxnetError("no `lut[256][256] = {` declaration found (expected an AdaPT C header)", path=path)
    table = quick_adapt_table(text, m.end() - 1)
    if table is None:  # anything unusual: the careful tokenizer, which also names the offending line
        table = np.array(parse_adapt_initializer(text, m.end() - 1, path), dtype=np.int64)
    return Lut(table=table, operands=[("a", 8), ("b", 8)], outputs=[f"o[{k}]" for k in range(16)], signed=True,
               circuit=Path(path).stem)


_PLAIN_ROW = re.compile(r"\{([-+0-9xXa-fA-F,\s]*)\}")


def c_int(token):
    """A C integer literal: decimal (leading zeros allowed) or 0x hex, with an optional sign."""
    body = token.lstrip("+-")
    value = int(body, 16) if body[:2].lower() == "0x" else int(body, 10)
    return -value if token.startswith("-") else value


def quick_adapt_table(text, pos):
    """Fast path for a plain initializer (no comments, decimal or hex integers): the (256, 256) table, else None."""
    end = text.find(";", pos)
    body = text[pos:end if end >= 0 else len(text)]
    if "/" in body:
        return None
    rows = _PLAIN_ROW.findall(body)
    if len(rows) != 256 or body.count("{") != 257:
        return None
    try:
        table = [[c_int(t) for t in r.replace(",", " ").split()] for r in rows]
    except ValueError:
        return None
    if any(len(r) != 256 for r in table):
        return None
    return np.array(table, dtype=np.int64)


def parse_adapt_initializer(text, pos, path):
    """The 256 rows of 256 integers of the brace initializer opening at `pos`."""
    def line_of(p):
        return text.count("\n", 0, p) + 1

    rows, row, depth = [], None, 0
    while pos < len(text):
        m = _ADAPT_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        start, pos = m.start(m.lastindex), m.end()
        if m.group(1):
            continue
        tok = m.group(m.lastindex)
        if tok == "{":
            depth += 1
            if depth == 2:
                row = []
            elif depth > 2:
                raise AxnetError("braces nested deeper than lut[256][256]", path=path, line=line_of(start))
        elif tok == "}":
            if depth == 2:
                if len(row) != 256:
                    raise AxnetError(f"row {len(rows)} has {len(row)} values, expected 256", path=path,
                                     line=line_of(start))
                rows.append(row)
            depth -= 1
            if depth == 0:
                if len(rows) != 256:
                    raise AxnetError(f"{len(rows)} rows, expected 256", path=path, line=line_of(start))
                return rows
        elif tok == ",":
            continue
        elif m.group(3) and depth == 2:
            row.append(c_int(tok.replace(" ", "")))
        else:
            raise AxnetError(f"unexpected '{tok}' in the lut initializer", path=path, line=line_of(start))
    raise AxnetError("the lut initializer is not closed", path=path, line=line_of(len(text)))


# ---- picking a reader -----------------------------------------------------------------------------------------------


def load_lut(path):
    """Read a LUT from any supported format, chosen by extension and, failing that, by content."""
    p = Path(path)
    if not p.exists():
        raise AxnetError("no such file", path=path)
    if p.is_dir():
        raise AxnetError("is a directory, not a LUT file", path=path)
    if p.stat().st_size == 0:
        raise AxnetError("empty file", path=path)
    if p.suffix.lower() in (".blif", ".pla"):
        raise AxnetError("this is a circuit, not a LUT: make its LUT with `axnet simulate` first", path=path)
    reader = READERS.get(p.suffix.lower()) or sniff_reader(p)
    return reader(path)


def sniff_reader(p):
    """Guess the format of a file whose extension does not say: zip magic, AppMult title, C declaration, CSV."""
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(b"PK"):
        return load_npz
    text = head.decode("utf-8", errors="replace")
    if APPMULT_TITLES[0] in text:
        return read_appmult
    if _ADAPT_DECL.search(text):
        return read_adapt_header
    first = text.splitlines()[0] if text.splitlines() else ""
    if "," in first and "value" in first.split(","):
        return read_csv
    raise AxnetError("unknown LUT format: expected .npz, an AppMult .txt, a .csv or an AdaPT .h header", path=p)


READERS = {".npz": load_npz, ".txt": read_appmult, ".csv": read_csv, ".h": read_adapt_header,
           ".hpp": read_adapt_header}
WRITERS = {"npz": save_npz, "appmult": write_appmult, "csv": write_csv, "adapt": write_adapt_header}


def save_lut(lut, path, fmt="npz"):
    """Write `lut` in format `fmt` (npz, appmult, csv or adapt)."""
    if fmt not in WRITERS:
        raise AxnetError(f"--format '{fmt}': expected one of {', '.join(WRITERS)}")
    WRITERS[fmt](lut, path)
