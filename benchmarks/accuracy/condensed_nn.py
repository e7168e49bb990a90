"""Benchmark (issue 25): can a list keep 1-nearest-neighbour accuracy with fewer sub-centroids?

A `--K all` list is 1-NN over every image of each class (cosine, max over K): accurate, but its head's
cost grows with the images. Hart's condensed nearest neighbour keeps a subset that still answers every
training image as the whole set does: start from one image per class, then pass over the images in a
seeded order and keep each one the kept images answer wrongly, until a pass keeps nothing (here in blocks
of 256 images: each block is answered by the images kept before it). This measures, on one embedding,
how many images that keeps and the test top-1 of 1-NN over them, against 1-NN over all.

    .venv/bin/python benchmarks/accuracy/condensed_nn.py --embed runs/bench-c2f3/s0/dnc/export/embed.onnx \
        --data runs/bench-c2f3/data/fine --out runs/bench-condensed/s0.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dnc.export import runtime
from dnc.export.abstention import unit
from dnc.export.recompute import embed_files, scan_labelled_folder

BLOCK = 256


def nn_top1(bank: np.ndarray, bank_labels: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 % of 1-NN (cosine) over the unit bank rows for unit rows x."""
    pred = np.concatenate([bank_labels[(x[i:i + 2048] @ bank.T).argmax(1)] for i in range(0, len(x), 2048)])
    return float(100 * (pred == labels).mean())


def condense(x: np.ndarray, labels: np.ndarray, seed: int, max_passes: int = 20) -> tuple[np.ndarray, list[int]]:
    """Hart's rule in blocks: (N,) bool of the kept images, and the images kept in each pass."""
    order = np.random.default_rng(seed).permutation(len(x))
    keep = np.zeros(len(x), bool)
    for c in np.unique(labels):
        keep[order[np.flatnonzero(labels[order] == c)[0]]] = True
    added = []
    for _ in range(max_passes):
        n = 0
        for i in range(0, len(order), BLOCK):
            idx = order[i:i + BLOCK]
            idx = idx[~keep[idx]]
            if len(idx):
                store = np.flatnonzero(keep)
                wrong = idx[labels[store[(x[idx] @ x[store].T).argmax(1)]] != labels[idx]]
                keep[wrong] = True
                n += len(wrong)
        added.append(n)
        if n == 0:
            break
    return keep, added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embed", required=True, help="an exported embed.onnx")
    ap.add_argument("--data", required=True, help="a folder with train/ and test/ class folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSON file of the figures")
    a = ap.parse_args()
    sess = runtime.session(a.embed, a.threads)
    prep = runtime.preprocessing_of(sess, a.embed)
    classes, train_files, train_labels = scan_labelled_folder(Path(a.data) / "train")
    test_classes, test_files, test_labels = scan_labelled_folder(Path(a.data) / "test")
    test_labels = np.array([classes.index(test_classes[c]) for c in test_labels])
    x = unit(embed_files(sess, train_files, prep, threads=a.threads, desc="train"))
    xt = unit(embed_files(sess, test_files, prep, threads=a.threads, desc="test"))
    t0 = time.time()
    keep, added = condense(x, train_labels, a.seed)
    res = {"train_images": len(x), "test_images": len(xt), "one_nn_top1": nn_top1(x, train_labels, xt, test_labels),
           "kept": int(keep.sum()), "kept_share": float(keep.mean()), "passes_added": added,
           "condensed_top1": nn_top1(x[keep], train_labels[keep], xt, test_labels),
           "kept_per_class": {c: int(keep[train_labels == i].sum()) for i, c in enumerate(classes)},
           "condense_seconds": round(time.time() - t0, 1), "embed": a.embed, "seed": a.seed,
           "date": time.strftime("%Y-%m-%d")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "kept_per_class"}))


if __name__ == "__main__":
    main()
