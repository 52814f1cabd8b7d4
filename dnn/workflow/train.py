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

import contextlib
import copy
import csv
import io
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from circuits.errors import AxnetError
from circuits.files import file_sha256
from dnn.checkpoint import check_circuit, load_checkpoint, save_checkpoint
from dnn.data import augment_batch, check_augmentation, load_data
from dnn.models import build_model, model_input, strip_module_prefix
from lutgen.files import atomic_write

EVAL_BATCH = 500


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


# ---- distributed context ---------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """Rank, world size and device of this process; `enabled` when running under torchrun with WORLD_SIZE > 1."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    enabled: bool = False

    @property
    def is_main(self):
        return self.rank == 0


def default_device():
    """CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_distributed():
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=default_device())
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world=world, device=device, enabled=True)


def finish_distributed():
    """Leave the process group, if this process joined one (end of a torchrun run)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sums(values, ctx):
    """Sum a list of floats over all ranks (identity when running alone)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch_dist.all_reduce(t)
    return t.tolist()


# ---- models and arithmetic -------------------------------------------------------------------------------------


def adaptive_scale(model, eta):
    """The AdderNet adaptive learning-rate step on every adder layer (no-op for a model without adder layers)."""
    from dnn.adder2d import adaptive_lr_scale_
    adaptive_lr_scale_(model, eta)


def set_model_arith(model, arith):
    """Give every adder layer of `model` the back-end `arith` (None = float); returns how many layers."""
    from dnn.adder2d import adder_layers
    layers = adder_layers(model)
    for layer in layers:
        layer.arith = arith
    return len(layers)


def parse_arith_text(text):
    """`float` -> None, anything else through `dnn.arith.parse_arith` (errors name --arith)."""
    if text is None or text.strip() == "float":
        return None
    from dnn.arith import parse_arith
    return parse_arith(text)


def arith_label(arith):
    """One-line description of a back-end (float for None)."""
    return "float" if arith is None else arith.describe()


def arith_sha(arith):
    """The circuit sha256 of a back-end, or None."""
    return None if arith is None else getattr(arith, "sha256", None)


def check_model_data(model_name, data):
    """Refuse a model that expects other images than the data set holds, naming both options."""
    channels, side = model_input(model_name)
    have = tuple(data.train_x.shape[1:])
    if have != (channels, side, side):
        raise AxnetError(f"--model {model_name} expects {channels}x{side}x{side} images but --data {data.name} "
                         f"holds {'x'.join(map(str, have))}")


def load_model_state(model, state):
    """Load weights into `model`; quantization scale buffers absent on either side are tolerated."""
    state = strip_module_prefix(dict(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in list(missing) + list(unexpected) if not k.endswith("scale")]
    if bad:
        raise AxnetError(f"checkpoint does not fit the model: {len(bad)} mismatched entries, e.g. {bad[0]}")
    for key in unexpected:  # a calibrated scale on a layer whose buffer is still None
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module.register_buffer(name, state[key].clone())


def model_from_checkpoint(ckpt):
    """A model rebuilt from a checkpoint's model name and weights."""
    model = build_model(ckpt["model"], **ckpt.get("model_kwargs", {}))
    load_model_state(model, ckpt["state_dict"])
    return model


def cpu_state(model):
    """A model's state dict as detached CPU tensors (what checkpoints hold)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def calibrate_model(model, data, device, batches=8, batch_size=256, percentile=99.9):
    """Fix each adder layer's quantization scale the AdderQuant way: the activation range is the `percentile` of
    |x| over a few training batches, and filters with larger weights are clamped to it with an exact bias
    correction (dnn.quant.group_clamp_weights_). Scaling by max |W| instead would waste the integer range on a
    few large weights (AdderNet weights grow under the adaptive learning rate) and cost many points at 8 bits."""
    from dnn.adder2d import adder_layers
    from dnn.quant import calibrate, group_clamp_weights_
    xs = [data.train_x[i:i + batch_size].to(device) for i in range(0, batch_size * batches, batch_size)
          if i < len(data.train_x)]
    calibrate(model, xs, method="percentile", percentile=percentile, include_weights=False)
    for layer in adder_layers(model):
        group_clamp_weights_(layer, float(layer.scale))


def prepare_arith(model, arith, data, device, calibrate=True):
    """Put `arith` on every adder layer and, for a quantized back-end, calibrate the scales on training data."""
    n = set_model_arith(model, arith)
    if arith is not None and n == 0:
        raise AxnetError(f"--arith {arith_label(arith)}: the model has no adder layers to run it on")
    if arith is not None and calibrate:
        calibrate_model(model, data, device)
    return n


# ---- batches, epochs, evaluation -------------------------------------------------------------------------------


def epoch_batches(n, batch_size, ctx, seed, epoch):
    """Index tensors of this rank's share of each full global batch of one epoch (last partial batch dropped).

    Rank r of W takes elements r, r+W, r+2W, ... of each global batch, exactly what DistributedSampler deals it."""
    sampler = DistributedSampler(range(n), num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed,
                                 drop_last=False)
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.long)
    per_rank = batch_size // ctx.world
    full = len(order) // per_rank
    return [order[i * per_rank:(i + 1) * per_rank] for i in range(full)]


def load_teacher(path, data, device):
    """The float model of checkpoint `path`, frozen in eval mode, to distil from; it must fit the data."""
    ckpt = load_checkpoint(path)
    check_model_data(ckpt["model"], data)
    return model_from_checkpoint(ckpt).requires_grad_(False).to(device).eval()


def training_loss(out, y, x, cfg, teacher):
    """Cross-entropy with the labels; with a teacher, mixed with the distillation term of Hinton et al. (KL divergence
    between the softened outputs, scaled by T^2 so its gradients keep their size across temperatures)."""
    loss = F.cross_entropy(out, y)
    if teacher is None:
        return loss
    t = cfg.kd_temperature
    with torch.no_grad():
        soft = F.softmax(teacher(x) / t, dim=1)
    kd = F.kl_div(F.log_softmax(out / t, dim=1), soft, reduction="batchmean") * t * t
    return (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging), kept in a copy of the model.

    Only the parameters are averaged; the copy's BatchNorm statistics are re-estimated for the averaged weights
    (`reestimate_batchnorm`), since running statistics of other weights do not fit them. The decay ramps up as
    min(decay, (1 + t) / (10 + t)) over the first steps t, so the random initial weights are forgotten quickly."""

    def __init__(self, model, decay, steps=0):
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.decay = decay
        self.steps = steps

    @torch.no_grad()
    def update(self, model):
        """Fold the model's current parameters into the average (after each optimizer step)."""
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, p in zip(self.model.parameters(), model.parameters()):
            avg.lerp_(p.detach(), 1 - d)


def train_epoch(model, raw_model, data, cfg, ctx, optimizer, epoch, show, teacher=None, average=None):
    """One epoch of training; returns (mean loss, accuracy %) over all ranks."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + ctx.rank)
    batches = epoch_batches(len(data.train_x), cfg.batch_size, ctx, cfg.seed, epoch)
    m = cfg.micro_batches
    loss_sum = correct = count = 0.0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not show, unit="batch")
    for idx in bar:
        x, y = data.train_x[idx], data.train_y[idx]
        if cfg.augment:
            x = augment_batch(x, cfg.augment_kind or data.augment, gen)
        x, y = x.to(ctx.device), y.to(ctx.device)
        optimizer.zero_grad(set_to_none=True)
        for r in range(m):
            xr, yr = x[r::m], y[r::m]
            sync = model.no_sync() if (ctx.enabled and r < m - 1) else contextlib.nullcontext()
            with sync:
                out = model(xr)
                loss = training_loss(out, yr, xr, cfg, teacher)
                (loss / m).backward()
            loss_sum += loss.item() * len(yr)
            correct += (out.argmax(1) == yr).sum().item()
            count += len(yr)
        if cfg.optimizer == "sgd":
            adaptive_scale(raw_model, cfg.eta)  # gradients are already all-reduced here under DDP
        optimizer.step()
        if average is not None:
            average.update(raw_model)
        bar.set_postfix(loss=f"{loss_sum / max(count, 1):.3f}")
    loss_sum, correct, count = all_reduce_sums([loss_sum, correct, count], ctx)
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


@torch.no_grad()
def evaluate(model, x, y, device="cpu", ctx=None, batch_size=EVAL_BATCH, show=False, desc="eval"):
    """(mean cross-entropy, accuracy %) of `model` on (x, y); under DDP each rank takes every W-th image."""
    ctx = ctx or DistContext(device=device)
    was_training = model.training
    model.eval()
    xs, ys = x[ctx.rank::ctx.world], y[ctx.rank::ctx.world]
    loss_sum = correct = 0.0
    starts = range(0, len(xs), batch_size)
    for s in tqdm(starts, desc=desc, leave=False, disable=not show, unit="batch"):
        xb, yb = xs[s:s + batch_size].to(ctx.device), ys[s:s + batch_size].to(ctx.device)
        out = model(xb)
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    loss_sum, correct, count = all_reduce_sums([loss_sum, correct, float(len(xs))], ctx)
    model.train(was_training)
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


@torch.no_grad()
def reestimate_batchnorm(model, x, ctx, batches=8, batch_size=256):
    """Recompute every BatchNorm's running statistics for the current weights, exactly, over up to
    batches x batch_size training images (no augmentation); under DDP each rank takes its shard and the sums are
    all-reduced, so every rank ends with the same global statistics.

    Why: AdderNet layers output a large negative sum whose spread is small next to its mean. The usual running
    average lags the weights and can miss the mean by more than the spread (we saw 85% train, 9% test accuracy in
    retraining), and PyTorch's float32 train-mode statistics lose precision on such data (mean -1168, spread ~7:
    off by ~2.6). So the model runs in eval mode, and a pre-hook on each BatchNorm measures the batch mean and
    variance in float64, normalises this batch with them (as training would), and accumulates the totals."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    totals = {m: [0.0, 0.0, 0.0] for m in norms}  # count, sum, sum of squares (float64 tensors after the first)

    def measure(module, inputs):
        t = inputs[0].detach().double()
        dims = [d for d in range(t.dim()) if d != 1]
        count = t.numel() // t.shape[1]
        total = totals[module]
        total[0] += count
        total[1] = total[1] + t.sum(dims)
        total[2] = total[2] + (t * t).sum(dims)
        module.running_mean.copy_(t.mean(dims))
        module.running_var.copy_(t.var(dims, unbiased=False))

    was_training = model.training
    model.eval()
    hooks = [m.register_forward_pre_hook(measure) for m in norms]
    xs = x[ctx.rank::ctx.world][:batches * batch_size]
    try:
        for s in range(0, len(xs), batch_size):
            model(xs[s:s + batch_size].to(ctx.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for m in norms:
        count, total, squares = totals[m]
        stats = torch.cat([torch.tensor([float(count)], dtype=torch.float64, device=total.device), total, squares])
        if ctx.enabled:
            torch_dist.all_reduce(stats)
        c = stats.shape[0] // 2
        n, mean = stats[0], stats[1:1 + c] / stats[0]
        var = (stats[1 + c:] / n - mean * mean).clamp(min=0) * n / max(float(n) - 1, 1.0)  # unbiased, as BN keeps
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))


# ---- the training run ------------------------------------------------------------------------------------------


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


def validate_config(cfg, ctx):
    """Catch impossible settings before any work, naming the option."""
    model_input(cfg.model)
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


def resume_settings(ckpt, cfg, path):
    """A resumed run keeps its stored settings; refuse one whose options differ, naming the first that does."""
    stored = TrainConfig.from_dict(ckpt["config"])
    for f in fields(TrainConfig):
        if f.name in ("save_every",):
            continue
        a, b = getattr(stored, f.name), getattr(cfg, f.name)
        if a != b:
            option = "--" + f.name.replace("_", "-")
            raise AxnetError(f"--resume: {option} {b} differs from the run's {a}; a resumed run keeps its settings",
                             path=path)
    return stored


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
                 data=None):
    """Train per `cfg` into `out_dir` (last.pt, best.pt, epoch_NNNN.pt, history.csv, curves.png, summary.json).

    `arith` trains through an approximate back-end (retraining), starting from `init_state` weights when given.
    `extra` is stored in every checkpoint. Returns the summary dict (also on ranks other than 0)."""
    ctx = init_distributed()
    validate_config(cfg, ctx)
    last_path = os.path.join(out_dir, "last.pt")
    start_epoch, history, best = 0, {k: [] for k in HISTORY_KEYS}, -1.0
    ckpt = None
    if resume:
        if not os.path.isfile(last_path):
            raise AxnetError("--resume: no last.pt checkpoint in this run directory", path=out_dir)
        ckpt = load_checkpoint(last_path)
        check_circuit(ckpt, arith_sha(arith), last_path, "--resume")
        cfg = resume_settings(ckpt, cfg, last_path)
    data = data if data is not None else load_run_data(cfg)
    check_model_data(cfg.model, data)
    check_augmentation(cfg.augment_kind, data)

    torch.manual_seed(cfg.seed)
    raw_model = build_model(cfg.model, num_classes=data.num_classes)
    if init_state is not None:
        load_model_state(raw_model, init_state)
    raw_model.to(ctx.device)
    if arith is not None:
        prepare_arith(raw_model, arith, data, ctx.device)
    optimizer, scheduler = make_optimizer(raw_model, cfg)
    average = WeightAverage(raw_model, cfg.ema) if cfg.ema else None
    if ckpt is not None:
        load_model_state(raw_model, ckpt.get("train_state_dict", ckpt["state_dict"]))
        if average is not None:
            load_model_state(average.model, ckpt["state_dict"])
            average.steps = ckpt["ema_steps"]
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
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
        os.makedirs(out_dir, exist_ok=True)
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
            from dnn.plots import plot_curves
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


# ---- evaluation, sweep and retraining on a checkpoint -----------------------------------------------------------


def data_for_checkpoint(ckpt, data_spec=None, test_limit=0, train_limit=0):
    """The data a checkpoint was trained on, or the one given."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    spec = data_spec or cfg.data
    data = load_data(spec).subset(train_limit or cfg.train_limit or None, test_limit or cfg.test_limit or None)
    check_model_data(ckpt["model"], data)
    return data


def accuracy_under(model, arith, data, device, show=False, desc="eval"):
    """Test accuracy of `model` with every adder layer on `arith` (None = float)."""
    prepare_arith(model, arith, data, device)
    return evaluate(model, data.test_x, data.test_y, device=device, show=show, desc=desc)[1]


def eval_checkpoint(ckpt_path, arith_text="float", data_spec=None, test_limit=0, show=True):
    """Accuracy of a checkpoint under one arithmetic: a dict for the CLI table or --json."""
    ckpt = load_checkpoint(ckpt_path)
    arith = parse_arith_text(arith_text)
    data = data_for_checkpoint(ckpt, data_spec, test_limit)
    device = default_device()
    model = model_from_checkpoint(ckpt).to(device)
    t0 = time.perf_counter()
    acc = accuracy_under(model, arith, data, device, show=show)
    return {"checkpoint": str(ckpt_path), "model": ckpt["model"], "data": data.name, "images": len(data.test_x),
            "arith": arith_label(arith), "accuracy": acc, "seconds": time.perf_counter() - t0}


def parse_bits_range(text, width):
    """'0:32' -> [0, 1, ..., 32] (inclusive); '0:32:4' -> [0, 4, ..., 32]; '4' -> [4]; errors name --approx-bits."""
    try:
        parts = [int(t) for t in text.split(":")]
    except ValueError:
        raise AxnetError(f"--approx-bits '{text}': expected K, LO:HI or LO:HI:STEP such as 0:32") from None
    if len(parts) not in (1, 2, 3):
        raise AxnetError(f"--approx-bits '{text}': expected K, LO:HI or LO:HI:STEP such as 0:32")
    lo, hi, step = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else 1
    if not 0 <= lo <= hi <= width or step < 1:
        raise AxnetError(f"--approx-bits '{text}': need 0 <= LO <= HI <= --width {width} and STEP >= 1")
    return list(range(lo, hi + 1, step))


def first_drop(bits, accuracy, reference, points=1.0):
    """The first k whose accuracy is more than `points` below `reference`, or None."""
    for k, a in zip(bits, accuracy):
        if a < reference - points:
            return k
    return None


def run_sweep(ckpt_path, cell="maj", width=32, bits_text="0:32", out_dir=None, data_spec=None, test_limit=0,
              show=True):
    """The seed-000 study: accuracy against the number of approximate low bits of a `width`-bit cell adder."""
    from dnn.arith import CellAdder
    ckpt = load_checkpoint(ckpt_path)
    bits = parse_bits_range(bits_text, width)
    data = data_for_checkpoint(ckpt, data_spec, test_limit)
    device = default_device()
    float_acc = accuracy_under(model_from_checkpoint(ckpt).to(device), None, data, device)
    accuracy = []
    t0 = time.perf_counter()
    for k in tqdm(bits, desc=f"sweep {cell}", disable=not show, unit="k"):
        # a fresh model per point, as `axnet eval` does: calibration clamps weights and adds clamp biases, and a
        # point should not depend on which points were measured before it
        model = model_from_checkpoint(ckpt).to(device)
        accuracy.append(accuracy_under(model, CellAdder(cell=cell, approx_bits=k, width=width), data, device))
    baseline = accuracy[0] if bits[0] == 0 else None
    result = {
        "checkpoint": str(ckpt_path), "model": ckpt["model"], "data": data.name, "images": len(data.test_x),
        "cell": cell, "width": width, "float_accuracy": float_acc,
        "points": [{"approx_bits": k, "accuracy": a} for k, a in zip(bits, accuracy)],
        "first_drop_over_1_point": first_drop(bits, accuracy, baseline) if baseline is not None else None,
        "reference": "accuracy at k=0 (exact quantized adder)" if baseline is not None else None,
        "seconds": time.perf_counter() - t0,
    }
    if out_dir:
        write_sweep_files(result, bits, accuracy, out_dir)
    return result


def write_sweep_files(result, bits, accuracy, out_dir):
    """sweep.json, sweep.csv and sweep.png in `out_dir`."""
    from dnn.plots import plot_sweep
    os.makedirs(out_dir, exist_ok=True)
    write_json(result, os.path.join(out_dir, "sweep.json"))
    with atomic_write(os.path.join(out_dir, "sweep.csv"), "w") as f:
        f.write("approx_bits,accuracy\n")
        for k, a in zip(bits, accuracy):
            f.write(f"{k},{a:.4f}\n")
    plot_sweep(bits, accuracy, result["float_accuracy"], os.path.join(out_dir, "sweep.png"),
               f"{result['model']}: {result['width']}-bit adder, low k cells '{result['cell']}'")


def load_circuit_lut(path):
    """A Lut from a BLIF netlist (simulated exhaustively, as `axnet simulate` does) or a LUT file (.npz etc.)."""
    if not os.path.isfile(path):
        raise AxnetError("--circuit: file not found", path=path)
    if path.endswith(".blif"):
        from circuits.blif import read_blif
        from lutgen.lut import build_lut
        return build_lut(read_blif(path), sha256=file_sha256(path))
    from lutgen.formats import load_lut
    return load_lut(path)


def lut_width(lut):
    """The operand width n of an adder LUT (both operands must have it)."""
    widths = {w for _, w in lut.operands}
    if len(lut.operands) != 2 or len(widths) != 1:
        raise AxnetError(f"--circuit: expected an adder with two equal-width operands, found {lut.operands}")
    return widths.pop()


RETRAIN_DEFAULTS = dict(lr=0.01, batch_size=64)  # retraining keeps the AdderNet recipe: SGD + adaptive scaling


def run_retrain(ckpt_path, circuit, grad="lut", half_window=None, epochs=5, compare_ste=False, out_dir="runs/retrain",
                lr=None, batch_size=None, seed=0, data_spec=None, train_limit=0, test_limit=0, show=True,
                resume=False, seeds=1):
    """Approximation-aware retraining from a float checkpoint; returns the table rows (also written as JSON/md).

    Rows: float, quantized exact (ExactInt(n) for an n-bit LUT adder), the circuit before retraining, after
    retraining with `grad`, and with `compare_ste` after STE retraining from the same start. With `seeds` > 1 each
    retraining runs with seeds seed, seed+1, ... from the same checkpoint and its row gives the mean, the standard
    deviation and every seed's accuracy: a difference of a few digits between two methods is run-to-run noise."""
    from dnn.arith import ExactInt, LutAdder
    if grad not in ("lut", "ste"):
        raise AxnetError(f"--grad '{grad}': expected lut or ste")
    if seeds < 1:
        raise AxnetError(f"--seeds {seeds}: expected at least 1 retraining run per method")
    ckpt = load_checkpoint(ckpt_path)
    lut = load_circuit_lut(circuit)
    n = lut_width(lut)
    if grad == "lut" and half_window is None and lut.grads is None:
        raise AxnetError("--grad lut needs --half-window W (or a gradient LUT file from `axnet gradlut`)")
    before = LutAdder(lut, grad="ste")
    check_circuit(ckpt, before.sha256, ckpt_path, "retrain")
    data = data_for_checkpoint(ckpt, data_spec, test_limit, train_limit)
    device = default_device()
    rows = []
    for name, arith in (("float", None), (f"quantized exact ({n}-bit)", ExactInt(n)),
                        ("circuit, before retraining", before)):
        # a fresh model per row, as `axnet eval` does: calibration clamps weights and adds clamp biases, so a model
        # calibrated for one back-end and then again for another is not what either row means (and scored 36%
        # instead of 72.6% under the circuit on runs/demo/float)
        model = model_from_checkpoint(ckpt).to(device)
        rows.append({"row": name, "arith": arith_label(arith), "accuracy": accuracy_under(model, arith, data, device),
                     "epochs": 0, "seconds": 0.0})
    # how much of the recovery is only BatchNorm statistics: re-estimate them through the circuit, no training
    reestimate_batchnorm(model, data.train_x, DistContext(device=device))
    rows.append({"row": "circuit, BatchNorm re-estimated only", "arith": arith_label(before),
                 "accuracy": evaluate(model, data.test_x, data.test_y, device=device)[1], "epochs": 0,
                 "seconds": 0.0})
    base_cfg = TrainConfig.from_dict(ckpt["config"])
    stages = [grad] + (["ste"] if compare_ste and grad != "ste" else [])
    run_seeds = list(range(seed, seed + seeds))
    for g in stages:
        arith = LutAdder(lut, grad=g, half_window=half_window if g == "lut" else None)
        accs, seconds, checkpoints = [], [], []
        for s in run_seeds:
            cfg = TrainConfig(model=ckpt["model"], data=data_spec or base_cfg.data, epochs=epochs,
                              batch_size=batch_size or RETRAIN_DEFAULTS["batch_size"],
                              lr=lr or RETRAIN_DEFAULTS["lr"], optimizer="sgd", seed=s, augment=base_cfg.augment,
                              save_every=max(epochs, 1), train_limit=train_limit or base_cfg.train_limit,
                              test_limit=test_limit or base_cfg.test_limit)
            # one seed keeps the plain directory name that single runs have always had
            stage_dir = os.path.join(out_dir, f"retrain_{g}" if seeds == 1 else f"retrain_{g}_seed{s}")
            extra = {"retrained_from": str(ckpt_path), "grad": g, "half_window": half_window}
            summary = run_training(cfg, stage_dir,
                                   resume=resume and os.path.isfile(os.path.join(stage_dir, "last.pt")),
                                   arith=arith, init_state=ckpt["state_dict"], extra=extra, show=show, data=data,
                                   title=f"{ckpt['model']} on {data.name} ({arith_label(arith)}), seed {s}")
            accs.append(summary["final_test_acc"])  # the retrained model, with the scales it was trained with
            seconds.append(summary["train_seconds"])
            checkpoints.append(os.path.join(stage_dir, "last.pt"))
        label = "after retraining, gradient LUT" if g == "lut" else "after retraining, STE"
        row = {"row": label, "arith": arith_label(arith), "accuracy": statistics.fmean(accs), "epochs": epochs,
               "seconds": statistics.fmean(seconds), "checkpoint": checkpoints[0]}
        if seeds > 1:
            row.update(seeds=run_seeds, per_seed=accs, std=statistics.stdev(accs), checkpoints=checkpoints)
        rows.append(row)
    result = {"checkpoint": str(ckpt_path), "circuit": str(circuit), "circuit_sha256": before.sha256,
              "model": ckpt["model"], "data": data.name, "images": len(data.test_x), "rows": rows}
    if seeds > 1 and len(stages) == 2:
        lut_row, ste_row = rows[-2], rows[-1]
        diffs = [a - b for a, b in zip(lut_row["per_seed"], ste_row["per_seed"])]
        result["lut_minus_ste"] = {"per_seed": diffs, "mean": statistics.fmean(diffs),
                                   "seeds_lut_at_or_above": sum(d >= 0 for d in diffs)}
    os.makedirs(out_dir, exist_ok=True)
    write_json(result, os.path.join(out_dir, "retrain.json"))
    with atomic_write(os.path.join(out_dir, "retrain.md"), "w") as f:
        f.write(markdown_table(result))
    return result


def markdown_table(result):
    """The retraining table as markdown, one row per arithmetic / stage (mean +- std over seeds where several ran)."""
    lines = [f"Model `{result['model']}` on {result['data']} ({result['images']} test images), "
             f"circuit `{os.path.basename(result['circuit'])}`", "",
             "| network | arithmetic | accuracy (%) | retraining epochs | seconds |", "|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        acc = f"{r['accuracy']:.2f}"
        if "per_seed" in r:
            acc += f" ± {r['std']:.2f} ({', '.join(f'{a:.1f}' for a in r['per_seed'])})"
        lines.append(f"| {r['row']} | {r['arith']} | {acc} | {r['epochs']} | {r['seconds']:.1f} |")
    seeded = [r for r in result["rows"] if "seeds" in r]
    if seeded:
        s = seeded[0]["seeds"]
        lines += ["", f"Retraining rows: mean ± standard deviation over seeds {s[0]}-{s[-1]} "
                      f"(each seed's accuracy in brackets), seconds per run."]
    diff = result.get("lut_minus_ste")
    if diff:
        lines.append(f"Gradient LUT minus STE, seed by seed: {', '.join(f'{d:+.1f}' for d in diff['per_seed'])} "
                     f"(mean {diff['mean']:+.2f}; at or above STE with {diff['seeds_lut_at_or_above']} of "
                     f"{len(diff['per_seed'])} seeds).")
    return "\n".join(lines) + "\n"


def clean_summary(summary):
    """A training summary without the live model object (for JSON)."""
    return {k: v for k, v in summary.items() if k != "model_object"}
