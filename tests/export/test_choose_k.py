"""`--K auto`'s per-class choice (export/choose_k.py) on tables with known answers, and the segmentation
held-out split that feeds it (seg_recompute.choose_seg_k) on fresh random cells."""

from __future__ import annotations

import numpy as np

from dnc.export.choose_k import choose


def _top1(truth):
    return lambda pred: float((pred == truth).mean())


def test_each_class_gets_the_k_its_held_out_rows_need_and_ties_go_to_fewer():
    # 3 classes, 4 held-out rows each. Class 0 is answered right only with K=64; class 1 with any K;
    # class 2 only with K=16 or more. Scores are built so the classes never take each other's rows.
    truth = np.repeat([0, 1, 2], 4)
    tables = {}
    for k in (1, 4, 16, 64):
        t = np.full((12, 3), 0.1)
        t[truth == 0, 0] = 0.9 if k == 64 else 0.05
        t[truth == 1, 1] = 0.9
        t[truth == 2, 2] = 0.9 if k >= 16 else 0.05
        tables[k] = t
    ks, scores = choose(tables, _top1(truth))
    assert ks == [64, 1, 16], ks  # class 1: K=1 ties K=64 and has fewer; class 2: the smallest K that answers
    assert scores["single"] == {"1": 33.333, "4": 33.333, "16": 66.667, "64": 100.0}
    assert scores["per_class"] == 100.0


def test_a_class_without_held_out_rows_keeps_the_best_single_k():
    """Class 2 has no held-out row: its column never wins, so every K ties for it. Were it free to move, the
    tie rule would carry it to K=1; it stays at the best single K (64) instead, while class 0, whose rows
    K=1 answers as well, moves down."""
    truth = np.repeat([0, 1], 5)
    rows = {0: [0.9, 0.1, 0.0], 1: {1: [0.1, 0.05, 0.0], 64: [0.1, 0.9, 0.0]}}
    tables = {k: np.array([rows[0] if t == 0 else rows[1][k] for t in truth]) for k in (1, 64)}
    ks, scores = choose(tables, _top1(truth), scored=[0, 1])
    assert scores["single"] == {"1": 50.0, "64": 100.0}
    assert ks == [1, 64, 64], ks
    ks, _ = choose(tables, _top1(truth))  # (every class scored: the tie carries class 2 down)
    assert ks == [1, 64, 1], ks


def test_the_segmentation_split_chooses_per_class_on_fresh_random_cells():
    """Cells of 40 images: class 0 of 8 tight modes, class 1 of one, class 2 of 8 again; the held-out fifth of
    the images decides, and the one-mode class gets K=1 while the others get many."""
    from dnc.export.seg_recompute import Reservoir, choose_seg_k

    rng = np.random.default_rng(5)
    modes = rng.standard_normal((3, 8, 16))
    pools = []
    for c in range(3):
        n = 40 * 16
        mode = np.zeros(n, int) if c == 1 else rng.integers(0, 8, n)
        x = modes[c, mode] + 0.03 * rng.standard_normal((n, 16))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        meta = np.stack([np.repeat(np.arange(40), 16), np.zeros(n, int), np.zeros(n, int)], 1)
        pools.append(Reservoir.of(x.astype(np.float32), meta))
    ks, scores = choose_seg_k(pools, "kmeans", seed=0)
    assert ks[1] == 1 and ks[0] >= 16 and ks[2] >= 16, (ks, scores)
    assert scores["per_class"] == 100.0 and scores["single"]["1"] < 90
