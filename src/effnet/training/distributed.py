"""One process or many (torchrun): the process group, the device, and agreeing across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from effnet.core.errors import UsageError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """torchrun sets RANK/WORLD_SIZE; without them this is a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def finite_everywhere(value: torch.Tensor, ranks: Dist, device: torch.device) -> bool:
    """True when ``value`` is finite on every rank, so that all ranks skip a step together."""
    flag = torch.tensor([0.0 if torch.isfinite(value) else 1.0], device=device)
    if ranks.world > 1:
        dist.all_reduce(flag)
    return flag.item() == 0.0


def sum_over_ranks(values: list[float], ranks: Dist, device: torch.device) -> list[float]:
    if ranks.world == 1:
        return values
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()


def barrier(ranks: Dist) -> None:
    if ranks.world > 1:
        dist.barrier()
