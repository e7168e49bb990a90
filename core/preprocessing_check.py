"""An export's preprocessing checked against what `dnc export` writes and against embed.onnx itself.

manifest.read runs these checks, so everything that reads an export to serve it (`dnc repo build`, the
in-process segmenter of `dnc segment --in-process` and its Ray tasks) refuses a manifest.json that no real
export writes: every field of core/preprocess.py's description within the values training produces,
channels and image size equal to embed.onnx's input, and the description equal to the one embed.onnx
carries in its metadata (written by the same export; the fingerprint covers embed.onnx, not the manifest).
Refusals name the file, the field, its value and what is allowed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dnc.core import formats as F
from dnc.core import preprocess, tasks
from dnc.core.errors import InputError

COLORS = {1: "L", 3: "RGB"}  # channels -> colour, as preprocess.describe writes them
SCALE = 1 / 255
MAX_IMAGE_SIZE = 4096  # pixels a side: the largest picture side served to a classifier (4096 x 4096)
MEAN_RANGE = (0.0, 1.0)  # in units of pixel * scale: training's means are 0.29-0.5
STD_RANGE = (0.01, 1.0)  # training's are 0.22-0.5; std 0 divides by zero, a tiny one blows values up
FIXED = {"interpolation": "bilinear", "layout": "NCHW", "dtype": "float32",
         "formula": "((pixel / 255) - mean[c]) / std[c]"}  # absent from exports before 2026-11-26: optional
FIX = ("`dnc export` never writes this: export the checkpoint again with `dnc export` (manifest.json is "
       "written by the export and must not be edited)")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def field_problems(prep, task_name: str) -> list[str]:
    """What in a preprocessing description no real export writes, one phrase per field (empty: none)."""
    if not isinstance(prep, dict):
        return [f"preprocessing is {prep!r}, not a description (a JSON object)"]
    bad = []
    if task_name not in tasks.TASKS:
        return [f"task is {task_name!r}; allowed: {', '.join(tasks.TASKS)}"]
    task = tasks.task(task_name)
    if prep.get("task", tasks.DEFAULT.name) != task.name:
        bad.append(f"preprocessing task is {prep.get('task')!r} but the export's task is {task.name!r}")
    ch = prep.get("channels")
    if isinstance(ch, bool) or ch not in COLORS:
        bad.append(f"channels is {ch!r}; allowed: 1 (gray) or 3 (RGB)")
        ch = None
    color = prep.get("color")
    if color not in COLORS.values() or (ch is not None and color != COLORS[ch]):
        bad.append(f"color is {color!r}; allowed: 'L' with 1 channel, 'RGB' with 3"
                   + (f" (channels is {ch}: {COLORS[ch]!r})" if ch is not None else ""))
    size = prep.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
        bad.append(f"image_size is {size!r}; allowed: a whole number of pixels from 1 to {MAX_IMAGE_SIZE}")
    for name, (low, high) in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
        v = prep.get(name)
        if (not isinstance(v, list) or (ch is not None and len(v) != ch)
                or not all(_number(x) and low <= x <= high for x in v) or not v):
            bad.append(f"{name} is {v!r}; allowed: {ch or 'one per channel:'} finite number{'s' if ch != 1 else ''} "
                       f"from {low} to {high}")
    scale = prep.get("scale")
    if not _number(scale) or not math.isclose(scale, SCALE, rel_tol=1e-9):
        bad.append(f"scale is {scale!r}; allowed: 1/255 ({SCALE!r}), pixels 0-255 to 0-1")
    try:
        mode = preprocess.resize_mode(prep)
    except preprocess.ImageError:
        mode = None
    if mode != task.resize:
        bad.append(f"resize is {prep.get('resize')!r}; allowed for a {task.name} model: {task.resize!r}"
                   + (" (pictures at their own size)" if task.dense else
                      " (short side to image_size, then a centre crop: the graph takes image_size^2 only)"))
    for name, want in {**FIXED, "crop": task.crop}.items():
        if name in prep and prep[name] != want:
            bad.append(f"{name} is {prep[name]!r}; allowed: {want!r}")
    return bad


def graph_problems(prep: dict, task: str, embed_path: Path) -> list[str]:
    """What in a (field-checked) description disagrees with embed.onnx: its input's channels and size, and
    the description embed.onnx was exported with (its metadata)."""
    import onnx

    model = onnx.load(str(embed_path), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    if F.IMAGES not in inputs:
        return [f"{embed_path} has no input {F.IMAGES!r} (inputs: {', '.join(inputs) or 'none'}): not an embedding "
                "graph of `dnc export`"]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[F.IMAGES].type.tensor_type.shape.dim]
    shown = f"embed.onnx's input {F.IMAGES} is {dims}"
    if len(dims) != 4:
        return [f"{shown}, not (batch, channels, height, width)"]
    bad = []
    if dims[1] != prep["channels"]:
        bad.append(f"channels is {prep['channels']!r} but {shown}: allowed {dims[1]!r}")
    fixed = [d for d in dims[2:] if isinstance(d, int)]
    if not tasks.task(task).dense and dims[2:] != [prep["image_size"]] * 2:
        bad.append(f"image_size is {prep['image_size']!r} but {shown}: allowed "
                   f"{dims[2] if len(set(fixed)) == 1 and len(fixed) == 2 else 'none (the graph is not a classifier)'}")
    if tasks.task(task).dense and fixed:
        bad.append(f"resize is {prep.get('resize')!r} (pictures at their own size) but {shown}, of fixed size: "
                   "not a segmenter's graph")
    meta = {p.key: p.value for p in model.metadata_props}
    if not bad and F.META_PREPROCESSING in meta:
        try:
            theirs = json.loads(meta[F.META_PREPROCESSING])
        except ValueError:
            theirs = {}
        theirs = theirs if isinstance(theirs, dict) else {}
        bad += [f"{k} is {prep.get(k)!r} but embed.onnx was exported with {theirs.get(k)!r}"
                for k in sorted(set(prep) | set(theirs)) if theirs.get(k) != prep.get(k)]
    return bad


def check(meta: dict, export_dir: Path, where: str | Path) -> None:
    """Refuse (ValueError) a manifest whose preprocessing no real export writes; with embed.onnx beside it
    (export_dir), also one that disagrees with the graph."""
    task = meta.get("task", tasks.DEFAULT.name)
    prep = meta.get("preprocessing")
    bad = field_problems(prep, task)
    embed = Path(export_dir) / F.EMBED_FILE
    if not bad and embed.is_file():
        bad = graph_problems(prep, task, embed)
    if bad:
        raise InputError(f"{where}: preprocessing refused: {'; '.join(bad)}. {FIX}")
