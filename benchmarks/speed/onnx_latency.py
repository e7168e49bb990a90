"""Benchmark: onnxruntime latency of the DNC merged graph over the same backbone with a linear head.

Both graphs share the exported encoder; the linear twin replaces the centroid head (cosine, max over
K, top-2, evidence) by a Linear(D, C) layer and an argmax. Same threads, same inputs, one process.
The graphs alternate in blocks of runs (the order flipping every round), so drift in machine load
hits both alike while neither graph runs beside the other's still-spinning onnxruntime threads
(alternating single runs measured those: 0.45 vs 0.71 ms at batch 1, a 1.6x artefact). Median per
batch size, after a warm-up block.

    .venv/bin/python benchmarks/speed/onnx_latency.py --checkpoint runs/bench-fmnist/dnc/checkpoint.safetensors
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.embed_graph import EmbedModule
from dnc.export.exporter import export_checkpoint
from dnc.training import checkpoint as ckpt_io


class LinearTwin(nn.Module):
    """images -> encoder -> Linear -> (logits, predicted int32): the parametric head on the same backbone."""

    def __init__(self, encoder: nn.Module, dim: int, classes: int):
        super().__init__()
        self.embed, self.fc = EmbedModule(encoder), nn.Linear(dim, classes)

    def forward(self, images):
        logits = self.fc(self.embed(images))
        return logits, logits.argmax(1).int()


def linear_graph(ck) -> bytes:
    mc = ck.model_config
    model = ck.build_model()
    twin = LinearTwin(model.encoder, mc.embed_dim, mc.num_classes).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (torch.zeros(2, mc.in_chans, mc.image_size, mc.image_size),), buf,
                          input_names=[F.IMAGES], output_names=["logits", F.PREDICTED],
                          dynamic_axes={F.IMAGES: {0: "batch"}}, opset_version=F.OPSET, dynamo=False)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20, help="rounds per batch size")
    ap.add_argument("--block", type=int, default=30, help="consecutive runs of one graph in a round")
    ap.add_argument("--out", default="runs/bench-onnx-latency.json")
    args = ap.parse_args()
    ck = ckpt_io.load(args.checkpoint)
    mc = ck.model_config
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(args.checkpoint, Path(tmp) / "e", n_real=64, n_random=16, fp16=False)
        dnc = runtime.session(Path(tmp) / "e" / F.MERGED_FILE, args.threads)
    lin = runtime.session(linear_graph(ck), args.threads)
    res = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "threads": args.threads, "onnxruntime": onnxruntime.__version__, "checkpoint": args.checkpoint,
           "model": {"arch": mc.arch, "width": mc.width, "D": mc.embed_dim, "C": mc.num_classes, "K": mc.k},
           "by_batch": {}}
    rng = np.random.default_rng(0)
    for b in [int(v) for v in args.batches.split(",")]:
        x = rng.standard_normal((b, mc.in_chans, mc.image_size, mc.image_size)).astype(np.float32)
        times = {"dnc": [], "linear": []}
        graphs = [("dnc", dnc), ("linear", lin)]
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, sess in graphs if r % 2 else graphs[::-1]:
                for _ in range(args.block):
                    t0 = time.perf_counter()
                    sess.run(None, {F.IMAGES: x})
                    if r:
                        times[name].append(time.perf_counter() - t0)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        ratio = med["dnc"] / med["linear"]
        res["by_batch"][str(b)] = {"dnc_ms": med["dnc"], "linear_ms": med["linear"], "ratio": ratio,
                                   "dnc_images_per_s": 1000 * b / med["dnc"], "target_met": ratio <= 1.02}
        print(f"batch {b}: DNC {med['dnc']:.3f} ms, linear {med['linear']:.3f} ms, ratio {ratio:.3f} "
              f"(target <= 1.02: {'met' if ratio <= 1.02 else 'MISSED'})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
