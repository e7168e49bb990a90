"""Abstention: thresholds, hold-out, and the served heads' accept/unknown decisions against an independent
float64 reference, on fresh random inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.centroid_set import UNCALIBRATED, CentroidSet, CentroidSetError
from dnc.export.abstention import calibrate, class_scores, decide, hold_out
from dnc.export.head_graph import build_head
from dnc.export.seg_head_graph import build_seg_head
from tests.training import reference as ref

FP = "sha256:" + "cd" * 32


def _set(rng, ks=(3, 1, 2, 3), d=8, task="classification", thresholds=None) -> CentroidSet:
    c, kmax = len(ks), max(ks)
    cents = rng.standard_normal((c, kmax, d))
    cents /= np.linalg.norm(cents, axis=2, keepdims=True)
    cents[np.arange(kmax)[None, :] >= np.asarray(ks)[:, None]] = 0.0
    return CentroidSet(centroids=cents.astype(np.float32), ks=list(ks), class_names=[f"c{i}" for i in range(c)],
                       embed_fingerprint=FP, task=task, thresholds=thresholds)


def _ref_scores(cs: CentroidSet, x: np.ndarray) -> np.ndarray:
    """(N, C) float64: each class's best cosine, by loops over the real sub-centroids."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.full((len(x), cs.num_classes), -np.inf)
    for c, k in enumerate(cs.ks):
        for j in range(k):
            out[:, c] = np.maximum(out[:, c], unit @ cs.centroids[c, j].astype(np.float64))
    return out


def test_scores_thresholds_and_decisions_match_a_float64_reference():
    rng = np.random.default_rng(2026)
    cs = _set(rng)
    x = rng.standard_normal((200, 8)) * rng.uniform(0.5, 3, (200, 1))  # unnormalised embeddings
    labels = rng.integers(0, 4, 200)
    want = _ref_scores(cs, x)
    np.testing.assert_allclose(class_scores(cs, x), want, atol=1e-5)
    for accept in (0.95, 0.8, 1.0):
        thr = calibrate(cs, x, labels, accept)
        for c in range(4):
            own = want[labels == c, c]
            assert (own >= thr[c] - 1e-6).mean() >= accept - 1e-9  # at least `accept` of the class clears it ...
            assert (own > thr[c] + 1e-6).mean() < accept  # ... and no larger threshold would keep that share
        best, ok = decide(want.astype(np.float32), thr)
        assert (best == want.argmax(1)).all()
        # the decision, wherever the best score is not within float32 rounding of its threshold (a threshold is
        # one of the class's own scores, computed in float32 by BLAS kernels that round differently per CPU)
        clear = np.abs(want.max(1) - thr[want.argmax(1)]) > 1e-6
        assert clear.mean() > 0.9 and (ok == (want.max(1) >= thr[want.argmax(1)]))[clear].all()


def test_classes_without_held_out_images_accept_everything_and_bad_shares_are_refused():
    rng = np.random.default_rng(3)
    cs = _set(rng)
    x = rng.standard_normal((10, 8))
    thr = calibrate(cs, x, np.zeros(10, int))  # classes 1-3 have no held-out image
    assert thr[0] > UNCALIBRATED and (thr[1:] == UNCALIBRATED).all()
    with pytest.raises(ValueError, match="share"):
        calibrate(cs, x, np.arange(10) % 4, accept=0)


def test_hold_out_takes_the_share_of_each_class_never_all_and_is_seeded():
    labels = np.repeat(np.arange(5), [1, 2, 5, 10, 101])
    held = hold_out(labels, 0.2, seed=4)
    assert [int(held[labels == c].sum()) for c in range(5)] == [0, 1, 1, 2, 20]
    assert np.array_equal(held, hold_out(labels, 0.2, seed=4))
    assert not np.array_equal(held, hold_out(labels, 0.2, seed=5))
    assert not hold_out(labels, 0.0, seed=4).any()


def test_the_served_classification_head_decides_as_the_reference(rng):
    cs = _set(rng, ks=(3, 1, 4, 2, 4), d=12)
    x = rng.standard_normal((300, 12)) * rng.uniform(0.5, 3)
    want = _ref_scores(cs, x)
    cs.thresholds = np.quantile(want, 0.7, axis=0).astype(np.float32)  # fresh thresholds: many of each decision
    cs.thresholds[2] = UNCALIBRATED
    sess = ort.InferenceSession(build_head(cs, top_k=3).SerializeToString(), providers=["CPUExecutionProvider"])
    known, thr, pred = sess.run([F.KNOWN, F.THRESHOLD, F.PREDICTED], {F.EMBEDDING: x.astype(np.float32)})
    best = want.argmax(1)
    assert np.array_equal(pred, best)
    np.testing.assert_array_equal(thr, cs.thresholds[best])
    expect = want.max(1) >= cs.thresholds[best].astype(np.float64)
    close = np.abs(want.max(1) - cs.thresholds[best]) < 1e-5  # float32 rounding may fall either side
    assert np.array_equal(known[~close], expect[~close]) and 0.2 < expect.mean() < 0.9
    assert known[best == 2].all()
    off = sess.run([F.KNOWN], {F.EMBEDDING: x.astype(np.float32), F.ABSTAIN: np.array([False])})[0]
    assert off.all()
    on = sess.run([F.KNOWN], {F.EMBEDDING: x.astype(np.float32), F.ABSTAIN: np.array([True])})[0]
    assert np.array_equal(on, known)


@pytest.mark.parametrize("cells,size", [((4, 5), (16, 20)), ((3, 7), (13, 29))])
def test_the_served_segmentation_head_labels_unknown_pixels_as_the_reference(rng, cells, size):
    cs = _set(rng, ks=(3, 1, 4, 2, 4), d=12, task="segmentation")
    emb = rng.standard_normal((3, 12, *cells)) * rng.uniform(0.5, 3)
    want = ref.segment(emb, cs.centroids, cs.ks, *size)
    cs.thresholds = np.array([np.quantile(want["top_score"][want["labels"] == c], 0.5) if (want["labels"] == c).any()
                              else 0.0 for c in range(5)], np.float32)
    cs.thresholds[1] = UNCALIBRATED
    sess = ort.InferenceSession(build_seg_head(cs, evidence=True).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feeds = {F.PIXEL_EMBEDDING: emb.astype(np.float32), F.OUTPUT_SIZE: np.array(size, np.int64)}
    got = dict(zip(names, sess.run(None, feeds), strict=True))
    best = want["labels"]
    unknown = want["top_score"] < cs.thresholds[best].astype(np.float64)
    sure = np.abs(want["top_score"] - cs.thresholds[best]) > 1e-5  # away from float32 ties
    labels = got[F.LABELS].astype(np.int64)
    expect = np.where(unknown, F.UNKNOWN_LABEL, best)
    assert (labels[sure] == expect[sure]).mean() >= 0.999 and 0.1 < unknown.mean() < 0.9
    assert (best == 1).any() and not (labels[best == 1] == F.UNKNOWN_LABEL).any()  # uncalibrated: never unknown
    for i in range(3):
        assert got[F.UNKNOWN_PIXELS][i] == (labels[i] == F.UNKNOWN_LABEL).sum()
        count = np.bincount(labels[i][labels[i] != F.UNKNOWN_LABEL].ravel(), minlength=5)
        assert np.array_equal(got[F.CLASS_PIXELS][i], count)  # unknown pixels count in no class
        assert got[F.CLASS_PIXELS][i].sum() + got[F.UNKNOWN_PIXELS][i] == size[0] * size[1]
    feeds[F.ABSTAIN] = np.array([False])
    off = dict(zip(names, sess.run(None, feeds), strict=True))
    assert (off[F.UNKNOWN_PIXELS] == 0).all() and (off[F.LABELS].astype(np.int64) == best).mean() >= 0.999
    plain = ort.InferenceSession(build_seg_head(cs).SerializeToString(), providers=["CPUExecutionProvider"])
    del feeds[F.ABSTAIN]  # the export's head (evaluation, mIoU) has no abstention
    assert (plain.run([F.LABELS], feeds)[0].astype(np.int64) == best).mean() >= 0.999


def test_sets_carry_thresholds_in_their_id_and_bad_thresholds_are_refused(rng, tmp_path):
    cs = _set(rng)
    plain_id = cs.set_id
    cs.thresholds = np.array([0.1, 0.2, -1.0, 0.9], np.float32)
    with_id = cs.set_id
    assert with_id != plain_id
    centroid_set.save(cs, tmp_path / "s")
    back = centroid_set.load(tmp_path / "s")
    assert back.set_id == with_id and np.array_equal(back.thresholds, cs.thresholds)
    cs.thresholds = np.array([0.1, 0.2, -1.0, 0.95], np.float32)
    assert cs.set_id != with_id
    for bad, why in ((np.array([0.1, np.nan, 0.2, 0.3], np.float32), "finite"),
                     (np.array([0.1, 0.2, 1.5, 0.3], np.float32), r"\[-1, 1\]"),
                     (np.array([0.1, 0.2, 0.3], np.float32), "shape"),
                     (np.array([0.1, 0.2, 0.3, 0.4]), "float32")):
        cs.thresholds = bad
        with pytest.raises(CentroidSetError, match=why):
            centroid_set.save(cs, tmp_path / "bad")
    # a set file whose thresholds were changed afterwards is refused when read
    from safetensors import safe_open
    from safetensors.numpy import save_file

    file = tmp_path / "s" / F.SET_TENSORS_FILE
    with safe_open(str(file), framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["thresholds"] = np.array([0.1, 0.2, 3.0, 0.9], np.float32)
    save_file(tensors, str(file), metadata=meta)
    with pytest.raises(CentroidSetError, match="threshold of class 2"):
        centroid_set.load(tmp_path / "s")
