"""Diagnostic (issue 11): does a DNC segmenter's head alone degrade a trained encoder that no longer learns?

Loads a trained segmenter, then runs its training step with the learning rate at zero (the end of a cosine
schedule: the encoder still, BatchNorm statistics and sub-centroids updated as in training) for N steps,
the sub-centroids moving at full pace (what training did before --anneal) or at the learning rate's pace
(zero here: --anneal), and reports test mIoU and mean training loss for each.

    .venv/bin/python benchmarks/accuracy/seg_head_drift.py CHECKPOINT --data SCENES [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import epoch_batches, iterate
from dnc.training.seg_task import SegmentationTask


def drift(path: str, data: str, steps: int, pace: float, seed: int = 0) -> dict:
    ck = ckpt_io.load(path)
    model = ck.build_model()
    task = SegmentationTask()
    train, test = (task.load(data, split, ck.model_config, 0) for split in ("train", "test"))
    head = model.head
    head.anneal = True
    head.set_pace(pace)
    opt = torch.optim.SGD(model.encoder.parameters(), lr=0.0)  # the schedule's end: nothing learns
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    batches = epoch_batches(len(train), 16, seed, 0, True)[:steps]
    for i, (x, y, ids) in enumerate(iterate(train, batches, 0)):
        x, y = task.prepare(x, y, gen, ck.model_config)
        loss, _, _ = task.step(model.encoder, head, opt, x, y, ids, False, model, 10_000 + i, seed)
        losses.append(float(loss))
    ev = task.evaluate(model, test, torch.device("cpu"))
    return {"pace": pace, "steps": steps, "test_miou": ev["miou"],
            "first_loss": statistics.mean(losses[:20]) if losses else None,
            "last_loss": statistics.mean(losses[-20:]) if losses else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=150)
    a = ap.parse_args()
    ck = ckpt_io.load(a.checkpoint)
    print(json.dumps({"checkpoint": a.checkpoint, "trained_test_miou": ck.history[-1]["test_miou"]}))
    for steps, pace in ((0, 0.0), (a.steps, 1.0), (a.steps, 0.0)):  # first: the trained model here, untouched
        print(json.dumps(drift(a.checkpoint, a.data, steps, pace)), flush=True)


if __name__ == "__main__":
    main()
