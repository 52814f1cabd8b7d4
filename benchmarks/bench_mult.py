"""Approximate-multiplier layer speed against nn.Conv2d (issue 13), printed as one JSON object.

Shapes S1 (batch 16, 16 -> 32, 28x28) and S2 (batch 32, 64 -> 64, 16x16), 3x3, padding 1, an 8-bit signed product
table. Every ratio is the median over interleaved pairs measured in this run, so machine noise hits both sides alike:
- forward / nn.Conv2d forward (target <= 16x), and the torch fallback's forward for comparison;
- training step (forward + backward from a dense output gradient), straight-through / nn.Conv2d's (target <= 6x);
- gradient-LUT step / straight-through step (target <= 2x).
The compiled forward is checked bit-identical to the torch version, and the integer sums to the elementwise gather,
before timing. `bandwidth` holds the measured L2 and memory read bandwidth here and the table bytes per
(activation, weight) pair the layer moves per second, for reading a ratio against what this CPU can move. About a
minute on 2 quiet cores.

    python benchmarks/bench_mult.py [--repeats 7] [--threads N] [--quick] [--clock wall|cpu]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layers import forward_run, step_run  # noqa: E402
from dnn.approx_mult import ApproxConv2d, LutMultiplier, lut_accumulate, reference_accumulate  # noqa: E402
from dnn.kernels import native as native_kernels  # noqa: E402
from dnn.kernels import mult_ops  # noqa: E402
from dnn.kernels.adder_ops import Geometry  # noqa: E402
from lutgen.lut import Lut, pattern_values  # noqa: E402

SHAPES = {"S1": dict(batch=16, cin=16, cout=32, size=28), "S2": dict(batch=32, cin=64, cout=64, size=16)}


CLOCK = {"now": time.perf_counter}  # --clock cpu: process CPU time (steady at 1 thread on a loaded machine)


def timed(fn):
    """Seconds one call of fn takes."""
    start = CLOCK["now"]()
    fn()
    return CLOCK["now"]() - start


def paired(base, candidate, repeats):
    """Median base and candidate times (ms) and the median of their per-pair ratios candidate / base."""
    base(), candidate()  # warm up
    pairs = [(timed(base), timed(candidate)) for _ in range(repeats)]
    return {"base_ms": round(1e3 * statistics.median(p[0] for p in pairs), 3),
            "candidate_ms": round(1e3 * statistics.median(p[1] for p in pairs), 3),
            "ratio": round(statistics.median(p[1] / p[0] for p in pairs), 2)}


def random_mult(bits, signed, grad="ste", seed=0):
    """A LutMultiplier over a product-sized random table (the speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    v = pattern_values(bits, signed)
    table = np.outer(v, v) + rng.integers(-3, 4, size=(1 << bits, 1 << bits))
    lut = Lut(table=table, operands=[("a", bits), ("b", bits)], outputs=[], signed=signed, circuit=f"rand{bits}")
    return LutMultiplier(lut, grad=grad, half_window=2 if grad == "lut" else None)


def torch_fallback(fn):
    """fn run with the compiled kernels switched off (the torch version, as on a machine without a compiler)."""
    def run():
        saved = native_kernels.available
        native_kernels.available = lambda: False
        try:
            fn()
        finally:
            native_kernels.available = saved
    return run


def checks(layer, x, mult):
    """Compiled forward == torch forward, and the integer sums == the elementwise gather (on a slice)."""
    qx, s_x, z_x = layer.quantize_input(x)
    qw, s_w, z_w = layer.quantize_weight()
    qx, qw = qx.detach(), qw.detach()
    geom = Geometry(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    params = (s_x, z_x, s_w, z_w)
    same = torch.equal(mult_ops.lut_conv_forward(qx, qw, mult, geom, 1, *params, native=True),
                       mult_ops.lut_conv_forward(qx, qw, mult, geom, 1, *params, native=False))
    cols, _, _ = mult_ops.padded_patches(qx[:2], geom, z_x)
    qmin = mult.qrange(0)[0]
    ix, iw = (cols - qmin).long(), (qw.reshape(qw.shape[0], -1) - mult.qrange(1)[0]).long()
    exact = torch.equal(lut_accumulate(ix, iw, mult.tables("cpu")["values"], mult.max_abs).long(),
                        reference_accumulate(ix, iw, torch.as_tensor(mult.values)))
    return same, exact


def shape_benchmarks(shape, repeats):
    torch.manual_seed(0)
    N, C, O, H = shape["batch"], shape["cin"], shape["cout"], shape["size"]
    ste, lut = random_mult(8, signed=True), random_mult(8, signed=True, grad="lut")
    conv = torch.nn.Conv2d(C, O, 3, padding=1)
    layer = ApproxConv2d(C, O, 3, padding=1, mult=ste)
    layer.load_state_dict(conv.state_dict(), strict=False)
    x = torch.randn(N, C, H, H)
    grad_out = torch.randn(N, O, H, H)
    same, exact = checks(layer, x, ste)
    conv_fwd, layer_fwd = forward_run(conv, x), forward_run(layer, x)

    def step(module, mult=None):
        return step_run(module, x, grad_out) if mult is None else step_run(module, x, grad_out, mult=mult)

    layer.mult = ste
    result = {"shape": shape, "compiled_equals_torch_forward": same, "sums_equal_elementwise_gather": exact,
              "forward_vs_conv": paired(conv_fwd, layer_fwd, repeats),
              "torch_fallback_forward_vs_conv": paired(conv_fwd, torch_fallback(layer_fwd), max(2, repeats // 3)),
              "ste_step_vs_conv_step": paired(step(conv), step(layer, ste), repeats),
              "lut_step_vs_ste_step": paired(step(layer, ste), step(layer, lut), repeats)}
    result["lut_step_vs_conv_step"] = round(result["ste_step_vs_conv_step"]["ratio"]
                                            * result["lut_step_vs_ste_step"]["ratio"], 2)
    pairs = N * H * H * C * 9 * O
    result["pairs"] = pairs
    return result


def read_bandwidth(numel, repeats):
    """GB/s of summing a float32 buffer of `numel` elements (in cache for small buffers, from memory for big ones)."""
    buf = torch.ones(numel)
    buf.sum()
    best = min(timed(buf.sum) for _ in range(repeats))
    return round(4 * numel / best / 1e9, 1)


def random_row_bandwidth(table_bytes, row_bytes, repeats):
    """GB/s of gathering random rows of `row_bytes` from a table of `table_bytes` (torch.index_select, this thread
    count): the access the table kernels make, one row per (pixel, tap) at an address no prefetcher predicts."""
    table = torch.ones(table_bytes // row_bytes, row_bytes // 4)
    index = torch.randint(0, table.shape[0], (1 << 16,))
    out = torch.empty(index.numel(), table.shape[1])
    torch.index_select(table, 0, index, out=out)
    best = min(timed(lambda: torch.index_select(table, 0, index, out=out)) for _ in range(repeats))
    return round(index.numel() * row_bytes / best / 1e9, 1)


def bandwidth(results):
    """Measured read bandwidth here, and the table bytes the layer moves per second as timed above.

    Per (activation, weight) pair the forward reads one int16 table entry (2 bytes): rows of one channel's folded
    tables (295 KiB on S2, in L2), one per (pixel, tap), at random. The gradient-LUT backward keeps each value's
    table row and scatter sum in registers and reads one float32 output-gradient entry per pair (4 bytes): rows of
    the output gradient (1 MiB per batch of images, in L2), again one per (pixel, tap) at random. The floors are
    those bytes at the measured random-row rate; the achieved rates include quantization and the rest of the layer."""
    out = {"threads": torch.get_num_threads(), "l2_sequential_read_gb_s": read_bandwidth(1 << 17, 200),
           "memory_read_gb_s": read_bandwidth(1 << 26, 5),
           "l2_random_rows_128B_gb_s": random_row_bandwidth(1 << 19, 128, 20),
           "l2_random_rows_256B_gb_s": random_row_bandwidth(1 << 20, 256, 20),
           "forward_bytes_per_pair": 2, "lut_backward_bytes_per_pair": 4}
    for name, res in results.items():
        pairs = res["pairs"]
        forward_s = res["forward_vs_conv"]["candidate_ms"] / 1e3
        backward_s = res["lut_step_vs_ste_step"]["candidate_ms"] / 1e3 - forward_s  # <= 0 only in a noisy run
        out[name] = {"forward_floor_ms": round(1e3 * pairs * 2 / (out["l2_random_rows_128B_gb_s"] * 1e9), 1),
                     "forward_achieved_gb_s": round(pairs * 2 / forward_s / 1e9, 1),
                     "lut_backward_floor_ms": round(1e3 * pairs * 4 / (out["l2_random_rows_256B_gb_s"] * 1e9), 1),
                     "lut_backward_achieved_gb_s": round(pairs * 4 / backward_s / 1e9, 1) if backward_s > 0 else None}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time by process CPU time, for --threads 1 on a machine other jobs share")
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK["now"] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    report = {"threads": torch.get_num_threads(), "clock": args.clock, "torch": torch.__version__,
              "native_kernels": native_kernels.available(), "native_error": native_kernels.error(),
              "targets": {"forward_vs_conv": 16, "ste_step_vs_conv_step": 6, "lut_step_vs_ste_step": 2}}
    report["shapes"] = {name: shape_benchmarks(shape, repeats) for name, shape in SHAPES.items()}
    report["bandwidth"] = bandwidth(report["shapes"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
