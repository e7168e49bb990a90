"""Write an in-memory labelled set (Fashion-MNIST, IDX, CIFAR) out as an image folder.

The demo and the tests need real image folders (one subfolder per class, `train/` and `test/`
splits) to exercise the paths users take: training from a folder, and recomputing centroids for a
new class list with `dnc centroids`. A label map merges fine classes into coarse ones, so "train on
coarse classes, swap to the fine ones by recomputing centroids" runs end to end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.core.class_names import safe_name
from dnc.core.images import DataError
from dnc.core.progress import bar
from dnc.training.data import ImageData, load_dataset

log = logging.getLogger(__name__)

# Coarse classes of Fashion-MNIST: fine class names grouped by what a shop floor would call them.
FASHION_MNIST_COARSE = {
    "tops": ["T-shirt-top", "Pullover", "Coat", "Shirt"],
    "trouser": ["Trouser"],
    "dress": ["Dress"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bag": ["Bag"],
}
LABEL_MAPS = {"fine": None, "coarse": FASHION_MNIST_COARSE}


def folder_name(class_name: str) -> str:
    """A class name as a folder name ('T-shirt/top' -> 'T-shirt-top'): training/class_names.safe_name, the
    name `dnc write-scenes` gives the class too."""
    return safe_name(class_name)


def chosen_indices(labels: np.ndarray, num_classes: int, per_class: int = 0) -> list[int]:
    """Indices of the images to write, in data set order: the first `per_class` of each class (all when
    0). Chosen before writing so that the progress bar counts what is written, not the whole set."""
    if not per_class:
        return list(range(len(labels)))
    keep = [np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)]
    return sorted(int(i) for part in keep for i in part)


def coarse_index(class_names: list[str], label_map: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """(coarse names, (C_fine,) index of each fine class's coarse class); refuses an incomplete map."""
    where = {fine: i for i, fines in enumerate(label_map.values()) for fine in fines}
    missing = [c for c in class_names if c not in where]
    if missing:
        raise DataError(f"label map does not place the classes {missing}")
    return list(label_map), np.array([where[c] for c in class_names])


def write_image_folder(data: ImageData, out: Path, label_map: dict[str, list[str]] | None = None,
                       per_class: int = 0) -> dict[str, int]:
    """Write `data` (one split) as PNGs under out/<class>/<index>.png.

    Args:
        data: an in-memory set (images held as arrays).
        out: the split folder to create (e.g. DIR/train); existing files are overwritten.
        label_map: coarse name -> fine class names, or None to keep the classes.
        per_class: keep only the first N images of each (output) class; 0 keeps all.
    Returns: images written per class folder.
    """
    if data.images is None:
        raise DataError(f"{data.name} is read from files already; point `data` at its folder instead")
    names, fine_to = list(data.class_names), np.arange(data.num_classes)
    if label_map is not None:
        names, fine_to = coarse_index(data.class_names, label_map)
    folders = [folder_name(n) for n in names]
    if len(set(folders)) != len(folders):
        raise DataError(f"class names collide as folder names: {folders}")
    for f in folders:
        (out / f).mkdir(parents=True, exist_ok=True)
    labels = fine_to[data.labels.numpy()]
    chosen = chosen_indices(labels, len(folders), per_class)
    counts = dict.fromkeys(folders, 0)
    images = data.images.numpy()  # (N, C, H, W) uint8
    for i in bar(chosen, desc=f"write {out}", unit="img", leave=False):
        f = folders[labels[i]]
        img = images[i].transpose(1, 2, 0)
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(out / f / f"{i:06d}.png")
        counts[f] += 1
    log.info("wrote %d images in %d classes to %s", sum(counts.values()), len(folders), out)
    return counts


def write_dataset_folders(spec: str, out: Path, labels: str = "fine", per_class: int = 0,
                          test_per_class: int | None = None) -> dict[str, dict[str, int]]:
    """Write both splits of an in-memory data set as out/train and out/test image folders."""
    if labels not in LABEL_MAPS:
        raise DataError(f"unknown label map {labels!r}; use one of {', '.join(LABEL_MAPS)}")
    res = {}
    for split, n in (("train", per_class), ("test", per_class if test_per_class is None else test_per_class)):
        res[split] = write_image_folder(load_dataset(spec, split), out / split, LABEL_MAPS[labels], n)
    return res
