"""The head graph alone, in onnxruntime, against an independent numpy float64 reference."""

import json

import numpy as np
import onnx
import pytest

from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.export import runtime
from dnc.export.head_graph import PAD_SCORE, build_head
from tests.training.reference import dnc_scores, normalise


def _random_set(rng, ks, d):
    c, kmax = len(ks), max(ks)
    cents = np.zeros((c, kmax, d), np.float32)
    for i, k in enumerate(ks):
        cents[i, :k] = normalise(rng.standard_normal((k, d)))
    return CentroidSet(cents, list(ks), [f"class-{i}" for i in range(c)], "sha256:" + "0" * 64)


def _run(cs, emb):
    sess = runtime.session(build_head(cs).SerializeToString(), 1)
    names = [s.name for s in F.HEAD_OUTPUTS]
    return dict(zip(names, sess.run(names, {F.EMBEDDING: emb.astype(np.float32)}), strict=True))


@pytest.mark.parametrize("ks", [[4] * 7, [4, 1, 3, 2, 4, 1]])
def test_scores_and_evidence_match_float64_reference(rng, ks):
    d = 24
    cs = _random_set(rng, ks, d)
    emb = rng.standard_normal((50, d)) * rng.uniform(0.1, 10, (50, 1))  # not normalised: the head normalises
    out = _run(cs, emb)
    scores, win = dnc_scores(emb, cs.centroids.astype(np.float64), ks)
    np.testing.assert_allclose(out[F.SCORES], scores, atol=1e-5)
    np.testing.assert_array_equal(out[F.SUBCENTROID], win)
    order = np.sort(scores, axis=1)
    np.testing.assert_array_equal(out[F.PREDICTED], scores.argmax(1))
    np.testing.assert_allclose(out[F.TOP_SCORE], order[:, -1], atol=1e-5)
    np.testing.assert_allclose(out[F.MARGIN], order[:, -1] - order[:, -2], atol=1e-5)
    assert out[F.PREDICTED].dtype == np.int32 and out[F.SUBCENTROID].dtype == np.int32
    assert (out[F.SUBCENTROID] < np.asarray(ks)[None, :]).all()


def test_padded_slots_never_win(rng):
    # Every real sub-centroid points away from the embeddings (cosine < 0): a padded zero slot would
    # score 0 and win if it were not pushed below -1.
    d, ks = 8, [3, 1, 2]
    u = normalise(rng.standard_normal(d))
    emb = normalise(u + 0.2 * rng.standard_normal((30, d)))
    cs = _random_set(rng, ks, d)
    for c, k in enumerate(ks):
        cs.centroids[c, :k] = normalise(-u + 0.2 * rng.standard_normal((k, d)))
    out = _run(cs, emb)
    scores, win = dnc_scores(emb, cs.centroids.astype(np.float64), ks)
    assert (scores < 0).all()
    assert (out[F.SUBCENTROID] < np.asarray(ks)[None, :]).all()
    np.testing.assert_allclose(out[F.SCORES], scores, atol=1e-5)
    assert (out[F.SCORES] > PAD_SCORE).all()


def test_ties_pick_the_lowest_index_with_zero_margin(rng):
    # Two classes holding the same sub-centroid, and a class holding one twice: as argmax in numpy/torch.
    d = 6
    cs = _random_set(rng, [2, 2, 2], d)
    cs.centroids[2] = cs.centroids[1]
    cs.centroids[0, 1] = cs.centroids[0, 0]
    out = _run(cs, np.stack([cs.centroids[1, 0], cs.centroids[0, 0]]))
    assert out[F.PREDICTED][0] == 1 and out[F.MARGIN][0] == 0.0
    assert out[F.SUBCENTROID][1, 0] == 0


def test_head_says_which_class_list_it_is(rng):
    cs = _random_set(rng, [2, 2, 2], 4)
    meta = {p.key: p.value for p in build_head(cs).metadata_props}
    assert meta[F.META_SET_ID] == cs.set_id
    assert json.loads(meta[F.META_CLASS_NAMES]) == cs.class_names
    assert meta[F.META_FINGERPRINT] == cs.embed_fingerprint


def test_class_count_is_only_inside_the_head(rng):
    # Two heads with different C accept the same embedding input (N, D): only outputs change width.
    a, b = build_head(_random_set(rng, [2] * 3, 16)), build_head(_random_set(rng, [2] * 11, 16))
    dims = lambda m: [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]  # noqa: E731
    assert dims(a) == dims(b) == ["batch", 16]
    onnx.checker.check_model(b)
    assert _run(_random_set(rng, [2] * 11, 16), rng.standard_normal((5, 16)))[F.SCORES].shape == (5, 11)


def test_head_without_input_normalisation_for_normalised_embeddings(rng):
    # The merged graph's head skips the normalisation its embedding graph already ends in.
    ks = [3, 1, 4, 2]
    cs = _random_set(rng, ks, 12)
    emb = normalise(rng.standard_normal((40, 12)))
    sess = runtime.session(build_head(cs, normalise_input=False).SerializeToString(), 1)
    scores, win = dnc_scores(emb, cs.centroids.astype(np.float64), ks)
    got_scores, got_win = sess.run([F.SCORES, F.SUBCENTROID], {F.EMBEDDING: emb.astype(np.float32)})
    np.testing.assert_allclose(got_scores, scores, atol=1e-5)
    np.testing.assert_array_equal(got_win, win)


@pytest.mark.parametrize(("ks", "top_k", "anchored"), [([4, 1, 3, 2, 4, 1], 3, True), ([2, 2, 2], 5, False)])
def test_served_evidence_matches_float64_reference(rng, ks, top_k, anchored):
    d = 16
    cs = _random_set(rng, ks, d)
    c, kmax = len(ks), max(ks)
    if anchored:  # distinct random ids, names derived from them; padded slots -1
        ids = rng.permutation(1000)[:c * kmax].reshape(c, kmax).astype(np.int64)
        cs.exemplar_ids = np.where(cs.k_mask, ids, -1)
        cs.exemplar_names = [[f"train/{ids[i, j]}.png" for j in range(k)] for i, k in enumerate(ks)]
    emb = rng.standard_normal((40, d))
    sess = runtime.session(build_head(cs, top_k=top_k).SerializeToString(), 1)
    names = [s.name for s in F.EVIDENCE_OUTPUTS]
    out = dict(zip(names, sess.run(names, {F.EMBEDDING: emb.astype(np.float32)}), strict=True))
    scores, win = dnc_scores(emb, cs.centroids.astype(np.float64), ks)  # (N, C)
    k = min(top_k, c)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k) best first
    rows = np.arange(len(emb))[:, None]
    np.testing.assert_array_equal(out[F.TOPK_CLASS], order)
    np.testing.assert_allclose(out[F.TOPK_SCORE], scores[rows, order], atol=1e-5)
    np.testing.assert_array_equal(out[F.TOPK_SUBCENTROID], win[rows, order])
    assert out[F.TOPK_LABEL].tolist() == [[cs.class_names[j] for j in r] for r in order]
    want_ids = (cs.exemplar_ids[order, win[rows, order]] if anchored else np.full(order.shape, -1))
    np.testing.assert_array_equal(out[F.TOPK_EXEMPLAR_ID], want_ids)
    want_names = [[f"train/{i}.png" if i >= 0 else "" for i in r] for r in want_ids]
    assert out[F.TOPK_EXEMPLAR].tolist() == want_names
    assert out[F.SET_ID].tolist() == [cs.set_id] * len(emb)


def test_top_k_must_be_positive(rng):
    with pytest.raises(ValueError, match="top_k"):
        build_head(_random_set(rng, [2, 2], 4), top_k=0)
