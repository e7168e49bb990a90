"""Benchmark: training step time of the DNC head over the softmax twin, at C = 10 and C = 1000.

Same backbone, batch and synthetic data for both heads, measured in one process with the two heads
interleaved round by round (so drift in machine load hits both alike); the median step time per
head is reported. The DNC step is timed in its worst case: every sample counts as correctly
classified, so every sample enters the memory and every touched class is re-clustered. With
sub-centroids from data (the default), the DNC step is timed in both of its phases: `waiting`, before
the first clustering from memory (each step also measures the batch's margin over all C x K
sub-centroids), and `clustered`, after it (each step counts which own-class sub-centroid wins), where
a check every `revive_every` updates re-clusters the classes with a dead sub-centroid: that check is
timed alone, for every class at once (its worst case), and its cost spread over `revive_every` steps.

    .venv/bin/python benchmarks/speed/step_time.py --out runs/bench-step/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dnc.training import head as dnc_head
from dnc.training.loop import TrainConfig, build_optimizer, train_step
from dnc.training.model import Classifier, ModelConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="10,1000")
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps per head per round")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/bench-step/results.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    amp = dev.type == "cuda"
    g = torch.Generator().manual_seed(0)
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "args": vars(args), "by_classes": {}}
    dnc_head.READY_SHARE = 2.0  # the waiting head must stay waiting: its first clustering is not timed
    for c in [int(v) for v in args.classes.split(",")]:
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, c, (args.batch_size,), generator=g).to(dev)
        ids = torch.arange(args.batch_size, device=dev)
        everyone = torch.ones(args.batch_size, dtype=torch.bool, device=dev)
        runs = {}
        for name, head in (("dnc-waiting", "dnc"), ("dnc-clustered", "dnc"), ("softmax", "softmax")):
            cfg = ModelConfig(num_classes=c, arch=args.arch, width=args.width, in_chans=3,
                              image_size=args.image_size, embed_dim=args.embed_dim, head=head, k=args.K,
                              mean=[0.5] * 3, std=[0.5] * 3)
            torch.manual_seed(0)
            model = Classifier(cfg).to(dev, memory_format=torch.channels_last).train()
            if name == "dnc-clustered":
                model.head.initialised.fill_(True)
                model.head.updates.fill_(1)  # never a multiple of revive_every inside the timed steps
            runs[name] = (model, build_optimizer(model, TrainConfig(lr=0.01)), [])
        for r in range(args.rounds + 1):  # round 0 warms up
            for model, opt, times in runs.values():
                for _ in range(args.steps):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    train_step(model.encoder, model.head, opt, x, y, ids, amp, correct=everyone)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if r:
                        times.append(time.perf_counter() - t0)
        med = {h: statistics.median(t) for h, (_, _, t) in runs.items()}
        head = runs["dnc-clustered"][0].head
        m = head.memory
        for _ in range(m.size // m.per_step_cap):  # fill every class's memory with random unit features
            labels = torch.arange(c, device=dev).repeat_interleave(m.per_step_cap)
            feats = torch.nn.functional.normalize(torch.randn(len(labels), args.embed_dim, generator=g), dim=1)
            m.push(feats.to(dev), labels, torch.arange(len(labels), device=dev))
        assert not runs["dnc-waiting"][0].head.initialised.any(), "the waiting head was clustered while timed"
        check = []
        for _ in range(3):  # a dead-sub-centroid check that re-clusters every class
            head.wins.zero_()
            head.wins[:, 0] = 1000  # sub-centroid 0 won everything: the others are dead
            head.updates.fill_(head.revive_every)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            head._revive(waiting=False)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            check.append(time.perf_counter() - t0)
        assert int(head.revivals.sum()) == 3 * c * (args.K - 1), "the check did not re-cluster every class"
        med["check"] = statistics.median(check)
        clustered = med["dnc-clustered"] + med["check"] / head.revive_every
        row = {"dnc_waiting_ms": 1000 * med["dnc-waiting"], "dnc_clustered_ms": 1000 * med["dnc-clustered"],
               "check_ms": 1000 * med["check"], "revive_every": head.revive_every,
               "softmax_ms": 1000 * med["softmax"], "ratio_waiting": med["dnc-waiting"] / med["softmax"],
               "ratio_clustered": clustered / med["softmax"]}
        row["target_met"] = max(row["ratio_waiting"], row["ratio_clustered"]) <= 1.05
        results["by_classes"][str(c)] = row
        print(f"C={c}: DNC waiting {row['dnc_waiting_ms']:.1f} ms, clustered {row['dnc_clustered_ms']:.1f} ms "
              f"+ check {row['check_ms']:.0f} ms every {head.revive_every}, softmax {row['softmax_ms']:.1f} ms; "
              f"ratios {row['ratio_waiting']:.3f} / {row['ratio_clustered']:.3f} "
              f"(target <= 1.05: {'met' if row['target_met'] else 'MISSED'})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
