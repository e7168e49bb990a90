"""Pictures no Fashion-MNIST model has seen, made here from real data: the "far" unknowns of open-set tests.

`dnc write-unknowns` writes OUT/<kind>/NNNNNN.png for each kind asked, deterministic by (seed, split):
    digits   scikit-learn's handwritten digits (1,797 real 8 x 8 scans, 0..16 ink) scaled to 0..255 and
             resized to SIZE (bilinear): ink light on dark, as Fashion-MNIST's items are
    photos   crops of scikit-image's bundled photographs (astronaut, camera, coffee, chelsea, rocket, coins,
             moon, page, text, brick, grass, gravel), a random square of 1/4 to 1/2 of the shorter side,
             resized to SIZE, gray or RGB
    noise    uniform random pixels
A split keeps train and test apart: digits 0..999 / 1000..1796, photo crops from the upper / lower half of
each photograph, noise from separate seeds. A kind's folder is also a class folder: `dnc centroids --from SET
--add digit=OUT/digits` adds digits to a list from a few of them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.core.errors import InputError
from dnc.core.progress import bar
from dnc.core.safe_files import Temp

log = logging.getLogger(__name__)

KINDS = ("digits", "photos", "noise")
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "brick", "grass",
          "gravel")
SPLITS = ("train", "test")
DIGITS_TRAIN = 1000  # digits 0..999 are the train split's, the rest the test split's


def digits(split: str) -> np.ndarray:
    """(N, 8, 8) uint8 in 0..255: the split's share of scikit-learn's digits."""
    from sklearn.datasets import load_digits  # (bundled with scikit-learn: no download)

    images = load_digits().images  # (1797, 8, 8) float 0..16
    images = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images[:DIGITS_TRAIN] if split == "train" else images[DIGITS_TRAIN:]


def photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8: one of scikit-image's bundled photographs (gray ones repeated to RGB)."""
    from skimage import data

    im = np.asarray(getattr(data, name)())
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    return im[:, :, :3].astype(np.uint8)


def _digit(pool: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    return Image.fromarray(pool[rng.integers(len(pool))]).resize((size, size), Image.BILINEAR)


def _crop(photos: list[np.ndarray], rng: np.random.Generator, split: str, size: int) -> Image.Image:
    im = photos[rng.integers(len(photos))]
    h, w = im.shape[:2]
    half = h // 2
    side = int(rng.integers(min(half, w) // 2, min(half, w) + 1))  # 1/4 to 1/2 of the shorter side
    y = int(rng.integers(0, half - side + 1)) + (0 if split == "train" else h - half)
    x = int(rng.integers(0, w - side + 1))
    return Image.fromarray(im[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)


def _save(im: Image.Image, path: Path) -> None:
    """Write a PNG created exclusively beside `path` and renamed onto it (a link planted there is replaced,
    its target untouched: core/safe_files.py)."""
    tmp = Temp(path)
    try:
        with tmp.open("wb") as f:
            im.save(f, "PNG")
        tmp.commit()
    finally:
        tmp.discard()


def write_unknowns(out: str | Path, kinds: tuple[str, ...] = KINDS, count: int = 100, size: int = 28,
                   channels: int = 1, split: str = "test", seed: int = 0) -> dict[str, int]:
    """Write `count` pictures of each kind to out/<kind>/ (PNG, SIZE x SIZE, 1 or 3 channels); returns the
    pictures written per kind. Deterministic by (seed, split, kind)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"`kinds` are among {', '.join(KINDS)}; got {', '.join(bad) or 'none'}")
    if count < 1 or size < 8 or channels not in (1, 3) or split not in SPLITS:
        raise InputError(f"`count` >= 1, `size` >= 8, `channels` 1 or 3 and `split` train or test; got {count}, "
                         f"{size}, {channels} and {split!r}")
    out = Path(out)
    made = {}
    for kind in kinds:
        rng = np.random.default_rng([seed, SPLITS.index(split), KINDS.index(kind)])
        pool = digits(split) if kind == "digits" else [photo(n) for n in PHOTOS] if kind == "photos" else None
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in bar(range(count), desc=f"write {kind}", unit="img", leave=False):
            if kind == "digits":
                im = _digit(pool, rng, size)
            elif kind == "photos":
                im = _crop(pool, rng, split, size)
            else:
                im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            _save(im.convert("L" if channels == 1 else "RGB"), folder / f"{i:06d}.png")
        made[kind] = count
        log.info("wrote %d %s pictures to %s", count, kind, folder)
    return made
