"""Speed of the netlist back-ends in the layers (issue 10, parts 3-6), printed as JSON.

Shape of the issue: batch 8, 16 -> 32 channels, 28x28, 3x3, padding 1. Every figure is a ratio measured in this run
as the median over interleaved pairs (baseline, candidate), so machine noise hits both sides alike (`paired` of
bench_layers.py). Targets: 16-bit adder netlist forward <= 10x nn.Conv2d; 32-bit cell adder forward <= 10x
nn.Conv2d at every k = 0..32; 12x12 multiplier netlist forward <= 20x nn.Conv2d; a training step with grad=diff
<= 4x its forward. Each circuit is compiled on first use (about a second, cached on disk); the warm-up call of
`paired` takes that, so the timed calls do not.

    python benchmarks/bench_netlist.py [--repeats 5] [--quick]     (about 1-2 minutes; --quick: k in 0,8,20,32)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layers import forward_run, paired, step_run  # noqa: E402
from circuits.generators import array_multiplier, loa_adder, ripple_carry_adder  # noqa: E402
from dnn import Adder2d, ApproxConv2d, CellAdder, NetlistAdder  # noqa: E402
from dnn.arith.netlist_multiplier import NetlistMultiplier  # noqa: E402

SHAPE = dict(batch=8, cin=16, cout=32, size=28)


def netlist_benchmarks(repeats=5, device="cpu", ks=range(33)):
    """Ratios of the netlist back-ends against nn.Conv2d (and of a grad=diff step against its forward)."""
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(SHAPE["batch"], SHAPE["cin"], SHAPE["size"], SHAPE["size"], device=device)
    conv = nn.Conv2d(SHAPE["cin"], SHAPE["cout"], 3, padding=1, bias=False).to(device)
    adder = Adder2d(SHAPE["cin"], SHAPE["cout"], 3, padding=1).to(device)
    mult = ApproxConv2d(SHAPE["cin"], SHAPE["cout"], 3, padding=1, bias=False,
                        mult=NetlistMultiplier(array_multiplier(12, 12))).to(device)
    grad_out = torch.randn(SHAPE["batch"], SHAPE["cout"], SHAPE["size"], SHAPE["size"], device=device)
    conv_fwd, mult_fwd = forward_run(conv, x), forward_run(mult, x)

    def adder_fwd(arith):
        return forward_run(adder, x, arith=arith)

    def adder_step(arith):
        return step_run(adder, x, grad_out, arith=arith)

    loa16 = NetlistAdder(loa_adder(16, 6))
    rca16 = NetlistAdder(ripple_carry_adder(16, "maj", 6))
    result = {"shape": SHAPE,
              "loa16_fwd_vs_conv": paired(conv_fwd, adder_fwd(loa16), repeats, device),
              "rca16_maj6_fwd_vs_conv": paired(conv_fwd, adder_fwd(rca16), repeats, device),
              "mult12x12_fwd_vs_conv": paired(conv_fwd, mult_fwd, repeats, device)}
    diff = NetlistAdder(loa_adder(16, 6), grad="diff", half_window=2)
    result["loa16_diff_step_vs_fwd"] = paired(adder_fwd(diff), adder_step(diff), max(2, repeats // 2), device)
    cells = {}
    for k in ks:
        cells[str(k)] = paired(conv_fwd, adder_fwd(CellAdder("maj", k, 32)), repeats, device)
    result["cell_maj32_fwd_vs_conv_by_k"] = cells
    result["cell_maj32_worst_ratio"] = max(c["ratio"] for c in cells.values())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="k in 0, 8, 20, 32 only, 3 repeats")
    args = parser.parse_args()
    ks = (0, 8, 20, 32) if args.quick else range(33)
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "netlist": netlist_benchmarks(3 if args.quick else args.repeats, "cpu", ks)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
