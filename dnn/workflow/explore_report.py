"""The files of an `axnet explore` run, made from its database: results.csv, results.json, pareto.png, summary.md.

They are written last, each atomically, so they are always whole and always agree with `results.sqlite`.
"""
from __future__ import annotations

import csv
import io
import json
import os

from dnn.workflow.explore_search import front_ranks
from dnn.workflow.explore_store import DESIGN_NAMES, assignment_rows, design_rows
from lutgen.files import atomic_write

CSV_COLUMNS = tuple(n for n in DESIGN_NAMES if n != "position") + ("front_rank",)


def ranked_records(conn):
    """Design rows with `front_rank` (1 = on the Pareto front of area against accuracy; None without a cost)."""
    rows = design_rows(conn)
    ranks = front_ranks([(r["area_nand2"], r["accuracy"]) for r in rows])
    for r, rank in zip(rows, ranks):
        r["front_rank"] = rank
        r.pop("position", None)
    return rows


def assignment_front(rows, designs):
    """Per-layer assignments evaluated for real plus the uniform ones: (cost, accuracy, label) points with ranks."""
    points = [(r["cost"], r["accuracy"], " + ".join(r["circuits"]), r["kind"]) for r in rows
              if r["kind"] == "search" and r["accuracy"] is not None and len(set(r["designs"])) > 1]
    points += [(d["area_nand2"], d["accuracy"], d["circuit"], "uniform") for d in designs
               if d["area_nand2"] is not None and d["accuracy"] is not None]
    ranks = front_ranks([(p[0], p[1]) for p in points])
    return [dict(cost=p[0], accuracy=p[1], circuits=p[2], kind=p[3], front_rank=rank) for p, rank in zip(points, ranks)]


def write_outputs(conn, run_dir, info):
    """Write every output file of the run; returns their paths."""
    records = ranked_records(conn)
    assignments = assignment_rows(conn)
    per_layer = assignment_front(assignments, records) if any(a["kind"] == "search" for a in assignments) else []
    paths = {name: os.path.join(run_dir, name) for name in ("results.csv", "results.json", "pareto.png",
                                                            "summary.md")}
    with atomic_write(paths["results.csv"], "w") as f:
        f.write(csv_text(records))
    with atomic_write(paths["results.json"], "w") as f:
        json.dump({"run": info, "designs": records, "assignments": assignments, "per_layer_front": per_layer}, f,
                  indent=2)
        f.write("\n")
    plot_pareto(records, per_layer, paths["pareto.png"], info)
    with atomic_write(paths["summary.md"], "w") as f:
        f.write(summary_markdown(records, per_layer, info))
    return list(paths.values())


def csv_text(records):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([" ".join(r[c]) if c in ("names", "sources") else ("" if r[c] is None else r[c])
                         for c in CSV_COLUMNS])
    return out.getvalue()


def plot_pareto(records, per_layer, path, info):
    """Accuracy against area: every design a labelled point, the front marked and joined; per-layer assignments
    evaluated for real as triangles when there are any."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in records if r["area_nand2"] is not None and r["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([r["area_nand2"] for r in pts], [r["accuracy"] for r in pts], s=18, color="0.6", label="design")
    front = sorted((r for r in pts if r["front_rank"] == 1), key=lambda r: r["area_nand2"])
    if front:
        ax.step([r["area_nand2"] for r in front], [r["accuracy"] for r in front], where="post", color="tab:red",
                linewidth=1)
        ax.scatter([r["area_nand2"] for r in front], [r["accuracy"] for r in front], s=36, color="tab:red",
                   label="Pareto front", zorder=3)
    retrained = [r for r in pts if r["retrained_accuracy"] is not None]
    if retrained:
        ax.scatter([r["area_nand2"] for r in retrained], [r["retrained_accuracy"] for r in retrained], s=36,
                   marker="*", color="tab:green", label="after retraining", zorder=3)
    search = [p for p in per_layer if p["kind"] == "search"]
    if search:
        ax.scatter([p["cost"] for p in search], [p["accuracy"] for p in search], s=30, marker="^",
                   color="tab:blue", label="per-layer assignment", zorder=3)
        for p in search:
            ax.annotate(p["circuits"], (p["cost"], p["accuracy"]), fontsize=5, color="tab:blue",
                        xytext=(3, -7), textcoords="offset points")
    for r in pts:
        ax.annotate(r["circuit"], (r["area_nand2"], r["accuracy"]), fontsize=5 if r["front_rank"] != 1 else 7,
                    xytext=(3, 2), textcoords="offset points", color="black" if r["front_rank"] == 1 else "0.4")
    ax.set_xlabel("area (NAND2 equivalents, circuits/cost.py)")
    ax.set_ylabel(f"test accuracy (%) on {info.get('images', '?')} images")
    ax.set_title(f"{info.get('model', '')}: {len(pts)} {info.get('role', '')} designs")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def fmt(value, digits=2):
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def summary_markdown(records, per_layer, info):
    """The front as a markdown table (and the per-layer front when there is one)."""
    lines = [f"# axnet explore: {info.get('model')} ({info.get('role')} designs)", "",
             f"Checkpoint `{info.get('checkpoint')}`, {info.get('images')} test images, {len(records)} designs "
             f"({info.get('names')} names before deduplication).", "",
             "## Pareto front: area against accuracy before retraining", "",
             "| circuit | also named | area (NAND2) | gates | depth | MAE % | EP % | accuracy % | retrained % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    front = sorted((r for r in records if r["front_rank"] == 1), key=lambda r: r["area_nand2"])
    for r in front:
        also = ", ".join(r["names"][1:4]) + (" ..." if len(r["names"]) > 4 else "")
        lines.append(f"| {r['circuit']} | {also} | {fmt(r['area_nand2'], 1)} | {fmt(r['gates'])} | "
                     f"{fmt(r['depth'])} | {fmt(r['mae_percent'], 3)} | {fmt(r['ep_percent'], 1)} | "
                     f"{fmt(r['accuracy'])} | {fmt(r['retrained_accuracy'])} |")
    failed = [f"{r['circuit']} ({r['note']})" for r in records if r["accuracy"] is None]
    if failed:
        lines += ["", f"Designs without an accuracy: {'; '.join(failed)}."]
    no_cost = [r["circuit"] for r in records if r["area_nand2"] is None]
    if no_cost:
        lines += ["", f"Without a netlist (LUT files), so off the area axis: {', '.join(no_cost)}."]
    if per_layer:
        lines += ["", "## Per-layer assignments (NSGA-II, evaluated for real) with the uniform ones", "",
                  "| circuits per layer | kind | cost (NAND2, op-weighted) | accuracy % |", "|---|---|---:|---:|"]
        for p in sorted((p for p in per_layer if p["front_rank"] == 1), key=lambda p: p["cost"]):
            lines.append(f"| {p['circuits']} | {p['kind']} | {fmt(p['cost'], 1)} | {fmt(p['accuracy'])} |")
    return "\n".join(lines) + "\n"
