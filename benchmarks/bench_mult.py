"""Approximate-multiplier layer speed: folded-table embedding_bag vs a plain elementwise LUT gather.

Prints one JSON object. Ratios are medians over interleaved pairs measured in the same run, so machine noise hits
both sides alike. The fast path is checked bit-identical to the reference before timing.
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from dnn.approx_mult import ApproxConv2d, LutMultiplier, lut_accumulate, reference_accumulate
from lutgen.lut import Lut, pattern_values


def timed(fn):
    """Seconds one call of fn takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(fast, slow, repeats):
    """Median of interleaved (fast, slow) timings and the median of their per-pair ratios."""
    fast(), slow()  # warm up
    pairs = [(timed(fast), timed(slow)) for _ in range(repeats)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[1] / p[0] for p in pairs))


def random_mult(bits, signed, seed=0):
    """A LutMultiplier over a random table of product-sized values (the speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    v = pattern_values(bits, signed)
    table = np.outer(v, v) + rng.integers(-3, 4, size=(1 << bits, 1 << bits))
    return LutMultiplier(Lut(table=table, operands=[("a", bits), ("b", bits)], outputs=[], signed=signed,
                             circuit=f"rand{bits}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 is steadier on a shared, loaded machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, C, O, H = args.batch, 16, 32, 28
    mult = random_mult(args.bits, signed=True)
    grad_mult = LutMultiplier(mult.lut, grad="lut", half_window=2)
    layer = ApproxConv2d(C, O, 3, padding=1, mult=mult)
    x = torch.randn(N, C, H, H)

    # integer accumulation alone: fast path vs elementwise gather, on the layer's own operands
    qx, _, z_x = layer.quantize_input(x)
    qw, _, _ = layer.quantize_weight()
    cols = F.unfold(F.pad(qx - z_x, (1, 1, 1, 1)) + z_x, 3).transpose(1, 2).reshape(-1, C * 9)
    qmin = mult.qrange(0)[0]
    ix = (cols - qmin).long()
    iw = (qw.reshape(O, -1) - qmin).long()
    table = mult.tables("cpu")["values"]
    values = torch.as_tensor(mult.values)
    same = torch.equal(lut_accumulate(ix, iw, table, mult.max_abs).long(), reference_accumulate(ix, iw, values))
    fast_s, slow_s, ratio = paired(lambda: lut_accumulate(ix, iw, table, mult.max_abs),
                                   lambda: reference_accumulate(ix, iw, values), args.repeats)

    # whole layer forward vs nn.Conv2d
    conv = torch.nn.Conv2d(C, O, 3, padding=1)
    with torch.no_grad():
        conv_s, layer_s, conv_ratio = paired(lambda: conv(x), lambda: layer(x), args.repeats)

    # training step (forward + backward): LUT gradients vs STE
    def step(m):
        layer.mult = m
        xr = x.clone().requires_grad_(True)
        layer(xr).square().mean().backward()
    ste_s, lut_s, grad_ratio = paired(lambda: step(mult), lambda: step(grad_mult), args.repeats)

    print(json.dumps({
        "layer": f"conv {C}->{O} 3x3 pad 1, batch {N}, {H}x{H}, {args.bits}-bit signed LUT",
        "threads": torch.get_num_threads(),
        "accumulate_bit_identical": bool(same),
        "accumulate_fast_s": round(fast_s, 4),
        "accumulate_elementwise_gather_s": round(slow_s, 4),
        "speedup_vs_elementwise_gather": round(ratio, 2),
        "layer_forward_s": round(layer_s, 4),
        "conv2d_forward_s": round(conv_s, 5),
        "layer_forward_over_conv2d": round(conv_ratio, 1),
        "train_step_ste_s": round(ste_s, 4),
        "train_step_lut_grad_s": round(lut_s, 4),
        "lut_grad_over_ste": round(grad_ratio, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
