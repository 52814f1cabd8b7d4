"""Speed and memory of the AdderNet layers, printed as JSON.

Every ratio is measured in this run as the median over interleaved pairs (baseline, candidate), so machine noise hits
both sides alike. Targets (from the issue): exact Adder2d forward <= 5x nn.Conv2d; 8-bit LUT Adder2d forward <= 10x
nn.Conv2d and >= 20x faster than a plain gather over every (x, w) pair; forward+backward <= 3x forward in both modes;
peak memory of one training step of the seed-000 MNIST network at batch 128 < 1 GB in every mode (peak RSS of a fresh
subprocess per mode, torch and Python included; torch.cuda.max_memory_allocated on a GPU).

    python benchmarks/bench_layers.py [--repeats 7] [--device cpu|cuda] [--quick]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.generators import ripple_carry_adder  # noqa: E402
from dnn import Adder2d, LutAdder, adaptive_lr_scale_, parse_arith, set_arith  # noqa: E402
from dnn.kernels import native as native_kernels  # noqa: E402
from dnn.arith.lut_adder import lut_gather_sums  # noqa: E402
from dnn.arith.quant import layer_scale, quantize  # noqa: E402
from lutgen.lut import build_lut  # noqa: E402

SHAPES = {
    "mnist_16_32": dict(batch=64, cin=16, cout=32, size=28),
    "resnet20_16_16": dict(batch=128, cin=16, cout=16, size=32),
}
MEMORY_MODES = ["float", "exact:8", "lut8:ste", "lut8:grad=lut", "cell:maj:k=8:width=32"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK = {"now": time.perf_counter}  # --clock cpu: process CPU time (steady at 1 thread on a loaded machine)


def _time(fn, device):
    _sync(device)
    start = CLOCK["now"]()
    fn()
    _sync(device)
    return CLOCK["now"]() - start


def paired(base, candidate, repeats, device):
    """Median base time, median candidate time and median per-pair ratio candidate/base, interleaved."""
    base(), candidate()  # warm up
    pairs = [(_time(base, device), _time(candidate, device)) for _ in range(repeats)]
    return {"base_ms": round(1e3 * statistics.median(p[0] for p in pairs), 3),
            "candidate_ms": round(1e3 * statistics.median(p[1] for p in pairs), 3),
            "ratio": round(statistics.median(p[1] / p[0] for p in pairs), 3)}


def forward_run(module, x, **attrs):
    """A timed callable: set `attrs` on module (arith=, mult=), then a forward of x without autograd."""
    def run():
        for name, value in attrs.items():
            setattr(module, name, value)
        with torch.no_grad():
            module(x)
    return run


def step_run(module, x, grad_out, **attrs):
    """A timed training step: set `attrs` on module, clear the gradients, forward x (needing a gradient) and back
    from the dense `grad_out`, as BatchNorm hands it over in a network (out.sum().backward() would also time the sum
    and materialise its broadcast gradient)."""
    xr = x.clone().requires_grad_(True)

    def run():
        for name, value in attrs.items():
            setattr(module, name, value)
        module.weight.grad = xr.grad = None
        module(xr).backward(grad_out)
    return run


def demo_lut(bits=8):
    """An 8-bit adder LUT with approximate low cells, standing in for a file from `axnet simulate`."""
    return build_lut(ripple_carry_adder(bits, "ama2", 3))


def reference_forward(x, weight):
    """The original AdderNet implementation's approach: materialise (Cout, K, N*L) and reduce it."""
    n, _, h, w = x.shape
    cols = nn.functional.unfold(x, 3, padding=1).transpose(0, 1).reshape(weight[0].numel(), -1)  # K, N*L
    out = -(cols.unsqueeze(0) - weight.reshape(weight.shape[0], -1, 1)).abs().sum(1)
    return out.view(weight.shape[0], n, h, w).transpose(0, 1)


def layer_benchmarks(name, shape, repeats, device, lut):
    torch.manual_seed(0)
    x = torch.randn(shape["batch"], shape["cin"], shape["size"], shape["size"], device=device)
    conv = nn.Conv2d(shape["cin"], shape["cout"], 3, padding=1, bias=False).to(device)
    adder = Adder2d(shape["cin"], shape["cout"], 3, padding=1).to(device)
    lut_arith = LutAdder(lut)
    result = {"shape": shape}
    grad_out = torch.randn(shape["batch"], shape["cout"], shape["size"], shape["size"], device=device)
    conv_fwd = forward_run(conv, x)

    def adder_fwd(arith):
        return forward_run(adder, x, arith=arith)

    def adder_step(arith):
        return step_run(adder, x, grad_out, arith=arith)

    result["exact_fwd_vs_conv"] = paired(conv_fwd, adder_fwd(None), repeats, device)
    result["lut8_fwd_vs_conv"] = paired(conv_fwd, adder_fwd(lut_arith), repeats, device)
    result["exact_fwd_bwd_vs_fwd"] = paired(adder_fwd(None), adder_step(None), repeats, device)
    result["lut8_ste_fwd_bwd_vs_fwd"] = paired(adder_fwd(lut_arith), adder_step(lut_arith), repeats, device)
    lut_grad = LutAdder(lut, grad="lut", half_window=2)
    result["lut8_gradlut_fwd_bwd_vs_fwd"] = paired(adder_fwd(lut_grad), adder_step(lut_grad), repeats, device)
    step = layer_scale(x, adder.weight, None) / lut_arith.qmax
    xq, wq = quantize(x, step, lut_arith.qmax), quantize(adder.weight.detach(), step, lut_arith.qmax)
    geom = adder.geometry
    gather_reps = max(2, repeats // 3)
    result["lut8_gather_vs_table"] = paired(lambda: lut_arith.abs_sums(xq, wq, geom),
                                            lambda: lut_gather_sums(lut.table, 8, xq, wq, geom), gather_reps, device)
    small = x[:8]  # the reference needs (Cout, K, N*L) floats: keep the batch small
    adder.arith = None

    def small_adder():
        with torch.no_grad():
            adder(small)
    result["reference_impl_vs_exact_batch8"] = paired(
        small_adder, lambda: reference_forward(small, adder.weight.detach()), gather_reps, device)
    return result


ISSUE13_SHAPES = {"S1": dict(batch=16, cin=16, cout=32, size=28), "S2": dict(batch=32, cin=64, cout=64, size=16)}


def lut_adder_table_benchmarks(repeats, device, lut):
    """Issue 13: the 8-bit LUT Adder2d on the table kernels against nn.Conv2d on S1 and S2 (targets: forward <= 6x
    conv's, training step from a dense output gradient <= 2x conv's, with STE and with gradient LUTs)."""
    out = {}
    for name, shape in ISSUE13_SHAPES.items():
        torch.manual_seed(0)
        x = torch.randn(shape["batch"], shape["cin"], shape["size"], shape["size"], device=device)
        grad_out = torch.randn(shape["batch"], shape["cout"], shape["size"], shape["size"], device=device)
        conv = nn.Conv2d(shape["cin"], shape["cout"], 3, padding=1, bias=False).to(device)
        adder = Adder2d(shape["cin"], shape["cout"], 3, padding=1, arith=LutAdder(lut)).to(device)
        grad_lut = LutAdder(lut, grad="lut", half_window=2)
        conv_step = step_run(conv, x, grad_out)
        out[name] = {"shape": shape, "lut8_fwd_vs_conv": paired(forward_run(conv, x), forward_run(adder, x), repeats,
                                                                 device),
                     "lut8_ste_step_vs_conv_step": paired(conv_step, step_run(adder, x, grad_out, arith=adder.arith),
                                                          repeats, device),
                     "lut8_gradlut_step_vs_conv_step": paired(conv_step, step_run(adder, x, grad_out, arith=grad_lut),
                                                              repeats, device)}
        adder.arith = LutAdder(lut)
    return out


def mnist_net(arith):
    """The seed-000 network: two 3x3 adder layers 1->16->32 with BN+ReLU, adaptive average pool, linear 32->10."""
    model = nn.Sequential(Adder2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          Adder2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    set_arith(model, arith)
    return model


def arith_for_mode(mode, lut):
    if mode == "lut8:ste":
        return LutAdder(lut)
    if mode == "lut8:grad=lut":
        return LutAdder(lut, grad="lut", half_window=2)
    return parse_arith(mode)


def peak_rss_mb():
    """Peak resident memory of this process in MB: VmHWM (reset by exec, unlike ru_maxrss, which a child started
    from a big parent inherits), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(mode, device):
    """One training step of the MNIST network at batch 128 in `mode`; prints peak memory as JSON."""
    torch.manual_seed(0)
    model = mnist_net(arith_for_mode(mode, demo_lut())).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(128, 1, 28, 28, device=device)
    target = torch.randint(0, 10, (128,), device=device)
    before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    adaptive_lr_scale_(model)
    optimizer.step()
    _sync(device)
    out = {"mode": mode, "step_s": round(time.perf_counter() - start, 3), "peak_rss_mb_before_step": round(before, 1),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


def memory_benchmarks(device):
    results = []
    for mode in MEMORY_MODES:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, "--device", str(device)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            results.append({"mode": mode, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["under_1GB"] = (row.get("cuda_peak_mb", row["peak_rss_mb"])) < 1024
        results.append(row)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, first shape only, no memory runs")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time by process CPU time, for --threads 1 on a machine other jobs share")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK["now"] = time.process_time
    device = torch.device(args.device)
    if args.memory_child:
        memory_child(args.memory_child, device)
        return
    repeats = 3 if args.quick else args.repeats
    lut = demo_lut()
    report = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "native_kernels": native_kernels.available() if device.type == "cpu" else None,
              "native_error": native_kernels.error() if device.type == "cpu" else None, "layers": {}}
    if not args.quick:
        report["mnist_train_step_memory"] = memory_benchmarks(device)
    report["lut_adder_issue13"] = lut_adder_table_benchmarks(repeats, device, lut)
    for name, shape in SHAPES.items():
        report["layers"][name] = layer_benchmarks(name, shape, repeats, device, lut)
        if args.quick:
            break
    report["netlist_issue10"] = netlist_benchmarks(repeats, device, (0, 8, 20, 32) if args.quick else range(33))
    report["accum_issue11"] = accum_benchmarks(repeats, device, lut)
    print(json.dumps(report, indent=2))


def accum_benchmarks(repeats, device, lut):
    """Approximate accumulation (issue 11): Adder2d forward, batch 8, 16 -> 32 channels, 28x28, 3x3, with a 16-bit
    approximate accumulator (LOA, k = 4) against the same layer and back-end with exact sums; target ratio <= 2."""
    from dnn import Accumulator
    torch.manual_seed(0)
    x = torch.randn(8, 16, 28, 28, device=device)
    layer = Adder2d(16, 32, 3, padding=1).to(device)
    result = {"shape": dict(batch=8, cin=16, cout=32, size=28, kernel=3), "target_ratio": 2.0}

    def forward(arith, accum):
        def run():
            layer.arith, layer.accum = arith, accum
            with torch.no_grad():
                layer(x)
        return run

    backends = {"exact8": parse_arith("exact:8"), "lut8": LutAdder(lut),
                "cell8_maj_k3": parse_arith("cell:maj:k=3:width=8")}
    for order in ("sequential", "tree"):
        accum = Accumulator("loa:16:k=4", order=order)
        for name, arith in backends.items():
            row = paired(forward(arith, None), forward(arith, accum), repeats, device)
            row["within_target"] = row["ratio"] <= 2.0
            result[f"{name}_loa16_k4_{order}_vs_exact_sums"] = row
    return result


def netlist_benchmarks(repeats, device, ks):
    """Netlist back-ends (issue 10): 16-bit adder, 12x12 multiplier and 32-bit cell adders at every k against
    nn.Conv2d, a grad=diff step against its forward; see benchmarks/bench_netlist.py (also runnable alone)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_netlist import netlist_benchmarks as run
    return run(repeats, device, ks)


if __name__ == "__main__":
    main()
