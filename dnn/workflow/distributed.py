"""The distributed context of a run: rank, world size and device under torchrun (DDP), and all-reduced sums."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


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


def gpu_per_rank(local_world):
    """True when each of this node's `local_world` processes can have a GPU of its own (then nccl on CUDA); with
    fewer GPUs than processes every rank trains on the CPU with gloo, the same choice on every rank."""
    return torch.cuda.is_available() and local_world <= torch.cuda.device_count()


def init_distributed():
    """Join the process group torchrun describes in the environment (nccl when every local rank has a GPU, else gloo
    on CPU), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=default_device())
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if gpu_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))):
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
