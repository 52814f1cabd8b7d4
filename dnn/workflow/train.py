"""Training, evaluation, approximate-bit sweeps and approximation-aware retraining of the models in `dnn.models`.

Two optimizers, both with a cosine learning-rate schedule over the run:
- `sgd`, the AdderNet recipe: SGD with momentum and weight decay, and the adaptive learning-rate scaling of every
  adder layer's weight gradient (`adaptive_lr_scale_`, eta) between `backward()` and `optimizer.step()`.
- `adam`: Adam on every parameter, no adaptive scaling (Adam's per-element normalisation already balances the tiny
  full-precision AdderNet gradients against the others). `axnet train` uses it by default for the seed-000
  network (see `train_settings`): with SGD + adaptive scaling every step moves every adder weight by about lr * eta
  whatever its gradient, the weights drift far outside the activation range (std 14, |w| up to 100 against inputs
  in [-0.42, 2.8] after 40 epochs at lr 0.2), and the network learns more slowly per epoch.

Distributed runs: under `torchrun --nproc_per_node N` (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on GPU), every rank draws its share of each global batch through a
DistributedSampler, and only rank 0 writes files. DDP all-reduces (averages) the gradients inside `backward()`,
so when the adaptive scaling runs afterwards every rank sees the same, global averaged gradient: the norm in
`grad * eta * sqrt(numel) / ||grad||` is the norm of the global gradient, identical on all ranks, and the replicas
stay in step. BatchNorm statistics are per replica (as with plain DDP everywhere); `micro_batches=m` reproduces
that on one process by splitting each global batch the way m ranks would.

Reproducibility: the initial weights come from `torch.manual_seed(seed)`, the order of each epoch from
(seed, epoch) and the augmentation from (seed, epoch, rank), so a CPU run with a given seed is repeatable and a
resumed run continues exactly where the last checkpoint left it.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace

import torch
from tqdm import tqdm

from circuits.errors import AxnetError
from dnn.workflow.checkpoint import check_circuit, load_checkpoint, save_checkpoint
from dnn.data import check_augmentation, load_data
from dnn.models import build_model, model_input
from lutgen.files import atomic_write
from dnn.workflow.distributed import init_distributed
from dnn.workflow.loop import WeightAverage, evaluate, load_teacher, reestimate_batchnorm, train_epoch
from dnn.workflow.prepare import arith_label, arith_sha, check_model_data, cpu_state, load_model_state, prepare_arith
from dnn.workflow.rundir import clear_run, extend_schedule, prepare_run_dir

@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in each checkpoint so `--resume` continues the same run."""

    model: str = "mnist-addernet"
    data: str = "mnist5k"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eta: float = 0.2
    optimizer: str = "sgd"  # sgd (AdderNet recipe, adaptive scaling) or adam (no scaling); see train_settings
    seed: int = 0
    save_every: int = 5
    augment: bool = True
    augment_kind: str = ""  # "" = the data set's own (shift for digits, crop-flip for CIFAR); or shift/affine
    teacher: str = ""  # checkpoint of a trained model to distil from ("" = plain cross-entropy)
    kd_alpha: float = 0.7  # weight of the distillation term; 1 - kd_alpha weighs the cross-entropy with the labels
    kd_temperature: float = 4.0
    ema: float = 0.0  # decay of the exponential moving average of the weights that is evaluated and saved; 0 = off
    micro_batches: int = 1
    train_limit: int = 0  # 0 = the whole training split; smaller for quick runs and tests
    test_limit: int = 0

    @classmethod
    def from_dict(cls, d):
        """A config from a checkpoint's stored dict (unknown keys ignored; checkpoints older than the `optimizer`
        field were trained with sgd)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


OPTIMIZERS = ("adam", "sgd")

# What `axnet train` uses for options not given on the command line: the optimizer and epochs per model family,
# then lr, batch size and weight decay per optimizer.
# mnist: Adam (lr 0.03, batch 16, no weight decay, 30 epochs) reached 91.9% on mnist5k in 5 minutes on one CPU
# thread, where the AdderNet SGD recipe (lr 0.2, batch 32) needed 40 epochs and 11 minutes for 91.3%
# (docs/RESULTS.md, section 1). lenet5 / resnet20 keep the AdderNet paper's recipe (SGD + adaptive scaling).
FAMILY_DEFAULTS = {"mnist": dict(optimizer="adam", epochs=30)}
OTHER_DEFAULTS = dict(optimizer="sgd", epochs=10)
OPTIMIZER_DEFAULTS = {"adam": dict(lr=0.03, batch_size=16, weight_decay=0.0),
                      "sgd": dict(lr=0.1, batch_size=64, weight_decay=5e-4)}


def train_settings(model_name, optimizer=None, epochs=None, batch_size=None, lr=None, weight_decay=None):
    """The training settings of `axnet train`: each one given (not None) is kept, the others come from the model
    family's defaults (optimizer, epochs) and then the optimizer's (lr, batch_size, weight_decay)."""
    family = FAMILY_DEFAULTS.get(model_name.split("-")[0], OTHER_DEFAULTS)
    optimizer = optimizer or family["optimizer"]
    if optimizer not in OPTIMIZERS:
        raise AxnetError(f"--optimizer '{optimizer}': expected one of {', '.join(OPTIMIZERS)}")
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    defaults = dict(OPTIMIZER_DEFAULTS[optimizer], epochs=family["epochs"])
    return dict(optimizer=optimizer, **{k: defaults[k] if v is None else v for k, v in given.items()})


HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


def load_run_data(cfg):
    """The data set of a config, cut to its limits."""
    data = load_data(cfg.data)
    return data.subset(cfg.train_limit or None, cfg.test_limit or None)


def make_optimizer(model, cfg):
    """SGD with momentum and weight decay, or Adam (with the same weight decay), plus a cosine schedule over the run's
    epochs."""
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    return optimizer, scheduler


# The command-line option of each TrainConfig field whose name does not say it
OPTION_NAMES = {"augment": "--no-augment", "augment_kind": "--augment", "train_limit": "--limit",
                "test_limit": "--limit-test", "micro_batches": "micro_batches"}
FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "eta", "kd_alpha", "kd_temperature", "ema")


def option_name(field):
    """The command-line option that sets a TrainConfig field (`--weight-decay` for weight_decay)."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def validate_config(cfg, ctx):
    """Catch impossible settings before any work, naming the option."""
    model_input(cfg.model)
    for name in FLOAT_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AxnetError(f"{option_name(name)} {value}: must be a finite number")
    if not 0 <= cfg.momentum < 1:
        raise AxnetError(f"momentum {cfg.momentum}: must be in [0, 1)")
    if cfg.epochs < 1:
        raise AxnetError(f"--epochs {cfg.epochs}: must be at least 1")
    if cfg.lr <= 0:
        raise AxnetError(f"--lr {cfg.lr}: must be positive")
    if cfg.optimizer not in OPTIMIZERS:
        raise AxnetError(f"--optimizer '{cfg.optimizer}': expected one of {', '.join(OPTIMIZERS)}")
    if cfg.weight_decay < 0:
        raise AxnetError(f"--weight-decay {cfg.weight_decay}: must be zero or positive")
    if cfg.batch_size < 2 * ctx.world * cfg.micro_batches:
        raise AxnetError(f"--batch-size {cfg.batch_size}: need at least 2 images per BatchNorm batch "
                         f"({ctx.world} process(es) x {cfg.micro_batches} micro-batch(es))")
    if cfg.batch_size % (ctx.world * cfg.micro_batches):
        raise AxnetError(f"--batch-size {cfg.batch_size} must divide evenly over {ctx.world} process(es) x "
                         f"{cfg.micro_batches} micro-batch(es)")
    if not 0 <= cfg.kd_alpha <= 1:
        raise AxnetError(f"--kd-alpha {cfg.kd_alpha}: must be between 0 and 1")
    if cfg.kd_temperature <= 0:
        raise AxnetError(f"--kd-temperature {cfg.kd_temperature}: must be positive")
    if not 0 <= cfg.ema < 1:
        raise AxnetError(f"--ema {cfg.ema}: the averaging decay must be in [0, 1) (e.g. 0.999; 0 = off)")


def resume_settings(ckpt, cfg, path, given=None):
    """The settings of a resumed run: the stored ones, where every field in `given` (None = all) must agree with
    `cfg`, except that `--epochs` may be raised to extend the run and `--save-every` may change."""
    stored = TrainConfig.from_dict(ckpt["config"])
    names = [f.name for f in fields(TrainConfig)] if given is None else list(given)
    for name in names:
        a, b = getattr(stored, name), getattr(cfg, name)
        if name == "save_every" or a == b:
            continue
        if name == "epochs" and b > a:
            continue
        if name == "epochs":
            raise AxnetError(f"--resume: --epochs {b} is below the run's {a}; a resumed run may only raise it",
                             path=path)
        raise AxnetError(f"--resume: {option_name(name)} {b} differs from the run's {a}; a resumed run keeps its "
                         "settings", path=path)
    epochs = cfg.epochs if "epochs" in names else stored.epochs
    save_every = cfg.save_every if "save_every" in names else stored.save_every
    return replace(stored, epochs=max(stored.epochs, epochs), save_every=save_every)


def write_history_csv(history, path):
    """The per-epoch curves as CSV."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HISTORY_KEYS)
    for i in range(len(history["epoch"])):
        w.writerow([history[k][i] for k in HISTORY_KEYS])
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def write_json(obj, path):
    """Pretty JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def checkpoint_payload(cfg, raw_model, optimizer, scheduler, epoch, history, best, arith, extra, average=None):
    """Everything a checkpoint stores: weights-only-loadable types. With weight averaging, `state_dict` holds the
    averaged weights (what eval, sweep and retrain use) and `train_state_dict` the trained ones (for --resume)."""
    payload = {
        "model": cfg.model,
        "model_kwargs": {},
        "config": asdict(cfg),
        "epoch": epoch,
        "state_dict": cpu_state(raw_model if average is None else average.model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": history,
        "best_acc": best,
        "arith": arith_label(arith),
        "circuit_sha256": arith_sha(arith),
    }
    if average is not None:
        payload.update(train_state_dict=cpu_state(raw_model), ema_steps=average.steps)
    payload.update(extra or {})
    return payload


def run_training(cfg, out_dir, resume=False, arith=None, init_state=None, extra=None, show=True, title=None,
                 data=None, overwrite=False, given=None, accum=None):
    """Train per `cfg` into `out_dir` (last.pt, best.pt, epoch_NNNN.pt, history.csv, curves.png, summary.json).

    `arith` trains through an approximate back-end (retraining), starting from `init_state` weights when given;
    `accum` (an Accumulator) sums its terms (straight-through gradients across the accumulation).
    `extra` is stored in every checkpoint. A directory that already holds a run is refused unless `resume` (whose
    stored settings must agree with the `given` fields of `cfg`, all when None; epochs may be raised) or
    `overwrite`. Returns the summary dict (also on ranks other than 0)."""
    ctx = init_distributed()
    validate_config(cfg, ctx)
    last_path = os.path.join(out_dir, "last.pt")
    if resume and not os.path.isfile(last_path):
        raise AxnetError("--resume: no last.pt checkpoint in this run directory", path=out_dir)
    start_epoch, history, best = 0, {k: [] for k in HISTORY_KEYS}, -1.0
    ckpt = None
    if resume:
        ckpt = load_checkpoint(last_path)
        check_circuit(ckpt, arith_sha(arith), last_path, "--resume")
        cfg = resume_settings(ckpt, cfg, last_path, given)
        validate_config(cfg, ctx)
    data = data if data is not None else load_run_data(cfg)
    check_model_data(cfg.model, data)
    check_augmentation(cfg.augment_kind, data)
    if len(data.train_x) < cfg.batch_size:  # the last partial batch is dropped: not one step would run
        raise AxnetError(f"--batch-size {cfg.batch_size} is more than the {len(data.train_x)} training images "
                         f"({data.name}" + (f", --limit {cfg.train_limit}" if cfg.train_limit else "")
                         + "): no training step would run; give a smaller --batch-size")
    # the run directory is made (or cleared) only once the run can start: a refused run leaves --out as it was
    replaced = prepare_run_dir(out_dir, resume, overwrite) if ctx.is_main else []

    torch.manual_seed(cfg.seed)
    raw_model = build_model(cfg.model, num_classes=data.num_classes)
    if init_state is not None:
        load_model_state(raw_model, init_state)
    raw_model.to(ctx.device)
    if arith is not None:
        prepare_arith(raw_model, arith, data, ctx.device, accum=accum)
    optimizer, scheduler = make_optimizer(raw_model, cfg)
    average = WeightAverage(raw_model, cfg.ema) if cfg.ema else None
    if ckpt is not None:
        load_model_state(raw_model, ckpt.get("train_state_dict", ckpt["state_dict"]))
        if average is not None:
            load_model_state(average.model, ckpt["state_dict"])
            average.steps = ckpt["ema_steps"]
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        extend_schedule(optimizer, scheduler, cfg.epochs)
        start_epoch, history, best = ckpt["epoch"], ckpt["history"], ckpt["best_acc"]
    scored = raw_model if average is None else average.model  # the model evaluated, saved and returned
    model = raw_model
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=None if ctx.device == "cpu"
                                                          else [torch.device(ctx.device).index])
    teacher = load_teacher(cfg.teacher, data, ctx.device) if cfg.teacher else None
    show = show and ctx.is_main
    title = title or f"{cfg.model} on {data.name} ({arith_label(arith)})"
    if ctx.is_main:
        clear_run(out_dir, replaced)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_epoch(model, raw_model, data, cfg, ctx, optimizer, epoch, show, teacher,
                                            average)
        scheduler.step()
        reestimate_batchnorm(scored, data.train_x, ctx)  # the trained weights are only evaluated when not averaged
        test_loss, test_acc = evaluate(scored, data.test_x, data.test_y, ctx=ctx)
        row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                   test_acc=test_acc, seconds=time.perf_counter() - t0)
        for k in HISTORY_KEYS:
            history[k].append(row[k])
        if show:
            tqdm.write(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {train_loss:.4f}  train {train_acc:6.2f}%  "
                       f"test {test_acc:6.2f}%  ({row['seconds']:.1f} s)", file=sys.stderr)
        if ctx.is_main:
            payload = checkpoint_payload(cfg, raw_model, optimizer, scheduler, epoch + 1, history,
                                         max(best, test_acc), arith, extra, average)
            if test_acc > best:
                save_checkpoint(os.path.join(out_dir, "best.pt"), payload)
            if (epoch + 1) % max(cfg.save_every, 1) == 0:
                save_checkpoint(os.path.join(out_dir, f"epoch_{epoch + 1:04d}.pt"), payload)
            save_checkpoint(last_path, payload)
            write_history_csv(history, os.path.join(out_dir, "history.csv"))
            from dnn.workflow.plots import plot_curves
            plot_curves(history, os.path.join(out_dir, "curves.png"), title)
        best = max(best, test_acc)
    summary = {
        "model": cfg.model, "data": data.name, "arith": arith_label(arith), "epochs": cfg.epochs,
        "final_test_acc": history["test_acc"][-1] if history["test_acc"] else None,
        "best_test_acc": best, "train_seconds": sum(history["seconds"]), "world_size": ctx.world,
        "out": out_dir,
    }
    if ctx.is_main:
        write_json(summary, os.path.join(out_dir, "summary.json"))
    summary["model_object"] = scored
    return summary


def clean_summary(summary):
    """A training summary without the live model object (for JSON)."""
    return {k: v for k, v in summary.items() if k != "model_object"}
