"""`axnet explore`: which circuit, in which layer, at what cost, over a whole library of circuits.

The run, in order, with every check made before RUN is touched:
1. the checkpoint's approximate layers give the role (adder layers: adders; convolution/linear: multipliers);
2. the designs (`explore_designs`): files, directories and families, deduplicated by function; every design must
   fit those layers;
3. the engine starts (Ray joins or starts its cluster), then RUN and its database are opened;
4. each design not yet recorded: metrics, cost and accuracy in every layer (`--assign uniform`), one row each;
5. `--assign per-layer`: each layer's sensitivity to each design, NSGA-II over assignments, the predicted front
   evaluated for real (`explore_search`);
6. `--retrain-epochs N`: designs of the first `--retrain-ranks` Pareto ranks retrained and evaluated again;
7. results.csv, results.json, pareto.png and summary.md written from the database.
"""
from __future__ import annotations

import os

from circuits.errors import AxnetError
from dnn.workflow.explore_designs import check_adder_fits, check_multiplier_fits, check_roles, collect_designs
from dnn.workflow.explore_engine import Progress, make_engine
from dnn.workflow.explore_eval import layer_info, loaded
from dnn.workflow.explore_report import ranked_records, write_outputs
from dnn.workflow.explore_search import assignment_cost, pick_spread, predicted_accuracy, search_front
from dnn.workflow.explore_store import (connect, check_meta, db_path, done_assignments, done_designs,
                                        insert_assignment, insert_design, record_retrained, retrained_designs)

ASSIGN_MODES = ("uniform", "per-layer")
GRADS = ("lut", "ste", "diff")


def checkpoint_role(ctx):
    """('adder' | 'multiplier', what the checkpoint holds, in words) from its model's layers."""
    from dnn.layers.assign import adder_layers
    from dnn.workflow.prepare import model_from_checkpoint
    from torch import nn

    ckpt, _ = loaded(ctx)
    model = model_from_checkpoint(ckpt)
    if adder_layers(model):
        return "adder", f"checkpoint {os.path.basename(ctx['checkpoint'])} ({ckpt['model']}) has adder layers"
    if any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()):
        return "multiplier", (f"checkpoint {os.path.basename(ctx['checkpoint'])} ({ckpt['model']}) has "
                              "convolution/linear (multiplier) layers")
    raise AxnetError("the checkpoint's model has no adder, convolution or linear layer to explore",
                     path=ctx["checkpoint"])


def check_options(assign, grad, retrain_epochs, retrain_ranks, workers, out_dir, resume):
    """Option values that need no file: one line naming the option otherwise."""
    if assign not in ASSIGN_MODES:
        raise AxnetError(f"--assign '{assign}': expected {' or '.join(ASSIGN_MODES)}")
    if grad not in GRADS:
        raise AxnetError(f"--grad '{grad}': expected lut, ste or diff")
    if retrain_epochs < 0 or retrain_ranks < 1:
        raise AxnetError("--retrain-epochs must be >= 0 and --retrain-ranks >= 1")
    if workers is not None and workers < 1:
        raise AxnetError(f"--workers {workers}: expected at least 1")
    if os.path.exists(db_path(out_dir)) and not resume:
        raise AxnetError("--out already holds an explore run (results.sqlite): pass --resume to continue it, or "
                         "choose another directory", path=out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise AxnetError(f"--out {out_dir}: is a file, not a directory")


def design_row(design, position, result):
    """The database row of a finished design job."""
    row = {"design": design.key, "role": design.role, "position": position, "circuit": design.name,
           "names": design.names, "sources": design.sources, "reference": design.reference,
           "operands": ",".join(str(w) for w in design.widths), "signed": int(design.signed),
           "implementation": design.implementation or None}
    row.update(design.cost or {})
    row.update({k: v for k, v in result.items() if k not in ("kind", "design", "role")})
    return row


def run_jobs(engine, jobs, what, show, record):
    """Run jobs on the engine, record each result as it arrives; the first job error stops the run."""
    progress = Progress(len(jobs), what, show)
    for job, result in engine.run(jobs):
        progress.step(job, result, record(job, result) if "error" not in result else "")
        if "error" in result:
            raise AxnetError(result["error"])


def uniform_stage(engine, conn, designs, n_layers, ctx, show):
    """Metrics, cost and accuracy of every design not yet in the database."""
    done = done_designs(conn)
    todo = [(i, d) for i, d in enumerate(designs) if (d.key, d.role) not in done]
    by_key = {d.key: (i, d) for i, d in todo}
    jobs = [{"kind": "design", "design": d.key, "label": d.name, "role": d.role, "circuit": d.circuit,
             "netlist": d.netlist if ctx.get("abc") else None, "reference": d.reference, "layers": n_layers}
            for _, d in todo]

    def record(job, result):
        i, d = by_key[job["design"]]
        insert_design(conn, design_row(d, i, result))
        area = f", area {d.cost['area_nand2']:.1f}" if d.cost else ""
        return f"{accuracy_text(result)}{area}, MAE {result['mae_percent']:.3f}%"

    run_jobs(engine, jobs, "design", show, record)


def accuracy_text(result):
    """'accuracy 91.20%', or the note of a design the network could not run on."""
    return result.get("note") if result["accuracy"] is None else f"accuracy {result['accuracy']:.2f}%"


def assignment_key(layers, keys):
    """A readable, unique key of a per-layer assignment: layer=design-key pairs (None = exact)."""
    return ";".join(f"{layer}={key[:16] if key else 'exact'}" for layer, key in zip(layers, keys))


def per_layer_stage(engine, conn, designs, layers, ctx, show, generations, evaluate, seed):
    """Sensitivity of each layer to each design, NSGA-II over assignments, the predicted front evaluated for real."""
    names = [name for name, _ in layers]
    ops = [n for _, n in layers]
    role = designs[0].role
    costed = [d for d in designs if d.cost]
    if not costed:
        raise AxnetError("--assign per-layer needs circuits with a netlist (a cost); these are all LUT files")
    done = done_assignments(conn)
    jobs = [assign_job("baseline", names, role, [None] * len(names), ["exact"] * len(names))]
    for li in range(len(names)):
        for d in costed:
            keys = [None] * len(names)
            keys[li] = d
            jobs.append(assign_job("sensitivity", names, role, keys, [d.name if k else "exact" for k in keys]))
    run_assignments(engine, conn, [j for j in jobs if (j["assignment"], role) not in done], show, "sensitivity")
    # a layer the network cannot run on with a circuit (no accuracy) counts as accuracy 0 in the search
    acc = {r[0]: r[1] or 0.0 for r in conn.execute("SELECT assignment, accuracy FROM assignments WHERE role = ?",
                                                   (role,))}
    baseline = acc[jobs[0]["assignment"]]
    sensitivity = [[acc[assignment_key(names, [d.key if i == li else None for i in range(len(names))])]
                    for d in costed] for li in range(len(names))]
    areas = [d.cost["area_nand2"] for d in costed]
    choices = search_front(areas, ops, baseline, sensitivity, generations=generations, seed=seed)
    chosen = pick_spread(choices, areas, ops, evaluate)
    search_jobs = []
    for choice in chosen:
        picked = [costed[c] for c in choice]
        job = assign_job("search", names, role, picked, [d.name for d in picked])
        job["cost"] = assignment_cost(areas, ops, choice)
        job["predicted"] = predicted_accuracy(baseline, sensitivity, choice)
        search_jobs.append(job)
    run_assignments(engine, conn, [j for j in search_jobs if (j["assignment"], role) not in done_assignments(conn)],
                    show, "assignment")


def assign_job(kind, layer_names, role, picked, circuit_names):
    """A job evaluating one circuit per layer (`picked`: Design or None per layer)."""
    keys = [d.key if d else None for d in picked]
    return {"kind": "assign", "assign_kind": kind, "role": role, "layer_names": layer_names,
            "assignment": assignment_key(layer_names, keys), "design_keys": keys, "circuits": circuit_names,
            "layer_circuits": [d.circuit if d else None for d in picked], "label": " + ".join(circuit_names)}


def run_assignments(engine, conn, jobs, show, what):
    def record(job, result):
        insert_assignment(conn, {"assignment": job["assignment"], "role": job["role"], "kind": job["assign_kind"],
                                 "layers": job["layer_names"], "designs": job["design_keys"],
                                 "circuits": job["circuits"], "cost": job.get("cost"),
                                 "predicted": job.get("predicted"), "accuracy": result["accuracy"],
                                 "images": result["images"], "seconds": result["seconds"],
                                 "note": result.get("note")})
        return accuracy_text(result)

    run_jobs(engine, jobs, what, show, record)


def retrain_stage(engine, conn, designs, out_dir, show, epochs, grad, half_window, ranks, seed):
    """Retrain the designs of the first `ranks` Pareto ranks that have no retrained accuracy yet."""
    by_key = {d.key: d for d in designs}
    done = retrained_designs(conn)
    picked = [r for r in ranked_records(conn)
              if r["front_rank"] is not None and r["front_rank"] <= ranks and (r["design"], r["role"]) not in done
              and r["design"] in by_key]
    jobs = []
    for r in picked:
        d = by_key[r["design"]]
        jobs.append({"kind": "retrain", "design": d.key, "label": d.name, "role": d.role, "circuit": d.circuit,
                     "netlist": d.netlist, "epochs": epochs, "grad": grad, "half_window": half_window,
                     "seed": seed, "out_dir": os.path.join(out_dir, "retrain", f"{d.short_key}_{grad}")})

    def record(job, result):
        record_retrained(conn, job["design"], job["role"], result["retrained_accuracy"], epochs, grad)
        return f"retrained accuracy {result['retrained_accuracy']:.2f}%"

    run_jobs(engine, jobs, "retrain", show, record)


def check_grad(grad, half_window, designs):
    """--grad lut needs a half window; --grad diff needs netlists (the netlist back-end differentiates them)."""
    if grad == "lut" and half_window is None:
        raise AxnetError("--grad lut needs --half-window W (e.g. 2)")
    if grad == "diff":
        bare = [d.name for d in designs if d.netlist is None]
        if bare:
            raise AxnetError(f"--grad diff needs netlists, but {bare[0]} came from a LUT file")


def check_search(designs):
    """--assign per-layer needs pymoo and circuits with a cost (a netlist)."""
    import importlib.util

    if importlib.util.find_spec("pymoo") is None:
        raise AxnetError("--assign per-layer needs pymoo (pip install 'axnet[explore]')")
    if not any(d.cost for d in designs):
        raise AxnetError("--assign per-layer needs circuits with a netlist (a cost); these are all LUT files")


def run_explore(checkpoint, circuits=(), families=(), out_dir="runs/explore", assign="uniform", engine="local",
                workers=None, address=None, resume=False, data_spec=None, test_limit=0, train_limit=0,
                retrain_epochs=0, grad="lut", half_window=2, retrain_ranks=1, abc=False, generations=100,
                evaluate=12, seed=0, threads=1, device="cpu", undriven="error", show=True):
    """The whole exploration (see module docstring); returns {'run': info, 'records': [...], 'files': [...]}."""
    check_options(assign, grad, retrain_epochs, retrain_ranks, workers, out_dir, resume)
    if not os.path.isfile(checkpoint):
        raise AxnetError("checkpoint file not found", path=checkpoint)
    if device not in ("cpu", "cuda"):
        raise AxnetError(f"--device '{device}': expected cpu or cuda")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise AxnetError("--device cuda: this machine has no CUDA device (use --device cpu)")
    ctx = {"checkpoint": os.path.abspath(checkpoint), "data_spec": data_spec, "test_limit": test_limit,
           "train_limit": train_limit, "device": device}
    role, what = checkpoint_role(ctx)
    designs = collect_designs(circuits, families, undriven=undriven)
    check_roles(designs, role, what)
    (check_adder_fits if role == "adder" else check_multiplier_fits)(designs)
    if assign == "per-layer":
        check_search(designs)
    if retrain_epochs:
        if role != "adder":
            raise AxnetError("--retrain-epochs: retraining runs through adder layers (an AdderNet checkpoint); "
                             "multiplier layers are evaluated but not retrained by explore")
        check_grad(grad, half_window, designs)
    if abc:
        from circuits.cost import find_abc
        ctx["abc"] = find_abc()
        if ctx["abc"] is None:
            raise AxnetError("--abc: no ABC program (yosys-abc, berkeley-abc or abc) on PATH")
    layers = layer_info(ctx, role)
    runner = make_engine(engine, ctx, workers, address, threads)
    try:
        from lutgen.files import check_output_dir
        check_output_dir(out_dir, "--out")
        conn = connect(out_dir)
        try:
            from circuits.files import file_sha256
            ckpt, data = loaded(ctx)
            check_meta(conn, {"checkpoint_sha256": file_sha256(checkpoint), "data": data_spec or "",
                              "test_limit": test_limit, "train_limit": train_limit, "role": role,
                              "abc": bool(abc)}, db_path(out_dir))
            uniform_stage(runner, conn, designs, len(layers), ctx, show)
            if assign == "per-layer" and len(layers) > 1:
                per_layer_stage(runner, conn, designs, layers, ctx, show, generations, evaluate, seed)
            if retrain_epochs:
                retrain_stage(runner, conn, designs, out_dir, show, retrain_epochs, grad, half_window,
                              retrain_ranks, seed)
            info = {"checkpoint": str(checkpoint), "model": ckpt["model"], "data": data.name,
                    "images": len(data.test_x), "role": role, "layers": [n for n, _ in layers],
                    "layer_ops": [o for _, o in layers], "assign": assign, "engine": engine,
                    "names": sum(len(d.names) for d in designs)}
            files = write_outputs(conn, out_dir, info)
            records = [r for r in ranked_records(conn) if r["design"] in {d.key for d in designs}]
        finally:
            conn.close()
    finally:
        runner.close()
    return {"run": info, "records": records, "files": files}

