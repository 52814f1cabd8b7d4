"""The `axnet` command. It only composes circuits -> simulator -> lutgen -> dnn; the work lives in those packages."""
import sys

import click

from circuits.errors import AxnetError

__version__ = "0.1.0"


class AxnetGroup(click.Group):
    """Turns every AxnetError into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AxnetError as e:
            click.echo(f"axnet: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=AxnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="axnet")
def main():
    """axnet: approximate adders and multipliers, from netlists to lookup tables to AdderNet layers."""


# ---- circuit toolchain commands (issue 2) ----------------------------------------------------------------------------
# Circuit -> LUT -> metrics / gradient LUT. Each command reads its input, hands the work to circuits, simulator and
# lutgen, and writes its output through atomic_write, so a failure leaves no partial or clobbered file.

CIRCUIT_SUFFIXES = (".blif", ".pla")
LUT_FORMATS = ("npz", "appmult", "csv", "adapt")
FORMAT_BY_SUFFIX = {".npz": "npz", ".txt": "appmult", ".csv": "csv", ".h": "adapt", ".hpp": "adapt"}
METRIC_ROWS = [("ep_percent", "error probability (EP)", "%"), ("mae", "mean absolute error (MAE)", ""),
               ("mae_percent", "MAE / output range", "%"), ("wce", "worst-case error (WCE)", ""),
               ("wce_percent", "WCE / output range", "%"), ("mse", "mean squared error (MSE)", ""),
               ("bias", "mean error (bias)", ""), ("mre_percent", "mean relative error (MRE)", "%"),
               ("wcre_percent", "worst-case relative error", "%"), ("count", "combinations measured", "")]


def file_sha256(path):
    """Hex sha256 of a file's bytes, recorded in LUT files so a LUT can be traced to its circuit."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_circuit(path, top=None, undriven="error"):
    """Read a .blif or .pla circuit; reader warnings (nets tied to 0) go to stderr as one line each."""
    import warnings
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in CIRCUIT_SUFFIXES:
        raise AxnetError(f"expected a circuit file ending in {' or '.join(CIRCUIT_SUFFIXES)}", path=path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if suffix == ".blif":
            from circuits.blif import read_blif
            netlist = read_blif(path, top=top, undriven=undriven)
        else:
            if top is not None:
                raise AxnetError("--top applies to BLIF hierarchies, not to a .pla file", path=path)
            from circuits.pla import read_pla
            netlist = read_pla(path)
    for w in caught:
        click.echo(f"axnet: warning: {w.message}", err=True)
    return netlist


def parse_operands_option(text):
    """--operands '8,8' -> [8, 8]; None when the option was not given."""
    if text is None:
        return None
    from lutgen.operands import parse_widths
    return parse_widths(text)


def output_format(fmt, out):
    """The format to write: --format when given, else from OUT's extension, else npz."""
    from pathlib import Path

    if fmt is not None:
        return fmt
    return FORMAT_BY_SUFFIX.get(Path(out).suffix.lower(), "npz")


def progress_bar(desc, total=None, unit="it"):
    """A tqdm bar on stderr that only appears when the work lasts more than a second and a half."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, delay=1.5, leave=False, dynamic_ncols=True)


def echo_table(rows):
    """Print (label, value) rows with the labels padded to one column."""
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        click.echo(f"{label.ljust(width)}  {value}")


def echo_json(data):
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False))


def circuit_operands(netlist, widths):
    """Operand grouping for `info`: a list of {name, width}, or the reason the names do not group."""
    from lutgen.operands import group_operands

    try:
        return [{"name": op.name, "width": op.width} for op in group_operands(netlist.inputs, widths)], None
    except AxnetError as e:
        return [], e.message


circuit_options = [
    click.option("--top", metavar="MODEL", default=None, help="Top model of a BLIF hierarchy (default: the first)."),
    click.option("--undriven", type=click.Choice(["error", "zero"]), default="error", show_default=True,
                 help="Nets read but never driven: refuse, or tie to constant 0 with a warning."),
]


def with_circuit_options(f):
    for option in reversed(circuit_options):
        f = option(f)
    return f


@main.command("info")
@click.argument("circuit", type=click.Path(dir_okay=False))
@click.option("--operands", "operands", metavar="W1,W2,..", default=None,
              help="Operand widths by input position (default: grouped from the input names).")
@with_circuit_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info_cmd(circuit, operands, top, undriven, as_json):
    """Summarise a circuit (.blif or .pla).

    Name, inputs, outputs, operands found, node count, logic depth and the largest fanout.
    """
    netlist = load_circuit(circuit, top, undriven)
    ops, why = circuit_operands(netlist, parse_operands_option(operands))
    fanout = netlist.fanout()
    data = {"circuit": netlist.name, "file": circuit, "sha256": file_sha256(circuit),
            "inputs": len(netlist.inputs), "outputs": len(netlist.outputs), "operands": ops,
            "nodes": netlist.gate_count(), "depth": netlist.depth(), "max_fanout": max(fanout.values(), default=0)}
    if why:
        data["operands_error"] = why
    if as_json:
        echo_json(data)
        return
    op_text = ", ".join(f"{o['name']} ({o['width']} bits)" for o in ops) if ops else f"none ({why})"
    echo_table([("circuit", data["circuit"]), ("file", circuit), ("inputs", data["inputs"]),
                ("outputs", f"{data['outputs']} ({', '.join(netlist.outputs[:4])}"
                            + (", ...)" if len(netlist.outputs) > 4 else ")")),
                ("operands", op_text), ("nodes", data["nodes"]), ("depth", data["depth"]),
                ("max fanout", data["max_fanout"]), ("sha256", data["sha256"])])


@main.command("library")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def library_cmd(as_json):
    """List the bundled full-adder cells and their equations."""
    from circuits import library

    cells = library.describe()
    if as_json:
        echo_json(cells)
        return
    click.echo("table: (Sum, Cout) for A B Cin = 000 001 010 011 100 101 110 111; use a name with --cell")
    name_w = max(len(c["name"]) for c in cells)
    table_w = max(len(c["table"] or "-") for c in cells)
    eq_w = max(len(c["equations"]) for c in cells)
    for c in cells:
        click.echo(f"{c['name'].ljust(name_w)}  {(c['table'] or '-').ljust(table_w)}  "
                   f"{c['equations'].ljust(eq_w)}  {c['description']}")


@main.command("build-adder")
@click.option("--width", type=click.IntRange(1, 64), required=True, help="Operand width in bits.")
@click.option("--scheme", type=click.Choice(["rca", "loa", "eta1", "trunc"]), default="rca", show_default=True,
              help="rca: ripple of cells; loa: lower-part OR; eta1: error-tolerant adder I; trunc: truncated.")
@click.option("--cell", default="exact", show_default=True, metavar="NAME|FILE.blif|TABLE",
              help="rca only: cell for the low bits, a bundled name (see `axnet library`), a cell BLIF, "
                   "or 8 (Sum,Cout) rows such as 00,10,10,01,10,01,01,11.")
@click.option("--approx-bits", type=click.IntRange(0, None), default=0, show_default=True,
              help="How many low bits are approximate.")
@click.option("--carry-in", is_flag=True, help="rca only: add a carry-in input 'cin'.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="BLIF file to write.")
def build_adder_cmd(width, scheme, cell, approx_bits, carry_in, out):
    """Generate an approximate adder and write it as BLIF."""
    from circuits import generators
    from circuits.blif import write_blif

    if scheme != "rca" and (carry_in or cell != "exact"):
        raise AxnetError(f"--scheme {scheme}: --cell and --carry-in apply to --scheme rca only")
    if scheme == "rca":
        netlist = generators.ripple_carry_adder(width, cell=cell, approx_bits=approx_bits, carry_in=carry_in)
    else:
        build = {"loa": generators.loa_adder, "eta1": generators.eta1_adder, "trunc": generators.truncated_adder}
        netlist = build[scheme](width, approx_bits)
    write_blif(netlist, out)
    click.echo(f"wrote {out}: {netlist.name}, {len(netlist.inputs)} inputs, {len(netlist.outputs)} outputs, "
               f"{netlist.gate_count()} nodes, depth {netlist.depth()}")


def build_circuit_lut(circuit, operands, signed, top, undriven):
    """Read CIRCUIT and simulate it into a Lut, with a progress bar for long simulations."""
    from lutgen.lut import build_lut

    netlist = load_circuit(circuit, top, undriven)
    widths = parse_operands_option(operands)
    with progress_bar(f"simulating {netlist.name}", total=1 << len(netlist.inputs), unit="pattern") as bar:
        return build_lut(netlist, widths=widths, signed=signed, sha256=file_sha256(circuit),
                         progress=bar.update)


@main.command("simulate")
@click.argument("circuit", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="LUT file to write.")
@click.option("--format", "fmt", type=click.Choice(LUT_FORMATS), default=None,
              help="npz (axnet), appmult (AppMult *_lutfp.txt), csv, adapt (AdaPT int16_t lut[256][256] "
                   "header). Default: from OUT's extension, else npz.")
@click.option("--operands", metavar="W1,W2,..", default=None,
              help="Operand widths by input position, e.g. 8,8 or 8,8,1 (default: from the input names).")
@click.option("--signed", is_flag=True, help="Read operands and result as two's complement.")
@with_circuit_options
def simulate_cmd(circuit, out, fmt, operands, signed, top, undriven):
    """Simulate a circuit exhaustively and write its forward LUT.

    CIRCUIT is a .blif or .pla file.
    """
    from lutgen.formats import save_lut

    fmt = output_format(fmt, out)
    lut = build_circuit_lut(circuit, operands, signed, top, undriven)
    save_lut(lut, out, fmt)
    click.echo(f"wrote {out} ({fmt}): {lut.describe()}")


def guess_reference(operands, n_outputs):
    """mul when two operands of width >= 2 give a full-width product (n + m outputs), else add."""
    widths = [w for _, w in operands]
    if len(widths) == 2 and min(widths) >= 2 and n_outputs == sum(widths):
        return "mul", f"guessed from {n_outputs} outputs for operands {widths[0]}+{widths[1]} bits"
    return "add", "the default; pass --reference to choose"


@main.command("metrics")
@click.argument("source", metavar="CIRCUIT|LUT", type=click.Path(dir_okay=False))
@click.option("--reference", type=click.Choice(["add", "sub", "mul"]), default=None,
              help="Exact operation to compare with (default: mul for an n x m -> n+m bit circuit, else add).")
@click.option("--operands", metavar="W1,W2,..", default=None, help="Operand widths by input position (circuits).")
@click.option("--signed", is_flag=True, help="Read a circuit's operands and result as two's complement.")
@click.option("--samples", type=click.IntRange(1, None), default=None,
              help="Measure on N random combinations instead of all (circuits).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for --samples.")
@with_circuit_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics_cmd(source, reference, operands, signed, samples, seed, top, undriven, as_json):
    """Error metrics of a circuit or LUT.

    Compared with the exact operation (--reference).

    EvoApproxLib definitions (EP, MAE, WCE, MSE, bias, MRE, WCRE).

    A circuit too wide for a table (more than 2^26 combinations), or one given --samples, is streamed.
    """
    from pathlib import Path

    from lutgen.lut import MAX_LUT_BITS

    if Path(source).suffix.lower() in CIRCUIT_SUFFIXES:
        netlist = load_circuit(source, top, undriven)
        from lutgen.operands import group_operands
        ops = group_operands(netlist.inputs, parse_operands_option(operands))
        op_pairs = [(op.name, op.width) for op in ops]
        reference, why = (reference, "given") if reference else guess_reference(op_pairs, len(netlist.outputs))
        if samples is None and len(netlist.inputs) <= MAX_LUT_BITS:
            from lutgen.lut import build_lut
            with progress_bar(f"simulating {netlist.name}", total=1 << len(netlist.inputs), unit="pattern") as bar:
                lut = build_lut(netlist, widths=parse_operands_option(operands), signed=signed,
                                progress=bar.update)
            from lutgen.metrics import error_metrics
            result, mode = error_metrics(lut, reference), "exhaustive"
        else:
            from lutgen.metrics import stream_metrics
            total = samples or (1 << len(netlist.inputs))
            with progress_bar(f"measuring {netlist.name}", total=total, unit="pattern") as bar:
                result = stream_metrics(netlist, ops, reference, signed=signed,
                                        progress=bar.update, samples=samples, seed=seed)
            mode = f"{samples} random samples (seed {seed})" if samples else "exhaustive, streamed"
        name = netlist.name
    else:
        if samples is not None or operands is not None or signed:
            raise AxnetError("--samples, --operands and --signed apply to circuits; a LUT file carries its own")
        from lutgen.formats import load_lut
        from lutgen.metrics import error_metrics
        lut = load_lut(source)
        op_pairs, name = lut.operands, lut.circuit or Path(source).stem
        reference, why = (reference, "given") if reference else guess_reference(op_pairs, len(lut.outputs))
        result, mode = error_metrics(lut, reference), "exhaustive (LUT)"
    if as_json:
        echo_json({"circuit": name, "source": source, "reference": reference, "reference_reason": why,
                   "mode": mode, "metrics": {k: to_plain(v) for k, v in result.items()}})
        return
    rows = [("circuit", name), ("reference", f"{reference} ({why})"), ("mode", mode)]
    rows += [(label, format_number(result[key]) + unit) for key, label, unit in METRIC_ROWS if key in result]
    echo_table(rows)


def to_plain(value):
    """numpy scalars -> Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else value


def format_number(value):
    """Integers as they are, other numbers with 6 significant digits."""
    value = to_plain(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


@main.command("gradlut")
@click.argument("lut_path", metavar="LUT", type=click.Path(dir_okay=False))
@click.option("--half-window", type=click.IntRange(0, None), default=None,
              help="Half window w of the moving average (2w+1 points); required for --method diff.")
@click.option("--boundary", type=click.Choice(["shrink", "appmult"]), default="shrink", show_default=True,
              help="Edges: shrink the window to a one-sided difference, or the published AppMult rule (bit-exact).")
@click.option("--method", type=click.Choice(["diff", "ste"]), default="diff", show_default=True,
              help="diff: windowed difference of the LUT; ste: the exact operation's gradient, for comparison.")
@click.option("--reference", type=click.Choice(["add", "sub", "mul"]), default=None,
              help="Exact operation for --method ste.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--format", "fmt", type=click.Choice(["npz", "appmult", "csv"]), default=None,
              help="npz (float32 gradients), appmult (int16 round(16 g)), csv. Default: from OUT's extension.")
def gradlut_cmd(lut_path, half_window, boundary, method, reference, out, fmt):
    """Gradient LUTs dL/da and dL/db of a two-operand LUT.

    LUT is any file `axnet simulate` writes (.npz, AppMult .txt, .csv, .h).
    """
    from lutgen.formats import load_lut, save_lut
    from lutgen.gradient import gradient_lut

    fmt = output_format(fmt, out)
    if fmt == "adapt":
        raise AxnetError(f"{out}: an AdaPT header holds no gradients; use --format npz, appmult or csv")
    if method == "diff" and half_window is None:
        raise AxnetError("--half-window is required for --method diff (e.g. --half-window 2)")
    lut = load_lut(lut_path)
    grad = gradient_lut(lut, half_window, boundary=boundary, method=method, reference=reference)
    save_lut(grad, out, fmt)
    meta = grad.grad_meta
    how = (f"half window {meta['half_window']}, boundary {meta['boundary']}" if method == "diff"
           else f"straight-through, reference {reference}")
    click.echo(f"wrote {out} ({fmt}): gradients of {lut.describe()}; {how}")



# ---- training workflow commands (issue 4) ----------------------------------------------------------------------------


if __name__ == "__main__":
    main()
