"""DistributedDataParallel: two CPU processes (gloo) train the same model as one process does."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dnn import workflow as T
from dnn.data import load_mnist5k

SETTINGS = dict(model="mnist-addernet", train_limit=64, test_limit=32, batch_size=16, epochs=1, augment=False,
                lr=0.05, seed=7, ema=0.9)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, world, port, out_dir):
    """What torchrun would start: the environment names the group, run_training does the rest."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    T.run_training(T.TrainConfig(**SETTINGS), out_dir, show=False)
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_gloo_processes_train_the_same_weights_as_one_process(tmp_path, monkeypatch):
    """One process with `micro_batches=2` splits every global batch of 16 into the same two halves of 8 that the
    two ranks receive, with BatchNorm statistics per half as under DDP, so both runs take the same steps.

    Tolerance: parameters agree to 1e-4 (absolute and relative). The only differences are float32 summation order
    (gloo sums the two ranks' gradients then divides, one process accumulates halves) and thread counts, amplified
    over four steps by the adaptive scaling's division by the gradient norm. BatchNorm running statistics are
    not compared directly: they are re-estimated after the epoch from each rank's shard and averaged.
    """
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    from dnn.workflow import distributed
    monkeypatch.setattr(distributed, "default_device", lambda: "cpu")  # the one process on the CPU, as the ranks are
    ddp_dir = tmp_path / "ddp"
    mp.start_processes(rank_main, args=(2, free_port(), str(ddp_dir)), nprocs=2, join=True, start_method="spawn")
    data = load_mnist5k().subset(SETTINGS["train_limit"], SETTINGS["test_limit"])
    single = T.run_training(T.TrainConfig(**SETTINGS, micro_batches=2), str(tmp_path / "one"), show=False,
                            data=data)
    ckpt = torch.load(ddp_dir / "last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    ref = dict(single["model_object"].named_parameters())
    # the trained weights and their moving average (every rank averages the same all-reduced steps)
    for name, value in ref.items():
        torch.testing.assert_close(ckpt["state_dict"][name], value.detach().cpu(), atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(ckpt["train_state_dict"][name], one["train_state_dict"][name], atol=1e-4,
                                   rtol=1e-4, msg=name)
    torch.manual_seed(SETTINGS["seed"])
    start = T.build_model("mnist-addernet")
    moved = (ckpt["train_state_dict"]["conv2.weight"] - start.conv2.weight).abs().max()
    assert moved > 1e-3  # the runs did train: the comparison is not of two untouched initialisations


def test_nccl_only_when_every_local_rank_has_a_gpu(monkeypatch):
    """Two ranks on a machine with one GPU train on the CPU with gloo (each rank asking for GPU `local` crashed)."""
    from dnn.workflow import distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.gpu_per_rank(1) and not distributed.gpu_per_rank(2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not distributed.gpu_per_rank(1)
