"""The export folder artefact: `manifest.json`, the only module that reads and writes it.

An export folder holds the graphs (formats.EMBED_FILE, EMBED_FP16_FILE, HEAD_FILE, MERGED_FILE,
optional *.plan engines), the centroid set it was exported with, and this manifest: versions,
tensor names and shapes, the preprocessing a client must apply, the embedding fingerprint and the
parity figures measured before the export was declared done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from export.formats import MANIFEST_FILE

FORMAT = "dnc-export"
VERSION = 1


def preprocessing(in_chans: int, image_size: int, mean: list[float], std: list[float],
                  task: str = "classification") -> dict:
    """What a client does to an image file before it is a graph input (also in embed.onnx metadata).
    A segmenter takes images at their own size (labels come back at that size); `image_size` is then
    the size it was trained at."""
    resize = ("none: any height and width (trained on image_size x image_size)" if task == "segmentation"
              else "short side to image_size (bilinear), then centre crop image_size x image_size")
    prep = {"channels": in_chans, "color": "L" if in_chans == 1 else "RGB", "image_size": image_size,
            "resize": resize, "scale": 1 / 255, "mean": list(mean), "std": list(std), "layout": "NCHW",
            "dtype": "float32", "formula": "((pixel / 255) - mean[c]) / std[c]"}
    if task != "classification":  # (a classifier's stays as exports have always written it)
        prep["task"] = task
    return prep


def normalise(images: np.ndarray, prep: dict) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), as the preprocessing's formula says."""
    mean = np.asarray(prep["mean"], np.float32)[None, :, None, None]
    std = np.asarray(prep["std"], np.float32)[None, :, None, None]
    return ((images.astype(np.float32) * np.float32(prep["scale"])) - mean) / std


def write(folder: str | Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(manifest, format=FORMAT, version=VERSION), indent=1))
    os.replace(tmp, path)
    return path


def read(folder: str | Path) -> dict:
    """Read an export folder's manifest (folder, or the manifest file itself)."""
    path = Path(folder)
    path = path / MANIFEST_FILE if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"no export manifest at {path}: export a checkpoint with `dnc export`")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{path}: not a DNC export manifest (format {meta.get('format')} v{meta.get('version')})")
    return meta
