"""The live-sub-centroid measure and the batched memory clustering, against numpy float64 references
on fresh random inputs."""

import numpy as np
import pytest
import torch

from dnc.training.head import DNCHead
from dnc.training.liveness import LIVE_SHARE, summarise, win_counts
from dnc.training.recluster import kmeanspp_seeds
from dnc.training.recluster import sinkhorn_kmeans as torch_kmeans
from tests.training.reference import live_counts, normalise, sinkhorn_kmeans, sinkhorn_plan


@pytest.mark.parametrize("ks", [[4, 4, 4], [1, 3, 4, 2, 4]])
def test_live_measure_matches_reference(rng, ks):
    c, d, n = len(ks), 8, 400
    head = DNCHead(c, d, k=ks, revive=False)
    # Sub-centroids near each other so that some win rarely: live counts vary between classes.
    base = rng.standard_normal((c, 1, d))
    cent = normalise(base + 0.6 * rng.standard_normal((c, max(ks), d)))
    for cls, k in enumerate(ks):  # one sub-centroid per class points away from the class: dead
        if k > 1:
            cent[cls, k - 1] = normalise(-base[cls, 0] + 0.3 * rng.standard_normal(d))
    cent *= head.k_mask.numpy()[..., None]
    head.centroids.copy_(torch.from_numpy(cent).float())
    labels = rng.integers(0, c, n)
    labels[labels == c - 1] = 0  # the last class has no sample: reported as None
    emb = rng.standard_normal((n, d)) + 2 * base[labels, 0]
    won = head.own_class_winners(torch.from_numpy(emb).float(), torch.from_numpy(labels))
    counts = win_counts(won, torch.from_numpy(labels), c, max(ks))
    got = summarise(counts, head.centroids, head.k_mask)
    ref_live, ref_cos = live_counts(emb, labels, cent, ks, share=LIVE_SHARE)
    assert got["live_per_class"][:-1] == ref_live[:-1].tolist() and got["live_per_class"][-1] is None
    assert any(live < k for live, k in zip(ref_live[:-1], ks, strict=False)), "inputs too easy: nothing dead"
    assert got["live_mean"] == pytest.approx(ref_live[:-1].mean())
    for g, r in zip(got["centroid_cos_per_class"], ref_cos, strict=True):
        assert (g is None and np.isnan(r)) or g == pytest.approx(r, abs=1e-4)
    assert got["k_per_class"] == ks


def test_sinkhorn_kmeans_matches_reference_per_class(rng):
    ks, d, m = [4, 2, 3], 6, 40
    k_mask = torch.arange(4)[None] < torch.tensor(ks)[:, None]
    counts = [40, 25, 33]  # classes with different memory fill
    feats = np.zeros((3, m, d))
    for c, n in enumerate(counts):
        centres = rng.standard_normal((ks[c], d)) * 2
        feats[c, :n] = normalise(centres[rng.integers(0, ks[c], n)] + rng.standard_normal((n, d)))
    mask = torch.arange(m)[None] < torch.tensor(counts)[:, None]
    init = normalise(rng.standard_normal((3, 4, d))) * k_mask.numpy()[..., None]
    got = torch_kmeans(torch.from_numpy(feats).float(), mask, k_mask, torch.from_numpy(init).float(), rounds=8)
    for c, (k, n) in enumerate(zip(ks, counts, strict=True)):
        want = sinkhorn_kmeans(feats[c, :n], init[c, :k], rounds=8, epsilon=0.05, iters=3)
        np.testing.assert_allclose(got[c, :k].double().numpy(), want, atol=1e-4)
        assert (got[c, k:] == 0).all()


def test_kmeanspp_keeps_kept_and_draws_real_samples(rng):
    feats = torch.from_numpy(normalise(rng.standard_normal((2, 30, 5)))).float()
    mask = torch.arange(30)[None] < torch.tensor([30, 12])[:, None]
    k_mask = torch.ones(2, 3, dtype=torch.bool)
    current = torch.nn.functional.normalize(torch.randn(2, 3, 5), dim=-1)
    keep = torch.tensor([[True, False, False], [False, False, False]])
    seeds = kmeanspp_seeds(feats, mask, k_mask, current, keep=keep, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seeds[0, 0], current[0, 0])
    for c, j in [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]:  # each drawn seed is a real (unmasked) sample
        hits = (feats[c][mask[c]] == seeds[c, j]).all(1)
        assert hits.any(), (c, j)
    again = kmeanspp_seeds(feats, mask, k_mask, current, keep=keep, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seeds, again), "same generator seed, different seeds"


def _filled_head(rng, revive_every=3):
    """A K=3 head over 2 classes whose memories hold 3 well-separated modes each (fresh random data)."""
    d = 8
    head = DNCHead(2, d, k=3, memory_size=48, memory_cap=48, revive=True, revive_every=revive_every, seed=7)
    modes = normalise(rng.standard_normal((2, 3, d)))
    x = np.concatenate([normalise(modes[c, rng.integers(0, 3, 48)] + 0.1 * rng.standard_normal((48, d)))
                        for c in range(2)])
    labels = np.repeat([0, 1], 48)
    # Random sub-centroids the encoder has already pulled each class to (its mean direction, jittered):
    # the classes are separated, so the readiness margin lets them be clustered.
    means = normalise(np.stack([x[labels == c].mean(0) for c in range(2)]))
    head.centroids.copy_(torch.from_numpy(normalise(means[:, None] + 0.3 * rng.standard_normal((2, 3, d)))).float())
    return head, modes, torch.from_numpy(x).float(), torch.from_numpy(labels)


def test_batch_margin_matches_reference(rng):
    ks, d, n = [4, 2, 3], 8, 50
    head = DNCHead(3, d, k=ks, revive=True, revive_every=50)
    cent = normalise(rng.standard_normal((3, 4, d))) * head.k_mask.numpy()[..., None]
    head.centroids.copy_(torch.from_numpy(cent).float())
    x, labels = normalise(rng.standard_normal((n, d))), rng.integers(0, 3, n)
    got = float(head.batch_margin(torch.from_numpy(x).float(), torch.from_numpy(labels)))
    best = np.stack([(x @ cent[c, :ks[c]].T).max(1) for c in range(3)], 1)  # (N, C)
    own = best[np.arange(n), labels]
    other = np.where(np.arange(3)[None] == labels[:, None], -np.inf, best).max(1)
    assert abs(got - (own - other).mean()) < 1e-5


def test_first_clustering_waits_for_separated_classes_and_takes_them_all_at_once(rng):
    d = 8
    head = DNCHead(3, d, k=2, memory_size=32, memory_cap=32, revive=True, revive_every=50)
    cent = head.centroids.double().numpy()
    head.schedule(init_step=0)
    def batch(spread):  # 30 samples per class around its first sub-centroid, all counted correct
        labels = np.repeat(np.arange(3), 30)
        x = normalise(cent[labels, 0] + spread * rng.standard_normal((90, d)))
        return torch.from_numpy(x).float(), torch.from_numpy(labels), torch.arange(90), torch.ones(90, dtype=torch.bool)
    # Unseparated (the memories fill, as they do with correctly classified samples, but the batch
    # margin, over every sample, is low): nothing is clustered.
    for _ in range(3):
        head.update(*batch(3.0))
    assert bool((head.memory.count >= head.ready_count).all()) and float(head.ready_margin) < 0.2
    assert not head.initialised.any()
    # Separated: the smoothed margin climbs past READY_MARGIN and every class is clustered in one update.
    steps = 0
    while not head.initialised.any():
        head.update(*batch(0.05))
        steps += 1
        assert steps < 40
    assert steps > 1 and head.initialised.all() and float(head.ready_margin) >= 0.2


def test_first_clustering_waits_for_full_memories_and_leaves_nearly_empty_classes_for_later(rng):
    c, d = 20, 16
    head = DNCHead(c, d, k=2, memory_size=32, memory_cap=32, revive=True, revive_every=50)  # ready_count: 32 samples
    cent = head.centroids.double().numpy()
    head.schedule(init_step=0)

    def push(counts):  # counts[c] samples of class c near its first sub-centroid, all counted correct
        labels = np.repeat(np.arange(c), counts)
        x = normalise(cent[labels, 0] + 0.05 * rng.standard_normal((len(labels), d)))
        head.update(torch.from_numpy(x).float(), torch.from_numpy(labels), torch.arange(len(labels)),
                    torch.ones(len(labels), dtype=torch.bool))

    # 17 classes full, class 17 with one sample, 18 and 19 none: separated, but 17/20 < READY_SHARE.
    push([30] * 17 + [1, 0, 0])
    for _ in range(3):
        push([30] * 17 + [0, 0, 0])
    assert float(head.ready_margin) >= 0.2 and not head.initialised.any()
    # Class 18 fills: 18/20 classes full -> every class with a sample per sub-centroid is clustered now.
    push([0] * 18 + [30, 0])
    push([0] * 18 + [30, 0])
    assert head.initialised.tolist() == [True] * 17 + [False, True, False]
    # Class 17 joins alone once its memory is full; class 19 (never seen) keeps its random sub-centroids.
    before = head.centroids[19].clone()
    push([0] * 17 + [40, 0, 0])
    assert head.initialised.tolist() == [True] * 19 + [False]
    assert torch.equal(head.centroids[19], before)


def test_revive_clusters_memory_after_the_scheduled_step(rng):
    head, modes, x, labels = _filled_head(rng)
    head.schedule(init_step=2)
    random_init = head.centroids.clone()
    ones = torch.ones(len(labels), dtype=torch.bool)
    head.update(x, labels, torch.arange(len(labels)), ones)  # update 1: before init_step, momentum only
    assert not head.initialised.any()
    head.update(x, labels, torch.arange(len(labels)), ones)  # update 2: memories full -> clustered
    assert head.initialised.all() and int(head.updates) == 2
    # Each class's sub-centroids now sit on its three modes, one each (random vectors did not).
    for c in range(2):
        sim = modes[c] @ head.centroids[c].double().numpy().T  # (modes, K)
        assert sorted(sim.argmax(1).tolist()) == [0, 1, 2] and sim.max(1).min() > 0.95
        assert (modes[c] @ random_init[c].double().numpy().T).max() < 0.95


def test_revive_reseeds_a_dead_sub_centroid_and_keeps_live_ones(rng):
    head, modes, x, labels = _filled_head(rng, revive_every=3)
    head.schedule(init_step=1)
    ones = torch.ones(len(labels), dtype=torch.bool)
    head.update(x, labels, torch.arange(len(labels)), ones)  # clustered at update 1
    # Kill class 1's sub-centroid 2: point it away from every sample of the class.
    head.centroids[1, 2] = -torch.nn.functional.normalize(x[labels == 1].mean(0), dim=0)
    head.wins.zero_()
    head.update(x, labels, torch.arange(len(labels)), ones)  # update 2: no check yet
    assert int(head.revivals.sum()) == 0
    head.update(x, labels, torch.arange(len(labels)), ones)  # update 3: check -> class 1 re-clustered
    assert head.revivals.tolist() == [[0, 0, 0], [0, 0, 1]]
    sim = modes[1] @ head.centroids[1].double().numpy().T
    assert sorted(sim.argmax(1).tolist()) == [0, 1, 2] and sim.max(1).min() > 0.95


@pytest.mark.parametrize("anneal,pace,revived", [(True, 0.2, 0), (True, 0.3, 1), (False, 0.2, 1)])
def test_no_revival_in_the_annealed_tail(rng, anneal, pace, revived):
    """With `anneal`, a dead sub-centroid is not re-seeded once the learning rate is under a quarter of its
    peak (the encoder has no steps left to absorb the jump); without it the pace changes nothing."""
    head, modes, x, labels = _filled_head(rng, revive_every=2)
    head.anneal = anneal
    head.schedule(init_step=1)
    ones = torch.ones(len(labels), dtype=torch.bool)
    head.update(x, labels, torch.arange(len(labels)), ones)  # clustered at update 1
    head.centroids[1, 2] = -torch.nn.functional.normalize(x[labels == 1].mean(0), dim=0)  # dead
    head.wins.zero_()
    head.set_pace(pace)
    head.update(x, labels, torch.arange(len(labels)), ones)  # update 2: a check
    assert int(head.revivals.sum()) == revived


def test_a_dead_sub_centroid_waits_for_a_memory_to_recluster_from(rng):
    head, modes, x, labels = _filled_head(rng, revive_every=2)
    head.schedule(init_step=1)
    ones = torch.ones(len(labels), dtype=torch.bool)
    head.update(x, labels, torch.arange(len(labels)), ones)  # clustered at update 1
    head.centroids[1, 2] = -torch.nn.functional.normalize(x[labels == 1].mean(0), dim=0)  # dead
    head.memory.count[1] = 5  # class 1 was clustered from few samples (>= K) and has not filled its memory since
    head.wins.zero_()
    head.update(x, labels, torch.arange(len(labels)), ~ones)  # update 2: check, nothing to cluster from
    assert int(head.revivals.sum()) == 0 and torch.isfinite(head.centroids).all()


@pytest.mark.parametrize("ks", [[4, 4, 4], [2, 4, 3]])
def test_assignment_loss_matches_reference(rng, ks):
    """Targets: each class's batch samples clustered with its memory (Sinkhorn plan argmax); the loss is
    cross-entropy over the own class's K cosines / T towards them; gradients reach the embeddings."""
    c, d, n, t = len(ks), 6, 40, 0.1
    head = DNCHead(c, d, k=ks, temperature=t, memory_size=30, memory_cap=30, assign_weight=0.5, revive=False)
    cent = normalise(rng.standard_normal((c, max(ks), d))) * head.k_mask.numpy()[..., None]
    head.centroids.copy_(torch.from_numpy(cent).float())
    fill = [30, 11, 0]  # a full memory, a partial one, an empty one
    for cls, m in enumerate(fill):
        if m:
            head.memory.push(torch.from_numpy(normalise(rng.standard_normal((m, d)))).float(),
                             torch.full((m,), cls), torch.arange(m))
    labels = rng.integers(0, c, n)
    emb = torch.from_numpy(rng.standard_normal((n, d))).float().requires_grad_()
    got = head.assignment_loss(emb, torch.from_numpy(labels))
    x = normalise(emb.detach().double().numpy())
    mem = head.memory.feats.double().numpy()
    losses = []
    for i in range(n):
        cls, k = labels[i], ks[labels[i]]
        rows = np.flatnonzero(labels == cls)
        pool = np.concatenate([x[rows], mem[cls, :fill[cls]]])  # batch first, then memory slots
        target = sinkhorn_plan(pool @ cent[cls, :k].T, 0.05, 3).argmax(1)[list(rows).index(i)]
        logits = x[i] @ cent[cls, :k].T / t
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])
    assert float(got.detach()) == pytest.approx(np.mean(losses), rel=1e-4)
    got.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    ce = torch.nn.functional.cross_entropy(head(emb.detach()), torch.from_numpy(labels))
    total = head.loss(emb.detach(), head(emb.detach()), torch.from_numpy(labels))
    assert float(total) == pytest.approx(float(ce) + 0.5 * np.mean(losses), rel=1e-4)
