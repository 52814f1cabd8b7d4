"""Simulator benchmark: exact error metrics of a 16-bit adder against numpy's bare bitwise work, the compiled
engine's build time, and its per-lane evaluation throughput.

Prints one JSON object.
- metrics: wall time of `stream_metrics` (2^32 pairs, all nine metrics, 2 threads) divided by the time numpy needs
  for the bare bitwise work of simulating an exact 16-bit ripple adder over the same pairs: 96 two-input ufunc calls
  (6 per bit: a^b, t^c, a&b, t&c, g|p, and the carry copy as an OR) per block of 16K words (64 pairs each), one
  thread, on input planes built once. The baseline is timed on 1/16 of the blocks and scaled by 16 (it is the same
  work per block); each repeat times the metrics and then the baseline, and the ratio reported is the median of
  the per-pair ratios.
- build: seconds to generate and compile a circuit's engine into an empty cache (and to load it back).
- per_lane: pairs/s (wall) and CPU ns per pair of `simulator.engine.evaluate_operands` on 2^22 random operand
  pairs given a compiled Program (median of repeats), and the numpy fallback's pairs/s.

    python benchmarks/bench_simulator.py            # full run
    python benchmarks/bench_simulator.py --quick    # 12-bit adder, small sizes: a smoke test of the script
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.generators import array_multiplier, loa_adder, ripple_carry_adder  # noqa: E402
from lutgen.metrics import stream_metrics  # noqa: E402
from simulator import engine, native  # noqa: E402

BASELINE_BLOCK_WORDS = 1 << 14
BASELINE_FRACTION = 16


def baseline_seconds(width, fraction=BASELINE_FRACTION):
    """Seconds for numpy's bare bitwise work of an exact width-bit ripple adder over all 2^(2 width) pairs (timed on
    1/fraction of the blocks and scaled), one thread."""
    words = BASELINE_BLOCK_WORDS
    total_words = 1 << max(2 * width - 6, 0)
    blocks = max(1, total_words // words // fraction)
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 2 ** 63, words, dtype=np.int64).view(np.uint64) for _ in range(width)]
    b = [rng.integers(0, 2 ** 63, words, dtype=np.int64).view(np.uint64) for _ in range(width)]
    t, g, p, s, c = (np.zeros(words, dtype=np.uint64) for _ in range(5))
    start = time.perf_counter()
    for _ in range(blocks):
        c.fill(0)
        for i in range(width):
            np.bitwise_xor(a[i], b[i], out=t)
            np.bitwise_xor(t, c, out=s)
            np.bitwise_and(a[i], b[i], out=g)
            np.bitwise_and(t, c, out=p)
            np.bitwise_or(g, p, out=c)
            np.bitwise_or(c, c, out=c)
    elapsed = time.perf_counter() - start
    return elapsed * (total_words / words) / blocks


def metrics_vs_baseline(netlist, width, repeats, threads):
    """Interleaved pairs (metrics run, baseline run); returns the figures and the median per-pair ratio."""
    stream_metrics(ripple_carry_adder(6), None, "add")  # warm-up: imports, thread pool, metrics library
    engine.compile_native(netlist)  # the one-off build is reported under "build", not timed here
    runs = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        m = stream_metrics(netlist, None, "add", threads=threads)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        base = baseline_seconds(width)
        runs.append({"metrics_seconds": wall, "metrics_cpu_seconds": cpu, "baseline_seconds": base,
                     "ratio": wall / base})
    return {"circuit": netlist.name, "pairs": 1 << len(netlist.inputs), "threads": threads,
            "ratio_median": statistics.median(r["ratio"] for r in runs), "target_ratio": 5.0, "runs": runs,
            "metrics": m}


def build_seconds(netlists):
    """Seconds to compile each circuit into an empty cache, and to load it again in a fresh process state."""
    out = []
    saved = os.environ.get("AXNET_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AXNET_CACHE"] = tmp
        try:
            for nl in netlists:
                engine.forget_all()
                start = time.perf_counter()
                circuit = engine.compile_native(nl)
                built = time.perf_counter() - start
                engine.forget_all()
                native._LOADED.clear()
                start = time.perf_counter()
                engine.compile_native(nl)
                loaded = time.perf_counter() - start
                out.append({"circuit": nl.name, "steps": len(engine.compile_netlist(nl).steps),
                            "build_seconds": built, "load_seconds": loaded, "built": circuit is not None,
                            "error": native.last_error()})
        finally:
            if saved is None:
                os.environ.pop("AXNET_CACHE", None)
            else:
                os.environ["AXNET_CACHE"] = saved
            engine.forget_all()
            native._LOADED.clear()
    return out


def per_lane(netlist, widths, lanes, repeats, threads):
    """Median pairs/s of the compiled per-lane evaluation (and of the numpy path on a 16th of the lanes)."""
    rng = np.random.default_rng(1)
    ops = [rng.integers(0, 1 << w, lanes) for w in widths]
    out = np.empty(lanes, dtype=np.int64)
    program = engine.compile_netlist(netlist)  # a Program finds its kernel by identity: no per-call compilation
    engine.evaluate_operands(program, ops, widths, out=out, backend="native")
    rates, cpu = {}, {}
    for t in threads:
        times, cpus = [], []
        for _ in range(repeats):
            start, c0 = time.perf_counter(), time.process_time()
            engine.evaluate_operands(program, ops, widths, out=out, threads=t, backend="native")
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - c0)
        rates[f"threads_{t}"] = lanes / statistics.median(times)
        cpu[f"threads_{t}"] = statistics.median(cpus) / lanes * 1e9
    small = [o[:lanes // 16] for o in ops]
    start = time.perf_counter()
    engine.evaluate_operands(program, small, widths, backend="numpy")
    rates["numpy"] = (lanes // 16) / (time.perf_counter() - start)
    return {"circuit": netlist.name, "lanes": lanes, "pairs_per_s": rates, "cpu_ns_per_pair": cpu}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12-bit adder and small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-metrics", action="store_true")
    args = parser.parse_args(argv)
    width = 12 if args.quick else 16
    lanes = 1 << (16 if args.quick else 22)
    report = {"cpu_count": os.cpu_count(), "numpy": np.__version__, "load_avg_start": os.getloadavg()[0],
              "engine_lanes": None}
    circuits = [ripple_carry_adder(16), ripple_carry_adder(32), array_multiplier(12, 12)]
    report["build"] = build_seconds(circuits)
    report["engine_lanes"] = engine.compile_native(circuits[0]).lanes
    report["per_lane"] = [per_lane(nl, w, lanes, args.repeats, (1, args.threads))
                          for nl, w in zip(circuits, ([16, 16], [32, 32], [12, 12]))]
    if not args.skip_metrics:
        report["metrics"] = [metrics_vs_baseline(nl, width, args.repeats, args.threads)
                             for nl in (ripple_carry_adder(width, "ama2", width // 2), loa_adder(width, width // 2))]
    report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
