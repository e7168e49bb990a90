"""`dnc centroids` on a segmentation folder: a segmentation centroid set from masks and embed.onnx only.

No PyTorch here. Each image of the split is read at its own size, embedded with onnxruntime (cell
embeddings at the model's stride), and each cell is labelled by the mask pixel it stands for (nearest
neighbour, as training labels cells; pixels at the ignore index label nothing). A seeded, bounded
sample of cells per class is kept (at most `per_image` of a class from one image, at most
`pixels_per_class` in all: a uniform reservoir over the split), each class is clustered into K
sub-centroids with the training rule (export.clustering), and each sub-centroid is anchored to its
nearest sampled cell (distinct per class): the exemplar is that cell's pixel, (image, y, x). By default
the sub-centroid becomes that cell's embedding (paper section 4.3), so every class's evidence points at
a real pixel. The set (task "segmentation") and its head.onnx are written to OUT together. The split
read (train unless told) is said, since a FashionScenes folder holds both; exemplar images are recorded
as absolute paths. Abstention thresholds (export/abstention.py) are calibrated on the cells of a share of
the images (`calibration_share`, seeded) that give no cell to the sub-centroids: each class's threshold
accepts `accept` of its held-out cells' scores (cell cosines: the served pixel score is their bilinear
interpolation). `k` "auto" builds each class's sub-centroids with each of SEG_AUTO_CANDIDATES from the
sampled cells of four fifths of the images and chooses each class's K on the cells of the other fifth
(export/choose_k.py; mean per-class accuracy). A segmentation set holds at most 255
sub-centroids per class (its sub-centroid maps are uint8), so there is no "all".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from dnc.core import centroid_set, preprocess, tasks
from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.core.errors import InputError
from dnc.core.images import DataError
from dnc.core.preprocess import normalise
from dnc.core.progress import bar
from dnc.core.seg_folder import (
    IMAGES_DIR,
    SPLITS,
    SegClasses,
    check_mask_values,
    read_classes,
    read_pair,
    split_files,
)
from dnc.core.staging import check_destination, staged
from dnc.export import abstention, runtime
from dnc.export.choose_k import choose
from dnc.export.clustering import cluster
from dnc.export.recompute import AUTO, HELD_OUT, nearest_distinct
from dnc.export.seg_head_graph import MAX_LABEL, build_seg_head

log = logging.getLogger(__name__)

SEG_AUTO_CANDIDATES = (1, 4, 16, 64, MAX_LABEL)  # `k` auto's choices: up to the most a uint8 map can name


def check_segmentation_graph(sess, path: str | Path) -> dict:
    """The preprocessing of a segmenter's embed.onnx; DataError for a classifier's graph."""
    prep = runtime.preprocessing_of(sess, path)
    runtime.check_task(prep, tasks.SEGMENTATION, path, "a segmentation folder")
    return prep


def split_note(root: Path, split: str) -> str:
    """The sentence saying which split of a segmentation folder a set is made from: `dnc write-scenes` writes
    train and test scenes side by side, and only one of them may become the class list."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of segmentation folder {root}; use one of {', '.join(SPLITS)}")
    return f"{root} is a segmentation folder: using its {split} split ({root / IMAGES_DIR / split})"


def cell_pixels(size: tuple[int, int], cells: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pixel each cell stands for, as training reads it (training/segmenter.py's cell_pixels, here
    without torch): the first pixel whose centre lies in the cell, ceil(i * H / h - 0.5)."""
    (hh, ww), (h, w) = size, cells
    rows = np.clip(np.ceil(np.arange(h) * hh / h - 0.5), 0, hh - 1).astype(np.int64)
    cols = np.clip(np.ceil(np.arange(w) * ww / w - 0.5), 0, ww - 1).astype(np.int64)
    return rows, cols


def embedded_scenes(sess, root: Path, split: str, prep: dict, classes: SegClasses, desc: str
                    ) -> Iterator[tuple[int, Path, np.ndarray, np.ndarray]]:
    """Yield (image index, path, cell embeddings (D, h, w), mask (H, W) uint8) for each image of a split,
    each embedded at its own size. DataError names a file that cannot be read or holds a bad mask."""
    pairs = split_files(root, split)
    channels = preprocess.typed(prep).channels
    for i, (ip, mp) in enumerate(bar(pairs, desc=desc, unit="img")):
        image, mask = read_pair(ip, mp, 0, channels)  # (C, H, W), (H, W)
        check_mask_values(mask, classes, mp)
        emb = sess.run([F.PIXEL_EMBEDDING], {F.IMAGES: normalise(image[None], prep)})[0][0]  # (D, h, w)
        yield i, ip, emb, mask


class Reservoir:
    """A uniform random sample of at most `cap` rows, kept by smallest random key (seeded)."""

    def __init__(self, cap: int, dim: int, rng: np.random.Generator):
        self.cap, self.rng = cap, rng
        self.x = np.zeros((0, dim), np.float32)
        self.meta = np.zeros((0, 3), np.int64)  # image, y, x
        self.keys = np.zeros(0)

    @classmethod
    def of(cls, x: np.ndarray, meta: np.ndarray) -> Reservoir:
        """A full reservoir holding exactly these rows (its keys are never drawn on)."""
        r = cls(len(x), x.shape[1], np.random.default_rng(0))
        r.x, r.meta, r.keys = x, meta, np.zeros(len(x))
        return r

    def add(self, x: np.ndarray, meta: np.ndarray) -> None:
        keys = np.concatenate([self.keys, self.rng.random(len(x))])
        xs, ms = np.concatenate([self.x, x]), np.concatenate([self.meta, meta])
        keep = np.argsort(keys, kind="stable")[:self.cap]
        self.x, self.meta, self.keys = xs[keep], ms[keep], keys[keep]


def sample_cells(scenes, c: int, rng: np.random.Generator, per_image: int, pixels_per_class: int,
                 held_rng: np.random.Generator, share: float) -> tuple[list[Reservoir], list[Reservoir], list[str]]:
    """Each class's sampled cells from embedded scenes (i, path, (D, h, w) embedding, mask): at most
    `per_image` of a class from one image, a uniform reservoir of `pixels_per_class`; an image is held out
    (its cells go to the calibration reservoirs) with probability `share` (held_rng). Returns (the
    sub-centroids' reservoirs, the calibration reservoirs, the image paths in order)."""
    pools: list[Reservoir] = []
    held: list[Reservoir] = []
    names: list[str] = []
    for i, path, emb, mask in scenes:
        d, h, w = emb.shape
        if not pools:
            pools = [Reservoir(pixels_per_class, d, rng) for _ in range(c)]
            held = [Reservoir(pixels_per_class, d, rng) for _ in range(c)]
        target = held if held_rng.random() < share else pools
        names.append(str(path.resolve()))
        rows, cols = cell_pixels(mask.shape, (h, w))
        lab = mask[rows][:, cols]  # (h, w)
        cells = emb.transpose(1, 2, 0)  # (h, w, D)
        norms = np.linalg.norm(cells, axis=2)  # (h, w)
        for cls in np.unique(lab):
            if cls >= c:  # the ignore index
                continue
            ys, xs = np.nonzero((lab == cls) & (norms > 0))  # a zero cell has no direction: no cosine to keep
            pick = rng.permutation(len(ys))[:per_image]
            x = cells[ys[pick], xs[pick]] / norms[ys[pick], xs[pick], None]
            target[cls].add(x.astype(np.float32), np.stack([np.full(len(pick), i), rows[ys[pick]], cols[xs[pick]]], 1))
    return pools, held, names


def calibrate(cs: CentroidSet, held: list[Reservoir], accept: float, share: float) -> None:
    """Each class's threshold from the cells of the held-out images (export/abstention.py), in place."""
    cs.thresholds = np.array([abstention.class_threshold(cs.centroids[j, :cs.ks[j]], held[j].x, accept)
                              for j in range(cs.num_classes)], np.float32)
    cs.source["calibration"] = {"accept": accept, "share": share, "cells": [len(r.x) for r in held]}
    none = [cs.class_names[j] for j in range(cs.num_classes) if len(held[j].x) == 0]
    if none:
        log.warning("no held-out cell to calibrate the threshold of %s: it accepts every pixel it wins",
                    ", ".join(map(repr, none)))


def pool_subcentroids(pool: Reservoir, k: int, method: str, seed: int, keep_means: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One class's sampled cells -> its (k', D) unit sub-centroids (k' = min(k, cells)) and, for each, the
    (image, y, x) of the distinct cell anchoring it (whose embedding replaces the mean unless `keep_means`)."""
    x = pool.x
    cc, _ = cluster(x, k, method, seed=seed)
    near = nearest_distinct(cc, x)
    return (cc if keep_means else x[near] / np.linalg.norm(x[near], axis=1, keepdims=True)), pool.meta[near]


def choose_seg_k(pools: list[Reservoir], method: str, seed: int) -> tuple[list[int], dict]:
    """`k` auto: hold out the cells of HELD_OUT of the images (seeded, whole images, since a picture's cells are
    alike), build each class's sub-centroids with every candidate from the rest, and choose each class's K on
    the held-out cells (export/choose_k.py: mean per-class accuracy, so that no class's sample size weighs).
    A class whose cells all fall in held-out images builds from them, and a class with no held-out cell keeps
    the best single K; neither is scored. Returns
    (K per class, {"single": {candidate: held-out % with it for every class}, "per_class": % of the choice})."""
    images = np.unique(np.concatenate([p.meta[:, 0] for p in pools]))
    held_images = np.random.default_rng([seed, 2]).permutation(images)[:int(len(images) * HELD_OUT)]
    held = [np.isin(p.meta[:, 0], held_images) for p in pools]
    scored = [j for j, h in enumerate(held) if h.any() and not h.all()]
    if not scored:
        raise InputError(f"`K` auto holds out the cells of {HELD_OUT:.0%} of the images, and no class is seen both in "
                         f"those and in the others ({len(images)} images sampled; it needs at least "
                         f"{int(np.ceil(1 / HELD_OUT))}, with each class in several): give a number instead")
    fit = [Reservoir.of(p.x[~h] if not h.all() else p.x, p.meta[~h] if not h.all() else p.meta)
           for p, h in zip(pools, held, strict=True)]
    test = np.concatenate([pools[j].x[held[j]] for j in scored])  # (M, D) unit cells
    truth = np.concatenate([np.full(int(held[j].sum()), j) for j in scored])
    tables = {cand: np.stack([(test @ pool_subcentroids(f, cand, method, seed + j, False)[0].T).max(1)
                              for j, f in enumerate(fit)], 1)  # (M, C) max-over-K cosine
              for cand in SEG_AUTO_CANDIDATES}
    ks, scores = choose(tables, lambda pred: float(np.mean([(pred[truth == j] == j).mean() for j in scored])),
                        scored=scored)
    log.info("K auto: held-out mean per-class cell accuracy with one K for all %s; chose %s per class (%.2f%%)",
             scores["single"], ks, scores["per_class"])
    return ks, scores


def check_seg_k(k: int | str) -> None:
    """A segmentation set's K: 1 to MAX_LABEL, or auto; InputError naming the cap otherwise."""
    if k == AUTO or (isinstance(k, int) and 1 <= k <= MAX_LABEL):
        return
    raise InputError(f"`K` {k!r}: a segmentation set holds 1 to {MAX_LABEL} sub-centroids per class (its sub-centroid "
                     f"maps are uint8); give a number in that range or {AUTO!r}")


def compute_seg_set(embed_path: str | Path, data: str | Path, out: str | Path, k: int = 10, method: str = "sinkhorn",
                    keep_means: bool = False, threads: int = 0, seed: int = 0, split: str = "train",
                    per_image: int = 64, pixels_per_class: int = 4096, accept: float = abstention.DEFAULT_ACCEPT,
                    calibration_share: float = abstention.DEFAULT_SHARE) -> dict:
    """Compute and write a segmentation centroid set (and its head.onnx) from one split of a segmentation
    folder (the training split unless told; the log and the summary's `split_note` say which).

    Exemplars are recorded as absolute image paths, the folder as an absolute `source["data"]`, so a set
    names its pixels wherever it is moved or served from. Returns a summary: set id, classes, K per class,
    sampled cells per class, images, the split read, seconds. `k`: 1 to 255, or "auto" (choose_seg_k).
    """
    check_seg_k(k)
    if per_image < 1 or pixels_per_class < 1:
        raise InputError(f"per-image and per-class samples must be >= 1, got {per_image}, {pixels_per_class}")
    abstention.check_calibration(accept, calibration_share)
    embed_path, out, root = Path(embed_path), Path(out), Path(data)
    check_destination(out, F.SET_TENSORS_FILE, refuse_if=(F.MANIFEST_FILE, F.EMBED_FILE))
    sess = runtime.session(embed_path, threads)
    prep = check_segmentation_graph(sess, embed_path)
    classes = read_classes(root)
    note = split_note(root, split)
    log.info("%s", note)
    c = len(classes.names)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    pools, held, names = sample_cells(embedded_scenes(sess, root, split=split, prep=prep, classes=classes,
                                                      desc="embed"), c, rng, per_image, pixels_per_class,
                                      held_rng=np.random.default_rng([seed, 1]), share=calibration_share)
    t_embed = time.time() - t0
    counts = [len(p.x) for p in pools]
    missing = [classes.names[i] for i in range(c) if counts[i] == 0]
    if missing:
        raise DataError(f"classes {missing} of {root}/classes.json appear in no mask of its {split} split (outside the "
                        f"{calibration_share:.0%} of images held out to calibrate thresholds); every class of a list "
                        "needs labelled pixels")
    t0 = time.time()
    asked, held_out = k, None
    if k == AUTO:
        k, held_out = choose_seg_k(pools, method, seed)
    ks = [min(kc, n) for kc, n in zip(k if isinstance(k, list) else [k] * c, counts, strict=True)]
    kmax, d = max(ks), pools[0].x.shape[1]
    cents = np.zeros((c, kmax, d), np.float32)
    ids = np.full((c, kmax), -1, np.int64)
    yx = np.full((c, kmax, 2), -1, np.int32)
    ex_names: list[list[str | None]] = []
    for cls in bar(range(c), desc="cluster", unit="class"):
        cents[cls, :ks[cls]], meta = pool_subcentroids(pools[cls], ks[cls], method, seed + cls, keep_means)
        ids[cls, :ks[cls]] = meta[:, 0]
        yx[cls, :ks[cls]] = meta[:, 1:]
        ex_names.append([names[j] for j in meta[:, 0]])
    t_cluster = time.time() - t0
    cs = CentroidSet(centroids=cents, ks=ks, class_names=list(classes.names),
                     embed_fingerprint=centroid_set.fingerprint_file(embed_path), exemplar_ids=ids,
                     exemplar_names=ex_names, task=tasks.SEGMENTATION.name, exemplar_yx=yx,
                     source={"from": "masks", "data": str(root.resolve()), "split": split, "method": method, "k": k,
                             "k_asked": asked, "held_out_accuracy": held_out, "keep_means": keep_means,
                             "images": len(names), "cells_per_class": counts, "per_image": per_image, "seed": seed})
    if calibration_share > 0:
        calibrate(cs, held, accept, calibration_share)
    with staged(out) as tmp:
        centroid_set.save(cs, tmp)
        onnx.save(build_seg_head(cs), tmp / F.HEAD_FILE)
    log.info("segmentation centroid set %s: %d classes from %d images -> %s", cs.set_id, c, len(names), out)
    return {"set_id": cs.set_id, "classes": list(classes.names), "ks": ks, "k": k, "held_out_accuracy": held_out,
            "images": len(names), "split": split,
            "split_note": note, "cells_per_class": counts, "embed_seconds": t_embed, "cluster_seconds": t_cluster,
            "thresholds": None if cs.thresholds is None else [round(float(t), 4) for t in cs.thresholds],
            "out": str(out)}
