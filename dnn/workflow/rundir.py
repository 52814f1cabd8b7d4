"""A run directory before any work: writable, and not someone's finished or interrupted run unless asked for.

`prepare_run_dir` is called first by `run_training`: a file in the way or an unwritable directory is one line at once
(not after hours of training), and a directory that already holds a run is refused unless the caller resumes it or
overwrites it (today's runs are never replaced silently). `extend_schedule` lets `--resume` raise `--epochs`.
"""
from __future__ import annotations

import glob
import math
import os

from circuits.errors import AxnetError
from circuits.files import check_output_dir

RUN_FILES = ("last.pt", "best.pt", "history.csv", "summary.json", "curves.png")


def existing_run_files(out_dir):
    """The names of a run's files present in `out_dir` (checkpoints, history, summary), sorted."""
    if not os.path.isdir(out_dir):
        return []
    names = [n for n in RUN_FILES if os.path.isfile(os.path.join(out_dir, n))]
    names += [os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(out_dir), "epoch_*.pt"))]
    return sorted(names)


def prepare_run_dir(out_dir, resume, overwrite, option="--out"):
    """Check `out_dir` before any work: writable (created if needed), and either empty of runs, resumed, or overwritten.

    Returns the run files an overwrite will replace (removed later by `clear_run`, once the new run is ready)."""
    if resume and overwrite:
        raise AxnetError("--resume and --overwrite: give one of them (continue the run, or start it again)")
    check_output_dir(out_dir, option)
    found = existing_run_files(out_dir)
    if found and not resume and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise AxnetError(f"{option} {out_dir} already holds a run ({shown}); give --resume to continue it or "
                         "--overwrite to replace it")
    return found if overwrite else []


def clear_run(out_dir, names):
    """Remove the previous run's files an overwrite replaces (an old epoch_N.pt must not pass for the new run's)."""
    for name in names:
        try:
            os.remove(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise AxnetError(f"--overwrite: cannot remove {name}: {e.strerror}", path=out_dir) from None


def cosine_lr(base_lr, epoch, epochs, eta_min=0.0):
    """The cosine schedule's learning rate after `epoch` of `epochs` epochs (CosineAnnealingLR's closed form)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def extend_schedule(optimizer, scheduler, epochs):
    """Stretch a resumed cosine schedule to `epochs`: the learning rate becomes what a run planned for `epochs`
    would have at this epoch, and the scheduler continues from there (a finished run restarts at that rate, not
    at zero). A no-op when the schedule already spans `epochs`."""
    if scheduler.T_max == epochs:
        return
    scheduler.T_max = epochs
    done = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = cosine_lr(base, done, epochs, scheduler.eta_min)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
