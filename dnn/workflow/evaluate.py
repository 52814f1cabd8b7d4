"""`axnet eval`: the accuracy of a checkpoint under one or more arithmetics."""
from __future__ import annotations

import time

from dnn.workflow.checkpoint import load_checkpoint
from dnn.data import load_data
from dnn.workflow.distributed import default_device
from dnn.workflow.loop import evaluate
from dnn.workflow.prepare import (arith_label, check_model_data, model_from_checkpoint, parse_arith_text,
                                  prepare_arith, prepare_mult)
from dnn.workflow.train import TrainConfig


def data_for_checkpoint(ckpt, data_spec=None, test_limit=0, train_limit=0):
    """The data a checkpoint was trained on, or the one given: the whole test set unless `test_limit` (a run's
    quick-trial --limit-test is not inherited), training images as the run had them unless `train_limit`.
    The returned DataSet's `used` says which images in words (for the commands' reports)."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    spec = data_spec or cfg.data
    full = load_data(spec)
    data = full.subset(train_limit or cfg.train_limit or None, test_limit or None)
    check_model_data(ckpt["model"], data)
    data.used = describe_data(data, len(full.test_x), test_limit)
    return data


def describe_data(data, full_test, test_limit):
    """'mnist5k: the whole test set, 1000 images' or 'mnist5k: the first 32 of 1000 test images (--limit-test 32)'."""
    if test_limit and len(data.test_x) < full_test:
        return f"{data.name}: the first {len(data.test_x)} of {full_test} test images (--limit-test {test_limit})"
    return f"{data.name}: the whole test set, {len(data.test_x)} images"


def accuracy_under(model, arith, data, device, show=False, desc="eval", accum=None):
    """Test accuracy of `model` with every adder layer on `arith` (None = float), its sums through `accum`."""
    prepare_arith(model, arith, data, device, accum=accum)
    return evaluate(model, data.test_x, data.test_y, device=device, show=show, desc=desc)[1]


def load_for_eval(ckpt_path, data_spec=None, test_limit=0):
    """(checkpoint, data set) that `eval_checkpoint` evaluates: loaded once for all the rows of one command."""
    ckpt = load_checkpoint(ckpt_path)
    return ckpt, data_for_checkpoint(ckpt, data_spec, test_limit)


def eval_checkpoint(ckpt_path, arith_text="float", data_spec=None, test_limit=0, show=True, accum_text=None,
                    mult_text=None, loaded=None):
    """Accuracy of a checkpoint under one arithmetic (and accumulator `accum_text`): a dict for the CLI table or
    --json. With `mult_text` (a `parse_mult` spec) the model's convolution and linear layers, first and last kept
    exact, compute with that multiplier instead (`prepare_mult`), its adder layers in float. `loaded`: the
    (checkpoint, data) of `load_for_eval`, so that several rows read the files once."""
    from dnn.arith.accumulate import parse_accum
    from dnn.arith.spec import parse_mult
    arith = parse_arith_text(arith_text)
    mult = parse_mult(mult_text) if mult_text is not None else None
    accum = parse_accum(accum_text) if accum_text else None
    ckpt, data = loaded or load_for_eval(ckpt_path, data_spec, test_limit)
    device = default_device()
    model = model_from_checkpoint(ckpt)
    t0 = time.perf_counter()
    if mult is None:
        acc = accuracy_under(model.to(device), arith, data, device, show=show, accum=accum)
        label = arith_label(arith)
    else:
        model, n = prepare_mult(model, mult, data, device, accum=accum)
        acc = evaluate(model, data.test_x, data.test_y, device=device, show=show, desc="eval")[1]
        label = f"{mult.describe()} ({n} layer{'s' if n > 1 else ''}; first and last exact)"
    label += f"; {accum.describe()}" if accum is not None else ""
    return {"checkpoint": str(ckpt_path), "model": ckpt["model"], "data": data.name, "images": len(data.test_x),
            "data_used": data.used, "arith": label, "accum": accum.spec if accum is not None else None,
            "accuracy": acc, "seconds": time.perf_counter() - t0}
