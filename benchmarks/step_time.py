"""Benchmark: training step time of the DNC head over the softmax twin, at C = 10 and C = 1000.

Same backbone, batch and synthetic data for both heads, measured in one process with the two heads
interleaved round by round (so drift in machine load hits both alike); the median step time per
head is reported. The DNC step is timed in its worst case: every sample counts as correctly
classified, so every sample enters the memory and every touched class is re-clustered.

    .venv/bin/python benchmarks/step_time.py --out runs/bench-step/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from training.loop import TrainConfig, build_optimizer, train_step
from training.model import Classifier, ModelConfig


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
    for c in [int(v) for v in args.classes.split(",")]:
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, c, (args.batch_size,), generator=g).to(dev)
        ids = torch.arange(args.batch_size, device=dev)
        everyone = torch.ones(args.batch_size, dtype=torch.bool, device=dev)
        runs = {}
        for head in ("dnc", "softmax"):
            cfg = ModelConfig(num_classes=c, arch=args.arch, width=args.width, in_chans=3,
                              image_size=args.image_size, embed_dim=args.embed_dim, head=head, k=args.K,
                              mean=[0.5] * 3, std=[0.5] * 3)
            torch.manual_seed(0)
            model = Classifier(cfg).to(dev, memory_format=torch.channels_last).train()
            runs[head] = (model, build_optimizer(model, TrainConfig(lr=0.01)), [])
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
        ratio = med["dnc"] / med["softmax"]
        results["by_classes"][str(c)] = {"dnc_ms": 1000 * med["dnc"], "softmax_ms": 1000 * med["softmax"],
                                         "ratio": ratio, "target_met": ratio <= 1.05}
        print(f"C={c}: DNC {1000 * med['dnc']:.1f} ms, softmax {1000 * med['softmax']:.1f} ms, "
              f"ratio {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
