"""`dnc centroids`: a centroid set for a new class list, from labelled images and embed.onnx only.

No PyTorch at this step: images are read as training reads them, embedded with onnxruntime (with a
progress bar), each class is clustered into its K sub-centroids (export.clustering), and each
sub-centroid is anchored to its nearest real image of the class (distinct images per class), whose
path is recorded; by default the sub-centroid is replaced by that image's embedding (paper
section 4.3), so every prediction points at a real image. The set and its head.onnx are written
to OUT together (staged, then moved into place).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

from export import centroid_set, runtime
from export import formats as F
from export.centroid_set import CentroidSet
from export.clustering import cluster
from export.head_graph import build_head
from export.staging import check_destination, staged
from training.images import DataError, class_folders, read_image_array, scan_image_folder
from training.progress import bar

log = logging.getLogger(__name__)


def scan_labelled_folder(root: str | Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, files, labels (N,)) of a one-subfolder-per-class folder; refuses a folder with
    fewer than two classes or a class folder without images, naming it. Files are not opened here:
    an unreadable one is named when it is read."""
    root = Path(root)
    classes = class_folders(root)
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class subfolder(s) {classes}; a class list needs at least two")
    classes, paths, labels = scan_image_folder(root, on_bad="error", verify=False)
    return classes, [Path(p) for p in paths], np.asarray(labels)


def embed_files(sess, files: list[Path], prep: dict, batch_size: int = 256, threads: int = 2,
                desc: str = "embed") -> np.ndarray:
    """Read and embed image files: (N, D) float32. An unreadable file raises DataError naming it."""
    read = lambda f: read_image_array(f, prep["channels"], prep["image_size"])  # noqa: E731
    out = []
    with ThreadPoolExecutor(max(1, threads)) as pool, bar(total=len(files), desc=desc, unit="img") as shown:
        for i in range(0, len(files), batch_size):
            batch = np.stack(list(pool.map(read, files[i:i + batch_size])))  # (B, C, H, W) uint8
            out.append(runtime.embed(sess, batch, prep, batch_size))
            shown.update(len(batch))
    return np.concatenate(out)


def nearest_distinct(cents: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For (k, D) sub-centroids and (N >= k, D) samples, the index of each one's nearest sample, no
    sample used twice (greedy, most similar pair first)."""
    sim = cents @ x.T  # (k, N)
    pick = np.full(len(cents), -1)
    taken = np.zeros(len(x), bool)
    for j in np.argsort(-sim.max(1)):
        row = np.where(taken, -np.inf, sim[j])
        pick[j] = int(row.argmax())
        taken[pick[j]] = True
    return pick


def compute_set(embed_path: str | Path, data: str | Path, out: str | Path, k: int = 4, method: str = "sinkhorn",
                keep_means: bool = False, batch_size: int = 256, threads: int = 0, seed: int = 0) -> dict:
    """Compute and write a centroid set (and its head.onnx) for the classes of an image folder.

    Args:
        embed_path: an exported embed.onnx (its metadata gives the preprocessing).
        data: one subfolder per class. out: the set folder to write.
        k: sub-centroids per class (fewer for classes with fewer images). method: sinkhorn or kmeans.
        keep_means: keep the cluster means as sub-centroids (exemplars are still recorded).
    Returns a summary: set id, classes, K per class, seconds for embedding and clustering.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"--K and --batch-size must be >= 1, got {k} and {batch_size}")
    embed_path, out = Path(embed_path), Path(out)
    check_destination(out, F.SET_TENSORS_FILE, refuse_if=(F.MANIFEST_FILE, F.EMBED_FILE))
    sess = runtime.session(embed_path, threads)
    prep = runtime.preprocessing_of(sess, embed_path)
    runtime.check_task(prep, "classification", embed_path, data)
    classes, files, labels = scan_labelled_folder(data)
    t0 = time.time()
    x = embed_files(sess, files, prep, batch_size, threads or 2)  # (N, D)
    t_embed = time.time() - t0
    d = x.shape[1]
    t0 = time.time()
    ks = [min(k, int((labels == c).sum())) for c in range(len(classes))]
    kmax = max(ks)
    cents = np.zeros((len(classes), kmax, d), np.float32)
    ids = np.full((len(classes), kmax), -1, np.int64)
    names: list[list[str | None]] = []
    for c in bar(range(len(classes)), desc="cluster", unit="class"):
        members = np.flatnonzero(labels == c)
        xc = x[members]
        cc, _ = cluster(xc, ks[c], method, seed=seed + c)
        near = nearest_distinct(cc, xc)
        cents[c, :ks[c]] = cc if keep_means else xc[near] / np.linalg.norm(xc[near], axis=1, keepdims=True)
        ids[c, :ks[c]] = members[near]
        names.append([str(files[i]) for i in members[near]])
    t_cluster = time.time() - t0
    fewer = [(classes[c], ks[c]) for c in range(len(classes)) if ks[c] < k]
    if fewer:
        log.warning("classes with fewer images than K=%d get fewer sub-centroids: %s", k, fewer)
    cs = CentroidSet(centroids=cents, ks=ks, class_names=classes,
                     embed_fingerprint=centroid_set.fingerprint_file(embed_path), exemplar_ids=ids,
                     exemplar_names=names, source={"from": "images", "data": str(data), "method": method,
                                                   "k": k, "keep_means": keep_means, "images": len(files)})
    with staged(out) as tmp:
        centroid_set.save(cs, tmp)
        onnx.save(build_head(cs), tmp / F.HEAD_FILE)
    log.info("centroid set %s: %d classes, %d images -> %s", cs.set_id, len(classes), len(files), out)
    return {"set_id": cs.set_id, "classes": classes, "ks": ks, "images": len(files), "embed_seconds": t_embed,
            "cluster_seconds": t_cluster, "out": str(out)}
