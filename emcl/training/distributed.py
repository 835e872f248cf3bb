"""Distributed helpers: join torchrun's process group, gather features with their gradient.

Every rank encodes its slice of the global batch; text and frame features are all-gathered
*with gradient* (``torch.distributed.nn.functional.all_gather``), so the loss and the EMCL layer
(its momentum prior included) see the global batch, as the reference does (docs/method.md
§2.1). The same code runs on CPU with gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from emcl.model.backbone import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), resolve_device(device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return Dist(rank, world, local), target


def gather(x: Tensor, world: int) -> Tensor:
    """Concatenate ``x`` over ranks along dim 0, keeping the gradient to every rank's slice."""
    if world == 1:
        return x
    return torch.cat(torch.distributed.nn.functional.all_gather(x), dim=0)


def gather_mask(mask: Tensor, world: int) -> Tensor:
    """Concatenate a bool mask over ranks along dim 0 (no gradient to keep)."""
    if world == 1:
        return mask
    parts = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(parts, mask.to(torch.uint8))
    return torch.cat(parts, dim=0).bool()


def rank_slice(rows: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's share of the global batch (contiguous, equal sizes)."""
    if len(rows) % d.world:
        raise ValueError(f"global batch {len(rows)} is not divisible by {d.world} ranks")
    per = len(rows) // d.world
    return rows[d.rank * per : (d.rank + 1) * per]


__all__ = ["Dist", "gather", "gather_mask", "rank_slice", "setup_distributed"]
