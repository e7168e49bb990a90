"""Bounded per-class FIFO memory of detached embeddings and their dataset sample ids.

A ring buffer per class, held in registered buffers so that checkpoints carry it and resume
continues with the same memory. Writes are vectorised over classes: one scatter per step.
"""

from __future__ import annotations

import torch
from torch import nn

from dnc.core.errors import InputError


def cap_key(ids: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random 32-bit key per sample id (multiplicative hashing)."""
    return (ids * 2654435761) % 2**32


def rank_in_class(sorted_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For labels sorted by class: (classes (T,), counts (T,), position of each sample in its class (N,))."""
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(sorted_labels.numel(), device=sorted_labels.device) - torch.repeat_interleave(starts, counts)
    return classes, counts, rank


class ClassMemory(nn.Module):
    """FIFO queue of at most `size` embeddings per class.

    Buffers:
        feats: (C, M, D) fp32 embeddings (L2-normalised by the caller).
        ids: (C, M) int64 dataset sample ids, -1 where empty.
        ptr: (C,) int64 next slot to write per class.
        count: (C,) int64 filled slots per class (<= M).
    """

    def __init__(self, num_classes: int, size: int, dim: int, per_step_cap: int):
        super().__init__()
        if size < 1:
            raise InputError(f"memory size (`memory_size`) must be >= 1, got {size}")
        if not 1 <= per_step_cap <= size:
            raise InputError(f"per-step cap (`memory_cap`) must be in [1, memory size={size}], got {per_step_cap}")
        self.size = size
        self.per_step_cap = per_step_cap
        self.register_buffer("feats", torch.zeros(num_classes, size, dim))
        self.register_buffer("ids", torch.full((num_classes, size), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))
        self._work: torch.Tensor | None = None  # scratch for `slots`, not state

    @torch.no_grad()
    def push(self, feats: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Enqueue samples, at most `per_step_cap` per class.

        When a class has more, the ones kept are those with the smallest `cap_key(id)`: a fixed
        pseudo-random order of sample ids, so no rank's shard is favoured and every rank keeps the
        same ones without sharing any random state. Kept samples enter in batch order.

        Args:
            feats: (N, D) embeddings. labels: (N,) class indices. ids: (N,) sample ids.
        Returns:
            (T,) int64 sorted unique classes that received at least one sample.
        """
        if labels.numel() == 0:
            return labels.new_zeros(0)
        order = torch.sort(labels * 2**32 + cap_key(ids)).indices  # by class, then key
        keep = torch.empty_like(labels, dtype=torch.bool)
        keep[order] = rank_in_class(labels[order])[2] < self.per_step_cap
        feats, labels, ids = feats[keep], labels[keep], ids[keep]
        order = torch.sort(labels, stable=True).indices
        labels, feats, ids = labels[order], feats[order], ids[order]
        classes, counts, rank = rank_in_class(labels)
        slot = (self.ptr[labels] + rank) % self.size
        self.feats[labels, slot] = feats.to(self.feats.dtype)
        self.ids[labels, slot] = ids.to(self.ids.dtype)
        self.ptr[classes] = (self.ptr[classes] + counts) % self.size
        self.count[classes] = (self.count[classes] + counts).clamp(max=self.size)
        return classes

    def slots(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contents of the given classes in slot order (not age order), for clustering.

        Whole (M, D) rows are copied per class, which is much faster than an element-wise gather;
        a ring fills slots 0..count-1 before it wraps, so the filled slots are the first `count`.
        Returns feats (T, m, D), a view of a scratch buffer valid until the next call, and a
        (T, m) bool mask of filled slots, where m <= M is the largest filled count among them.
        """
        t = classes.numel()
        count = self.count[classes]
        m = max(1, int(count.max())) if t else 1  # slots past every class's count are all empty
        work = self._work
        if work is None or work.shape[0] < t or work.device != self.feats.device:
            # A reused workspace: a fresh (T, M, D) tensor each step is a large allocation that
            # glibc maps and unmaps every time, and its page faults cost more than the copy.
            work = self._work = torch.empty((t, *self.feats.shape[1:]), device=self.feats.device)
        feats = torch.index_select(self.feats[:, :m], 0, classes, out=work[:t, :m])
        mask = torch.arange(m, device=classes.device)[None, :] < count[:, None]
        return feats, mask

    def gather(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contents of the given classes, oldest first (for inspection and exemplar look-ups).

        Returns feats (T, M, D), ids (T, M) and a (T, M) bool mask of filled slots.
        """
        m = self.size
        count = self.count[classes]  # (T,)
        # Oldest entry sits at ptr when the ring is full, at 0 otherwise.
        start = torch.where(count == m, self.ptr[classes], torch.zeros_like(count))
        slot = (start[:, None] + torch.arange(m, device=count.device)[None, :]) % m  # (T, M)
        mask = torch.arange(m, device=count.device)[None, :] < count[:, None]
        rows = classes[:, None].expand(-1, m)
        return self.feats[rows, slot], self.ids[rows, slot], mask
