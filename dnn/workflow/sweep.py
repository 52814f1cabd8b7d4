"""`axnet sweep`: accuracy against the number of approximate cells of a ripple-carry adder."""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from circuits.errors import AxnetError
from circuits.files import check_output_dir
from dnn.workflow.checkpoint import load_checkpoint
from lutgen.files import atomic_write
from dnn.workflow.distributed import default_device
from dnn.workflow.evaluate import accuracy_under, data_for_checkpoint
from dnn.workflow.loop import bar_off
from dnn.workflow.prepare import model_from_checkpoint
from dnn.workflow.train import write_json


def parse_bits_range(text, width):
    """'0:32' -> [0, 1, ..., 32] (inclusive); '0:32:4' -> [0, 4, ..., 32]; '4' -> [4]; errors name --approx-bits."""
    try:
        parts = [int(t) for t in text.split(":")]
    except ValueError:
        raise AxnetError(f"--approx-bits '{text}': expected K, LO:HI or LO:HI:STEP such as 0:32") from None
    if len(parts) not in (1, 2, 3):
        raise AxnetError(f"--approx-bits '{text}': expected K, LO:HI or LO:HI:STEP such as 0:32")
    lo, hi, step = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else 1
    if not 0 <= lo <= hi <= width or step < 1:
        raise AxnetError(f"--approx-bits '{text}': need 0 <= LO <= HI <= --width {width} and STEP >= 1")
    return list(range(lo, hi + 1, step))


def first_drop(bits, accuracy, reference, points=1.0):
    """The first k whose accuracy is more than `points` below `reference`, or None."""
    for k, a in zip(bits, accuracy):
        if a < reference - points:
            return k
    return None


def run_sweep(ckpt_path, cell="maj", width=32, bits_text="0:32", out_dir=None, data_spec=None, test_limit=0,
              show=True, accum_text=None):
    """The seed-000 study: accuracy against the number of approximate low bits of a `width`-bit cell adder (its sums
    through the accumulator `accum_text` when given; `dnn.workflow.accum_sweep` sweeps the accumulator itself)."""
    from dnn.arith.accumulate import parse_accum
    from dnn.arith.cell_adder import CellAdder
    bits = parse_bits_range(bits_text, width)
    accum = parse_accum(accum_text) if accum_text else None
    if out_dir:
        check_output_dir(out_dir, "--out")  # before the points are measured, not after
    ckpt = load_checkpoint(ckpt_path)
    data = data_for_checkpoint(ckpt, data_spec, test_limit)
    device = default_device()
    float_acc = accuracy_under(model_from_checkpoint(ckpt).to(device), None, data, device)
    accuracy = []
    t0 = time.perf_counter()
    for k in tqdm(bits, desc=f"sweep {cell}", disable=bar_off(show), unit="k"):
        # a fresh model per point, as `axnet eval` does: calibration clamps weights and adds clamp biases, and a
        # point should not depend on which points were measured before it
        model = model_from_checkpoint(ckpt).to(device)
        accuracy.append(accuracy_under(model, CellAdder(cell=cell, approx_bits=k, width=width), data, device,
                                       accum=accum))
        if show:  # a plain line per point, so a log shows progress where no bar is drawn
            tqdm.write(f"sweep k={k}: {accuracy[-1]:.2f}% ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    baseline = accuracy[0] if bits[0] == 0 else None
    result = {
        "checkpoint": str(ckpt_path), "model": ckpt["model"], "data": data.name, "images": len(data.test_x),
        "data_used": data.used,
        "cell": cell, "width": width, "float_accuracy": float_acc, "accum": accum_text,
        "points": [{"approx_bits": k, "accuracy": a} for k, a in zip(bits, accuracy)],
        "first_drop_over_1_point": first_drop(bits, accuracy, baseline) if baseline is not None else None,
        "reference": "accuracy at k=0 (exact quantized adder)" if baseline is not None else None,
        "seconds": time.perf_counter() - t0,
    }
    if out_dir:
        write_sweep_files(result, bits, accuracy, out_dir)
    return result


def write_sweep_files(result, bits, accuracy, out_dir):
    """sweep.json, sweep.csv and sweep.png in `out_dir`."""
    from dnn.workflow.plots import plot_sweep
    os.makedirs(out_dir, exist_ok=True)
    write_json(result, os.path.join(out_dir, "sweep.json"))
    with atomic_write(os.path.join(out_dir, "sweep.csv"), "w") as f:
        f.write("approx_bits,accuracy\n")
        for k, a in zip(bits, accuracy):
            f.write(f"{k},{a:.4f}\n")
    plot_sweep(bits, accuracy, result["float_accuracy"], os.path.join(out_dir, "sweep.png"),
               f"{result['model']}: {result['width']}-bit adder, low k cells '{result['cell']}'")
