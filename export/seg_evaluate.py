"""mIoU of an exported segmenter's embedding with a segmentation centroid set on a segmentation folder
(onnxruntime only): `dnc eval-onnx` on masks, and the class-list induction benchmark.

The folder's classes are matched to the set's by name (a folder class the set does not know is refused);
pixels at the folder's ignore index count for nothing. IoU per class over the whole split (a class neither
present nor predicted has none; mIoU averages the others), pixel accuracy, images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.images import DataError
from dnc.core.seg_folder import read_classes
from dnc.export import runtime
from dnc.export.seg_head_graph import build_seg_head
from dnc.export.seg_recompute import check_segmentation_graph, embedded_scenes


def evaluate_seg_folder(embed_path: str | Path, set_path: str | Path, data: str | Path, threads: int = 0,
                        split: str = "test") -> dict:
    """{"miou", "pixel_acc", "iou_per_class" {name: IoU or None}, "images", "set_id"} in %."""
    sess = runtime.session(embed_path, threads)
    prep = check_segmentation_graph(sess, embed_path)
    dim = sess.get_outputs()[0].shape[1]
    cs = centroid_set.load(set_path, centroid_set.fingerprint_file(embed_path), dim)
    head = runtime.session(build_seg_head(cs).SerializeToString(), threads)
    classes = read_classes(data)
    unknown = [n for n in classes.names if n not in cs.class_names]
    if unknown:
        raise DataError(f"{data} has classes the centroid set does not know: {unknown}")
    to_set = np.full(256, -1, np.int64)
    to_set[:len(classes.names)] = [cs.class_names.index(n) for n in classes.names]
    c = cs.num_classes
    conf = np.zeros((c, c), np.int64)
    images = 0
    for _, _, emb, mask in embedded_scenes(sess, Path(data), split=split, prep=prep, classes=classes, desc="eval"):
        size = np.array(mask.shape, np.int64)
        labels = head.run([F.LABELS], {F.PIXEL_EMBEDDING: emb[None], F.OUTPUT_SIZE: size})[0][0]
        truth = to_set[mask]
        keep = truth >= 0
        conf += np.bincount(truth[keep] * c + labels[keep], minlength=c * c).reshape(c, c)
        images += 1
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = {n: (None if union[i] == 0 else float(100 * tp[i] / union[i])) for i, n in enumerate(cs.class_names)}
    used = [v for v in iou.values() if v is not None]
    return {"miou": float(np.mean(used)) if used else 0.0, "pixel_acc": float(100 * tp.sum() / max(1, conf.sum())),
            "iou_per_class": iou, "images": images, "set_id": cs.set_id}
