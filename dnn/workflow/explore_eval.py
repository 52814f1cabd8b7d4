"""The work of one `axnet explore` job, run inside a worker (a local process or a Ray task).

Jobs are plain dicts, and so are their results, so any engine can carry them. Each evaluation starts from a fresh
model built from the checkpoint (calibration clamps weights, so one design must not see another's), on the same data
and the same calibration batches, with torch's thread count fixed per worker: a design's accuracy is the same
whichever worker, engine or order evaluates it, and equals `axnet eval --arith lut:FILE` on the same checkpoint.

Kinds:
- `design`: error metrics, optional ABC area, and accuracy with the design in every approximate layer;
- `assign`: accuracy with one circuit per layer (None = the exact reference: `ExactInt(n)` for adder layers,
  float for multiplier layers); the per-layer sensitivity runs are assignments with one circuit and the rest None;
A circuit is a `Lut` (run through LutAdder / LutMultiplier) or, for circuits too wide for a table, a `Netlist` (run
through the netlist engine's NetlistAdder / NetlistMultiplier; its metrics are streamed).
- `retrain`: approximation-aware retraining through a design, then its accuracy.
"""
from __future__ import annotations

import os
import time

import torch

from circuits.errors import AxnetError

_LOADED = {}  # (checkpoint, data spec, limits) -> (checkpoint dict, DataSet): one per worker process
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 256
STREAM_SAMPLES = 1 << 20  # random operand pairs for the metrics of circuits of more than 32 inputs


def setup_worker(threads=1):
    """Fix torch's thread counts in this process (results must not depend on the worker's parallelism)."""
    torch.set_num_threads(max(1, int(threads)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def loaded(ctx):
    """The checkpoint and data of a run, read once per worker process."""
    from dnn.workflow.checkpoint import load_checkpoint
    from dnn.workflow.evaluate import data_for_checkpoint

    key = (ctx["checkpoint"], ctx.get("data_spec"), ctx.get("test_limit", 0), ctx.get("train_limit", 0))
    if key not in _LOADED:
        ckpt = load_checkpoint(ctx["checkpoint"])
        data = data_for_checkpoint(ckpt, ctx.get("data_spec"), ctx.get("test_limit", 0), ctx.get("train_limit", 0))
        _LOADED.clear()
        _LOADED[key] = (ckpt, data)
    return _LOADED[key]


def device_of(ctx):
    return torch.device(ctx.get("device") or "cpu")


def fresh_model(ctx, role):
    """The checkpoint's model on the run's device; for the multiplier role its conv/linear layers converted to
    approximate-multiplier layers (first and last kept exact, as `dnn.convert` does by default)."""
    from dnn.workflow.prepare import model_from_checkpoint

    ckpt, _ = loaded(ctx)
    model = model_from_checkpoint(ckpt)
    if role == "multiplier":
        from dnn.convert import convert
        model, _ = convert(model, kind="approx_mult", arith=None, keep_first_last=ctx.get("keep_first_last", True))
    return model.to(device_of(ctx))


def role_layers(model, role):
    """(name, layer) of every layer the role's circuit serves, in module order."""
    from dnn.layers.assign import adder_layers, approx_layers

    if role == "adder":
        ids = {id(m) for m in adder_layers(model)}
        return [(name, m) for name, m in model.named_modules() if id(m) in ids]
    return approx_layers(model)


def layer_info(ctx, role):
    """[(layer name, operations per image)] for the role's layers: what a per-layer cost is weighed by."""
    _, data = loaded(ctx)
    model = fresh_model(ctx, role)
    layers = role_layers(model, role)
    ops = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: ops.__setitem__(n, o[0].numel() * m.weight[0].numel()))
             for name, m in layers]
    try:
        with torch.no_grad():
            model.eval()(data.test_x[:1].to(device_of(ctx)))
    finally:
        for h in hooks:
            h.remove()
    return [(name, int(ops.get(name, 0))) for name, _ in layers]


def is_table(circuit):
    return hasattr(circuit, "table")


def circuit_widths(circuit):
    """Operand widths of a Lut or a Netlist."""
    if is_table(circuit):
        return circuit.widths
    from lutgen.operands import group_operands
    return [op.width for op in group_operands(circuit.inputs)]


def backend(role, circuit, grad="ste", half_window=None):
    """The dnn back-end of a design for a role: LutAdder / LutMultiplier on a table; NetlistAdder on a netlist
    (whose windowed-difference gradient, grad "lut" or "diff", is computed from the circuit)."""
    if role == "adder" and is_table(circuit):
        from dnn.arith.lut_adder import LutAdder
        return LutAdder(circuit, grad=grad, half_window=half_window)
    if role == "adder":
        from dnn.arith.netlist_adder import NetlistAdder
        return NetlistAdder(circuit, grad="ste" if grad == "ste" else "diff", half_window=half_window)
    if is_table(circuit):
        from dnn.arith.lut_multiplier import LutMultiplier
        return LutMultiplier(circuit)
    from dnn.arith.netlist_multiplier import NetlistMultiplier
    return NetlistMultiplier(circuit)


def exact_backend(role, circuits):
    """What a layer without a circuit runs: ExactInt at the adders' width, or float multiplication."""
    if role != "adder":
        return None
    from dnn.arith.base import ExactInt
    widths = {w for c in circuits if c is not None for w in circuit_widths(c)}
    return ExactInt(max(widths) if widths else 8)


def calibrate(model, role, data, device):
    """The run's calibration on training data: AdderQuant percentile scales for adder layers, activation ranges
    for multiplier layers."""
    if role == "adder":
        from dnn.workflow.prepare import calibrate_model
        calibrate_model(model, data, device, batches=CALIBRATION_BATCHES, batch_size=CALIBRATION_BATCH_SIZE)
        return
    from dnn.layers.calibrate import calibrate_mult
    from dnn.workflow.prepare import calibration_batches
    calibrate_mult(model, calibration_batches(data, device, CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE))


def assigned_accuracy(ctx, role, circuits):
    """Test accuracy with circuits[i] (a Lut, a Netlist or None) in the role's i-th layer."""
    from dnn.workflow.loop import evaluate

    _, data = loaded(ctx)
    device = device_of(ctx)
    model = fresh_model(ctx, role)
    layers = role_layers(model, role)
    if len(circuits) != len(layers):
        raise AxnetError(f"assignment of {len(circuits)} circuits for {len(layers)} {role} layers")
    exact = exact_backend(role, circuits)
    shared = {}
    for (_, layer), circuit in zip(layers, circuits):
        arith = exact if circuit is None else shared.setdefault(id(circuit), backend(role, circuit))
        if role == "adder":
            layer.arith = arith
        else:
            layer.mult = arith
    calibrate(model, role, data, device)
    return evaluate(model, data.test_x, data.test_y, device=device)[1], len(data.test_x)


def design_metrics(job):
    """Error metrics of a design against its reference (as `axnet metrics` reports them): from the table, or
    streamed from the netlist (exhaustively up to 32 inputs, over STREAM_SAMPLES random pairs beyond)."""
    from lutgen.metrics import error_metrics, stream_metrics
    from lutgen.operands import group_operands

    circuit = job["circuit"]
    if is_table(circuit):
        result = error_metrics(circuit, job["reference"])
    else:
        samples = None if len(circuit.inputs) <= 32 else STREAM_SAMPLES
        result = stream_metrics(circuit, group_operands(circuit.inputs), job["reference"], samples=samples)
    keep = ("ep_percent", "mae", "mae_percent", "wce", "wce_percent", "mse", "bias", "mre_percent", "wcre_percent")
    return {k: (None if result.get(k) is None else float(result[k])) for k in keep}


def run_design(ctx, job):
    """Metrics, ABC area (when asked) and accuracy with the design in every layer of its role."""
    from circuits.cost import abc_area

    out = {"kind": "design", "design": job["design"], "role": job["role"]}
    out.update(design_metrics(job))
    if ctx.get("abc") and job.get("netlist") is not None:
        out["abc_area"] = abc_area(job["netlist"], ctx["abc"])
    out.update(guarded_accuracy(ctx, job["role"], [job["circuit"]] * job["layers"]))
    return out


def guarded_accuracy(ctx, role, circuits):
    """{'accuracy', 'images'} of an assignment, or accuracy None and a `note` when the network cannot run on it
    (a circuit that zeroes every activation leaves calibration nothing to scale): the run goes on."""
    try:
        acc, images = assigned_accuracy(ctx, role, circuits)
    except AxnetError as e:
        _, data = loaded(ctx)
        return {"accuracy": None, "images": len(data.test_x), "note": f"not evaluated: {e}"}
    return {"accuracy": acc, "images": images}


def run_assign(ctx, job):
    """Accuracy of one per-layer assignment."""
    out = {"kind": "assign", "assignment": job["assignment"], "role": job["role"]}
    out.update(guarded_accuracy(ctx, job["role"], job["layer_circuits"]))
    return out


def run_retrain(ctx, job):
    """Retrain the checkpoint through the design (SGD + adaptive scaling, as `axnet retrain`), then its accuracy."""
    from dnn.workflow.train import TrainConfig, run_training

    if job["role"] != "adder":
        raise AxnetError("--retrain-epochs: retraining runs through adder layers only for now")
    ckpt, data = loaded(ctx)
    base = TrainConfig.from_dict(ckpt["config"])
    epochs = int(job["epochs"])
    cfg = TrainConfig(model=ckpt["model"], data=ctx.get("data_spec") or base.data, epochs=epochs,
                      batch_size=job.get("batch_size", 64), lr=job.get("lr", 0.01), optimizer="sgd",
                      seed=job.get("seed", 0), augment=base.augment, save_every=max(epochs, 1),
                      train_limit=ctx.get("train_limit") or base.train_limit,
                      test_limit=ctx.get("test_limit") or base.test_limit)
    arith = retrain_backend(job)
    out_dir = job["out_dir"]
    # a run killed part-way continues from its last.pt; files without one (killed inside the first epoch) are
    # nothing to continue, and are replaced
    resume = os.path.isfile(os.path.join(out_dir, "last.pt"))
    summary = run_training(cfg, out_dir, resume=resume, overwrite=not resume, arith=arith,
                           init_state=ckpt["state_dict"],
                           extra={"retrained_from": ctx["checkpoint"], "grad": job["grad"]}, show=False, data=data,
                           title=f"explore retrain {job['design']}")
    return {"kind": "retrain", "design": job["design"], "role": job["role"],
            "retrained_accuracy": float(summary["final_test_acc"]), "retrain_epochs": epochs,
            "retrain_grad": job["grad"]}


def retrain_backend(job):
    """The back-end retraining goes through: the design's LUT with STE or gradient-LUT backward, or a netlist
    back-end with differentiable gradients (grad=diff) where dnn.arith provides one."""
    if job["grad"] in ("ste", "lut"):
        return backend("adder", job["circuit"], grad=job["grad"], half_window=job.get("half_window"))
    from dnn.arith.netlist_adder import NetlistAdder

    netlist = job["circuit"] if not is_table(job["circuit"]) else job.get("netlist")
    if netlist is None:
        raise AxnetError(f"--grad diff: design {job['design']} came from a LUT file, it has no netlist")
    return NetlistAdder(netlist, grad="diff", half_window=job.get("half_window"))


KINDS = {"design": run_design, "assign": run_assign, "retrain": run_retrain}


def run_job(ctx, job):
    """Run one job in this process; returns its result dict with the seconds it took. An AxnetError is returned as
    {'error': message} so the engine can report it as one line."""
    t0 = time.perf_counter()
    try:
        result = KINDS[job["kind"]](ctx, job)
    except AxnetError as e:
        return {"kind": job["kind"], "error": str(e), "job": job_label(job)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def job_label(job):
    """A short label for progress lines and errors."""
    return job.get("label") or job.get("design") or str(job.get("assignment"))
