"""A small generated image set whose classes are each a union of well-separated modes
(benchmarks/accuracy/subcentroid_revival.py --data modes, tests/training/test_mechanism.py).

Each image has three binary attributes a CNN reads at a glance: stripe orientation (horizontal or
vertical), stripe frequency (2 or 4 periods) and brightness (dark or light). The 8 combinations
are the modes; the class is their parity (classes 0 and 1, 4 modes each), so the modes of a class
share no attribute pairwise-consistent direction: every mode of a class sits next to modes of the
other class, and one centroid per class cannot be near all its modes in an embedding that keeps
the attributes apart, while one sub-centroid per mode can. Written as PNG image folders (train/ and
test/, one subfolder per class), deterministic by seed; the mode of each file is in its name.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image

MODES = list(product((0, 1), repeat=3))  # (orientation, frequency, brightness)


def mode_image(rng: np.random.Generator, mode: tuple[int, int, int], size: int, noise: float) -> np.ndarray:
    """(size, size) uint8 image of one mode: stripes at a random phase, jittered contrast, noise."""
    orient, freq, bright = mode
    t = np.arange(size) / size
    wave = np.sin(2 * np.pi * (2 if freq == 0 else 4) * t + rng.uniform(0, 2 * np.pi))
    stripes = np.tile(wave[:, None], (1, size)) if orient == 0 else np.tile(wave[None, :], (size, 1))
    img = (80 if bright == 0 else 175) + rng.uniform(35, 55) * stripes + rng.normal(0, noise, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_modes(out: Path, train_per_mode: int = 60, test_per_mode: int = 40, size: int = 16, noise: float = 12.0,
                seed: int = 0) -> dict:
    """Write the set under out/{train,test}/class{parity}/m{mode}_{i}.png; returns counts."""
    rng = np.random.default_rng(seed)
    written = 0
    for split, per_mode in (("train", train_per_mode), ("test", test_per_mode)):
        for m, mode in enumerate(MODES):
            folder = out / split / f"class{sum(mode) % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_mode):
                Image.fromarray(mode_image(rng, mode, size, noise), "L").save(folder / f"m{m}_{i:03d}.png")
                written += 1
    return {"classes": 2, "modes_per_class": 4, "images": written}
