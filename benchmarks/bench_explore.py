"""`axnet explore` at scale: 50 distinct 8-bit adders on mnist-addernet over the 1,000 held-out digits.

Metrics, cost and accuracy of every design, no retraining, `--engine local` with one worker per core; the target
(issue 14) is at most 5 minutes on a 2-core machine. The adders are the first 50 distinct functions of the bundled
generators' families (ripple-carry adders with approximate low cells, LOA, ETA-I, truncated), written as BLIF files
so the run also reads a directory of circuits. The wall time is the whole `axnet explore` command, process start,
worker start-up and output files included.

Prints one JSON object. Needs a trained mnist-addernet checkpoint (`--checkpoint`, default runs/demo/float/best.pt);
without one it first trains a 3-epoch checkpoint (not timed: accuracy does not matter for speed). About a minute on
2 cores (37-52 s measured; 225 s on a heavily loaded machine), plus that training when it runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAMILIES = ["rca:8", "loa:8:k=1..6", "eta1:8:k=1..6", "trunc:8:k=1..6", "rca:8:cell=maj,ama1,ama3,ama4,ama5:k=1..8"]


def axnet(*args):
    """Run the axnet command (this checkout's cli.py with this interpreter)."""
    return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def quick_checkpoint(directory):
    """A 3-epoch mnist-addernet for timing only."""
    done = axnet("train", "--model", "mnist-addernet", "--epochs", "3", "--out", directory)
    if done.returncode != 0:
        raise SystemExit(f"training the timing checkpoint failed: {done.stderr.strip()[-400:]}")
    return os.path.join(directory, "best.pt")


def write_designs(directory, count):
    """The first `count` distinct adders of FAMILIES as BLIF files; returns their names."""
    from circuits.blif import write_blif
    from dnn.workflow.explore_designs import collect_designs

    designs = collect_designs([], FAMILIES, cost=False)[:count]
    if len(designs) < count:
        raise SystemExit(f"only {len(designs)} distinct adders in {FAMILIES}")
    for i, d in enumerate(designs):
        write_blif(d.netlist, os.path.join(directory, f"{i:02d}_{d.name}.blif"))
    return [d.name for d in designs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.path.join(ROOT, "runs", "demo", "float", "best.pt"))
    parser.add_argument("--designs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None, help="default: the core count")
    parser.add_argument("--engine", default="local")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="axnet-bench-explore-") as tmp:
        ckpt = args.checkpoint
        trained = False
        if not os.path.isfile(ckpt):
            ckpt, trained = quick_checkpoint(os.path.join(tmp, "ckpt")), True
        circuits = os.path.join(tmp, "circuits")
        os.makedirs(circuits)
        names = write_designs(circuits, args.designs)
        run = os.path.join(tmp, "run")
        cmd = ["explore", ckpt, "--circuits", circuits, "--out", run, "--engine", args.engine, "--json"]
        if args.workers:
            cmd += ["--workers", args.workers]
        t0 = time.perf_counter()
        done = axnet(*cmd)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"axnet explore failed: {done.stderr.strip()[-600:]}")
        records = json.loads(done.stdout)
    front = sorted((r for r in records if r["front_rank"] == 1), key=lambda r: r["area_nand2"])
    report = {
        "benchmark": "axnet explore, 8-bit adders on mnist-addernet, no retraining",
        "checkpoint": "3-epoch timing checkpoint" if trained else ckpt,
        "designs": len(records), "names": len(names), "images": records[0]["images"] if records else 0,
        "engine": args.engine, "workers": args.workers or len(os.sched_getaffinity(0)),
        "seconds": round(seconds, 1), "seconds_per_design": round(seconds / max(len(records), 1), 2),
        "target_seconds": 300, "within_target": seconds <= 300,
        "front": [{"circuit": r["circuit"], "area_nand2": r["area_nand2"], "accuracy": r["accuracy"]}
                  for r in front],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
