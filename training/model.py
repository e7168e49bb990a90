"""Models: the configuration that rebuilds one, the classifier, and `build_model` for either task.

`ModelConfig` is the whole description needed to rebuild a model (it travels inside checkpoints),
including its task, the preprocessing a client must apply (image size, channels, mean/std) and class
names. Task "classification": a ResNet encoder producing an embedding, and a head on it. Task
"segmentation": the same backbone with a decoder giving pixel embeddings, and the same head per pixel
(training/segmenter.py). Twins for comparison share everything but `head`: "dnc" (K sub-centroids;
K=1 gives class means) or "softmax" (a learned linear layer; per pixel, a 1x1 convolution).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from training.backbones import build_backbone
from training.class_names import check_class_names
from training.head import DNCHead, LinearHead, normalise_ks

HEADS = ("dnc", "softmax")
TASKS = ("classification", "segmentation")
SEGMENTATION_K = 10  # sub-centroids per class of a segmenter, as the paper's segmentation (its K ablation)
# A segmenter's smoothed per-cell margin stays far below a classifier's (0.108 after 1,560 steps where the
# classifiers' gate is 0.2, docs/BENCHMARKS.md issue 11): its first clustering from memory waits for 0.05.
SEGMENTATION_READY_MARGIN = 0.05
# Segmenters' sub-centroids slow down with the learning rate: without it their loss rose as the learning rate
# ended (issue 11's 3-seed runs, docs/BENCHMARKS.md).
SEGMENTATION_ANNEAL = True


@dataclass
class ModelConfig:
    num_classes: int
    task: str = "classification"
    arch: str = "resnet10"
    width: int = 32
    in_chans: int = 1
    image_size: int = 28
    embed_dim: int = 256
    head: str = "dnc"
    k: int | list[int] = 4
    temperature: float = 0.1
    momentum: float = 0.999
    epsilon: float = 0.05
    sinkhorn_iters: int = 3
    memory_size: int = 256
    memory_cap: int = 32
    revive: bool = True  # sub-centroids from data once the classes separate; dead ones re-clustered (head.py)
    revive_every: int = 200
    revive_momentum: float = 0.99  # momentum of sub-centroids once clustered from data (0.999 lags the embedding)
    assign_weight: float = 0.0  # weight of the sub-centroid assignment loss (training/head.py)
    anneal: bool = False  # sub-centroids move at the pace of the learning rate (head.py); segmenters' default
    ready_margin: float | None = None  # smoothed batch margin that opens the first clustering (None: head.READY_MARGIN)
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    class_names: list[str] = field(default_factory=list)
    # segmentation only
    decoder_dim: int = 128  # channels of the light decoder
    ignore_index: int = 255  # mask value that counts for nothing
    pixel_samples: int = 64  # pixels per class and step (seeded) that update the sub-centroids

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.decoder_dim < 4 or self.pixel_samples < 1:
            raise ValueError(f"decoder width must be >= 4 and pixel samples >= 1, got {self.decoder_dim}, "
                             f"{self.pixel_samples}")
        if self.task == "segmentation":
            if self.num_classes > 255 or max(normalise_ks(self.num_classes, self.k)) > 255:
                raise ValueError("a segmenter has at most 255 classes and 255 sub-centroids per class (its maps "
                                 f"are uint8); got {self.num_classes} classes, K up to "
                                 f"{max(normalise_ks(self.num_classes, self.k))}")
            if not self.num_classes <= self.ignore_index <= 255:
                raise ValueError(f"ignore index {self.ignore_index} must be in {self.num_classes}-255 (not a class id)")
            if self.assign_weight:
                raise ValueError("the assignment loss (--assign-weight) is a classification experiment; segmenters "
                                 "train with cross-entropy alone")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {self.num_classes}")
        if self.embed_dim < 1:
            raise ValueError(f"embedding width must be >= 1, got {self.embed_dim}")
        normalise_ks(self.num_classes, self.k)
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values (one per channel), "
                             f"got {len(self.mean)}/{len(self.std)}")
        if self.class_names:
            check_class_names(self.class_names, "model config")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def small_stem(self) -> bool:
        """The 3x3/1 stem for small images (<= 64 px), the standard 7x7/2 stem above that."""
        return self.image_size <= 64

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """Backbone + linear projection: (N, Cin, H, W) -> (N, D) embedding (not normalised)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backbone = build_backbone(cfg.arch, cfg.width, cfg.in_chans, cfg.small_stem)
        self.proj = nn.Linear(self.backbone.feature_dim, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x))


def make_head(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """The head a config describes (its random initial sub-centroids drawn from `seed`)."""
    if cfg.head == "softmax":
        return LinearHead(cfg.num_classes, cfg.embed_dim)
    gen = torch.Generator().manual_seed(seed + 1)
    return DNCHead(cfg.num_classes, cfg.embed_dim, cfg.k, cfg.temperature, cfg.momentum, cfg.epsilon,
                   cfg.sinkhorn_iters, cfg.memory_size, cfg.memory_cap, gen, cfg.revive, cfg.revive_every, seed,
                   cfg.assign_weight, cfg.revive_momentum, cfg.ready_margin, cfg.anneal)


def build_model(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """A classifier or a segmenter, as `cfg.task` says."""
    if cfg.task == "segmentation":
        from training.segmenter import Segmenter  # it builds on this module's config and head

        return Segmenter(cfg, lambda: make_head(cfg, seed))
    return Classifier(cfg, seed)


class Classifier(nn.Module):
    """encoder -> head. forward returns (embedding (N, D), logits (N, C))."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.head = make_head(cfg, seed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(x)
        return emb, self.head(emb)
