"""Batches, one training epoch, evaluation, weight averaging and BatchNorm re-estimation."""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from dnn.workflow.checkpoint import load_checkpoint
from dnn.data import augment_batch
from dnn.workflow.distributed import DistContext, all_reduce_sums
from dnn.workflow.prepare import adaptive_scale, check_model_data, model_from_checkpoint

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

EVAL_BATCH = 500


def bar_off(show):
    """tqdm's `disable`: off when not asked for, else None, which draws only when stderr is a terminal (a log gets
    no carriage-return updates; the per-epoch lines are written either way)."""
    return None if show else True


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
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=bar_off(show), unit="batch")
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
    for s in tqdm(starts, desc=desc, leave=False, disable=bar_off(show), unit="batch"):
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
