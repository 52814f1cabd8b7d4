"""GPU speed and memory of every layer kind against cuDNN nn.Conv2d, and a ResNet-20 AdderNet training step.

Prints one JSON object (and writes it to benchmarks/results/bench_gpu.json). Ratios are medians over interleaved
pairs (cuDNN, candidate) measured in this run, so clock and thermal drift hit both sides alike. Before timing, every
check of tests/triton_checks.py runs compiled on the GPU against the torch references (the test suite, without a
GPU, runs them under Triton's interpreter); the report says how many passed. Targets (issue 15): exact AdderNet
training step <= 2x cuDNN conv's; 8-bit LUT layers <= 4x; a gradient-LUT step <= 2x the STE step.

    python benchmarks/bench_gpu.py [--repeats 20] [--batch 128] [--torch-path]

`--torch-path` sets AXNET_TRITON=0 (the torch fallback on CUDA) to measure what the Triton kernels gain. Exits with
status 1 and a one-line message when no CUDA device is present. Expected to take a few minutes on an H200 (first
Triton compilations and the checks included; not yet run on a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from circuits.generators import array_multiplier, ripple_carry_adder  # noqa: E402
from dnn import (Accumulator, Adder2d, ApproxConv2d, CellAdder, ExactInt, LutAdder, LutMultiplier,  # noqa: E402
                 NetlistAdder, adaptive_lr_scale_, build_model, set_arith)
from dnn.arith.netlist_multiplier import NetlistMultiplier  # noqa: E402
from dnn.kernels import triton as triton_kernels  # noqa: E402
from lutgen.lut import build_lut  # noqa: E402

SHAPES = {"resnet20_16x32x32": (16, 16, 32), "resnet20_64x8x8": (64, 64, 8)}  # (in, out channels, image size)
TARGETS = {"exact_step": 2.0, "lut8_layer": 4.0, "gradlut_vs_ste_step": 2.0}
LUT8_KINDS = ("adder_lut8_ste", "mult_lut8_ste", "adder_netlist8")  # judged by the <= 4x target, forward and step


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn):
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def paired(base, candidate, repeats):
    """Median times (ms) of base and candidate and the median per-pair ratio candidate / base, interleaved."""
    for _ in range(2):  # warm up: Triton compiles and cuDNN picks its algorithm on the first calls
        base(), candidate()
    pairs = [(_time(base), _time(candidate)) for _ in range(repeats)]
    return {"base_ms": round(1e3 * statistics.median(p[0] for p in pairs), 3),
            "candidate_ms": round(1e3 * statistics.median(p[1] for p in pairs), 3),
            "ratio": round(statistics.median(p[1] / p[0] for p in pairs), 3)}


def layer_kinds():
    """name -> module factory taking (cin, cout)."""
    adder_lut = build_lut(ripple_carry_adder(8, "ama2", 3))
    mult_lut = build_lut(array_multiplier(8, 8))

    def adder(arith, accum=None):
        def make(cin, cout):
            return Adder2d(cin, cout, 3, padding=1, arith=arith, accum=accum)
        return make

    def mult(m):
        return lambda cin, cout: ApproxConv2d(cin, cout, 3, padding=1, bias=False, mult=m)

    return {
        "adder_exact_float": adder(None),
        "adder_exact_int8": adder(ExactInt(8)),
        "adder_lut8_ste": adder(LutAdder(adder_lut)),
        "adder_lut8_gradlut": adder(LutAdder(adder_lut, grad="lut", half_window=2)),
        "mult_lut8_ste": mult(LutMultiplier(mult_lut, mode="unsigned")),
        "mult_lut8_gradlut": mult(LutMultiplier(mult_lut, mode="unsigned", grad="lut", half_window=2)),
        "adder_cell_maj_k4_w16": adder(CellAdder("maj", 4, 16)),
        "adder_netlist8": adder(NetlistAdder(ripple_carry_adder(8, "ama2", 3))),
        "adder_netlist12_wide": adder(NetlistAdder(ripple_carry_adder(12, "ama2", 4))),
        "adder_lut8_accum_loa16": adder(LutAdder(adder_lut), Accumulator("loa:16:k=4")),
        "mult_netlist8": mult(NetlistMultiplier(array_multiplier(8, 8))),
    }


def forward_and_step(module, x, grad_out):
    """(forward, training step) closures; the step is timed from a dense output gradient, as BatchNorm gives it."""
    xr = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            module(x)

    def step():
        module.zero_grad(set_to_none=True)
        xr.grad = None
        module(xr).backward(grad_out)
    return forward, step


def progress(group, name, row):
    """One JSON line per finished figure on stderr, so a run cut short on a borrowed GPU still reports what it did."""
    print(json.dumps({group: {name: row}}), file=sys.stderr, flush=True)


def layer_benchmarks(batch, repeats, device):
    out = {}
    kinds = layer_kinds()
    for shape_name, (cin, cout, size) in SHAPES.items():
        torch.manual_seed(0)
        x = torch.randn(batch, cin, size, size, device=device)
        grad_out = torch.randn(batch, cout, size, size, device=device)
        conv_fwd, conv_step = forward_and_step(nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(device), x,
                                               grad_out)
        rows = {}
        for name, make in kinds.items():
            try:  # one kind that fails must not cost the others their figures on a borrowed GPU
                fwd, step = forward_and_step(make(cin, cout).to(device), x, grad_out)
                rows[name] = {"forward_vs_conv": paired(conv_fwd, fwd, repeats),
                              "step_vs_conv": paired(conv_step, step, repeats)}
            except Exception as exc:  # noqa: BLE001 - recorded in the report
                rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            progress(shape_name, name, rows[name])
        for kind in ("adder", "mult"):
            ste_fwd, ste_step = forward_and_step(kinds[f"{kind}_lut8_ste"](cin, cout).to(device), x, grad_out)
            lut_fwd, lut_step = forward_and_step(kinds[f"{kind}_lut8_gradlut"](cin, cout).to(device), x, grad_out)
            name = f"{kind}_lut8_gradlut_step_vs_ste_step"
            rows[name] = paired(ste_step, lut_step, repeats)
            progress(shape_name, name, rows[name])
        out[shape_name] = rows
    return out


def resnet20_step(name, arith, batch, repeats, device):
    """Median seconds of one SGD training step of `name` at `batch` (adaptive LR scaling for adder models) and the
    peak GPU memory of a step."""
    torch.manual_seed(0)
    model = build_model(name).to(device)
    if arith is not None:
        set_arith(model, arith)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    target = torch.randint(0, 10, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        adaptive_lr_scale_(model)
        optimizer.step()
    for _ in range(2):
        step()
    if device.type != "cuda":  # --smoke
        return {"step_s": round(statistics.median(_time(step) for _ in range(repeats)), 4)}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = [_time(step) for _ in range(repeats)]
    return {"step_s": round(statistics.median(times), 4),
            "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def network_benchmarks(batch, repeats, device):
    adder_lut = build_lut(ripple_carry_adder(8, "ama2", 3))
    rows = {"cnn_cudnn": resnet20_step("resnet20-cnn", None, batch, repeats, device),
            "addernet_float": resnet20_step("resnet20-addernet", None, batch, repeats, device),
            "addernet_lut8_ste": resnet20_step("resnet20-addernet", LutAdder(adder_lut), batch, repeats, device),
            "addernet_lut8_gradlut": resnet20_step("resnet20-addernet", LutAdder(adder_lut, grad="lut",
                                                                                half_window=2),
                                                   batch, repeats, device)}
    for name, row in rows.items():
        progress("resnet20", name, row)
    base = rows["cnn_cudnn"]["step_s"]
    for row in rows.values():
        row["vs_cnn"] = round(row["step_s"] / base, 3)
    rows["addernet_cuda_reference_s"] = {"AdderNetCUDA_2080Ti": 0.316, "official_code_2080Ti": 1.61}
    return rows


def gpu_self_check(device):
    """Every check of tests/triton_checks.py, compiled on the GPU (the suite runs them under the interpreter):
    how many passed, and the last line of each failure."""
    if device.type != "cuda" or not triton_kernels.use(torch.zeros(1, device=device)):
        return {"skipped": "no CUDA device, or the Triton path is off (not installed, AXNET_TRITON=0, probe failed)"}
    env = dict(os.environ, AXNET_CHECK_DEVICE="cuda", AXNET_TRITON="force", TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "triton_checks.py")], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = {name: text.strip().splitlines()[-1] for name, text in results.items() if text}
    return {"passed": len(results) - len(failed), "failed": failed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--torch-path", action="store_true", help="AXNET_TRITON=0: time the torch fallback on CUDA")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_gpu.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="run every code path on the CPU at batch 2 (no figure worth reading; checks the script)")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.repeats, args.out = 2, 1, os.devnull
    elif not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a machine with an "
                 "NVIDIA GPU and `pip install 'axnet[gpu]'`")
    if args.torch_path:
        os.environ["AXNET_TRITON"] = "0"
    device = torch.device("cpu" if args.smoke else "cuda")
    report = {"device": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(device), "torch": torch.__version__,
              "triton_path": triton_kernels.use(torch.zeros(1, device=device)), "batch": args.batch,
              "self_check": gpu_self_check(device),
              "layers": layer_benchmarks(args.batch, args.repeats, device),
              "resnet20": network_benchmarks(args.batch, max(3, args.repeats // 2), device)}
    report["targets"] = targets(report)
    text = json.dumps(report, indent=2)
    if args.out != os.devnull:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


def targets(report):
    """Each issue target: the measured ratio (the worst over the layer shapes) and whether it is met."""
    layers = report["layers"].values()
    worst = {
        "exact_step": max(r["adder_exact_float"]["step_vs_conv"]["ratio"] for r in layers
                          if "error" not in r["adder_exact_float"]),
        "lut8_layer": max(r[k][m]["ratio"] for r in layers for k in LUT8_KINDS
                          for m in ("forward_vs_conv", "step_vs_conv") if "error" not in r[k]),
        "gradlut_vs_ste_step": max(r[f"{k}_lut8_gradlut_step_vs_ste_step"]["ratio"] for r in layers
                                   for k in ("adder", "mult")),
    }
    return {name: {"measured": value, "target": TARGETS[name], "met": value <= TARGETS[name]}
            for name, value in worst.items()}


if __name__ == "__main__":
    main()
