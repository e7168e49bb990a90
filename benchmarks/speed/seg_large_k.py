"""Benchmark (issue 25): what a segmentation list with many sub-centroids costs, in-process.

For each centroid set given (the first is the base), the served head (build_seg_head with its evidence,
as `dnc repo build` serves it) runs on the cell embeddings of real pictures at each --size, in
interleaved rounds (A, B, A, B, ...), after warm-up; embed.onnx runs once per picture size beforehand, so
the head's time is measured alone. Reports per set and size the median head time per picture, the ratio
to the first set, and head.onnx's bytes; the embedding's median time per picture is reported beside them
(what the head adds to a whole request).

    .venv/bin/python benchmarks/speed/seg_large_k.py --export runs/bench-seg-open3/s0/induction-dnc/export \
        --set runs/bench-seg-open3/s0/induction-dnc/fine-K10 --set runs/bench-seg-open3/s0/induction-dnc/fine-K255 \
        --images runs/bench-seg-open3/data/scenes-fine/images/test --out runs/bench-seg-large-k.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export.seg_infer import InProcessSegmenter


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="a segmenter's export folder")
    ap.add_argument("--set", action="append", required=True, help="a segmentation set (repeat; the first is the base)")
    ap.add_argument("--images", required=True, help="a folder of pictures (the first --pictures are used)")
    ap.add_argument("--sizes", default="64,256,512", help="square sizes the pictures are resized to")
    ap.add_argument("--pictures", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per picture per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads (the served head runs on one)")
    ap.add_argument("--out", required=True, help="JSON file of the figures")
    a = ap.parse_args()
    files = sorted(Path(a.images).iterdir())[:a.pictures]
    segs = [InProcessSegmenter(a.export, s, threads=a.threads) for s in a.set]
    res: dict = {"sets": {}, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor(),
                 "threads": a.threads, "pictures": [str(f) for f in files]}
    for size in (int(v) for v in a.sizes.split(",")):
        pics = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
        base = segs[0]
        feeds, embed_t = [], []
        for p in pics:
            x = base.prepare([p])
            embed_t += timed(lambda x=x, b=base: b.embed.run([F.PIXEL_EMBEDDING], {F.IMAGES: x}), a.repeat)
            emb = base.embed.run([F.PIXEL_EMBEDDING], {F.IMAGES: x})[0]
            feeds.append({F.PIXEL_EMBEDDING: emb, F.OUTPUT_SIZE: np.asarray(x.shape[2:], np.int64)})
        times: dict[int, list[float]] = {i: [] for i in range(len(segs))}
        for s in segs:  # warm-up
            s.head.run(s.outputs, feeds[0])
        for _ in range(a.rounds):
            for i, s in enumerate(segs):
                for f in feeds:
                    times[i] += timed(lambda s=s, f=f: s.head.run(s.outputs, f), a.repeat)
        first = statistics.median(times[0])
        for i, path in enumerate(a.set):
            cs = centroid_set.load(path)
            row = res["sets"].setdefault(path, {"subcentroids": int(sum(cs.ks)), "kmax": int(max(cs.ks)),
                                                "head_bytes": (Path(path) / F.HEAD_FILE).stat().st_size})
            med = statistics.median(times[i])
            row[str(size)] = {"head_ms": round(1000 * med, 2), "ratio": round(med / first, 3),
                              "embed_ms": round(1000 * statistics.median(embed_t), 2)}
            print(f"{size}x{size} {Path(path).name}: head {1000 * med:.2f} ms ({med / first:.2f}x), embed "
                  f"{1000 * statistics.median(embed_t):.2f} ms, {row['subcentroids']} sub-centroids", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
