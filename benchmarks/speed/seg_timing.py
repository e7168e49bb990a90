"""Benchmark: what the DNC head costs a segmenter, in training and in onnxruntime.

1. Training step time, DNC segmenter (K per class, its sub-centroid update included) over the parametric
   twin (a 1x1 convolution), same backbone, decoder, batch of real FashionScenes and optimiser; the two
   alternate round by round in one process, median step per head. Target <= 1.10.
2. onnxruntime latency of the exported DNC graph (embed + head: normalise, cosine to C x K sub-centroids,
   max over K, upsampling, top-2, per-class evidence) over the same encoder with a 1x1 convolution head
   giving the same outputs (a K = 1 head of C random vectors without the normalisation), at 64x64 batch 8
   and 256x256 batch 1; blocks of runs alternate, median per graph. Target <= 1.05.

    .venv/bin/python benchmarks/speed/seg_timing.py --out runs/bench-seg-timing/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.export import runtime
from dnc.export.embed_graph import export_embed
from dnc.export.seg_head_graph import attach_seg_head, build_seg_head
from dnc.training.model import ModelConfig, build_model
from dnc.training.scenes import write_scenes
from dnc.training.seg_data import load_seg_folder
from dnc.training.seg_task import SegmentationTask

FP = "sha256:" + "0" * 64


def step_times(args, data) -> dict:
    task = SegmentationTask()
    g = torch.Generator().manual_seed(0)
    models = {}
    for head in ("dnc", "softmax"):
        cfg = ModelConfig(num_classes=data.num_classes, task="segmentation", in_chans=3, image_size=data.image_size,
                          width=args.width, embed_dim=args.embed_dim, k=args.K, head=head, mean=data.mean,
                          std=data.std)
        torch.manual_seed(0)
        model = build_model(cfg).to(memory_format=torch.channels_last).train()
        models[head] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    times = {h: [] for h in models}
    step = 0
    for r in range(args.rounds):
        for head in (("dnc", "softmax") if r % 2 == 0 else ("softmax", "dnc")):
            model, opt = models[head]
            for _ in range(args.steps):
                idx = torch.randint(0, len(data), (args.batch_size,), generator=g)
                x, y = data.batch(idx)
                x, y = task.prepare(x, y, g, model.cfg)
                x = x.contiguous(memory_format=torch.channels_last)
                t0 = time.perf_counter()
                task.step(model.encoder, model.head, opt, x, y, idx, False, model, step, 0)
                dt = time.perf_counter() - t0
                step += 1
                if r > 0:  # the first round warms up
                    times[head].append(dt)
    med = {h: statistics.median(v) for h, v in times.items()}
    return {"median_s": med, "ratio_dnc_over_softmax": med["dnc"] / med["softmax"], "steps_timed": len(times["dnc"]),
            "batch_size": args.batch_size, "image_size": data.image_size, "K": args.K}


def latency(args, data) -> dict:
    c, d = data.num_classes, args.embed_dim
    cfg = ModelConfig(num_classes=c, task="segmentation", in_chans=3, image_size=data.image_size, width=args.width,
                      embed_dim=d, k=args.K, mean=data.mean, std=data.std)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    embed = export_embed(model.encoder, 3, data.image_size, {"task": "segmentation"}, task="segmentation")
    rng = np.random.default_rng(0)

    def unit(shape):
        v = rng.standard_normal(shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    dnc = CentroidSet(unit((c, args.K, d)), [args.K] * c, [f"c{i}" for i in range(c)], FP, task="segmentation")
    conv = CentroidSet(unit((c, 1, d)), [1] * c, [f"c{i}" for i in range(c)], FP, task="segmentation")
    graphs = {"dnc": attach_seg_head(embed, build_seg_head(dnc)),
              "conv1x1": attach_seg_head(embed, build_seg_head(conv, normalise_input=False))}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        sess = {}
        for name, g in graphs.items():
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(g.SerializeToString())
            sess[name] = runtime.session(path, args.threads)
        for n, h, w in ((8, 64, 64), (1, 256, 256)):
            x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
            names = [s.name for s in F.SEG_HEAD_OUTPUTS]
            times = {k: [] for k in sess}
            for r in range(args.latency_rounds):
                for name in (("dnc", "conv1x1") if r % 2 == 0 else ("conv1x1", "dnc")):
                    for _ in range(args.block):
                        t0 = time.perf_counter()
                        sess[name].run(names, {F.IMAGES: x})
                        if r > 0:
                            times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            out[f"{h}x{w} batch {n}"] = {"median_ms": med, "ratio_dnc_over_conv1x1": med["dnc"] / med["conv1x1"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--K", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4, help="steps per head per round")
    ap.add_argument("--latency-rounds", type=int, default=9)
    ap.add_argument("--block", type=int, default=10, help="runs per graph per round")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    ap.add_argument("--out", default="runs/bench-seg-timing/results.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_scenes(Path(tmp) / "scenes", "fine", size=64, train=256, test=1, seed=0)
        data = load_seg_folder(Path(tmp) / "scenes", "train", 64)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__, "args": vars(args),
           "training_step": step_times(args, data), "onnxruntime_latency": latency(args, data)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
