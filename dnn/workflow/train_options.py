"""`axnet train` from its command-line options: conflicts, defaults, and which settings a resumed run must match.

The CLI hands over only the options the user gave (by click parameter name), so a resumed run is compared with
what was asked for, never with a default: `axnet train --out RUN --resume` continues RUN as it was, and
`--resume --epochs 40` extends it.
"""
from __future__ import annotations

import os

from circuits.errors import AxnetError
from dnn.models import check_model_name
from dnn.workflow.distributed import finish_distributed
from dnn.workflow.train import TrainConfig, clean_summary, run_training, train_settings

# click parameter name -> TrainConfig field, where they differ
FIELD_OF_OPTION = {"model_name": "model", "data_spec": "data", "limit": "train_limit", "limit_test": "test_limit"}
SETTING_FIELDS = ("optimizer", "epochs", "batch_size", "lr", "weight_decay")


def config_fields(options):
    """TrainConfig fields from the options given (None values dropped), after refusing options that conflict."""
    if options.get("no_augment") and options.get("augment_kind"):
        raise AxnetError(f"--augment {options['augment_kind']} and --no-augment: give one of them")
    distil = [n for n in ("kd_alpha", "kd_temperature") if options.get(n) is not None]
    if distil and not options.get("teacher"):
        raise AxnetError("--kd-alpha and --kd-temperature need --teacher (the checkpoint to distil from)")
    fields = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "no_augment":
            fields["augment"] = not value
        else:
            fields[FIELD_OF_OPTION.get(name, name)] = value
    return fields


def new_run_config(fields):
    """The config of a new run: the fields given, the model family's and optimizer's defaults for the rest."""
    if "model" not in fields:
        raise AxnetError("--model is required to start a run (only --resume continues one without it)")
    check_model_name(fields["model"])
    settings = train_settings(fields["model"], **{k: fields.get(k) for k in SETTING_FIELDS})
    return TrainConfig(**dict(fields, **settings))


def train_from_options(options, out_dir, resume=False, overwrite=False, show=True):
    """Run `axnet train`: `options` holds the options the user gave, by click parameter name. Returns the summary
    (without the model object) on rank 0, None on the other ranks of a torchrun job."""
    fields = config_fields(options)
    if resume:  # the run's stored settings, checked against the given fields only
        cfg, given = TrainConfig(**fields), set(fields)
    else:
        cfg, given = new_run_config(fields), None
    summary = clean_summary(run_training(cfg, out_dir, resume=resume, overwrite=overwrite, given=given, show=show))
    finish_distributed()
    return summary if int(os.environ.get("RANK", "0")) == 0 else None
