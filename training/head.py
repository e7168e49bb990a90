"""Classification heads: the DNC nearest-sub-centroid head and its parametric softmax twin.

DNC head (paper section 3): embeddings and sub-centroids are L2-normalised, a class scores by its
best sub-centroid (cosine, max over K), logits are those scores divided by an explicit
temperature. The sub-centroid tensor is a buffer, never a parameter: it is estimated from the data
by per-class Sinkhorn clustering and a momentum update, from correctly classified samples only,
held in a bounded per-class memory.

Sub-centroids from data (`revive`, on by default; `--no-revive` is the paper's ablation): random
unit vectors moving at mu = 0.999 need about a thousand steps to reach the data, and meanwhile the
encoder pulls every class onto whichever of its sub-centroids happened to be nearest, so short runs
end with one live sub-centroid per class. With `revive`, after the warm-up (`schedule`), once the
embedding separates the classes (the smoothed margin of whole training batches reaches READY_MARGIN)
and READY_SHARE of the classes hold enough memory, every class's sub-centroids are set at once by
clustering its memory with the update's own Sinkhorn rule (training/recluster.py); afterwards, every
`revive_every` updates, a class whose sub-centroid won under 5% of its training samples since the
last check is re-clustered from its memory, keeping its live sub-centroids as seeds. Until the first
clustering the random, well-separated sub-centroids are the targets that pull the classes apart, and
they move at the paper's mu = 0.999; once clustered from data they move at `revive_momentum` (0.99),
fast enough to follow the embedding. All of it runs on gathered tensors, so every rank does the same;
all of its state is in buffers, so checkpoints resume it exactly. What it does and does not achieve
is measured in docs/BENCHMARKS.md (issue 9): clustered too early (before the classes separate), or
one class alone, training stalls; clustered after, the max-over-K loss pulls a class back towards one
sub-centroid between checks, so liveness is held by the re-clustering, not by the loss.

Annealing (`anneal`, segmenters' default): the sub-centroids move at the pace of the learning rate, a
momentum mu becoming 1 - (1 - mu) * lr / peak lr (`set_pace`, called by the loop every step), and no
dead sub-centroid is re-seeded once the pace is under REVIVE_MIN_PACE. Without it, the sub-centroids
keep moving towards their memories' Sinkhorn means while the encoder, its learning rate near zero at the
end of the schedule, can no longer follow: segmenters' training loss rose in their last epochs and their
mIoU fell (docs/BENCHMARKS.md, issue 11).

Optional assignment loss (`assign_weight`, off by default; an experiment): cross-entropy over a
sample's own-class sub-centroids towards its Sinkhorn assignment (batch clustered with the memory),
which makes the encoder keep a class spread over its K sub-centroids. It keeps them live on the
multi-mode test set but costs top-1 on Fashion-MNIST (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from dnc.core.errors import InputError
from dnc.training import distributed
from dnc.training.config import HeadConfig, ModelConfig, normalise_ks
from dnc.training.liveness import LIVE_SHARE, live_mask, win_counts
from dnc.training.memory import ClassMemory, rank_in_class
from dnc.training.recluster import kmeanspp_seeds, sinkhorn_kmeans
from dnc.training.sinkhorn import sinkhorn_assign

# Clustering rounds for a data initialisation or a revival (the offline rule stops earlier when the
# assignment settles; a class memory of a few hundred samples settles in a handful of rounds).
RECLUSTER_ROUNDS = 10
# Memory samples a class needs, per sub-centroid, before it is clustered into sub-centroids.
SAMPLES_PER_SUBCENTROID = 16
# Sub-centroids are first clustered from the memories once the embedding separates the classes: the
# margin of a training sample (cosine to its nearest own-class sub-centroid minus cosine to the nearest
# sub-centroid of any other class), averaged over every sample of the gathered batch (correct or not)
# and smoothed over about 1 / (1 - READY_DECAY) updates, is at least READY_MARGIN. Until then the
# random, well-separated initial sub-centroids are the targets that pull the classes apart: clusters of
# an embedding that has not separated the classes put the sub-centroids of different classes at the
# same points, where the loss has no contrast left and training stalls. (The memory holds only
# correctly classified samples, so a margin measured on it is positive from the first steps.)
READY_MARGIN = 0.2
READY_DECAY = 0.9
# Share of the classes whose memory must hold `ready_count` samples before the first clustering.
READY_SHARE = 0.9
# With `anneal`: no sub-centroid is re-seeded once the learning rate is under this share of its peak (a
# jump the encoder has no steps left to absorb).
REVIVE_MIN_PACE = 0.25
# Training samples a class needs in a check window before its sub-centroids are judged dead or alive.
MIN_JUDGED = int(2 / LIVE_SHARE)


class DNCHead(nn.Module):
    """Nearest sub-centroid head with online Sinkhorn clustering.

    Buffers (all carried by checkpoints):
        centroids: (C, Kmax, D) L2-normalised sub-centroids; padded slots are zero.
        k_mask: (C, Kmax) bool, True for real sub-centroids (K may differ per class).
        exemplar_ids: (C, Kmax) int64 dataset id of the real sample a sub-centroid was anchored
            to (section 4.3), -1 when not anchored.
        memory.*: the per-class FIFO memory (see ClassMemory).
        With `revive` (the data initialisation and revival of sub-centroids):
        updates: () int64 update calls so far. init_step: () int64 first update at which a class
            may be clustered from its memory (set by `schedule`, typically the end of warm-up).
        seed: () int64 base seed of the k-means++ draws.
        initialised: (C,) bool, the class's sub-centroids have been set from data.
        wins: (C, Kmax) int64 training samples of class c whose nearest own-class sub-centroid was
            k, since the class was last judged.
        revivals: (C, Kmax) int64 times each sub-centroid was found dead and re-seeded.
    """

    def __init__(self, num_classes: int, dim: int, config: HeadConfig | None = None, *,
                 generator: torch.Generator | None = None, seed: int = 0, **changes):
        """A head over `num_classes` classes of `dim`-wide embeddings, set as `config` says (None: the
        defaults of `ModelConfig`), with `changes` (HeadConfig fields by keyword) on top. `generator`
        draws the random initial sub-centroids; `seed` is the base seed of the k-means++ draws (with
        `revive`). A model's head is built by `DNCHead.from_config`."""
        super().__init__()
        if config is not None and not isinstance(config, HeadConfig):
            raise TypeError(f"config must be a HeadConfig, got {type(config).__name__} (give K as k=...)")
        config = HeadConfig.defaults(**changes) if config is None else replace(config, **changes)
        self.config = config
        self.ks = normalise_ks(num_classes, config.k)
        self.num_classes, self.dim = num_classes, dim
        self.temperature, self.momentum = float(config.temperature), float(config.momentum)
        self.epsilon, self.sinkhorn_iters = float(config.epsilon), int(config.sinkhorn_iters)
        kmax = max(self.ks)
        self.uniform_k = min(self.ks) == kmax  # no padded slots to mask
        k_mask = torch.arange(kmax)[None, :] < torch.tensor(self.ks)[:, None]  # (C, Kmax)
        init = F.normalize(torch.randn(num_classes, kmax, dim, generator=generator), dim=-1)
        self.register_buffer("centroids", init * k_mask[..., None])
        self.register_buffer("k_mask", k_mask)
        self.register_buffer("exemplar_ids", torch.full((num_classes, kmax), -1, dtype=torch.long))
        self.memory = ClassMemory(num_classes, config.memory_size, dim, config.memory_cap)
        self.revive, self.revive_every = bool(config.revive), int(config.revive_every)
        self.revive_momentum = float(config.revive_momentum)
        self.ready_gate = config.ready_margin  # None: READY_MARGIN
        # pace: learning rate / peak, set by the loop every step (derived from the schedule, so resumed
        # runs recompute it and it is no checkpointed state); only used with `anneal`
        self.anneal, self.pace = bool(config.anneal), 1.0
        self.assign_weight = float(config.assign_weight)
        if self.revive:
            self.register_buffer("updates", torch.zeros((), dtype=torch.long))
            self.register_buffer("init_step", torch.zeros((), dtype=torch.long))
            self.register_buffer("seed", torch.tensor(int(seed), dtype=torch.long))
            self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))
            # smoothed batch margin; a margin lies in [-2, 2], so -3 means no batch yet (NaN would not equal itself)
            self.register_buffer("ready_margin", torch.tensor(-3.0))
            self.register_buffer("wins", torch.zeros(num_classes, kmax, dtype=torch.long))
            self.register_buffer("revivals", torch.zeros(num_classes, kmax, dtype=torch.long))
            ready = (torch.tensor(self.ks) * SAMPLES_PER_SUBCENTROID).clamp(max=config.memory_size)
            self.register_buffer("ready_count", ready, persistent=False)  # (C,) memory a class needs

    @classmethod
    def from_config(cls, cfg: ModelConfig, seed: int = 0) -> DNCHead:
        """The head a model config describes: its random initial sub-centroids drawn from `seed` + 1, its
        k-means++ draws (with `revive`) from `seed`."""
        return cls(cfg.num_classes, cfg.embed_dim, cfg.head_config(),
                   generator=torch.Generator().manual_seed(seed + 1), seed=seed)

    def schedule(self, init_step: int) -> None:
        """Let classes be clustered from their memories from update `init_step` on (the end of the
        learning-rate warm-up: before it the embedding moves too fast for the clusters to last)."""
        if self.revive:
            self.init_step.fill_(int(init_step))

    def set_pace(self, pace: float) -> None:
        """The learning rate's share of its peak this step (used with `anneal`)."""
        if not 0.0 <= pace <= 1.0 + 1e-9:
            raise InputError(f"pace must be in [0, 1], got {pace}")
        self.pace = float(pace)

    def similarities(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings -> (N, C, Kmax) cosine similarities, padded slots at -inf."""
        with torch.autocast(device_type=emb.device.type, enabled=False):
            x = F.normalize(emb.float(), dim=-1)
            sim = torch.einsum("nd,ckd->nck", x, self.centroids)
            return sim if self.uniform_k else sim.masked_fill(~self.k_mask, float("-inf"))

    def _own_class_similarities(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) unit embeddings, (N,) labels -> (N, Kmax) cosine to each sub-centroid of the sample's own
        class, padded slots at -inf (only the own class's K: N x K x D, not N x C x K x D)."""
        sim = torch.einsum("nd,nkd->nk", x, self.centroids[labels])
        return sim.masked_fill(~self.k_mask[labels], float("-inf"))

    def own_class_winners(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings, (N,) labels -> (N,) index of each sample's nearest sub-centroid of its own class."""
        with torch.autocast(device_type=emb.device.type, enabled=False):
            return self._own_class_similarities(F.normalize(emb.float(), dim=-1), labels).argmax(dim=1)

    def scores(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> class scores (N, C) = max over K of cosine, and winning index (N, C)."""
        return self.similarities(emb).max(dim=2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits: best-sub-centroid cosine divided by the temperature."""
        return self.scores(emb)[0] / self.temperature

    def loss(self, emb: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss: cross-entropy on the logits (eq. 7), plus, with `assign_weight`, the
        sub-centroid assignment loss (see `assignment_loss`)."""
        loss = F.cross_entropy(logits.float(), labels)
        if self.assign_weight > 0:
            loss = loss + self.assign_weight * self.assignment_loss(emb, labels)
        return loss

    def assignment_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over a sample's own-class sub-centroids towards its equipartition assignment.

        (N, D) embeddings (with grad), (N,) labels -> scalar. The target of each sample is the
        sub-centroid the Sinkhorn plan (eq. 6) gives it when the batch is clustered together with its
        class's memory, so the K sub-centroids share the class's samples; the max over K of eq. 7
        alone only pulls every sample to whichever sub-centroid is already nearest.
        """
        with torch.autocast(device_type=emb.device.type, enabled=False):
            x = F.normalize(emb.float(), dim=-1)
            target = self._assign_targets(x.detach(), labels)  # (N,)
            return F.cross_entropy(self._own_class_similarities(x, labels) / self.temperature, target)

    @torch.no_grad()
    def _assign_targets(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) normalised embeddings, (N,) labels -> (N,) Sinkhorn assignment to own-class sub-centroids,
        solved per class over the batch's samples and the class's memory together."""
        order = torch.sort(labels, stable=True).indices
        classes, counts, pos = rank_in_class(labels[order])  # pos: (N,) place of each sorted sample in its class
        t = torch.repeat_interleave(torch.arange(classes.numel(), device=x.device), counts)  # (N,) sorted
        b = int(counts.max())
        batch = x.new_zeros(classes.numel(), b, x.shape[1])  # (T, B, D)
        batch[t, pos] = x[order]
        bmask = torch.zeros(classes.numel(), b, dtype=torch.bool, device=x.device)
        bmask[t, pos] = True
        feats, mask = self.memory.slots(classes)  # (T, M, D)
        allf = torch.cat([batch, feats], 1)  # (T, B + M, D)
        allm = torch.cat([bmask, mask], 1)
        sim = torch.bmm(allf, self.centroids[classes].transpose(1, 2))  # (T, B + M, K)
        assign = sinkhorn_assign(sim, allm, self.k_mask[classes], epsilon=self.epsilon, iters=self.sinkhorn_iters)
        target = torch.empty_like(labels)
        target[order] = assign[t, pos]
        return target

    @torch.no_grad()
    def update(self, emb: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, correct: torch.Tensor):
        """One online clustering step from a training batch (every rank gets identical results).

        Args:
            emb: (N, D) embeddings (detached here). labels: (N,) int64. ids: (N,) sample ids.
            correct: (N,) bool, samples this step classified correctly; only those update.
        """
        x = F.normalize(emb.detach().float(), dim=-1)
        x, labels, ids, correct = distributed.all_gather_cat(x, labels, ids, correct)
        if self.revive:  # which own-class sub-centroid each sample is nearest to, before this step
            won = self.own_class_winners(x, labels)
            self.wins += win_counts(won, labels, self.num_classes, self.centroids.shape[1])
            waiting = not bool(self.initialised.any())  # no class clustered from data yet
            if waiting:
                margin = self.batch_margin(x, labels)
                self.ready_margin.copy_(torch.where(self.ready_margin < -2.5, margin,
                                                    READY_DECAY * self.ready_margin + (1 - READY_DECAY) * margin))
        classes = self.memory.push(x[correct], labels[correct], ids[correct])
        if classes.numel() > 0:
            self._momentum_step(classes)
        if self.revive:
            self.updates += 1
            self._revive(waiting)

    def _momentum_step(self, classes: torch.Tensor) -> None:
        """Sinkhorn-assign the memories of `classes` (T,) and move their sub-centroids by momentum."""
        feats, mask = self.memory.slots(classes)  # (T, M, D), (T, M)
        old = self.centroids.index_select(0, classes)  # (T, K, D)
        kmask = self.k_mask[classes]  # (T, K)
        kmax = old.shape[1]
        sim = torch.bmm(feats, old.transpose(1, 2))  # (T, M, K)
        assign = sinkhorn_assign(sim, mask, kmask, epsilon=self.epsilon, iters=self.sinkhorn_iters)  # (T, M)
        # Per-(class, sub-centroid) sums as a one-hot matmul: deterministic on every device (an
        # index_add on CUDA adds in no fixed order, and ranks must agree bit for bit).
        onehot = F.one_hot(assign, kmax).to(feats.dtype) * mask[..., None]  # (T, M, K)
        counts = onehot.sum(1)  # (T, K)
        means = torch.bmm(onehot.transpose(1, 2), feats) / counts.clamp(min=1)[..., None]  # (T, K, D)
        mu, mu_fast = self.momentum, self.revive_momentum
        if self.anneal:  # 1 - mu scaled by the learning rate's share of its peak
            mu, mu_fast = 1.0 - (1.0 - mu) * self.pace, 1.0 - (1.0 - mu_fast) * self.pace
        if self.revive:  # sub-centroids clustered from data follow the embedding; random ones stay targets
            fast = self.initialised[classes][:, None, None]  # (T, 1, 1)
            moved = torch.where(fast, mu_fast * old + (1 - mu_fast) * means, mu * old + (1 - mu) * means)
            moved = F.normalize(moved, dim=-1)
        else:
            moved = F.normalize(mu * old + (1 - mu) * means, dim=-1)
        has = (counts > 0) & kmask
        self.centroids[classes] = torch.where(has[..., None], moved, old)

    def _revive(self, waiting: bool) -> None:
        """Cluster ready classes from their memories; re-cluster classes holding a dead sub-centroid.
        `waiting`: no class has been clustered from data yet."""
        step = int(self.updates)
        if step < int(self.init_step):
            return
        full = self.memory.count >= self.ready_count  # (C,)
        if waiting:  # the first clustering takes every class at once
            share = int(full.sum()) >= READY_SHARE * self.num_classes - 1e-9  # (a float32 mean rounds 18/20 down)
            gate = READY_MARGIN if self.ready_gate is None else self.ready_gate
            ready = share and float(self.ready_margin) >= gate
            # every class with a sample per sub-centroid; the others join later, as their memory fills
            fresh = (self.memory.count >= self.k_mask.sum(1)) & ready
        else:  # a class left out of the first clustering joins once its memory is full
            fresh = ~self.initialised & full
        dead = torch.zeros_like(self.k_mask)
        if step % self.revive_every == 0 and not (self.anneal and self.pace < REVIVE_MIN_PACE):
            # judged: enough training samples seen, and enough in memory to re-cluster from
            judged = self.initialised & (self.wins.sum(1) >= MIN_JUDGED) & full
            dead = judged[:, None] & self.k_mask & ~live_mask(self.wins, self.k_mask, LIVE_SHARE)
            self.wins[judged] = 0
        redo = fresh | dead.any(1)
        if not bool(redo.any()):
            return
        classes = redo.nonzero().flatten()  # (T,)
        feats, mask = self.memory.slots(classes)  # (T, M, D), (T, M)
        kmask = self.k_mask[classes]
        keep = ~dead[classes] & ~fresh[classes, None]  # a fresh class is seeded entirely from data
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + step)
        seeds = kmeanspp_seeds(feats, mask, kmask, self.centroids[classes], keep=keep, generator=gen)
        self.centroids[classes] = sinkhorn_kmeans(feats, mask, kmask, seeds, rounds=RECLUSTER_ROUNDS,
                                                  epsilon=self.epsilon, iters=self.sinkhorn_iters)
        self.revivals += dead.long()
        self.initialised |= fresh
        self.wins[classes] = 0

    def batch_margin(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) unit embeddings, (N,) labels -> () mean over the samples of the cosine to the nearest
        own-class sub-centroid minus the cosine to the nearest sub-centroid of any other class."""
        best = self.similarities(x).amax(2)  # (N, C)
        own = best.gather(1, labels[:, None])[:, 0]  # (N,)
        other = best.scatter(1, labels[:, None], float("-inf")).amax(1)  # (N,)
        return (own - other).mean()

    @torch.no_grad()
    def set_exemplars(self, feats: torch.Tensor, ids: torch.Tensor, found: torch.Tensor):
        """Replace sub-centroids by real samples (exemplar anchoring, section 4.3).

        Args:
            feats: (C, Kmax, D) embedding of the nearest real sample per sub-centroid.
            ids: (C, Kmax) its dataset id. found: (C, Kmax) bool, False where none was seen.
        """
        use = found & self.k_mask
        self.centroids.copy_(torch.where(use[..., None], F.normalize(feats.float(), dim=-1), self.centroids))
        self.exemplar_ids.copy_(torch.where(use, ids, self.exemplar_ids))

    def extra_repr(self) -> str:
        return (f"C={self.num_classes}, D={self.dim}, K={sorted(set(self.ks))}, T={self.temperature}, "
                f"mu={self.momentum}, eps={self.epsilon}, revive={self.revive}, anneal={self.anneal}")


class LinearHead(nn.Module):
    """Parametric softmax twin: a linear layer on the same embedding."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits."""
        return self.fc(emb)

    def loss(self, emb: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy."""
        return F.cross_entropy(logits.float(), labels)

    def update(self, emb, labels, ids, correct):  # same interface as DNCHead
        """Nothing to estimate: the weights are learned by the optimiser."""
