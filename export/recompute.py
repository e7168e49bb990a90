"""`dnc centroids`: a centroid set for a new class list, from labelled images and embed.onnx only.

No PyTorch at this step: images are read as training reads them, embedded with onnxruntime (with a
progress bar), each class is clustered into its K sub-centroids (export.clustering), and each
sub-centroid is anchored to its nearest real image of the class (distinct images per class), whose
path is recorded; by default the sub-centroid is replaced by that image's embedding (paper
section 4.3), so every prediction points at a real image. The set and its head.onnx are written
to OUT together (staged, then moved into place).

A folder laid out in splits (train/ and test/ or val/, as `dnc write-folder` writes) is read at its
train/ split, and that is said: read as classes it would be a 2-class list "test"/"train". Exemplars
are recorded as absolute paths, so a set names its images wherever it is moved or served from.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

from dnc.core import centroid_set, preprocess, tasks
from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.core.errors import InputError
from dnc.core.images import SPLIT_NAMES, DataError, class_folders, read_image_array, scan_image_folder, split_layout
from dnc.core.progress import bar
from dnc.core.seg_folder import is_seg_folder
from dnc.core.staging import check_destination, staged
from dnc.export import abstention, runtime
from dnc.export.choose_k import choose
from dnc.export.clustering import cluster
from dnc.export.head_graph import build_head

log = logging.getLogger(__name__)


def choose_split(data: str | Path, split: str = "train") -> tuple[Path, str | None]:
    """The folder of class folders to read from `data`, and a sentence saying which split that is when
    `data` is laid out in splits (DIR/train and DIR/test or DIR/val, as `dnc write-folder` writes and
    `dnc train` reads): without it such a folder would read as a class list of "test" and "train".
    split: "train", or "test" for the held-out split (test/, else val/ or validation/)."""
    root = Path(data)
    seg = next((p for p in (root, *root.resolve().parents) if is_seg_folder(p)), None)
    if seg is not None:
        raise DataError(f"{root} is part of the segmentation folder {seg}; give `data` {seg} (with a segmenter's "
                        "embed.onnx: its images and masks are read together)")
    inner = sorted(d for d in root.iterdir() if d.is_dir() and is_seg_folder(d)) if root.is_dir() else []
    if inner:
        raise DataError(f"{root} is not a segmentation folder but holds {len(inner)}: give one of them as `data`, "
                        f"e.g. {inner[0]}")
    layout = split_layout(root) if root.is_dir() else None
    if layout is None:
        return root, None
    order = ("train",) if split == "train" else ("test", "val", "validation")
    pick = next((layout[s] for s in order if s in layout), None)
    if pick is None:
        raise DataError(f"{root} has no {split} split ({'/, '.join(sorted(layout))}/ only)")
    shown = sorted(layout, key=lambda s: SPLIT_NAMES.index(s))  # train/ first, as the layout is named
    note = f"{root} has {' and '.join(f'{layout[s].name}/' for s in shown)} splits: using {pick}"
    log.info("%s", note)
    return pick, note


def scan_labelled_folder(root: str | Path, split: str | None = None) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, files, labels (N,)) of a one-subfolder-per-class folder, files as absolute paths (a
    set names them as exemplars, and they must stay meaningful wherever it is used). With `split`, a
    folder laid out in splits is read at that split (`choose_split`); without, such a folder is refused,
    naming the split folders to give. Refuses a folder with fewer than two classes, a class folder
    without images or that is no class (training/images.check_class_folder), naming it. Files are not
    opened here: an unreadable one is named when it is read."""
    root = Path(root)
    if split is not None:
        root, _ = choose_split(root, split)
    elif root.is_dir() and (layout := split_layout(root)):
        raise DataError(f"{root} is laid out in splits ({', '.join(f'{p.name}/' for p in layout.values())}), not "
                        f"classes: give the split to read, e.g. {next(iter(layout.values()))}")
    classes = class_folders(root)
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class subfolder(s) {classes}; a class list needs at least two")
    classes, paths, labels = scan_image_folder(root.resolve(), on_bad="error", verify=False)
    return classes, [Path(p) for p in paths], np.asarray(labels)


def embed_files(sess, files: list[Path], prep: dict, batch_size: int = 256, threads: int = 2,
                desc: str = "embed") -> np.ndarray:
    """Read and embed image files: (N, D) float32. An unreadable file raises DataError naming it."""
    p = preprocess.typed(prep)
    read = lambda f: read_image_array(f, p.channels, p.image_size)  # noqa: E731
    out = []
    with ThreadPoolExecutor(max(1, threads)) as pool, bar(total=len(files), desc=desc, unit="img") as shown:
        for i in range(0, len(files), batch_size):
            batch = np.stack(list(pool.map(read, files[i:i + batch_size])))  # (B, C, H, W) uint8
            out.append(runtime.embed(sess, batch, prep, batch_size))
            shown.update(len(batch))
    return np.concatenate(out)


def class_subcentroids(xc: np.ndarray, k: int, method: str, seed: int, keep_means: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One class's (N, D) embeddings -> its (k, D) unit sub-centroids and, for each, the index of the
    distinct image anchoring it (whose embedding replaces the cluster mean unless `keep_means`)."""
    cc, _ = cluster(xc, k, method, seed=seed)
    near = nearest_distinct(cc, xc)
    return (cc if keep_means else xc[near] / np.linalg.norm(xc[near], axis=1, keepdims=True)), near


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


ALL = "all"  # K: every image of a class is a sub-centroid (the head is then 1-nearest-neighbour, cosine)
AUTO = "auto"  # K: each class's candidate, chosen on held-out images (choose_k)
AUTO_CANDIDATES = (1, 4, 16, 64, ALL)
HELD_OUT = 0.2  # the share of each class's images `auto` holds out


def choose_k(x: np.ndarray, labels: np.ndarray, method: str, seed: int) -> tuple[list, dict]:
    """`--K auto`: hold out HELD_OUT of each class's (N, D) embeddings (seeded), build each class's
    sub-centroids with every candidate K from the rest, and choose each class's K on the held-out images
    (export/choose_k.py: top-1). Returns (K per class, {"single": {candidate: held-out top-1 % with it for
    every class}, "per_class": held-out top-1 % of the choice})."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        held[members[:int(len(members) * HELD_OUT)]] = True
    if not held.any() or held.all():
        raise InputError("`K` auto needs classes of several images: some to build from, some to hold out")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    tables = {}
    for cand in AUTO_CANDIDATES:
        best = np.full((int(held.sum()), len(np.unique(labels))), -np.inf)  # (held, C) max-over-K cosine
        for c in np.unique(labels):
            fit = np.flatnonzero((labels == c) & ~held)
            if cand == ALL or len(fit) <= cand:
                cents = unit[fit]
            else:
                cents, _ = class_subcentroids(x[fit], cand, method=method, seed=seed + int(c), keep_means=False)
            best[:, c] = (unit[held] @ cents.T).max(1)
        tables[cand] = best
    truth = labels[held]
    ks, scores = choose(tables, lambda pred: float((pred == truth).mean()), scored=np.unique(truth).tolist())
    log.info("K auto: held-out top-1 with one K for all %s; chose %s per class (%.2f%%)", scores["single"], ks,
             scores["per_class"])
    return ks, scores


def compute_set(embed_path: str | Path, data: str | Path, out: str | Path, k: int | str = 4, method: str = "sinkhorn",
                keep_means: bool = False, batch_size: int = 256, threads: int = 0, seed: int = 0,
                split: str = "train", accept: float = abstention.DEFAULT_ACCEPT,
                calibration_share: float = abstention.DEFAULT_SHARE) -> dict:
    """Compute and write a centroid set (and its head.onnx) for the classes of an image folder.

    Args:
        embed_path: an exported embed.onnx (its metadata gives the preprocessing).
        data: one subfolder per class, or train/ and test/ (or val/) each holding them: then `split` is read
            ("train", or "test" for the held-out split), and the summary's `split_note` says so.
        out: the set folder to write.
        k: sub-centroids per class (fewer for classes with fewer images), or "all": every image of a class is
            one of its sub-centroids, with no clustering (the served head is then 1-nearest-neighbour over
            the folder; its size grows with the images). method: sinkhorn or kmeans.
        keep_means: keep the cluster means as sub-centroids (exemplars are still recorded).
        accept, calibration_share: abstention (export/abstention.py): `calibration_share` of each class's
            images is held out before its sub-centroids are made, and its threshold accepts `accept` of them;
            0 holds none out and writes no thresholds.
    Exemplars are recorded as absolute paths, and the folder read as an absolute `source["data"]`, so a
    set names its images wherever it is moved or served from (sets written before name them as given).
    Returns a summary: set id, classes, K per class, the folder read, seconds for embedding and clustering.
    """
    if (k not in (ALL, AUTO) and (not isinstance(k, int) or k < 1)) or batch_size < 1:
        raise InputError(f"`K` must be >= 1, {ALL!r} or {AUTO!r}, and `batch_size` >= 1, got {k!r} and {batch_size}")
    abstention.check_calibration(accept, calibration_share)
    embed_path, out = Path(embed_path), Path(out)
    check_destination(out, F.SET_TENSORS_FILE, refuse_if=(F.MANIFEST_FILE, F.EMBED_FILE))
    sess = runtime.session(embed_path, threads)
    prep = runtime.preprocessing_of(sess, embed_path)
    folder, note = choose_split(data, split)
    runtime.check_task(prep, tasks.CLASSIFICATION, embed_path, data)
    classes, files, labels = scan_labelled_folder(folder)
    t0 = time.time()
    x = embed_files(sess, files, prep=prep, batch_size=batch_size, threads=threads or 2)  # (N, D)
    t_embed = time.time() - t0
    t0 = time.time()
    held = abstention.hold_out(labels, calibration_share, seed)  # (N,) calibration images, never sub-centroids
    fit = np.flatnonzero(~held)  # (N',) indices of the images the sub-centroids are made from
    asked, held_out = k, None
    if k == AUTO:
        k, held_out = choose_k(x[fit], labels[fit], method=method, seed=seed)
    cents, ks, ids = build_classes(x[fit], labels[fit], classes, k, method, seed, keep_means)
    ids = np.where(ids >= 0, fit[np.maximum(ids, 0)], -1)  # dataset ids of the anchoring images
    names = [[str(files[i]) for i in ids[c, :ks[c]]] for c in range(len(classes))]
    t_cluster = time.time() - t0
    cs = CentroidSet(centroids=cents, ks=ks, class_names=classes,
                     embed_fingerprint=centroid_set.fingerprint_file(embed_path), exemplar_ids=ids,
                     exemplar_names=names, source={"from": "images", "data": str(folder.resolve()), "method": method,
                                                   "k": k, "k_asked": asked, "held_out_top1": held_out,
                                                   "keep_means": keep_means, "images": len(files)})
    if held.any():
        cs.thresholds = abstention.calibrate(cs, x[held], labels[held], accept)
        cs.source["calibration"] = {"accept": accept, "share": calibration_share, "seed": seed,
                                    "images": [int(held[labels == c].sum()) for c in range(len(classes))]}
    with staged(out) as tmp:
        centroid_set.save(cs, tmp)
        onnx.save(build_head(cs), tmp / F.HEAD_FILE)
    log.info("centroid set %s: %d classes, %d images -> %s", cs.set_id, len(classes), len(files), out)
    return {"set_id": cs.set_id, "classes": classes, "ks": ks, "k": k, "held_out_top1": held_out,
            "images": len(files), "calibration_images": int(held.sum()),
            "thresholds": None if cs.thresholds is None else [round(float(t), 4) for t in cs.thresholds],
            "data": str(folder), "split_note": note, "embed_seconds": t_embed, "cluster_seconds": t_cluster,
            "out": str(out)}


def build_classes(x: np.ndarray, labels: np.ndarray, classes: list[str], k: int | str | list, method: str, seed: int,
                  keep_means: bool) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Every class's sub-centroids from its (N, D) embeddings: (C, Kmax, D) unit rows (zero padded), K per
    class, (C, Kmax) indices into x of the anchoring images (-1 padded). `k`: one K for every class, or a list
    of each class's (`auto`). A class with fewer images than its K gets one sub-centroid per image (said
    once); K "all": every image is one, with no clustering."""
    n_classes = len(classes)
    counts = [int((labels == c).sum()) for c in range(n_classes)]
    asked = list(k) if isinstance(k, list) else [k] * n_classes  # one K, or each class's (`auto`)
    ks = [n if kc == ALL else min(kc, n) for kc, n in zip(asked, counts, strict=True)]
    cents = np.zeros((n_classes, max(ks), x.shape[1]), np.float32)
    ids = np.full((n_classes, max(ks)), -1, np.int64)
    for c in bar(range(n_classes), desc="cluster", unit="class"):
        members = np.flatnonzero(labels == c)
        if asked[c] == ALL:  # each image its own sub-centroid: nothing to cluster
            near = np.arange(len(members))
            cents[c, :ks[c]] = x[members] / np.linalg.norm(x[members], axis=1, keepdims=True)
        else:
            cents[c, :ks[c]], near = class_subcentroids(x[members], ks[c], method=method, seed=seed + c,
                                                        keep_means=keep_means)
        ids[c, :ks[c]] = members[near]
    fewer = [(classes[c], ks[c], asked[c]) for c in range(n_classes) if asked[c] != ALL and ks[c] < asked[c]]
    if fewer:
        log.warning("classes with fewer images than their K get fewer sub-centroids (class, K, asked): %s", fewer)
    return cents, ks, ids
