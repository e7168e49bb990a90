"""The online centroid update: correct-only masking, Sinkhorn assignment, momentum, renormalisation,
checked against a float64 numpy re-implementation on fresh random inputs."""

import numpy as np
import pytest
import torch

from dnc.training.head import DNCHead
from tests.training.reference import normalise, sinkhorn_plan


def _reference_update(cent, ks, mem_feats, mu, eps, iters):
    """cent (C, K, D) float64; mem_feats: {class: (M, D) normalised rows}. Returns new centroids."""
    new = cent.copy()
    for c, feats in mem_feats.items():
        k = ks[c]
        plan = sinkhorn_plan(feats @ cent[c, :k].T, eps, iters)
        assign = plan.argmax(1)
        for j in range(k):
            sel = feats[assign == j]
            if len(sel):
                new[c, j] = normalise(mu * cent[c, j] + (1 - mu) * sel.mean(0))
    return new


@pytest.mark.parametrize("anneal,pace", [(False, 1.0), (False, 0.3), (True, 0.3), (True, 1.0)])
def test_update_matches_reference_over_several_steps(rng, anneal, pace):
    """With `anneal` the momentum is 1 - (1 - mu) * pace; without it the pace is ignored."""
    ks, d, mu = [3, 1, 4, 2], 6, 0.9
    head = DNCHead(4, d, k=ks, momentum=mu, memory_size=12, memory_cap=5, anneal=anneal, revive=False)
    head.set_pace(pace)
    cent = head.centroids.double().numpy().copy()
    memory = {c: [] for c in range(4)}
    for _ in range(4):
        emb = rng.standard_normal((16, d))
        labels = rng.integers(0, 4, 16)
        # A random ~60% of samples counts as correctly classified.
        correct = rng.random(16) < 0.6
        head.update(torch.from_numpy(emb).float(), torch.from_numpy(labels), torch.arange(16),
                    torch.from_numpy(correct))
        x = normalise(emb.astype(np.float32).astype(np.float64))
        touched = {}
        for c in range(4):
            members = np.nonzero((labels == c) & correct)[0]  # ids are positions here
            kept = sorted(sorted(members, key=lambda i: (int(i) * 2654435761) % 2**32)[:5])
            rows = x[kept]
            if len(rows):
                memory[c] = (memory[c] + list(rows))[-12:]
                touched[c] = np.array(memory[c])
        cent = _reference_update(cent, ks, touched, mu=1 - (1 - mu) * pace if anneal else mu, eps=0.05, iters=3)
        np.testing.assert_allclose(head.centroids.double().numpy(), cent, atol=2e-5)
    norms = head.centroids.norm(dim=-1)[head.k_mask]
    np.testing.assert_allclose(norms.numpy(), 1.0, atol=1e-5)
    assert (head.centroids[~head.k_mask] == 0).all()


def test_incorrect_samples_do_not_update():
    head = DNCHead(3, 4, k=2, momentum=0.5, revive=False)
    before = head.centroids.clone()
    emb, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    head.update(emb, labels, torch.arange(6), torch.zeros(6, dtype=torch.bool))
    assert torch.equal(head.centroids, before)
    assert int(head.memory.count.sum()) == 0
    # One correct sample of class 1 moves only class 1 (one of its sub-centroids).
    head.update(emb, labels, torch.arange(6), torch.tensor([False, False, True, False, False, False]))
    changed = (head.centroids != before).any(-1)
    assert changed[1].sum() == 1 and not changed[0].any() and not changed[2].any()
    assert head.memory.ids[1, 0] == 2


def test_annealed_update_at_zero_pace_moves_nothing(rng):
    """At the end of a schedule (learning rate 0) the sub-centroids stop, memory still fills."""
    head = DNCHead(3, 5, k=2, momentum=0.5, revive=True, revive_momentum=0.5, anneal=True, revive_every=50)
    head.set_pace(0.0)
    before = head.centroids.clone()
    emb, labels = torch.from_numpy(rng.standard_normal((12, 5))).float(), torch.arange(12) % 3
    head.update(emb, labels, torch.arange(12), torch.ones(12, dtype=torch.bool))
    np.testing.assert_allclose(head.centroids.numpy(), before.numpy(), atol=1e-6)  # (renormalised: last bits)
    assert int(head.memory.count.sum()) == 12
    with pytest.raises(ValueError, match="pace"):
        head.set_pace(1.5)
