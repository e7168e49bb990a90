"""Accuracy of an exported embedding with a centroid set on a labelled image folder (onnxruntime only).

Used to check a recomputed class list (`dnc eval-onnx`) and by the coarse-to-fine benchmark. Folder
classes are matched to the set's classes by name; a folder class the set does not know is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnc.core import centroid_set, tasks
from dnc.core import formats as F
from dnc.core.errors import InputError
from dnc.core.images import DataError, split_layout
from dnc.export import runtime
from dnc.export.head_graph import build_head
from dnc.export.recompute import embed_files, scan_labelled_folder


def evaluate_folder(embed_path: str | Path, set_path: str | Path, data: str | Path, batch_size: int = 256,
                    threads: int = 0, split: str | None = None) -> dict:
    """Top-1 (%) and per-class top-1 of embed + set on the images of `data` (one subfolder per class; a
    folder laid out as train/ and test/ is read at `split`, by default its held-out split). For a set with
    thresholds, also the share of the images accepted (their best class's score clears its threshold:
    what a calibrated set promises is about its `accept` share of each class) and top-1 among them."""
    if batch_size < 1:
        raise InputError(f"`batch_size` must be >= 1, got {batch_size}")
    sess = runtime.session(embed_path, threads)
    runtime.check_task(runtime.preprocessing_of(sess, embed_path), tasks.CLASSIFICATION, embed_path, data)
    cs = centroid_set.load(set_path, centroid_set.fingerprint_file(embed_path), runtime.embed_dim_of(sess))
    layout = Path(data).is_dir() and split_layout(Path(data))
    classes, files, labels = scan_labelled_folder(data, (split or "test") if layout else split)
    unknown = [c for c in classes if c not in cs.class_names]
    if unknown:
        raise DataError(f"{data} has classes the centroid set does not know: {unknown}")
    truth = np.array([cs.class_names.index(c) for c in classes])[labels]  # (N,) set class index
    x = embed_files(sess, files, prep=runtime.preprocessing_of(sess, embed_path), batch_size=batch_size,
                    threads=threads or 2, desc="eval")
    head = runtime.session(build_head(cs).SerializeToString(), threads)
    runs = [head.run([F.PREDICTED, F.TOP_SCORE], {F.EMBEDDING: x[i:i + batch_size]})
            for i in range(0, len(x), batch_size)]
    pred, top = (np.concatenate(parts) for parts in zip(*runs, strict=True))
    per_class = {cs.class_names[c]: float(100 * (pred[truth == c] == c).mean()) for c in np.unique(truth)}
    res = {"top1": float(100 * (pred == truth).mean()), "n": len(x), "per_class_top1": per_class,
           "set_id": cs.set_id, "accepted": None}
    if cs.thresholds is not None:
        known = top >= cs.thresholds[pred]
        res.update(accepted=float(100 * known.mean()), top1_accepted=float(100 * (pred == truth)[known].mean())
                   if known.any() else None,
                   accept=cs.source.get("calibration", {}).get("accept"))
    return res
