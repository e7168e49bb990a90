"""The segmentation head graph against an independent float64 reference (tests/training/reference.py)
on fresh random inputs: per-pixel labels, scores, margins and sub-centroids, per-image class evidence,
ragged K whose padding never wins, ties, and the exemplar tables of the served variant."""

import numpy as np
import onnxruntime as ort
import pytest

from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet, CentroidSetError
from dnc.export.seg_head_graph import build_seg_head
from tests.training import reference as ref

FP = "sha256:" + "ab" * 32


def _set(rng, ks=(3, 1, 4, 2, 4), d=12, **kw):
    c, kmax = len(ks), max(ks)
    p = rng.standard_normal((c, kmax, d))
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    p *= (np.arange(kmax)[None] < np.asarray(ks)[:, None])[..., None]
    return CentroidSet(p.astype(np.float32), list(ks), [f"class {i}" for i in range(c)], FP, task="segmentation", **kw)


def _run(model, emb, size):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = sess.run(None, {F.PIXEL_EMBEDDING: emb.astype(np.float32), F.OUTPUT_SIZE: np.array(size, np.int64)})
    return dict(zip(names, out, strict=True))


@pytest.mark.parametrize("cells,size", [((4, 5), (16, 20)), ((7, 3), (29, 10)), ((5, 5), (5, 5)), ((2, 9), (33, 70))])
def test_seg_head_matches_float64_reference(rng, cells, size):
    cs = _set(rng)
    emb = rng.standard_normal((3, 12, *cells)) * rng.uniform(0.5, 3)
    got = _run(build_seg_head(cs), emb, size)
    want = ref.segment(emb, cs.centroids, cs.ks, *size)
    labels = got[F.LABELS].astype(np.int64)
    assert got[F.LABELS].dtype == np.uint8 and labels.shape == (3, *size)
    same = labels == want["labels"]
    assert same.mean() >= 0.999
    np.testing.assert_allclose(got[F.PIXEL_SCORE], want["top_score"], atol=1e-5)
    np.testing.assert_allclose(got[F.PIXEL_MARGIN], want["margin"], atol=1e-5)
    assert np.array_equal(got[F.PIXEL_SUBCENTROID][same], want["subcentroid"][same])
    # per image and class, from the graph's own per-pixel answer (so every image is checked)
    c, kmax = len(cs.ks), max(cs.ks)
    sub = got[F.PIXEL_SUBCENTROID].astype(np.int64)
    for i in range(3):
        count = np.bincount(labels[i].ravel(), minlength=c)
        assert np.array_equal(got[F.CLASS_PIXELS][i], count)
        sums = np.bincount(labels[i].ravel(), weights=got[F.PIXEL_SCORE][i].ravel().astype(np.float64), minlength=c)
        np.testing.assert_allclose(got[F.CLASS_SCORE][i], sums / np.maximum(count, 1), atol=1e-5)
        votes = np.bincount((labels[i] * kmax + sub[i]).ravel(), minlength=c * kmax)
        dom = np.where(count > 0, votes.reshape(c, kmax).argmax(1), -1)
        assert np.array_equal(got[F.CLASS_SUBCENTROID][i], dom)


def test_padding_never_wins_and_ties_go_to_the_lower_index(rng):
    # class 0 has 2 real sub-centroids and 2 padded (zero) slots; class 1 one real sub-centroid. Cells
    # pointing away from both of class 0's (cosines < 0) and further from class 1's: class 0 must win
    # every pixel with a negative score, which a padded slot (cosine 0) would beat if it were not pushed down
    d = 4
    p0 = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    p1 = np.array([[0.6, 0.8, 0, 0]], np.float32)  # farther from the cells than class 0's
    cents = np.zeros((2, 2, d), np.float32)
    cents[0], cents[1, 0] = p0, p1[0]
    cs = CentroidSet(cents, [2, 1], ["a", "b"], FP, task="segmentation")
    cell = np.array([-0.6, -0.5, 0.3, 0.2])
    emb = np.tile(cell[None, :, None, None], (1, 1, 3, 3))
    got = _run(build_seg_head(cs), emb, (6, 6))
    want = ref.segment(emb, cs.centroids, cs.ks, 6, 6)
    assert want["scores"][0, 0].max() < 0 and np.all(want["labels"] == 0)
    assert np.all(got[F.LABELS] == 0) and np.all(got[F.PIXEL_SUBCENTROID] < 2)
    np.testing.assert_allclose(got[F.PIXEL_SCORE], want["top_score"], atol=1e-6)
    # two classes holding the same sub-centroids tie everywhere: the lower class id wins
    same = _set(rng, ks=(4,), d=4).centroids[0]
    tie = CentroidSet(np.stack([same, same]), [4, 4], ["a", "b"], FP, task="segmentation")
    got = _run(build_seg_head(tie), rng.standard_normal((2, 4, 3, 3)), (7, 5))
    assert np.all(got[F.LABELS] == 0) and np.allclose(got[F.PIXEL_MARGIN], 0)
    assert np.all(got[F.CLASS_PIXELS][:, 0] == 35) and np.all(got[F.CLASS_SUBCENTROID][:, 1] == -1)


def test_evidence_tables(rng):
    cs = _set(rng)
    c, kmax = len(cs.ks), max(cs.ks)
    cs.exemplar_ids = np.where(cs.k_mask, rng.integers(0, 1000, (c, kmax)), -1)
    cs.exemplar_yx = np.where(cs.k_mask[..., None], rng.integers(0, 64, (c, kmax, 2)), -1).astype(np.int32)
    cs.exemplar_names = [[f"img{cs.exemplar_ids[i, k]}.png" for k in range(cs.ks[i])] for i in range(c)]
    got = _run(build_seg_head(cs, evidence=True), rng.standard_normal((2, 12, 4, 4)), (12, 12))
    for i in range(2):
        for cls in range(c):
            k = got[F.CLASS_SUBCENTROID][i, cls]
            if k < 0:
                assert got[F.CLASS_EXEMPLAR_ID][i, cls] == -1 and got[F.CLASS_EXEMPLAR][i, cls] == ""
                assert list(got[F.CLASS_EXEMPLAR_YX][i, cls]) == [-1, -1]
            else:
                assert got[F.CLASS_EXEMPLAR_ID][i, cls] == cs.exemplar_ids[cls, k]
                assert list(got[F.CLASS_EXEMPLAR_YX][i, cls]) == list(cs.exemplar_yx[cls, k])
                assert got[F.CLASS_EXEMPLAR][i, cls] == f"img{cs.exemplar_ids[cls, k]}.png"
        assert list(got[F.CLASS_LABEL][i]) == cs.class_names
        assert got[F.SET_ID][i] == cs.set_id


def test_a_classification_set_is_refused(rng):
    cs = _set(rng)
    cs.task = "classification"
    with pytest.raises(CentroidSetError, match="is a classification set; a segmenter needs one made from masks"):
        build_seg_head(cs)


def test_a_segmentation_set_is_refused_by_the_classification_head(rng):
    from dnc.export.head_graph import build_head

    with pytest.raises(CentroidSetError, match="is a segmentation set .*a classifier needs one made from labelled"):
        build_head(_set(rng))
