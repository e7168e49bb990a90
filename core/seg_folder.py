"""The segmentation folder: the one module that reads and writes its layout.

A segmentation data set is a folder holding
    images/{train,test}/NAME.png   RGB (or gray) images, any size
    masks/{train,test}/NAME.png    8-bit class-index PNGs of the same size (palette or gray)
    classes.json                   {"format", "version", "classes": [names, index = class id],
                                    "palette": [[r, g, b] per class], "background": id or null,
                                    "ignore_index": 255}
`dnc write-scenes` writes FashionScenes in it, and it is how users bring their own data: any folder in
this layout trains, evaluates and yields centroid sets. A mask pixel equal to `ignore_index` counts for
nothing (no loss, no metric, no centroid); any other value must be a class id.

`read_pair` reads one image and its mask resized to a square training size (images bilinear, masks
nearest, short side then centre crop, as classification images are read); training/seg_data.py holds a
split of them in memory as tensors. A pixel of a split at that size has one id, image * S * S + y * S + x
(`pixel_id`, `pixel_of`); `source_pixel` maps it back to the file's own pixel. No torch here: `dnc
centroids` on masks (onnxruntime only) and the clients read folders without it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.core.class_names import CLASSES_FILE, check_class_names
from dnc.core.errors import InputError
from dnc.core.images import DataError, check_image_size

log = logging.getLogger(__name__)

FORMAT = "dnc-segmentation-folder"
VERSION = 1
IMAGES_DIR = "images"
MASKS_DIR = "masks"
SPLITS = ("train", "test")
IGNORE_INDEX = 255
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # RGB, as for RGB image folders


@dataclass
class SegClasses:
    """The class list of a segmentation folder."""

    names: list[str]
    palette: list[list[int]]  # (C, 3) RGB, one colour per class
    background: int | None = 0
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        check_class_names(self.names, CLASSES_FILE)
        c = len(self.names)
        if not 2 <= c <= 255:
            raise DataError(f"{CLASSES_FILE}: a segmentation set needs 2 to 255 classes (8-bit masks), got {c}")
        if len(self.palette) != c or any(len(p) != 3 or not all(0 <= int(v) <= 255 for v in p) for p in self.palette):
            raise DataError(f"{CLASSES_FILE}: the palette needs one [r, g, b] (0-255) per class ({c})")
        if self.background is not None and not 0 <= self.background < c:
            raise DataError(f"{CLASSES_FILE}: background {self.background} is not a class id (0-{c - 1})")
        if not c <= self.ignore_index <= 255:
            raise DataError(f"{CLASSES_FILE}: ignore_index {self.ignore_index} must be in {c}-255 (not a class id)")

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "classes": self.names,
                "palette": [[int(v) for v in p] for p in self.palette], "background": self.background,
                "ignore_index": self.ignore_index}


def default_palette(n: int) -> list[list[int]]:
    """n well-separated colours, background (class 0) black (the PASCAL VOC bit-interleaving rule)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


def is_seg_folder(path: str | Path) -> bool:
    """Whether `path` holds a segmentation folder's classes.json."""
    return (Path(path) / CLASSES_FILE).is_file()


def pixel_id(image, y, x, size: int):
    """The id of pixel (y, x) of image `image` in a split read at size x size (ints or tensors)."""
    return image * (size * size) + y * size + x


def pixel_of(pid: int, size: int) -> tuple[int, int, int]:
    """A pixel id -> (image, y, x) at the training size."""
    image, rest = divmod(int(pid), size * size)
    return image, rest // size, rest % size


def source_pixel(path: str | Path, size: int, y: int, x: int) -> tuple[int, int]:
    """The file's own pixel (y, x) that pixel (y, x) of its size x size training view (short side resized
    to `size`, centre crop; see `read_pair`) shows: nearest neighbour through the resize."""
    with Image.open(path) as im:
        w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    top, left = (nh - size) // 2, (nw - size) // 2
    sy = min(h - 1, int((y + top + 0.5) * h / nh))
    sx = min(w - 1, int((x + left + 0.5) * w / nw))
    return sy, sx


def read_classes(root: str | Path) -> SegClasses:
    """Read and check `root`/classes.json; DataError naming the file and the problem."""
    path = Path(root) / CLASSES_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        up = next((p for p in Path(root).resolve().parents if (p / CLASSES_FILE).is_file()), None)
        hint = f"; give the folder that holds it: {up}" if up else ""
        raise DataError(f"{root} is not a segmentation folder: it has no {CLASSES_FILE}{hint}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise DataError(f"{path} is not a {FORMAT} v{VERSION} class list")
    try:
        return SegClasses(list(meta["classes"]), meta["palette"], meta.get("background"),
                          int(meta.get("ignore_index", IGNORE_INDEX)))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: {e}") from e


def _atomic_save(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_classes(root: str | Path, classes: SegClasses) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{CLASSES_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(classes.to_json(), indent=1))
    os.replace(tmp, root / CLASSES_FILE)


def write_pair(root: str | Path, split: str, name: str, image: np.ndarray, mask: np.ndarray,
               classes: SegClasses) -> None:
    """Write image (H, W, 3) uint8 and mask (H, W) uint8 class ids as images/SPLIT/NAME.png and
    masks/SPLIT/NAME.png (a palette PNG), each atomically."""
    root = Path(root)
    if image.shape[:2] != mask.shape:
        raise InputError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    for d in (IMAGES_DIR, MASKS_DIR):
        (root / d / split).mkdir(parents=True, exist_ok=True)
    _atomic_save(Image.fromarray(image), root / IMAGES_DIR / split / f"{name}.png")
    m = Image.fromarray(mask.astype(np.uint8), mode="P")
    pal = [v for p in classes.palette for v in p]
    pal += [255, 255, 255] * (256 - len(classes.palette))  # ignore (and anything else) shows white
    m.putpalette(pal)
    _atomic_save(m, root / MASKS_DIR / split / f"{name}.png")


def read_mask(path: str | Path) -> np.ndarray:
    """A class-index PNG as (H, W) uint8; DataError for colour (RGB) masks or unreadable files."""
    try:
        with Image.open(path) as im:
            check_image_size(path, *im.size)
            if im.mode not in ("P", "L", "I;16", "I"):
                raise DataError(f"mask {path} is a {im.mode} image; masks are 8-bit class-index images (palette "
                                "or gray PNG) holding a class id per pixel")
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read mask {path}: {type(e).__name__}: {e}") from e
    if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
        bad = int(arr.max()) if arr.max(initial=0) > 255 else int(arr.min())
        raise DataError(f"mask {path} holds value {bad}; class ids are 0-255")
    return arr.astype(np.uint8)


def read_pair(image_path: str | Path, mask_path: str | Path, size: int = 0, in_chans: int = 3
              ) -> tuple[np.ndarray, np.ndarray]:
    """An image (C, S, S) uint8 and its mask (S, S) uint8, resized and centre-cropped to `size` (images
    bilinear, masks nearest); size 0 keeps the native size. DataError names a file that does not fit."""
    mask = read_mask(mask_path)
    try:
        with Image.open(image_path) as im:
            check_image_size(image_path, *im.size)
            im = im.convert("L" if in_chans == 1 else "RGB")
            if im.size != (mask.shape[1], mask.shape[0]):
                raise DataError(f"image {image_path} is {im.size[0]} x {im.size[1]} but its mask {mask_path} is "
                                f"{mask.shape[1]} x {mask.shape[0]}")
            m = Image.fromarray(mask)
            if size:
                w, h = im.size
                s = size / min(w, h)
                nw, nh = max(size, round(w * s)), max(size, round(h * s))
                left, top = (nw - size) // 2, (nh - size) // 2
                box = (left, top, left + size, top + size)
                if (nw, nh) != (w, h):
                    im, m = im.resize((nw, nh), Image.BILINEAR), m.resize((nw, nh), Image.NEAREST)
                im, m = im.crop(box), m.crop(box)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read image {image_path}: {type(e).__name__}: {e}") from e
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr.transpose(2, 0, 1).copy(), np.asarray(m, dtype=np.uint8).copy()


def check_mask_values(mask: np.ndarray, classes: SegClasses, path: str | Path) -> None:
    """Refuse a mask holding a value that is neither a class id nor the ignore index."""
    vals = np.unique(mask)
    bad = vals[(vals >= len(classes.names)) & (vals != classes.ignore_index)]
    if bad.size:
        raise DataError(f"mask {path} holds value {int(bad[0])}, which is not a class id (0-{len(classes.names) - 1}) "
                        f"nor the ignore index {classes.ignore_index} ({CLASSES_FILE})")


def split_files(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) path pairs of one split, sorted by name; DataError for a missing mask or split."""
    root = Path(root)
    idir, mdir = root / IMAGES_DIR / split, root / MASKS_DIR / split
    if not idir.is_dir():
        raise DataError(f"{root} has no {IMAGES_DIR}/{split}/ folder")
    images = sorted(p for p in idir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not images:
        raise DataError(f"{idir} holds no images")
    pairs = []
    for p in images:
        m = mdir / f"{p.stem}.png"
        if not m.is_file():
            raise DataError(f"image {p} has no mask {m}")
        pairs.append((p, m))
    return pairs
