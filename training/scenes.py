"""FashionScenes: a segmentation data set of real pixels with exact labels, generated offline.

Each scene is an RGB image of 1-4 real Fashion-MNIST items (training items in training scenes, test
items in test scenes) pasted at random scale, position and colour, later items over earlier ones, on a
background cut from a real photograph or texture bundled with scikit-image (astronaut, brick, coffee,
grass, gravel, ...) or on smooth colour noise. An item covers the pixels of its silhouette (its
Fashion-MNIST pixels above SILHOUETTE_LEVEL, holes filled); it is painted opaque there, its colour
shaded by its own grey texture, so every labelled pixel shows the item and the mask is exact. A pixel's
label is the class of the item on top (0 = background). Backgrounds of both splits are crops of the same
photographs, at random places and scales.

Deterministic by seed: scene i of a split draws from its own generator seeded by (seed, split, i), so a
scene does not depend on how many were written before it. Written in the layout of
core/seg_folder.py.

Clips (`write_clips`, `dnc write-scenes --video N`): test items moving in straight lines (bouncing off the
edges) over one background, at the scenes' item scale (items are as large in pixels as in 64 px scenes,
whatever the clip size), written as OUT/videos/clipNNN.mp4 (H.264) with their exact masks as
OUT/masks/clipNNN.masks.mkv (FFV1, lossless, frame for frame) and OUT/classes.json; clip i draws from
(seed, CLIP_CODE, i).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from dnc.core.class_names import safe_name
from dnc.core.images import DataError
from dnc.core.progress import bar
from dnc.core.seg_folder import SegClasses, default_palette, write_classes, write_pair
from dnc.core.video import H264Writer, MaskWriter
from dnc.training.data import ImageData, load_dataset
from dnc.training.folders import LABEL_MAPS, coarse_index

log = logging.getLogger(__name__)

BACKGROUND = "background"
SILHOUETTE_LEVEL = 40  # Fashion-MNIST pixel value (0-255) above which a pixel belongs to the item
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel", "rocket", "hubble_deep_field",
          "coins", "moon", "immunohistochemistry", "clock", "page")
NOISE_SHARE = 0.25  # scenes on smooth colour noise rather than a photograph
ITEMS = (1, 4)  # items per scene, inclusive
SCALE = (0.35, 0.7)  # item side as a share of the scene side
SPLIT_CODE = {"train": 0, "test": 1}
CLIP_CODE = 2
SCENE_PX = 64  # clips size their items as SCALE x this, the scenes' default size
SPEED = 2.5  # pixels per frame, at most, per axis


def load_photos() -> list[np.ndarray]:
    """The background photographs and textures as (H, W, 3) uint8 (scikit-image's bundled files)."""
    from skimage import data as skdata  # imported here: only the scene writer needs scikit-image

    out = []
    for name in PHOTOS:
        arr = np.asarray(getattr(skdata, name)())
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8))
    return out


def background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """(size, size, 3) uint8: a random crop of a photograph, or smooth colour noise."""
    if rng.random() < NOISE_SHARE:
        cells = int(rng.integers(2, 9))
        low = rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.float32)
        img += rng.normal(0, 8, img.shape)
    else:
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        img = np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = img * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, 3)  # brightness, colour cast
    return np.clip(img, 0, 255).astype(np.uint8)


def sprite(item: np.ndarray, side: int, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (28, 28) uint8 item at side x side: its paint (side, side, 3) float32, its colour shaded by its
    own grey texture, and its silhouette (side, side) bool (holes filled)."""
    grey = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR), np.float32)  # (side, side)
    sil = ndimage.binary_fill_holes(grey > SILHOUETTE_LEVEL)
    shade = 0.35 + 0.65 * grey / 255.0
    return colour[None, None, :] * shade[:, :, None], sil


def place(canvas: np.ndarray, mask: np.ndarray, paint: np.ndarray, sil: np.ndarray, top: int, left: int,
          label: int) -> None:
    """Paint a sprite onto canvas (H, W, 3) with its top-left corner at (top, left), clipped to the canvas,
    and write `label` into mask (H, W) under its silhouette."""
    side = sil.shape[0]
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(canvas.shape[0], top + side), min(canvas.shape[1], left + side)
    if y1 <= y0 or x1 <= x0:
        return
    sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    m = sil[sy, sx]
    canvas[y0:y1, x0:x1][m] = np.clip(paint[sy, sx][m], 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1][m] = label


def paste(canvas: np.ndarray, mask: np.ndarray, item: np.ndarray, label: int, rng: np.random.Generator
          ) -> tuple[int, int, int]:
    """Paste one (28, 28) uint8 item onto canvas (S, S, 3) and write `label` into mask (S, S) where it
    lands. Returns its box in the scene, (top, left, side); it may reach past the edges."""
    size = canvas.shape[0]
    side = max(8, round(size * rng.uniform(*SCALE)))
    lo, hi = -side // 4, size - 3 * side // 4  # up to a quarter of the item may leave the scene
    top, left = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    colour = rng.uniform(40, 255, 3).astype(np.float32)
    paint, sil = sprite(item, side, colour)
    place(canvas, mask, paint, sil, top=top, left=left, label=label)
    return top, left, side


def make_scene(items: ImageData, item_labels: np.ndarray, photos: list[np.ndarray], size: int, seed: int,
               split: str, index: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int, int]]]:
    """One scene: image (S, S, 3) uint8, mask (S, S) uint8 (0 background, c + 1 for item class c), and
    what was pasted, in paint order: (item index, class, top, left, side)."""
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    canvas = background(rng, photos, size)
    mask = np.zeros((size, size), np.uint8)
    pasted = []
    for _ in range(int(rng.integers(ITEMS[0], ITEMS[1] + 1))):
        i = int(rng.integers(len(items)))
        box = paste(canvas, mask, items.images[i, 0].numpy(), int(item_labels[i]) + 1, rng=rng)
        pasted.append((i, int(item_labels[i]), *box))
    return canvas, mask, pasted


def write_scenes(out: str | Path, labels: str = "fine", size: int = 64, train: int = 10000, test: int = 1000,
                 seed: int = 0, items_spec: str = "fashion-mnist") -> SegClasses:
    """Write FashionScenes (both splits) under `out` in the segmentation folder layout; returns its classes.

    labels: "fine" (the 10 Fashion-MNIST classes) or "coarse" (training/folders.py's 5 groups).
    """
    if labels not in LABEL_MAPS:
        raise DataError(f"unknown label map {labels!r}; use one of {', '.join(LABEL_MAPS)}")
    if size < 16:
        raise DataError(f"scene size must be >= 16 px, got {size}")
    if train < 0 or test < 0 or train + test == 0:
        raise DataError(f"need scenes to write: `train` {train}, `test` {test}")
    if Path(out).exists() and any(Path(out).iterdir()):
        raise DataError(f"{out} exists and is not empty: scenes of another run would mix with these (give a new "
                        "folder, or delete it; scenes are deterministic by `seed`)")
    photos = load_photos()
    classes = None
    for split, n in (("train", train), ("test", test)):
        items = load_dataset(items_spec, split)
        if items.images is None or items.in_chans != 1:
            raise DataError(f"{items_spec}: scene items must be an in-memory grey set such as fashion-mnist")
        names, to = list(items.class_names), np.arange(items.num_classes)
        if LABEL_MAPS[labels] is not None:
            names, to = coarse_index(items.class_names, LABEL_MAPS[labels])
        if classes is None:  # named as `dnc write-folder` names its folders, so the lists line up
            names = [safe_name(n) for n in names]
            classes = SegClasses([BACKGROUND] + names, default_palette(len(names) + 1), background=0)
            write_classes(out, classes)
        item_labels = to[items.labels.numpy()]
        for i in bar(range(n), desc=f"write-scenes {split}", unit="scene"):
            image, mask, _ = make_scene(items, item_labels, photos, size=size, seed=seed, split=split, index=i)
            write_pair(out, split, f"{i:06d}", image, mask=mask, classes=classes)
    log.info("wrote %d training and %d test scenes (%dpx, %d classes) to %s", train, test, size,
             len(classes.names), out)
    return classes


def make_clip(items: ImageData, item_labels: np.ndarray, photos: list[np.ndarray], height: int, width: int,
              frames: int, seed: int, index: int):
    """Yield the frames of clip `index`: (image (H, W, 3) uint8, mask (H, W) uint8) per frame."""
    rng = np.random.default_rng([seed, CLIP_CODE, index])
    side_bg = max(height, width)
    bg = background(rng, photos, side_bg)
    top0, left0 = (side_bg - height) // 2, (side_bg - width) // 2
    bg = bg[top0:top0 + height, left0:left0 + width]
    n = int(rng.integers(ITEMS[0], ITEMS[1] + 1)) * max(1, round(height * width / 128 ** 2))
    movers = []
    for _ in range(min(n, 40)):
        i = int(rng.integers(len(items)))
        side = max(8, round(SCENE_PX * rng.uniform(*SCALE)))
        paint, sil = sprite(items.images[i, 0].numpy(), side, rng.uniform(40, 255, 3).astype(np.float32))
        low = np.array([-side // 4, -side // 4], float)
        high = np.array([height - 3 * side // 4, width - 3 * side // 4], float)
        pos = rng.uniform(low, np.maximum(high, low + 1))
        movers.append([paint, sil, int(item_labels[i]) + 1, pos, rng.uniform(-SPEED, SPEED, 2), low, high])
    for _ in range(frames):
        canvas, mask = bg.copy(), np.zeros((height, width), np.uint8)
        for m in movers:
            paint, sil, label, pos, vel, low, high = m
            place(canvas, mask, paint, sil, top=int(round(pos[0])), left=int(round(pos[1])), label=label)
            pos += vel
            bounce = (pos < low) | (pos > high)
            vel[bounce] *= -1
            np.clip(pos, low, high, out=pos)
        yield canvas, mask


def write_clips(out: str | Path, count: int, labels: str = "fine", height: int = 256, width: int = 256,
                frames: int = 48, fps: int = 12, seed: int = 0, items_spec: str = "fashion-mnist") -> SegClasses:
    """Write `count` clips with their lossless mask videos under `out` (see the module docstring)."""
    if labels not in LABEL_MAPS:
        raise DataError(f"unknown label map {labels!r}; use one of {', '.join(LABEL_MAPS)}")
    if count < 1 or frames < 1 or fps < 1:
        raise DataError(f"need clips, frames and a frame rate >= 1: {count} clips, `frames` {frames}, `fps` {fps}")
    if height < 16 or width < 16 or height % 2 or width % 2:
        raise DataError(f"clip sides must be even and >= 16 px (H.264 4:2:0), got {width}x{height}")
    if Path(out).exists() and any(Path(out).iterdir()):
        raise DataError(f"{out} exists and is not empty: clips of another run would mix with these (give a new "
                        "folder, or delete it; clips are deterministic by `seed`)")
    items = load_dataset(items_spec, "test")
    if items.images is None or items.in_chans != 1:
        raise DataError(f"{items_spec}: clip items must be an in-memory grey set such as fashion-mnist")
    names, to = list(items.class_names), np.arange(items.num_classes)
    if LABEL_MAPS[labels] is not None:
        names, to = coarse_index(items.class_names, LABEL_MAPS[labels])
    names = [safe_name(n) for n in names]  # as write_scenes and `dnc write-folder` name them
    classes = SegClasses([BACKGROUND] + names, default_palette(len(names) + 1), background=0)
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    write_classes(out, classes)
    photos, item_labels = load_photos(), to[items.labels.numpy()]
    for c in bar(range(count), desc="write-scenes clips", unit="clip"):
        name = f"clip{c:03d}"
        with H264Writer(out / "videos" / f"{name}.mp4", width, height, Fraction(fps), crf=18) as video, \
                MaskWriter(out / "masks" / f"{name}.masks.mkv", width, height, Fraction(fps)) as masks:
            for image, mask in make_clip(items, item_labels, photos, height=height, width=width, frames=frames,
                                         seed=seed, index=c):
                video.write(image)
                masks.write(mask)
    log.info("wrote %d clips of %d frames (%dx%d, %d fps, %d classes) to %s", count, frames, width, height, fps,
             len(classes.names), out)
    return classes
