"""One split of a segmentation folder in memory, as tensors for training (the folder's layout and its
readers: core/seg_folder.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dnc.core.images import DataError
from dnc.core.progress import bar
from dnc.core.seg_folder import MEAN, SPLITS, STD, SegClasses, check_mask_values, read_classes, read_pair, split_files

log = logging.getLogger(__name__)


@dataclass
class SegData:
    """One split of a segmentation folder, in memory: images (N, C, S, S) and masks (N, S, S) uint8."""

    name: str
    split: str
    classes: SegClasses
    images: torch.Tensor
    masks: torch.Tensor
    paths: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=lambda: list(MEAN))
    std: list[float] = field(default_factory=lambda: list(STD))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def class_names(self) -> list[str]:
        return self.classes.names

    @property
    def num_classes(self) -> int:
        return len(self.classes.names)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def ignore_index(self) -> int:
        return self.classes.ignore_index

    def name_of(self, sample_id: int) -> str:
        return self.paths[sample_id]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) indices -> images (B, C, S, S) uint8, masks (B, S, S) int64."""
        return self.images[idx], self.masks[idx].long()


def load_seg_folder(root: str | Path, split: str, size: int, in_chans: int = 3, limit: int = 0) -> SegData:
    """Read one split of a segmentation folder into memory at `size` x `size` (see `read_pair`). A folder
    inside one (ROOT/images, ROOT/images/train) is refused naming ROOT, the folder to give. Paths are absolute
    (exemplar names stay valid when an anchored checkpoint or its export moves)."""
    root = Path(root).resolve()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
    classes = read_classes(root)
    pairs = split_files(root, split)
    if limit:
        pairs = pairs[:limit]
    images = np.empty((len(pairs), in_chans, size, size), np.uint8)
    masks = np.empty((len(pairs), size, size), np.uint8)
    for i, (ip, mp) in enumerate(bar(pairs, desc=f"read {root.name}/{split}", leave=False)):
        images[i], masks[i] = read_pair(ip, mp, size, in_chans)
        check_mask_values(masks[i], classes, mp)

    log.info("read %d %s scenes of %s (%d classes) at %dpx", len(pairs), split, root, len(classes.names), size)
    mean, std = (MEAN, STD) if in_chans == 3 else ([0.5], [0.5])
    return SegData(root.name, split, classes, torch.from_numpy(images), masks=torch.from_numpy(masks),
                   paths=[str(p) for p, _ in pairs], mean=list(mean), std=list(std))
