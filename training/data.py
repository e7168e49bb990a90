"""Labelled image data sets with stable sample ids.

Every source yields the same thing: an `ImageData` that returns batches of fixed-size uint8 images
(B, C, H, W) with labels and sample ids (the index in the set; `name(id)` gives the file path or a
readable "set/split/index"). Sources:
- Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX .gz files), or any folder
  holding the four IDX files;
- CIFAR-10/100 in their published python format (a folder with data_batch_* / train, test);
- an ImageFolder-style directory: one subfolder per class, images of any size, RGB or gray.
  A folder with train/ and test/ (else val/) subfolders gives those splits, with the training
  split's class list; a plain folder is split
  deterministically (every 10th file of each class, sorted by name, is the test split).
"""

from __future__ import annotations

import gzip
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dnc.core.images import DataError, read_image_array, scan_image_folder

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# "T-shirt-top", not the published "T-shirt/top": the folder-safe name every writer uses (class_names.safe_name),
# so a model trained on the Debian files and lists made from folders or scenes name the class alike
FASHION_MNIST_CLASSES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
SPLITS = ("train", "test")


@dataclass
class ImageData:
    """A labelled image set. Arrays are held in memory, or files are read on demand."""

    name: str
    split: str
    class_names: list[str]
    labels: torch.Tensor  # (N,) int64
    in_chans: int
    image_size: int
    mean: list[float]
    std: list[float]
    images: torch.Tensor | None = None  # (N, C, H, W) uint8, for in-memory sets
    paths: list[str] = field(default_factory=list)  # for file-backed sets

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def name_of(self, sample_id: int) -> str:
        """Readable identity of a sample: its file path, or set/split/index."""
        if self.paths:
            return self.paths[sample_id]
        return f"{self.name}/{self.split}/{sample_id}"

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) indices -> images (B, C, H, W) uint8, labels (B,) int64."""
        return self.load(idx), self.labels[idx]

    def load(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) indices -> (B, C, H, W) uint8 images."""
        if self.images is not None:
            return self.images[idx]
        return torch.stack([read_image(self.paths[i], self.in_chans, self.image_size) for i in idx.tolist()])


def read_image(path: str | Path, in_chans: int, size: int) -> torch.Tensor:
    """Read any image file as (C, size, size) uint8 (see `images.read_image_array`)."""
    return torch.from_numpy(read_image_array(path, in_chans, size))


# --- Fashion-MNIST / IDX -------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.exists():
            return cand
    raise DataError(f"{root} has no {stem}(.gz)")


def load_fashion_mnist(root: Path, split: str) -> ImageData:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels ({split})")
    return ImageData("fashion-mnist", split, list(FASHION_MNIST_CLASSES), torch.from_numpy(labels.astype(np.int64)),
                     in_chans=1, image_size=28, mean=[0.2860], std=[0.3530],
                     images=torch.from_numpy(images.copy())[:, None])


# --- CIFAR ---------------------------------------------------------------------------------------

def _unpickle(path: Path) -> dict:
    # The published CIFAR python format is a pickle; this reads user-supplied data, never our own
    # artefacts (those are safetensors/JSON).
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def load_cifar(root: Path, split: str) -> ImageData:
    if (root / "data_batch_1").exists():  # CIFAR-10
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        key, names = b"labels", [n.decode() for n in _unpickle(root / "batches.meta")[b"label_names"]]
        name = "cifar10"
    else:  # CIFAR-100
        files = [root / ("train" if split == "train" else "test")]
        key, names = b"fine_labels", [n.decode() for n in _unpickle(root / "meta")[b"fine_label_names"]]
        name = "cifar100"
    parts = [_unpickle(f) for f in files]
    x = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(p[key]) for p in parts]).astype(np.int64)
    return ImageData(name, split, names, torch.from_numpy(y), in_chans=3, image_size=32,
                     mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616], images=torch.from_numpy(x.copy()))


# --- ImageFolder ---------------------------------------------------------------------------------

def load_image_folder(root: Path, split: str, in_chans: int, image_size: int, on_bad: str) -> ImageData:
    """One split of an image folder; its paths are absolute, so the exemplar names `dnc anchor` records stay
    valid wherever the checkpoint, export or set goes."""
    root = Path(root).resolve()
    if (root / "train").is_dir():
        held_out = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        if held_out is None:
            raise DataError(f"{root} has train/ but no test/ or val/ beside it")
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
        sub = root / "train" if split == "train" else held_out
        classes, paths, labels = scan_image_folder(sub, on_bad, classes if split != "train" else None)
    else:
        classes, paths, labels = scan_image_folder(root, on_bad)
        # Deterministic hold-out: every 10th file of each class (sorted by name) is "test".
        rank, seen = [], {}
        for y in labels:
            rank.append(seen.get(y, 0))
            seen[y] = rank[-1] + 1
        keep = [(r % 10 == 9) == (split != "train") for r in rank]
        paths = [p for p, k in zip(paths, keep, strict=True) if k]
        labels = [y for y, k in zip(labels, keep, strict=True) if k]
    mean, std = ([0.5], [0.5]) if in_chans == 1 else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return ImageData(root.name, split, classes, torch.tensor(labels, dtype=torch.long), in_chans=in_chans,
                     image_size=image_size, mean=mean, std=std, paths=paths)


def load_dataset(spec: str, split: str, in_chans: int = 3, image_size: int = 32,
                 on_bad: str = "skip") -> ImageData:
    """Open a data set by name or path.

    Args:
        spec: "fashion-mnist" (the Debian package files), or a path to IDX files, a CIFAR python
            folder, or an image folder.
        split: "train" or "test".
        in_chans, image_size: used for image folders only (arrays keep their own).
        on_bad: for image folders, "skip" or "error" on unreadable files.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
    if spec in ("fashion-mnist", "fashion_mnist", "fmnist"):
        if not FASHION_MNIST_DIR.exists():
            raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; "
                            "install it with: apt-get install -y dataset-fashion-mnist")
        return load_fashion_mnist(FASHION_MNIST_DIR, split)
    root = Path(spec)
    if not root.exists():
        raise DataError(f"data set path does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"data set path is not a directory: {root}")
    if any(root.glob("train-images-idx3-ubyte*")):
        return load_fashion_mnist(root, split)
    if (root / "data_batch_1").exists() or (root / "meta").exists() and (root / "train").is_file():
        return load_cifar(root, split)
    return load_image_folder(root, split, in_chans, image_size, on_bad=on_bad)
