"""torch.distributed helpers: set-up from torchrun's environment, and feature gathering.

Single-process runs never touch torch.distributed. Under torchrun the backend is NCCL on CUDA and
gloo on CPU; the DNC head gathers features from all ranks before clustering so every rank computes
the same centroids (rather than averaging independently computed ones).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1). Returns True if so."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    log.info("rank %d/%d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def all_gather_cat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor's rows from all ranks, in rank order (identity when single-process).

    Rows may differ in number across ranks; each tensor is padded to the largest count for the
    collective and trimmed afterwards.
    """
    if not is_active():
        return tensors
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    top = max(counts)
    out = []
    for t in tensors:
        src = t.to(torch.uint8) if t.dtype == torch.bool else t
        pad = src.new_zeros((top - src.shape[0], *src.shape[1:]))
        parts = [torch.empty_like(pad[:0]).new_empty((top, *src.shape[1:])) for _ in counts]
        dist.all_gather(parts, torch.cat([src, pad]).contiguous())
        cat = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])
        out.append(cat.bool() if t.dtype == torch.bool else cat)
    return tuple(out)


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's floating-point buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after the last training step each rank
    holds its own; syncing before evaluation and saving makes every rank's model identical.
    """
    if not is_active():
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.broadcast(buf, src=0)
