"""Benchmark (issue 25): end-to-end served latency of class lists with many sub-centroids.

One real tritonserver serves an export; each centroid set given is swapped in (`dnc swap`) and timed in
turn, in interleaved rounds (A, B, A, B, ...): requests of --batch real test images sent as uint8 pixels,
one after the other (the latency a client sees, HTTP), after warm-up. Reports per set the median and p99
latency over all its rounds, images/s, and the ratio of each set's median to the first set's.

    .venv/bin/python benchmarks/serving/large_k_latency.py --export runs/bench-c2f3/s0/dnc/export \
        --set runs/bench-c2f3/s0/dnc/fine-set-K4 --set runs/bench-c2f3/s0/dnc/fine-set-Kall \
        --images runs/bench-c2f3/data/fine/test --out runs/bench-large-k-latency
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from dnc.clients.client import DNCClient, collect_images
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.images import read_picture
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.serving.swap import swap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--set", action="append", required=True, help="a centroid set (repeat; the first is the base)")
    ap.add_argument("--images", required=True, help="a folder of test images (class folders)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--requests", type=int, default=30, help="timed requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dnc-large-k-") as tmp:
        repo = Path(tmp) / "repo"
        repository.build(a.export, repo, threads=0)
        server = TritonServer(repo, 0, 0, 0)
        server.start(timeout=300)
        try:
            res = measure(a, repo, server)
        finally:
            server.stop()
    res.update(date=time.strftime("%Y-%m-%d %H:%M"), machine=platform.machine(), batch=a.batch,
               requests=a.requests, rounds=a.rounds)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    for name, r in res["sets"].items():
        print(f"{name}: {r['subcentroids']} sub-centroids, median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"{r['images_per_s']:.0f} images/s, median / first {r['median_vs_first']:.3f}")


def measure(a, repo: Path, server: TritonServer) -> dict:
    files = collect_images([a.images])[:: max(1, len(collect_images([a.images])) // (a.batch * 4))][:a.batch]
    with DNCClient(server.http_url, "http") as c:
        prep = c.preprocessing
        x = np.stack([read_picture(f, prep["color"], prep) for f in files])  # (B, H, W, C) uint8
        times: dict[str, list[float]] = {s: [] for s in a.set}
        for _ in range(a.rounds):
            for s in a.set:
                swap(repo, s, server.grpc_url)
                for _ in range(a.warmup):
                    c.infer(x, (F.PREDICTED, F.SET_ID), F.PIXELS)
                for _ in range(a.requests):
                    t0 = time.perf_counter()
                    c.infer(x, (F.PREDICTED, F.TOPK_LABEL, F.TOPK_SCORE, F.KNOWN, F.SET_ID), F.PIXELS)
                    times[s].append(time.perf_counter() - t0)
    first = float(np.median(times[a.set[0]]))
    sets = {}
    for s, t in times.items():
        cs = centroid_set.load(s)
        med = float(np.median(t))
        sets[Path(s).name] = {"set_id": cs.set_id, "subcentroids": int(sum(cs.ks)), "median_ms": 1000 * med,
                              "p99_ms": 1000 * float(np.quantile(t, 0.99)), "images_per_s": a.batch / med,
                              "median_vs_first": med / first}
    return {"sets": sets}


if __name__ == "__main__":
    main()
