"""The training workflow, one module per verb: `train`, `evaluate`, `sweep`, `retrain`, with the pieces they share
(`distributed`, `prepare`, `loop`, `checkpoint`, `plots`). Names are re-exported here for scripts and tests."""
from dnn.workflow.distributed import DistContext, default_device, finish_distributed, init_distributed
from dnn.workflow.evaluate import accuracy_under, data_for_checkpoint, eval_checkpoint
from dnn.workflow.loop import (EVAL_BATCH, WeightAverage, epoch_batches, evaluate, reestimate_batchnorm, train_epoch,
                               training_loss)
from dnn.workflow.prepare import build_model, load_model_state, model_from_checkpoint, prepare_arith
from dnn.workflow.retrain import markdown_table, run_retrain
from dnn.workflow.sweep import first_drop, parse_bits_range, run_sweep
from dnn.workflow.train import TrainConfig, clean_summary, run_training, train_settings

__all__ = ["DistContext", "default_device", "finish_distributed", "init_distributed", "accuracy_under",
           "data_for_checkpoint", "eval_checkpoint", "EVAL_BATCH", "WeightAverage", "epoch_batches", "evaluate",
           "reestimate_batchnorm", "train_epoch", "training_loss", "build_model", "load_model_state",
           "model_from_checkpoint", "prepare_arith", "markdown_table", "run_retrain", "first_drop",
           "parse_bits_range", "run_sweep", "TrainConfig", "clean_summary", "run_training", "train_settings"]
