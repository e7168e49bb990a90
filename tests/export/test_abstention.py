"""Abstention thresholds and decisions against an independent float64 reference, on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dnc.core.centroid_set import CentroidSet
from dnc.export.abstention import calibrate, class_scores, decide


def _set(rng, c=4, kmax=3, d=8) -> CentroidSet:
    cents = rng.standard_normal((c, kmax, d))
    cents /= np.linalg.norm(cents, axis=2, keepdims=True)
    ks = [kmax, 1, 2, kmax][:c]
    cents[np.arange(kmax)[None, :] >= np.asarray(ks)[:, None]] = 0.0
    return CentroidSet(centroids=cents.astype(np.float32), ks=ks, class_names=[f"c{i}" for i in range(c)],
                       embed_fingerprint="sha256:test")


def test_scores_thresholds_and_decisions_match_a_float64_reference():
    rng = np.random.default_rng(2026)
    cs = _set(rng)
    x = rng.standard_normal((200, 8)) * rng.uniform(0.5, 3, (200, 1))  # unnormalised embeddings
    labels = rng.integers(0, 4, 200)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = np.full((200, 4), -np.inf)
    for c, k in enumerate(cs.ks):
        for j in range(k):
            ref[:, c] = np.maximum(ref[:, c], unit @ cs.centroids[c, j].astype(np.float64))
    np.testing.assert_allclose(class_scores(cs, x), ref, atol=1e-5)
    for accept in (0.95, 0.8, 1.0):
        thr = calibrate(cs, x, labels, accept)
        for c in range(4):
            own = ref[labels == c, c]
            share = (own >= thr[c] - 1e-6).mean()
            assert share >= accept - 1e-9  # at least `accept` of the class clears it ...
            above = own[own > thr[c] + 1e-6]
            assert len(above) / len(own) < accept  # ... and no larger threshold would keep that share
        best, ok = decide(ref.astype(np.float32), thr)
        assert (best == ref.argmax(1)).all()
        assert (ok == (ref.max(1) >= thr[ref.argmax(1)])).all()


def test_bad_calibrations_are_refused():
    rng = np.random.default_rng(3)
    cs = _set(rng)
    x = rng.standard_normal((10, 8))
    with pytest.raises(ValueError, match="no held-out images"):
        calibrate(cs, x, np.zeros(10, int))  # classes 1-3 have none
    with pytest.raises(ValueError, match="share"):
        calibrate(cs, x, np.arange(10) % 4, accept=0)
