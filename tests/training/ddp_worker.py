"""Run by torchrun in test_distributed.py: a short DNC training on 2 CPU processes (gloo); each
rank writes the centroids and memory it ends with, so the test can compare ranks."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from dnc.training import distributed
from dnc.training import head as dnc_head
from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig

out, head_kind = Path(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
rank = int(__import__("os").environ["RANK"])
cfg = TrainConfig(data="fashion-mnist", out=str(out), epochs=1, batch_size=16, lr=0.05, train_limit=256,
                  test_limit=64, workers=0, max_steps=6)
# "dnc-revive": sub-centroids clustered from memory (8 samples per class suffice here) after a
# 1-step warm-up and checked for dead ones every 2 steps, so both happen within the 6 steps.
# The readiness gate (a separated embedding, 90% of the memories filled; its own test) is waived, or 6
# steps would never pass it.
revive = head_kind in ("dnc-revive", "seg")
cfg.warmup_epochs = 0.125 if revive else cfg.warmup_epochs
if revive:
    dnc_head.READY_MARGIN, dnc_head.READY_SHARE = -2.0, 0.0
if head_kind == "seg":  # a DNC segmenter on the scenes the test wrote (argv[3]): 64 scenes, 4 steps of 2 x 8
    cfg.data, cfg.train_limit, cfg.test_limit, cfg.batch_size, cfg.max_steps = sys.argv[3], 0, 0, 8, 4
    mcfg = ModelConfig(num_classes=6, task="segmentation", in_chans=3, image_size=32, width=4, embed_dim=8,
                       decoder_dim=8, k=3, memory_size=8, memory_cap=4, momentum=0.5, revive_every=2,
                       mean=[0.5] * 3, std=[0.5] * 3)
else:
    mcfg = ModelConfig(num_classes=10, width=8, embed_dim=16, memory_size=8 if revive else 16, memory_cap=4,
                       momentum=0.5, head="dnc" if revive else head_kind, k=2 if revive else 4, revive=revive,
                       revive_every=2)
model = train(cfg, mcfg)["model"]
assert not distributed.is_active()  # torn down on return
# Everything each rank ends with: weights and buffers (DNC: centroids and memory; softmax: the fc).
save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
