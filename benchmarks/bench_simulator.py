"""Simulator benchmark: gate-pattern evaluations per second against numpy's own bitwise throughput, and the time
to compute exact error metrics of 16-bit approximate adders (2^32 input pairs each).

Prints one JSON object. Throughput ratios are medians of interleaved pairs (simulator run, then the numpy baseline
on the same block size and thread count), so machine noise hits both sides of each pair alike.

    python benchmarks/bench_simulator.py            # full run (the metrics part takes a while on 2 cores)
    python benchmarks/bench_simulator.py --quick    # small sizes, a smoke test of the script itself
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.generators import loa_adder, ripple_carry_adder  # noqa: E402
from lutgen.metrics import stream_metrics  # noqa: E402
from simulator.exhaustive import DEFAULT_BLOCK_WORDS, compile_netlist, map_blocks  # noqa: E402


def time_simulator(program, words_total, block_words, threads):
    """Seconds to simulate the first `words_total` words of the pattern space (no reduction)."""
    start = time.perf_counter()
    for _ in map_blocks(program, lambda s, planes: None, block_words=block_words, threads=threads,
                        stop_word=words_total):
        pass
    return time.perf_counter() - start


def time_numpy_and(calls_per_thread, block_words, threads):
    """Seconds for `threads` threads each running `calls_per_thread` np.bitwise_and(out=) on block-sized arrays."""
    rng = np.random.default_rng(0)

    def worker(_):
        x, y = (rng.integers(0, 2 ** 63, block_words, dtype=np.int64).view(np.uint64) for _ in range(2))
        z = np.empty_like(x)
        for _ in range(calls_per_thread):
            np.bitwise_and(x, y, out=z)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return time.perf_counter() - start


def throughput(netlist, words_total, block_words, threads, repeats):
    """Median gate-pattern evaluations/s of the simulator and of numpy AND, and the median of per-pair ratios."""
    program = compile_netlist(netlist)
    time_simulator(program, min(words_total, 4 * block_words), block_words, threads)  # warm-up
    sim_rates, np_rates, ratios = [], [], []
    calls = max(1, len(program.steps) * words_total // block_words // threads)
    for _ in range(repeats):
        t_sim = time_simulator(program, words_total, block_words, threads)
        t_np = time_numpy_and(calls, block_words, threads)
        sim_rate = program.gate_count * 64 * words_total / t_sim
        np_rate = 64 * calls * threads * block_words / t_np
        sim_rates.append(sim_rate)
        np_rates.append(np_rate)
        ratios.append(sim_rate / np_rate)
    return {"circuit": netlist.name, "gates": program.gate_count, "numpy_calls_per_block": len(program.steps),
            "patterns_per_run": 64 * words_total, "block_words": block_words, "threads": threads,
            "repeats": repeats, "sim_gate_evals_per_s": statistics.median(sim_rates),
            "numpy_and_evals_per_s": statistics.median(np_rates), "ratio_median": statistics.median(ratios),
            "ratios": [round(r, 3) for r in ratios]}


def metrics_time(netlist, threads):
    """Wall and CPU seconds (all threads) for exact streamed error metrics over every input pair, and the metrics.

    On a shared machine the CPU time is the steadier figure: wall time on an idle 2-core machine is about CPU / 2.
    """
    start, cpu = time.perf_counter(), time.process_time()
    m = stream_metrics(netlist, None, "add", threads=threads)
    return time.perf_counter() - start, time.process_time() - cpu, m


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=None, help="adder width for the metrics part (default 16)")
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--block-words", type=int, default=DEFAULT_BLOCK_WORDS)
    args = parser.parse_args(argv)
    width = args.width or (10 if args.quick else 16)
    words_total = (1 << 14) if args.quick else (1 << 18)
    repeats = 3 if args.quick else args.repeats
    report = {"cpu_count": os.cpu_count(), "numpy": np.__version__, "load_avg_start": os.getloadavg()[0],
              "throughput": [throughput(nl, words_total, args.block_words, args.threads, repeats)
                             for nl in (ripple_carry_adder(32), ripple_carry_adder(16, "ama2", 8))]}
    if not args.skip_metrics:
        report["metrics"] = []
        for nl in (ripple_carry_adder(width, "ama2", width // 2), loa_adder(width, width // 2)):
            seconds, cpu, m = metrics_time(nl, args.threads)
            report["metrics"].append({"circuit": nl.name, "patterns": 1 << len(nl.inputs), "seconds": seconds,
                                      "cpu_seconds": cpu, "target_seconds": 60, "metrics": m})
    report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
