"""`axnet retrain`: approximation-aware retraining through a circuit, gradient LUTs against STE, over seeds."""
from __future__ import annotations

import os
import statistics
import sys

from tqdm import tqdm

from circuits.errors import AxnetError
from circuits.files import check_output_dir, file_sha256
from dnn.workflow.checkpoint import check_circuit, load_checkpoint
from lutgen.files import atomic_write
from dnn.workflow.distributed import DistContext, default_device
from dnn.workflow.evaluate import accuracy_under, data_for_checkpoint
from dnn.workflow.loop import evaluate, reestimate_batchnorm
from dnn.workflow.prepare import arith_label, model_from_checkpoint
from dnn.workflow.rundir import existing_run_files
from dnn.workflow.train import TrainConfig, run_training, write_json


def load_circuit_lut(path):
    """A Lut from a BLIF netlist (simulated exhaustively, as `axnet simulate` does) or a LUT file (.npz etc.)."""
    if not os.path.isfile(path):
        raise AxnetError("--circuit: file not found", path=path)
    if path.endswith(".blif"):
        from circuits.blif import read_blif
        from lutgen.lut import build_lut
        return build_lut(read_blif(path), sha256=file_sha256(path))
    from lutgen.formats import load_lut
    return load_lut(path)


def wide_netlist_adder(path):
    """A NetlistAdder (grad ste) for a .blif/.pla adder whose operands are too wide for a LUT adder, else None."""
    if not str(path).lower().endswith((".blif", ".pla")) or not os.path.isfile(path):
        return None
    from dnn.arith.base import MAX_LUT_BITS
    from dnn.arith.netlist_adder import NetlistAdder
    from dnn.arith.netlist_circuit import TwoOperandCircuit
    try:
        widths = TwoOperandCircuit(path).widths
    except AxnetError:  # not a two-operand circuit: the LUT path reports it as it always has
        return None
    return NetlistAdder(path) if max(widths) > MAX_LUT_BITS else None


def retrain_target(circuit=None, grad=None, half_window=None, arith=None):
    """(circuit path, grad lut|ste, half window, per-pair netlist?) from retrain's --circuit/--grad/--half-window or
    from --arith as in `axnet eval`: lut:PATH[:grad=lut|ste][:w=W] retrains through the table,
    circuit:FILE[:grad=ste|diff][:w=W] through the netlist itself at any width (diff: the gradient LUT's slopes taken
    on the fly, so it fills the gradient-LUT stage)."""
    if arith is None:
        if circuit is None:
            raise AxnetError("give the circuit to retrain through: --circuit FILE.blif|LUT.npz or --arith SPEC")
        return circuit, grad or "lut", half_window, False
    if circuit is not None or grad is not None or half_window is not None:
        raise AxnetError(f"--arith '{arith}' already names the circuit, its gradient and window: leave out --circuit, "
                         "--grad and --half-window")
    from dnn.arith.spec import adder_file_spec
    kind, path, grad, half_window = adder_file_spec(arith)
    if kind is None:
        raise AxnetError(f"--arith '{arith}': retrain takes lut:PATH[:grad=lut|ste][:w=W] or "
                         "circuit:FILE[:grad=ste|diff][:w=W]")
    return path, "lut" if grad == "diff" else grad, half_window, kind == "circuit"


def lut_width(lut):
    """The operand width n of an adder LUT (both operands must have it)."""
    widths = {w for _, w in lut.operands}
    if len(lut.operands) != 2 or len(widths) != 1:
        raise AxnetError(f"--circuit: expected an adder with two equal-width operands, found {lut.operands}")
    return widths.pop()


def check_retrain_dir(out_dir, resume, overwrite):
    """Before any work: `out_dir` is writable, and earlier retraining results in it are kept unless the caller
    resumes them or overwrites them."""
    if resume and overwrite:
        raise AxnetError("--resume and --overwrite: give one of them (continue the retraining, or start it again)")
    check_output_dir(out_dir, "--out")
    if resume or overwrite:
        return
    found = [n for n in ("retrain.json", "retrain.md") if os.path.isfile(os.path.join(out_dir, n))]
    found += sorted(n for n in os.listdir(out_dir)
                    if n.startswith("retrain_") and existing_run_files(os.path.join(out_dir, n)))
    if found:
        raise AxnetError(f"--out {out_dir} already holds retraining results ({', '.join(found[:4])}); give --resume "
                         "to continue them or --overwrite to replace them")


def half_window_note(lut, grad, half_window):
    """Which half window the gradient LUT uses when a gradient file was given, in words (None when nothing to say)."""
    meta = lut.grad_meta or {}
    made = meta.get("half_window") if meta.get("method") == "diff" else None
    if grad != "lut" or lut.grads is None or made is None:
        return None
    if half_window is None:
        return f"--circuit holds gradients made with half window {made}; using them"
    if int(half_window) != int(made):
        return (f"--half-window {half_window}: the gradient file was made with half window {made}; using "
                f"{half_window} (gradients recomputed from the LUT's values, the file's are not used)")
    return None


RETRAIN_DEFAULTS = dict(lr=0.01, batch_size=64)  # retraining keeps the AdderNet recipe: SGD + adaptive scaling


def run_retrain(ckpt_path, circuit, grad="lut", half_window=None, epochs=5, compare_ste=False, out_dir="runs/retrain",
                lr=None, batch_size=None, seed=0, data_spec=None, train_limit=0, test_limit=0, show=True,
                resume=False, seeds=1, overwrite=False, accum_text=None, netlist=False):
    """Approximation-aware retraining from a float checkpoint; returns the table rows (also written as JSON/md).
    With `accum_text` (an --accum spec) every integer row and the retraining also sum through that accumulator.
    With `netlist` a .blif/.pla `circuit` is evaluated per pair as a netlist (`NetlistAdder`) whatever its width;
    without, only circuits too wide for a table are.

    Rows: float, quantized exact (ExactInt(n) for an n-bit LUT adder), the circuit before retraining, after
    retraining with `grad`, and with `compare_ste` after STE retraining from the same start. With `seeds` > 1 each
    retraining runs with seeds seed, seed+1, ... from the same checkpoint and its row gives the mean, the standard
    deviation and every seed's accuracy: a difference of a few digits between two methods is run-to-run noise.
    Evaluation uses the whole test set unless `test_limit`; an `out_dir` holding earlier results is refused unless
    `resume` or `overwrite`."""
    from dnn.arith import ExactInt, LutAdder, NetlistAdder
    if grad not in ("lut", "ste"):
        raise AxnetError(f"--grad '{grad}': expected lut or ste")
    if seeds < 1:
        raise AxnetError(f"--seeds {seeds}: expected at least 1 retraining run per method")
    check_retrain_dir(out_dir, resume, overwrite)
    ckpt = load_checkpoint(ckpt_path)
    wide = NetlistAdder(circuit) if netlist else wide_netlist_adder(circuit)
    if wide is None:
        lut = load_circuit_lut(circuit)
        n = lut_width(lut)
        if grad == "lut" and half_window is None and lut.grads is None:
            raise AxnetError("--grad lut needs --half-window W (with --arith, :w=W) or a gradient LUT file from "
                             "`axnet gradlut`")
        note = half_window_note(lut, grad, half_window)
        before = LutAdder(lut, grad="ste")
    else:  # the netlist itself (asked for, or too wide for a table), the gradient LUT's slopes taken on the fly
        n, note, before = wide.bits, None, wide
    if note and show:
        tqdm.write(f"axnet: note: {note}", file=sys.stderr)
    check_circuit(ckpt, before.sha256, ckpt_path, "retrain")
    data = data_for_checkpoint(ckpt, data_spec, test_limit, train_limit)
    device = default_device()
    from dnn.arith.accumulate import accum_label, parse_accum
    accum = parse_accum(accum_text) if accum_text else None
    rows = []
    for name, arith in (("float", None), (f"quantized exact ({n}-bit)", ExactInt(n)),
                        ("circuit, before retraining", before)):
        # a fresh model per row, as `axnet eval` does: calibration clamps weights and adds clamp biases, so a model
        # calibrated for one back-end and then again for another is not what either row means (and scored 36%
        # instead of 72.6% under the circuit on runs/demo/float)
        model = model_from_checkpoint(ckpt).to(device)
        row_accum = accum if arith is before else None  # float and quantized exact stay the exact-sum baselines
        rows.append({"row": name, "arith": accum_label(arith_label(arith), row_accum),
                     "accuracy": accuracy_under(model, arith, data, device, accum=row_accum),
                     "epochs": 0, "seconds": 0.0})
    # how much of the recovery is only BatchNorm statistics: re-estimate them through the circuit, no training
    reestimate_batchnorm(model, data.train_x, DistContext(device=device))
    rows.append({"row": "circuit, BatchNorm re-estimated only", "arith": accum_label(arith_label(before), accum),
                 "accuracy": evaluate(model, data.test_x, data.test_y, device=device)[1], "epochs": 0,
                 "seconds": 0.0})
    base_cfg = TrainConfig.from_dict(ckpt["config"])
    stages = [grad] + (["ste"] if compare_ste and grad != "ste" else [])
    run_seeds = list(range(seed, seed + seeds))
    for g in stages:
        if wide is None:
            arith = LutAdder(lut, grad=g, half_window=half_window if g == "lut" else None)
        else:
            arith = NetlistAdder(circuit, grad="diff" if g == "lut" else "ste", half_window=half_window)
        accs, seconds, checkpoints = [], [], []
        for s in run_seeds:
            cfg = TrainConfig(model=ckpt["model"], data=data_spec or base_cfg.data, epochs=epochs,
                              batch_size=batch_size or RETRAIN_DEFAULTS["batch_size"],
                              lr=lr or RETRAIN_DEFAULTS["lr"], optimizer="sgd", seed=s, augment=base_cfg.augment,
                              save_every=max(epochs, 1), train_limit=train_limit or base_cfg.train_limit,
                              test_limit=test_limit)
            # one seed keeps the plain directory name that single runs have always had
            stage_dir = os.path.join(out_dir, f"retrain_{g}" if seeds == 1 else f"retrain_{g}_seed{s}")
            extra = {"retrained_from": str(ckpt_path), "grad": g, "half_window": half_window,
                     "accum": accum.spec if accum is not None else None}
            summary = run_training(cfg, stage_dir,
                                   resume=resume and os.path.isfile(os.path.join(stage_dir, "last.pt")),
                                   overwrite=overwrite,
                                   arith=arith, init_state=ckpt["state_dict"], extra=extra, show=show, data=data,
                                   accum=accum,
                                   title=f"{ckpt['model']} on {data.name} ({arith_label(arith)}), seed {s}")
            accs.append(summary["final_test_acc"])  # the retrained model, with the scales it was trained with
            seconds.append(summary["train_seconds"])
            checkpoints.append(os.path.join(stage_dir, "last.pt"))
        windowed = "gradient LUT" if wide is None else "windowed differences"  # a netlist takes its slopes on the fly
        label = f"after retraining, {windowed}" if g == "lut" else "after retraining, STE"
        row = {"row": label, "arith": accum_label(arith_label(arith), accum), "accuracy": statistics.fmean(accs),
               "epochs": epochs,
               "seconds": statistics.fmean(seconds), "checkpoint": checkpoints[0]}
        if seeds > 1:
            row.update(seeds=run_seeds, per_seed=accs, std=statistics.stdev(accs), checkpoints=checkpoints)
        rows.append(row)
    result = {"checkpoint": str(ckpt_path), "circuit": str(circuit), "circuit_sha256": before.sha256,
              "model": ckpt["model"], "data": data.name, "images": len(data.test_x), "data_used": data.used,
              "train_images": len(data.train_x), "rows": rows, "accum": accum.spec if accum is not None else None}
    if note:
        result["notes"] = [note]
    if seeds > 1 and len(stages) == 2:
        lut_row, ste_row = rows[-2], rows[-1]
        diffs = [a - b for a, b in zip(lut_row["per_seed"], ste_row["per_seed"])]
        result["lut_minus_ste"] = {"per_seed": diffs, "mean": statistics.fmean(diffs),
                                   "seeds_lut_at_or_above": sum(d >= 0 for d in diffs)}
    os.makedirs(out_dir, exist_ok=True)
    write_json(result, os.path.join(out_dir, "retrain.json"))
    with atomic_write(os.path.join(out_dir, "retrain.md"), "w") as f:
        f.write(markdown_table(result))
    return result


def markdown_table(result):
    """The retraining table as markdown, one row per arithmetic / stage (mean +- std over seeds where several ran)."""
    lines = [f"Model `{result['model']}` on {result['data']} ({result['images']} test images), "
             f"circuit `{os.path.basename(result['circuit'])}`"
             + (f", accumulator `{result['accum']}`" if result.get("accum") else ""), ""]
    lines += [f"Note: {n}" for n in result.get("notes", [])] + ([""] if result.get("notes") else [])
    lines += ["| network | arithmetic | accuracy (%) | retraining epochs | seconds |", "|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        acc = f"{r['accuracy']:.2f}"
        if "per_seed" in r:
            acc += f" ± {r['std']:.2f} ({', '.join(f'{a:.1f}' for a in r['per_seed'])})"
        lines.append(f"| {r['row']} | {r['arith']} | {acc} | {r['epochs']} | {r['seconds']:.1f} |")
    seeded = [r for r in result["rows"] if "seeds" in r]
    if seeded:
        s = seeded[0]["seeds"]
        lines += ["", f"Retraining rows: mean ± standard deviation over seeds {s[0]}-{s[-1]} "
                      f"(each seed's accuracy in brackets), seconds per run."]
    diff = result.get("lut_minus_ste")
    if diff:
        lines.append(f"Gradient LUT minus STE, seed by seed: {', '.join(f'{d:+.1f}' for d in diff['per_seed'])} "
                     f"(mean {diff['mean']:+.2f}; at or above STE with {diff['seeds_lut_at_or_above']} of "
                     f"{len(diff['per_seed'])} seeds).")
    return "\n".join(lines) + "\n"
