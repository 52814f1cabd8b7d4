"""The `axnet` command. It only composes circuits -> simulator -> lutgen -> dnn; the work lives in those packages."""
import sys

import click

from circuits.errors import AxnetError
from circuits.files import file_sha256

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

LUT_FORMATS = ("npz", "appmult", "csv", "adapt")
FORMAT_BY_SUFFIX = {".npz": "npz", ".txt": "appmult", ".csv": "csv", ".h": "adapt", ".hpp": "adapt"}
METRIC_ROWS = [("ep_percent", "error probability (EP)", "%"), ("mae", "mean absolute error (MAE)", ""),
               ("mae_percent", "MAE / output range", "%"), ("wce", "worst-case error (WCE)", ""),
               ("wce_percent", "WCE / output range", "%"), ("mse", "mean squared error (MSE)", ""),
               ("bias", "mean error (bias)", ""), ("mre_percent", "mean relative error (MRE)", "%"),
               ("wcre_percent", "worst-case relative error", "%"), ("count", "combinations measured", "")]


def load_circuit(path, top=None, undriven="error"):
    """Read a .blif or .pla circuit; reader warnings (dead logic, nets tied to 0) go to stderr as one line each."""
    import warnings

    from circuits.read import read_circuit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        netlist = read_circuit(path, top=top, undriven=undriven)
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


def write_output(writer, *args, out):
    """Run a writer for OUT, turning an operating-system failure (no permission, disk full) into a one-line error;
    the writers go through atomic_write, so OUT is left as it was."""
    try:
        writer(*args)
    except OSError as e:
        raise AxnetError(f"cannot write: {e.strerror or e}", path=out) from None


def progress_bar(desc, total=None, unit="it"):
    """A tqdm bar on a terminal's stderr that only appears when the work lasts more than a second and a half
    (off when stderr is not a terminal, so logs are not flooded with carriage-return updates)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, delay=1.5, leave=False, dynamic_ncols=True,
                mininterval=0.5, unit_scale=True, disable=None)


def echo_table(rows, header=None):
    """Print rows (tuples) with every column but the last padded to its widest entry; `header` first when given."""
    rows = ([tuple(header)] if header else []) + [tuple(r) for r in rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))] if rows else []
    for r in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def echo_json(data):
    """JSON on stdout, keys in the order the data has them."""
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False))


class FiniteFloat(click.ParamType):
    """A float option that refuses nan and inf (a learning rate of nan would train on NaN without a word)."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            raise AxnetError(f"{param.opts[0] if param else 'option'} {value}: must be a finite number")
        return number


FINITE = FiniteFloat()


def given_options(ctx, *skip):
    """The options the user gave (not click's defaults), by parameter name, without those in `skip`."""
    from click.core import ParameterSource

    return {k: v for k, v in ctx.params.items()
            if k not in skip and ctx.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)}


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
    write_output(write_blif, netlist, out, out=out)
    click.echo(f"wrote {out}: {netlist.name}, {len(netlist.inputs)} inputs, {len(netlist.outputs)} outputs, "
               f"{netlist.gate_count()} nodes, depth {netlist.depth()}")


def simulate_netlist(netlist, widths, signed, sha256=None):
    """build_lut with a progress bar for long simulations."""
    from lutgen.lut import build_lut

    with progress_bar(f"simulating {netlist.name}", total=1 << len(netlist.inputs), unit="pattern") as bar:
        return build_lut(netlist, widths=widths, signed=signed, sha256=sha256, progress=bar.update)


def build_circuit_lut(circuit, operands, signed, top, undriven):
    """Read CIRCUIT and simulate it into a Lut that records the circuit file's sha256."""
    netlist = load_circuit(circuit, top, undriven)
    return simulate_netlist(netlist, parse_operands_option(operands), signed, sha256=file_sha256(circuit))


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
    write_output(save_lut, lut, out, fmt, out=out)
    click.echo(f"wrote {out} ({fmt}): {lut.describe()}")


@main.command("metrics")
@click.argument("source", metavar="CIRCUIT|LUT", type=click.Path(dir_okay=False))
@click.option("--reference", type=click.Choice(["add", "sub", "mul"]), default=None,
              help="Exact operation to compare with (default: mul for an n x m -> n+m bit circuit, else add).")
@click.option("--operands", metavar="W1,W2,..", default=None, help="Operand widths by input position (circuits).")
@click.option("--signed", is_flag=True, help="Read a circuit's operands and result as two's complement.")
@click.option("--samples", type=click.IntRange(1, None), default=None,
              help="Measure on N random combinations instead of all (circuits).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for --samples.")
@click.option("--overflow", type=click.Choice(["include", "exclude"]), default="include", show_default=True,
              help="exclude: signed wrap-around adders (EvoApproxLib add8s_*) measured over only the pairs whose "
                   "exact result fits the output width, normalised by 2^(n-1).")
@with_circuit_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics_cmd(source, reference, operands, signed, samples, seed, overflow, top, undriven, as_json):
    """Error metrics of a circuit or LUT.

    Compared with the exact operation (--reference).

    EvoApproxLib definitions (EP, MAE, WCE, MSE, bias, MRE, WCRE).

    A circuit too wide for a table (more than 2^26 combinations), or one given --samples, is streamed.
    """
    from pathlib import Path

    from circuits.read import is_circuit_path
    from lutgen.measure import circuit_metrics, lut_metrics, patterns_to_measure

    if is_circuit_path(source):
        netlist = load_circuit(source, top, undriven)
        name = netlist.name
        with progress_bar(f"measuring {name}", total=patterns_to_measure(netlist, samples), unit="pattern") as bar:
            reference, why, mode, result = circuit_metrics(netlist, parse_operands_option(operands), reference, signed,
                                                           samples, seed, overflow, progress=bar.update)
    else:
        if samples is not None or operands is not None or signed:
            raise AxnetError("--samples, --operands and --signed apply to circuits; a LUT file carries its own")
        from lutgen.formats import load_lut
        lut = load_lut(source)
        name = lut.circuit or Path(source).stem
        reference, why, mode, result = lut_metrics(lut, reference, overflow)
    if as_json:
        echo_json({"circuit": name, "source": source, "reference": reference, "reference_reason": why,
                   "mode": mode, "metrics": {k: to_plain(v) for k, v in result.items()}})
        return
    rows = [("circuit", name), ("reference", f"{reference} ({why})"), ("mode", mode),
            ("overflow", result.get("overflow", "include"))]
    rows += [(label, format_number(result[key]) + unit) for key, label, unit in METRIC_ROWS if key in result]
    echo_table(rows)


def to_plain(value):
    """numpy scalars -> Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else value


def format_number(value):
    """Integers as they are, other numbers with 6 significant digits."""
    value = to_plain(value)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
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
              help="Exact operation for --method ste (default: guessed from the LUT as `metrics` does).")
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
    why = "given"
    if method == "ste" and reference is None:
        from lutgen.reference import guess_reference
        reference, why = guess_reference(lut)
    grad = gradient_lut(lut, half_window, boundary=boundary, method=method, reference=reference)
    write_output(save_lut, grad, out, fmt, out=out)
    meta = grad.grad_meta
    how = (f"half window {meta['half_window']}, boundary {meta['boundary']}" if method == "diff"
           else f"straight-through, reference {reference} ({why})")
    click.echo(f"wrote {out} ({fmt}): gradients of {lut.describe()}; {how}")



# ---- training workflow commands (issue 4) ----------------------------------------------------------------------------
# Train / eval / sweep / retrain. The loops live in dnn.workflow; these commands parse options, print tables or
# JSON, and leave every file to dnn.workflow (atomic writes, rank 0 only under torchrun).


DATA_HELP = "Data set: mnist5k (5,000 embedded real digits, offline), mnist:DIR (IDX files) or cifar10:DIR."
ACCUM_HELP = ("Sum every output's terms through an approximate accumulator: SCHEME:WIDTH[:k=K][:cell=NAME] (rca, loa, "
              "eta1, trunc) or FILE.blif|.pla, then optionally :order=tree (default sequential).")


@main.command("train")
@click.option("--model", "model_name", default=None, metavar="NAME",
              help="mnist-addernet, mnist-cnn, lenet5-addernet, lenet5-cnn, resnet20-addernet, resnet20-cnn "
                   "(required, except with --resume).")
@click.option("--data", "data_spec", default="mnist5k", show_default=True, help=DATA_HELP)
@click.option("--epochs", type=int, default=None,
              help="Training epochs (cosine schedule). Default: 30 for mnist-*, 10 otherwise. With --resume, a larger "
                   "value extends the run (the schedule is stretched to it).")
@click.option("--out", "out_dir", type=click.Path(), required=True,
              help="Run directory: checkpoints (last.pt, best.pt, epoch_N.pt), history.csv, curves.png.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None,
              help="adam, or sgd = the AdderNet recipe (momentum 0.9 + adaptive scaling of adder gradients). "
                   "Default: adam for mnist-*, sgd otherwise.")
@click.option("--batch-size", type=int, default=None,
              help="Global batch size (all ranks). Default: 16 for mnist-*, 64 otherwise.")
@click.option("--lr", type=FINITE, default=None, help="Initial learning rate. Default: 0.03 for mnist-*, 0.1 otherwise.")
@click.option("--weight-decay", type=FINITE, default=None, help="Weight decay. Default: 0 for mnist-*, 5e-4 otherwise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: a CPU run is repeatable with it.")
@click.option("--eta", type=FINITE, default=0.2, show_default=True,
              help="AdderNet adaptive learning-rate eta (sgd only).")
@click.option("--save-every", type=click.IntRange(1, None), default=5, show_default=True,
              help="Also keep epoch_N.pt every N epochs.")
@click.option("--no-augment", is_flag=True, help="No random shifts (digits) or crops and flips (CIFAR).")
@click.option("--augment", "augment_kind", type=click.Choice(["shift", "affine", "crop-flip"]), default=None,
              help="Augmentation instead of the data set's own (digits: shift, up to 2 pixels; CIFAR: crop-flip). "
                   "affine: rotation up to 10 degrees, scale 0.9-1.1 and shift up to 2 pixels.")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None,
              help="Distil from this trained checkpoint (e.g. a lenet5-cnn run): loss = (1 - a) * cross-entropy + "
                   "a * T^2 * KL(teacher || student) at temperature T.")
@click.option("--kd-alpha", type=FINITE, default=None, help="Weight a of the distillation term (with --teacher; 0.7).")
@click.option("--kd-temperature", type=FINITE, default=None, help="Distillation temperature T (with --teacher; 4).")
@click.option("--ema", type=FINITE, default=0.0, show_default=True, metavar="DECAY",
              help="Evaluate and save an exponential moving average of the weights with this decay (e.g. 0.999; "
                   "0 = off).")
@click.option("--limit", type=click.IntRange(0, None), default=0,
              help="Use only the first N training images (quick trials; 0 = all).")
@click.option("--limit-test", type=click.IntRange(0, None), default=0,
              help="Use only the first N test images (quick trials; 0 = all).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last.pt, with its settings (options given must agree).")
@click.option("--overwrite", is_flag=True, help="Replace the run --out already holds (refused without it).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def train_cmd(ctx, model_name, data_spec, epochs, out_dir, optimizer, batch_size, lr, weight_decay, seed, eta,
              save_every, no_augment, augment_kind, teacher, kd_alpha, kd_temperature, ema, limit, limit_test, resume,
              overwrite, as_json):
    """Float (pre)training; runs unchanged under torchrun.

    mnist-* models default to Adam (lr 0.03, batch 16, 30 epochs): on the seed-000 network it beats the AdderNet
    recipe (--optimizer sgd: SGD + adaptive scaling of adder gradients, lr 0.1, batch 64), whose fixed-size steps
    push the adder weights far outside the activation range. The other models default to the AdderNet recipe."""
    from dnn.workflow.train_options import train_from_options

    options = given_options(ctx, "out_dir", "resume", "overwrite", "as_json")
    summary = train_from_options(options, out_dir, resume=resume, overwrite=overwrite)
    if summary is None:  # under torchrun only rank 0 reports
        return
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"{summary['model']} on {summary['data']}: final test accuracy {summary['final_test_acc']:.2f}%, "
                   f"best {summary['best_test_acc']:.2f}%, {summary['train_seconds']:.0f} s; run in {out_dir}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--arith", "arith_texts", multiple=True, default=["float"], show_default=True,
              help="float, exact:BITS, lut:PATH[:grad=lut|ste][:w=W], cell:NAME:k=K[:width=32] or "
                   "circuit:FILE[:grad=ste|diff][:w=W] (an adder netlist of up to 32 bits); repeatable.")
@click.option("--data", "data_spec", default=None, help=DATA_HELP + " Default: the checkpoint's.")
@click.option("--limit-test", type=click.IntRange(0, None), default=0,
              help="Use only the first N test images (0 = the whole test set, whatever the run trained with).")
@click.option("--mult", "mult_texts", multiple=True, metavar="SPEC",
              help="Also a row with the convolution and linear layers (first and last exact) on an approximate "
                   "multiplier: lut:PATH or circuit:FILE (a multiplier netlist of any width), then optionally "
                   ":mode=unsigned|signed, :weights=tensor|channel; repeatable.")
@click.option("--accum", "accum_text", default=None, metavar="SPEC", help=ACCUM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def eval_cmd(checkpoint, arith_texts, data_spec, limit_test, mult_texts, accum_text, as_json):
    """Test accuracy of a checkpoint under float, quantized exact, LUT, cell-adder or netlist arithmetic, and of a
    CNN checkpoint under approximate multipliers (--mult)."""
    from dnn.workflow.evaluate import eval_checkpoint, load_for_eval

    loaded = load_for_eval(checkpoint, data_spec, limit_test)
    results = [eval_checkpoint(checkpoint, a, accum_text=accum_text if a != "float" else None, loaded=loaded)
               for a in arith_texts]
    results += [eval_checkpoint(checkpoint, "float", accum_text=accum_text, mult_text=m, loaded=loaded)
                for m in mult_texts]
    if as_json:
        echo_json(results if len(results) > 1 else results[0])
        return
    click.echo(f"data {results[0]['data_used']}")
    echo_table([(r["arith"], f"{r['accuracy']:.2f}%", r["images"], f"{r['seconds']:.1f}") for r in results],
               header=("arithmetic", "accuracy", "images", "seconds"))


@main.command("sweep")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--cell", default="maj", show_default=True, metavar="NAME|FILE.blif|TABLE",
              help="Approximate full-adder cell for the low bits (see `axnet library`).")
@click.option("--width", type=click.IntRange(2, 64), default=32, show_default=True, help="Adder width in bits.")
@click.option("--approx-bits", "bits_text", default="0:32", show_default=True,
              help="Approximate low bits to try: LO:HI (inclusive), LO:HI:STEP or K.")
@click.option("--limit-test", type=click.IntRange(0, None), default=0,
              help="Use only the first N test images (quicker; 0 = the whole test set, whatever the run trained with).")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Write sweep.png, sweep.csv and sweep.json here.")
@click.option("--data", "data_spec", default=None, help=DATA_HELP + " Default: the checkpoint's.")
@click.option("--target", type=click.Choice(["adder", "accum"]), default="adder", show_default=True,
              help="adder: the subtraction's cell adder (--cell, --width); accum: the accumulator (--scheme, --width, "
                   "--order) on --arith.")
@click.option("--scheme", default="loa", show_default=True, help="--target accum: rca (with --cell), loa, eta1, trunc.")
@click.option("--order", type=click.Choice(["sequential", "tree"]), default="sequential", show_default=True,
              help="--target accum: the accumulation order.")
@click.option("--arith", "arith_text", default="exact:8", show_default=True,
              help="--target accum: the subtraction's arithmetic (as in eval).")
@click.option("--accum", "accum_text", default=None, metavar="SPEC", help="--target adder: " + ACCUM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def sweep_cmd(ctx, checkpoint, cell, width, bits_text, limit_test, out_dir, data_spec, target, scheme, order,
              arith_text, accum_text, as_json):
    """Accuracy against the number of approximate low bits of a cell adder (the seed-000 study), or of the
    accumulator (--target accum)."""
    from dnn.workflow import run_sweep

    other, only = {"adder": (("scheme", "order", "arith_text"), "accum"), "accum": (("accum_text",), "adder")}[target]
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    given = [flags[name] for name in other
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:  # an option of the other target would be ignored: say so rather than sweep something else
        verb = "applies" if len(given) == 1 else "apply"
        raise AxnetError(f"{', '.join(given)}: {verb} to --target {only} only (this sweep is --target {target})")
    if target == "accum":
        from dnn.workflow.accum_sweep import run_accum_sweep
        result = run_accum_sweep(checkpoint, scheme=scheme, width=width, bits_text=bits_text, arith_text=arith_text,
                                 order=order, cell=cell, out_dir=out_dir, data_spec=data_spec, test_limit=limit_test)
        if as_json:
            echo_json(result)
            return
        click.echo(f"{result['model']}, {width}-bit {scheme} accumulator ({order}) on {result['arith']}; float "
                   f"{result['float_accuracy']:.2f}%, exact sums {result['exact_accumulation_accuracy']:.2f}%; "
                   f"data {result['data_used']}")
        echo_table([(p["approx_bits"], "failed: " + p["note"] if p["accuracy"] is None else f"{p['accuracy']:.2f}%")
                    for p in result["points"]], header=("k", "accuracy"))
        drop = result["first_drop_over_1_point"]
        click.echo("first k more than 1 point below exact sums: " + ("none" if drop is None else str(drop)))
        if out_dir:
            click.echo(f"wrote {out_dir}/sweep.png, sweep.csv, sweep.json")
        return
    result = run_sweep(checkpoint, cell=cell, width=width, bits_text=bits_text, out_dir=out_dir, data_spec=data_spec,
                       test_limit=limit_test, accum_text=accum_text)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['model']}, {width}-bit adder, cell {cell}; float {result['float_accuracy']:.2f}%; "
               f"data {result['data_used']}")
    echo_table([(p["approx_bits"], f"{p['accuracy']:.2f}%") for p in result["points"]], header=("k", "accuracy"))
    drop = result["first_drop_over_1_point"]
    click.echo("first k more than 1 point below k=0: " + ("none" if drop is None else str(drop)))
    if out_dir:
        click.echo(f"wrote {out_dir}/sweep.png, sweep.csv, sweep.json")


@main.command("retrain")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--circuit", type=click.Path(dir_okay=False), metavar="FILE.blif|LUT.npz",
              help="The approximate adder: a BLIF netlist (simulated here; a netlist too wide for a table is "
                   "evaluated per pair) or a LUT file.")
@click.option("--grad", type=click.Choice(["lut", "ste"]), default=None,
              help="Backward through the circuit: windowed-difference gradient LUT or straight-through. "
                   "[default: lut]")
@click.option("--half-window", type=click.IntRange(0, None), default=None, help="Gradient-LUT half window W.")
@click.option("--arith", "arith_text", default=None, metavar="SPEC",
              help="Instead of --circuit/--grad/--half-window, as in eval: lut:PATH[:grad=lut|ste][:w=W], or "
                   "circuit:FILE[:grad=ste|diff][:w=W] (the netlist evaluated per pair at any width).")
@click.option("--epochs", type=click.IntRange(1, None), default=5, show_default=True, help="Retraining epochs.")
@click.option("--lr", type=FINITE, default=0.01, show_default=True, help="Initial retraining learning rate.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Global batch size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the (first) retraining run.")
@click.option("--seeds", type=click.IntRange(1, None), default=1, show_default=True,
              help="Retrain N times (seeds SEED..SEED+N-1) per method; rows give mean +- std and every seed.")
@click.option("--compare-ste", is_flag=True, help="Also retrain with STE from the same start, for the table.")
@click.option("--out", "out_dir", type=click.Path(), required=True,
              help="Directory for retrain.json, retrain.md and the retrained runs.")
@click.option("--resume", is_flag=True, help="Continue interrupted retraining runs in --out (a larger --epochs "
                                           "extends finished ones).")
@click.option("--overwrite", is_flag=True, help="Replace the retraining results --out already holds.")
@click.option("--limit-test", type=click.IntRange(0, None), default=0,
              help="Use only the first N test images (0 = the whole test set, whatever the run trained with).")
@click.option("--accum", "accum_text", default=None, metavar="SPEC", help=ACCUM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def retrain_cmd(checkpoint, circuit, grad, half_window, arith_text, epochs, lr, batch_size, seed, seeds, compare_ste,
                out_dir, resume, overwrite, limit_test, accum_text, as_json):
    """Approximation-aware retraining through a circuit; prints the before/after accuracy table."""
    from dnn.workflow import markdown_table, run_retrain
    from dnn.workflow.retrain import retrain_target

    circuit, grad, half_window, netlist = retrain_target(circuit, grad, half_window, arith_text)
    result = run_retrain(checkpoint, circuit, grad=grad, half_window=half_window, epochs=epochs,
                         compare_ste=compare_ste, out_dir=out_dir, lr=lr, batch_size=batch_size, seed=seed,
                         seeds=seeds, resume=resume, overwrite=overwrite, test_limit=limit_test,
                         accum_text=accum_text, netlist=netlist)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"data {result['data_used']}; {result['train_images']} training images")
        click.echo(markdown_table(result), nl=False)
        click.echo(f"wrote {out_dir}/retrain.json and retrain.md")


# ---- design-space exploration (issue 14) -----------------------------------------------------------------------------
# Options and calls only: dnn.workflow.explore does the work and writes RUN.

@main.command("explore")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("more_circuits", nargs=-1, metavar="[PATH]...", type=click.Path())
@click.option("--circuits", "circuits", multiple=True, metavar="PATH",
              help="Circuit or LUT files (.blif .pla .npz .txt .csv .h) or directories of them; repeatable, and "
                   "further paths may follow the options.")
@click.option("--family", "families", multiple=True, metavar="SPEC",
              help="Generated circuits, e.g. rca:8:cell=maj,ama1:k=0..8, loa:8:k=1..6, eta1:8:k=1..6, "
                   "trunc:8:k=1..4, mul:8; with ariths-gen: ag-bam:8:h=0..2:v=0..8, ag-tm:8:k=0..6, ag-rm:8:m=1..4, "
                   "ag-quad:8:r=4,4:p=0,2, ag-ks:8 ... Repeatable.")
@click.option("--out", "out_dir", type=click.Path(), required=True,
              help="Run directory: results.sqlite, results.csv, results.json, pareto.png, summary.md.")
@click.option("--assign", type=click.Choice(["uniform", "per-layer"]), default="uniform", show_default=True,
              help="uniform: one circuit in every layer; per-layer: sensitivities, then NSGA-II over assignments.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool here; ray: Ray tasks on --address or on a local Ray.")
@click.option("--workers", type=click.IntRange(1, None), default=None,
              help="Worker processes (local) or CPUs of a local Ray. Default: the core count.")
@click.option("--address", default=None, metavar="HOST:PORT", help="Ray cluster to join (--engine ray).")
@click.option("--resume", is_flag=True, help="Continue the run in --out, skipping every design already recorded.")
@click.option("--data", "data_spec", default=None, help=DATA_HELP + " Default: the checkpoint's.")
@click.option("--limit-test", type=click.IntRange(0, None), default=0,
              help="Use only the first N test images (0 = all).")
@click.option("--retrain-epochs", type=click.IntRange(0, None), default=0, show_default=True,
              help="Retrain the checkpoint through each design on the front (see --retrain-ranks) for N epochs.")
@click.option("--retrain-ranks", type=click.IntRange(1, None), default=1, show_default=True,
              help="Retrain designs of the first R Pareto ranks (1 = the front only).")
@click.option("--grad", type=click.Choice(["lut", "ste", "diff"]), default="lut", show_default=True,
              help="Retraining backward: gradient LUT, straight-through, or the netlist back-end's differences.")
@click.option("--half-window", type=click.IntRange(0, None), default=2, show_default=True,
              help="Half window of the gradient LUT / difference (--grad lut, diff).")
@click.option("--abc", is_flag=True, help="Also map each circuit with ABC (yosys-abc/berkeley-abc on PATH) onto "
                                         "the bundled generic library and record its area.")
@click.option("--generations", type=click.IntRange(1, None), default=100, show_default=True,
              help="NSGA-II generations (--assign per-layer).")
@click.option("--evaluate", "evaluate_n", type=click.IntRange(1, None), default=12, show_default=True,
              help="Predicted per-layer assignments evaluated for real (spread over the cost axis).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the search and of retraining.")
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True,
              help="Torch threads per worker (fixed, so results do not depend on the engine).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where workers evaluate; with cuda each Ray task also declares one GPU.")
@click.option("--undriven", type=click.Choice(["error", "zero"]), default="error", show_default=True,
              help="BLIF nets read but never driven: refuse, or tie to 0.")
@click.option("--json", "as_json", is_flag=True, help="Print the design records as JSON.")
def explore_cmd(checkpoint, more_circuits, circuits, families, out_dir, assign, engine, workers, address, resume,
                data_spec, limit_test, retrain_epochs, retrain_ranks, grad, half_window, abc, generations,
                evaluate_n, seed, threads, device, undriven, as_json):
    """Explore a library of circuits on a checkpoint: accuracy against hardware cost.

    Adders serve an AdderNet checkpoint's adder layers, multipliers a CNN's convolution and linear layers. Designs
    with the same truth table are one design. Progress: one line per finished design on stderr.
    """
    from dnn.workflow.explore import run_explore

    result = run_explore(checkpoint, circuits=list(circuits) + list(more_circuits), families=list(families),
                         out_dir=out_dir, assign=assign, engine=engine, workers=workers, address=address,
                         resume=resume, data_spec=data_spec, test_limit=limit_test, retrain_epochs=retrain_epochs,
                         grad=grad, half_window=half_window, retrain_ranks=retrain_ranks, abc=abc,
                         generations=generations, evaluate=evaluate_n, seed=seed, threads=threads,
                         device=device, undriven=undriven, show=True)
    if as_json:
        echo_json(result["records"])
        return
    front = sorted((r for r in result["records"] if r["front_rank"] == 1), key=lambda r: r["area_nand2"])
    click.echo(f"{len(result['records'])} designs on {result['run']['model']} ({result['run']['images']} test "
               f"images); Pareto front:")
    echo_table([(r["circuit"], f"{r['area_nand2']:.1f}", f"{r['accuracy']:.2f}%",
                 "" if r["retrained_accuracy"] is None else f"{r['retrained_accuracy']:.2f}%") for r in front],
               header=("circuit", "area", "accuracy", "retrained"))
    click.echo(f"wrote {', '.join(result['files'])}")


if __name__ == "__main__":
    main()
