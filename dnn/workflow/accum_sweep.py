"""`axnet sweep --target accum`: accuracy against the approximate low bits of the accumulator that sums each
output's terms (issue 11), for a bundled scheme (rca, loa, eta1, trunc) of a given width and order."""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from circuits.errors import AxnetError
from circuits.files import check_output_dir
from dnn.workflow.checkpoint import load_checkpoint
from dnn.workflow.distributed import default_device
from dnn.workflow.evaluate import accuracy_under, data_for_checkpoint
from dnn.workflow.loop import bar_off
from dnn.workflow.prepare import arith_label, model_from_checkpoint, parse_arith_text
from dnn.workflow.sweep import first_drop, parse_bits_range
from dnn.workflow.train import write_json
from lutgen.files import atomic_write

__all__ = ["accum_spec", "run_accum_sweep"]


def accum_spec(scheme, width, k, cell="maj"):
    """The Accumulator spec of one sweep point, e.g. loa:16:k=4 (rca takes the cell too)."""
    from dnn.arith.accumulate import SCHEMES
    if scheme not in SCHEMES:
        raise AxnetError(f"--scheme '{scheme}': expected one of {', '.join(SCHEMES)}")
    return f"{scheme}:{width}:" + (f"cell={cell}:" if scheme == "rca" else "") + f"k={k}"


def run_accum_sweep(ckpt_path, scheme="loa", width=16, bits_text="0:16", arith_text="exact:8", order="sequential",
                    cell="maj", out_dir=None, data_spec=None, test_limit=0, show=True):
    """Accuracy of a checkpoint on `arith_text` with every sum through a `width`-bit `scheme` accumulator whose low k
    bits are approximate, for each k of `bits_text`; the same dict layout as `run_sweep` (points, float accuracy,
    first k more than 1 point below k = 0)."""
    from dnn.arith.accumulate import Accumulator
    bits = parse_bits_range(bits_text, width)
    accums = [Accumulator(accum_spec(scheme, width, k, cell), order=order) for k in bits]  # bad specs fail first
    arith = parse_arith_text(arith_text)
    if arith is None:
        raise AxnetError("--target accum: the accumulator sums integer terms; give an integer --arith, e.g. exact:8")
    if out_dir:
        check_output_dir(out_dir, "--out")
    ckpt = load_checkpoint(ckpt_path)
    data = data_for_checkpoint(ckpt, data_spec, test_limit)
    device = default_device()
    float_acc = accuracy_under(model_from_checkpoint(ckpt).to(device), None, data, device)
    exact_acc = accuracy_under(model_from_checkpoint(ckpt).to(device), arith, data, device)
    accuracy, notes = [], {}
    t0 = time.perf_counter()
    for k, accum in tqdm(list(zip(bits, accums)), desc=f"sweep {scheme}", disable=bar_off(show), unit="k"):
        model = model_from_checkpoint(ckpt).to(device)  # a fresh model per point, as in run_sweep
        try:
            accuracy.append(accuracy_under(model, arith, data, device, accum=accum))
        except AxnetError as exc:  # e.g. every activation of a layer is 0: nothing to calibrate, no prediction
            accuracy.append(None)
            notes[k] = str(exc)
        if show:
            got = "failed: " + notes[k] if accuracy[-1] is None else f"{accuracy[-1]:.2f}%"
            tqdm.write(f"sweep {accum.spec}: {got} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    result = {
        "checkpoint": str(ckpt_path), "model": ckpt["model"], "data": data.name, "images": len(data.test_x),
        "data_used": data.used, "target": "accum", "scheme": scheme, "width": width, "order": order,
        "arith": arith_label(arith), "arith_spec": arith_text, "float_accuracy": float_acc,
        "exact_accumulation_accuracy": exact_acc,
        "points": [{"approx_bits": k, "accum": a.spec, "accuracy": acc, **({"note": notes[k]} if k in notes else {})}
                   for k, a, acc in zip(bits, accums, accuracy)],
        "first_drop_over_1_point": first_drop(bits, [0.0 if a is None else a for a in accuracy], exact_acc),
        "reference": "accuracy with exact accumulation on the same arithmetic",
        "seconds": time.perf_counter() - t0,
    }
    if out_dir:
        write_accum_sweep_files(result, out_dir)
    return result


def write_accum_sweep_files(result, out_dir):
    """sweep.json, sweep.csv and sweep.png in `out_dir`."""
    from dnn.workflow.plots import plot_sweep
    os.makedirs(out_dir, exist_ok=True)
    write_json(result, os.path.join(out_dir, "sweep.json"))
    ran = [p for p in result["points"] if p["accuracy"] is not None]
    bits, accuracy = [p["approx_bits"] for p in ran], [p["accuracy"] for p in ran]
    with atomic_write(os.path.join(out_dir, "sweep.csv"), "w") as f:
        f.write("approx_bits,accum,accuracy\n")
        for p in result["points"]:
            f.write(f"{p['approx_bits']},{p['accum']},{'' if p['accuracy'] is None else round(p['accuracy'], 4)}\n")
    plot_sweep(bits, accuracy, result["float_accuracy"], os.path.join(out_dir, "sweep.png"),
               f"{result['model']}: {result['width']}-bit {result['scheme']} accumulator ({result['order']}), "
               f"{result['arith_spec']}")
