"""Models: the configuration that rebuilds one, the classifier, and `build_model` for either task.

`ModelConfig` is the whole description needed to rebuild a model (it travels inside checkpoints),
including its task, the preprocessing a client must apply (image size, channels, mean/std) and class
names. Task "classification": a ResNet encoder producing an embedding, and a head on it. Task
"segmentation": the same backbone with a decoder giving pixel embeddings, and the same head per pixel
(training/segmenter.py). Twins for comparison share everything but `head`: "dnc" (K sub-centroids;
K=1 gives class means) or "softmax" (a learned linear layer; per pixel, a 1x1 convolution).
"""

from __future__ import annotations

import torch
from torch import nn

from dnc.core import tasks
from dnc.training.backbones import build_backbone
from dnc.training.config import ModelConfig
from dnc.training.head import DNCHead, LinearHead
from dnc.training.segmenter import Segmenter


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
    return DNCHead.from_config(cfg, seed)


def build_model(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """A classifier or a segmenter, as `cfg.task` says."""
    if tasks.task(cfg.task).dense:
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
