"""Offline clustering for `dnc centroids`: the same Sinkhorn rule as training, checked in float64."""

import numpy as np
import pytest
import torch

from dnc.export.clustering import cluster, sinkhorn_log_plan
from dnc.training.sinkhorn import sinkhorn_log
from tests.training.reference import normalise, sinkhorn_plan


def test_plan_matches_float64_reference_and_training(rng):
    x, p = normalise(rng.standard_normal((50, 8))), normalise(rng.standard_normal((4, 8)))
    sim = x @ p.T
    plan = np.exp(sinkhorn_log_plan(sim, 0.05, 3))
    np.testing.assert_allclose(plan, sinkhorn_plan(sim, 0.05, 3), atol=1e-9)
    ones = torch.ones
    trained = sinkhorn_log(torch.from_numpy(sim)[None].float(), ones(1, 50, dtype=torch.bool),
                           ones(1, 4, dtype=torch.bool), 0.05, 3).exp()[0].numpy()
    np.testing.assert_allclose(plan, trained, atol=1e-4)


def test_extreme_similarities_stay_finite():
    sim = np.array([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, -1.0, 1.0]])
    log_plan = sinkhorn_log_plan(sim, 0.001, 5)
    assert np.isfinite(log_plan).all()
    np.testing.assert_allclose(np.exp(log_plan).sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("method", ["sinkhorn", "kmeans"])
def test_recovers_separated_modes(rng, method):
    modes = normalise(rng.standard_normal((3, 16))) * 4
    truth = np.repeat(np.arange(3), 40)
    x = modes[truth] + 0.3 * rng.standard_normal((120, 16))
    cents, assign = cluster(x, 3, method, seed=1)
    assert cents.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, atol=1e-5)
    # Each true mode maps to exactly one cluster.
    for m in range(3):
        assert len(set(assign[truth == m])) == 1
    assert len(set(assign)) == 3


def test_fewer_samples_than_k(rng):
    cents, assign = cluster(rng.standard_normal((2, 5)), 4)
    assert cents.shape == (2, 5) and sorted(assign) == [0, 1]
    with pytest.raises(ValueError, match="empty class"):
        cluster(np.zeros((0, 5)), 4)
    with pytest.raises(ValueError, match="unknown clustering method"):
        cluster(rng.standard_normal((4, 5)), 2, "dbscan")
