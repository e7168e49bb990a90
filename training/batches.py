"""Batches for training and evaluation: epoch order, rank sharding, and batch augmentation.

The order of an epoch is a permutation drawn from (seed, epoch) alone, so a resumed run replays
exactly the batches it would have seen. Augmentation (random crop with padding, horizontal flip)
runs on whole uint8 batches on the training device with a dedicated generator whose state is
checkpointed. File-backed sets are decoded in DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from dnc.training.data import ImageData


class _BatchReader(Dataset):
    """Maps a list of index batches to (images uint8, labels or masks, ids)."""

    def __init__(self, data: ImageData, batches: list[torch.Tensor]):
        self.data, self.batches = data, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        idx = self.batches[i]
        return (*self.data.batch(idx), idx)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                  world: int = 1, drop_last: bool = True) -> list[torch.Tensor]:
    """Index batches of one epoch for one rank. Training drops the ragged tail so every rank
    takes the same number of equal-size steps."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    else:
        order = torch.arange(n)
    per_rank = n // world if drop_last else -(-n // world)
    order = order[rank::world][:per_rank]
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and batches[-1].numel() < batch_size:
        batches = batches[:-1]
    return batches


def iterate(data: ImageData, batches: list[torch.Tensor], workers: int = 0
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (images uint8 (B, C, H, W), labels (B,) or masks (B, H, W), ids (B,)) for the given index
    batches of an ImageData or a SegData (anything with `batch(idx)`, `images`)."""
    reader = _BatchReader(data, batches)
    if data.images is not None or workers == 0:
        for i in range(len(reader)):
            yield reader[i]
        return
    yield from DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers,
                          persistent_workers=False)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int | None = None) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, per sample.

    x: (B, C, H, W) uint8 on any device; gen: a CPU generator (its draws are device independent).
    """
    b, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else pad
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)[None]  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)[None]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def normalise(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W): x / 255, minus mean, over std per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
