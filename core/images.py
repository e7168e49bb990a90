"""Image files without torch: decoding to fixed-size uint8 arrays and scanning class folders.

Kept free of torch so that the export layer's `dnc centroids` (which runs on onnxruntime only) reads
images exactly as training and the clients do: the geometry is core/preprocess.py's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.core import preprocess
from dnc.core.class_names import CLASSES_FILE, check_class_names
from dnc.core.errors import DNCError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 50_000_000  # decoded width x height (a 8,000 x 6,000 photo is 48 million)
MAX_FILE_BYTES = 8 * MAX_PIXELS  # an uncompressed 16-bit RGBA picture of MAX_PIXELS; read before decoding
MAX_ASPECT = preprocess.MAX_ASPECT
SPLIT_NAMES = ("train", "test", "val", "validation")  # folder names that name a split, never a class


class DataError(DNCError, ValueError):
    """A data set path or file that cannot be used; the message names the culprit."""


def read_image_array(path: str | Path, in_chans: int, size: int) -> np.ndarray:
    """Read any image file as (C, size, size) uint8: convert to gray/RGB, resize the short side to
    `size`, centre-crop (core/preprocess.py executes it). Raises DataError naming the file if it
    cannot be decoded or is refused by the size limits."""
    # the geometry only (prepare() converts, resizes and crops; it never normalises, so mean and std are moot)
    prep = preprocess.Preprocessing(channels=in_chans, image_size=size, mean=(0.0,) * in_chans, std=(1.0,) * in_chans)
    return _read(path, prep, lambda im: preprocess.prepare(im, prep))


def read_picture(path: str | Path, color: str, prep: dict | None = None) -> np.ndarray:
    """An image file as uint8 (H, W, C) at its own size, converted to `color` ("L" or "RGB"). DataError
    naming the file if it cannot be read. With `prep` (a model's preprocessing) a thin picture is refused
    only when that model would enlarge it (a classifier, not a segmenter)."""
    def pixels(im: Image.Image) -> np.ndarray:
        arr = np.asarray(preprocess.upright_8bit(im, f"image {path}").convert(color), dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    return _read(path, prep, pixels)


def _read(path: str | Path, prep: dict | None, use):
    """Read an image file (at most MAX_FILE_BYTES), refuse a costly one from its bytes (preprocess.check_cost:
    JPEG scans, PNG chunks, metadata), check its size from the header (nothing decoded yet; the aspect rule
    as `prep` says), decode it within preprocess.DECODE_SECONDS and return use(image); every failure is a
    DataError naming the file."""
    what = f"image {path}"
    try:
        with preprocess.open_bytes(_file_bytes(path), what) as im:
            preprocess.check_size(what, *im.size, MAX_PIXELS, prep)
            return use(preprocess.load(im, what))
    except DataError:
        raise
    except preprocess.ImageError as e:
        raise DataError(str(e)) from None
    except Exception as e:  # a crafted file makes PIL raise many kinds (SyntaxError, struct.error, EOFError...)
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def _file_bytes(path: str | Path) -> bytes:
    """An image file's bytes, refused beyond MAX_FILE_BYTES (read before anything is decoded)."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"image {path} is larger than the {MAX_FILE_BYTES / 1e6:.0f} MB accepted; re-encode it "
                        "as a JPEG or PNG of at most 50 million pixels")
    return data


def _verify(path: Path) -> None:
    """PIL's check that a file decodes, after the cost scan (PIL's verify walks every PNG chunk)."""
    with preprocess.open_bytes(_file_bytes(path), f"image {path}") as im:
        im.verify()


def check_image_size(path: str | Path, w: int, h: int) -> None:
    """Refuse an image whose decoded size or shape would cost far more than the model's input is worth."""
    try:
        preprocess.check_size(f"image {path}", w, h, MAX_PIXELS)
    except preprocess.ImageError as e:
        raise DataError(str(e)) from None


def is_split_name(name: str) -> bool:
    """Whether a folder name names a data split (train, test, val, validation; any case) rather than a class."""
    return name.lower() in SPLIT_NAMES


def split_layout(root: Path) -> dict[str, Path] | None:
    """{split (lower case): folder} when `root` is laid out in splits (`dnc write-folder`'s and `dnc train`'s
    train/ and test/ (or val/) layout: every subfolder a split, one of them train); None when no subfolder
    has a split name. DataError, naming them, when split folders sit beside class folders or train/ is
    missing: such a folder is neither a class list nor a split layout."""
    subs = class_folders(root)
    splits = [s for s in subs if is_split_name(s)]
    if not splits:
        return None
    others = [s for s in subs if not is_split_name(s)]
    if others:
        raise DataError(f"{root} holds split folders {splits} beside class folders {others[:5]}; lay it out as "
                        "train/ and test/ each holding one subfolder per class, or as class folders only")
    layout = {s.lower(): root / s for s in splits}
    if "train" not in layout:
        raise DataError(f"{root} holds split folders {splits} but no train/; give the split to read, e.g. "
                        f"{root / splits[0]}")
    return layout


def check_class_folder(root: Path, name: str) -> None:
    """Refuse a class folder that is not a class: one named as a split (a split layout given one level too
    high), or one holding, at any depth, a split folder or a segmentation folder (a folder of data sets
    given instead of one: its images would all become one class). The message names the folder and the
    one to give instead."""
    folder = root / name
    if is_split_name(name):
        hint = (f"{root} is laid out in splits: give {root / 'train'} (or its test/ split)"
                if (root / "train").is_dir() else f"rename {folder} after the class it holds")
        raise DataError(f"class folder {folder} has a split name ({', '.join(SPLIT_NAMES)}), not a class name; "
                        f"{hint}")
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        split = next((d for d in dirs if is_split_name(d)), None)
        if CLASSES_FILE in files or split:
            what = (f"a segmentation folder ({Path(here) / CLASSES_FILE})" if CLASSES_FILE in files
                    else f"a split folder ({Path(here) / split})")
            raise DataError(f"class folder {folder} holds {what}: it is a data set, not a class; give the data "
                            f"set itself ({here}) as the data")


def class_folders(root: Path) -> list[str]:
    """Sorted names of the class subfolders of `root` (hidden ones ignored)."""
    if not root.is_dir():
        raise DataError(f"image folder does not exist or is not a directory: {root}")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Image files under one class folder, sorted; files without an image extension are logged."""
    files = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            log.warning("ignoring %s: not an image extension", f)
            continue
        files.append(f)
    return files


def scan_image_folder(root: Path, on_bad: str = "skip", classes: list[str] | None = None, verify: bool = True
                      ) -> tuple[list[str], list[str], list[int]]:
    """List (class names, file paths, labels) of a one-subfolder-per-class directory.

    With `verify`, every file is opened to check it decodes (callers that decode every file anyway
    pass False and get a DataError naming a bad file when they read it); then `on_bad="skip"` logs
    and skips unreadable files, `"error"` refuses the folder naming the first one. Empty class folders, and
    class folders that are no class (`check_class_folder`: a split, a data set) are refused. With
    `classes` given (the training split's), the folder must hold exactly those classes, so labels
    mean the same in every split.
    """
    found = class_folders(root)
    if not found:
        raise DataError(f"{root} has no class subfolders (expected one subfolder per class)")
    try:
        check_class_names(found, f"class folders of {root}")
    except ValueError as e:
        raise DataError(str(e)) from None
    for name in found:
        check_class_folder(root, name)
    if classes is not None and found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DataError(f"{root} classes differ from the training split's: missing {missing}, extra {extra}")
    paths, labels, bad = [], [], []
    for c, cname in enumerate(found):
        n_before = len(paths)
        for f in image_files(root / cname):
            if not verify:
                paths.append(str(f))
                labels.append(c)
                continue
            try:
                _verify(f)
            except Exception as e:  # PIL raises many types for corrupt files
                if on_bad == "error":
                    raise DataError(f"unreadable image {f}: {e}") from e
                bad.append(str(f))
                continue
            paths.append(str(f))
            labels.append(c)
        if len(paths) == n_before:
            raise DataError(f"class folder {root / cname} has no readable images")
    for f in bad:
        log.warning("skipped unreadable image %s", f)
    return found, paths, labels
