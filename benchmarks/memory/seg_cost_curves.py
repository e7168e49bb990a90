"""Cost curves of a served segmenter: frames/s, latency and peak memory as the picture and the class list grow
(issue 27).

    python benchmarks/memory/seg_cost_curves.py --export runs/demo/seg-export --out runs/bench-cost/seg

For each class count in --classes: the export's own list when it has that many classes, else a list of real
cells' embeddings made as benchmarks/memory/server_memory.py makes its lists (`dnc centroids` on real
FashionScenes test scenes, dealt out --k to a class). Each list gets a repository and a fresh tritonserver of
its own (python runtime, the defaults of `dnc repo build`), so a cell's memory is not a former cell's. For
each picture size in --sizes, smallest first: --clients threads send requests of one frame (a real scene
resized to the size, uint8 pixels over HTTP, what `dnc segment` asks for without --maps) back to back, after
a warm-up (each client answered once), for --seconds and at least MIN_REQUESTS answers; frames/s,
per-request p50/p99, and the served tree's peak memory (tritonserver and
its python stubs, PSS: shared pages counted once; sampled every 50 ms). The python backend keeps its
shared-memory regions at their largest, so each size's peak includes what the sizes before it left.
Results: --out/results.json, a markdown table on stdout, --out/seg.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from server_memory import Sampler, class_set  # this folder's memory benchmark
from tqdm import tqdm

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.training.scenes import write_scenes

MB = 1e6
MIN_REQUESTS = 6  # answers counted per cell at least, however long they take
SIZES = "256x256,640x480,1280x720,1920x1080"
ASKED = (F.LABELS, *(s.name for s in F.SEG_HEAD_OUTPUTS[4:] + F.SEG_EVIDENCE_OUTPUTS))


def frames_load(url: str, model: str, frame: np.ndarray, clients: int, seconds: float, warmup: float) -> dict:
    """`clients` threads sending one-frame requests back to back: frames/s and latency over `seconds`."""
    import tritonclient.http as tc

    lat, errors, stop, lock = [], [], threading.Event(), threading.Lock()

    def run():
        with tc.InferenceServerClient(url, network_timeout=600, connection_timeout=600) as client:
            inp = tc.InferInput(F.PIXELS, [1, *frame.shape], "UINT8")
            inp.set_data_from_numpy(frame[None], binary_data=True)
            outs = [tc.InferRequestedOutput(n, binary_data=True) for n in ASKED]
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    client.infer(model, [inp], outputs=outs).as_numpy(F.LABELS)
                except Exception as e:  # every failure counts
                    with lock:
                        errors.append(str(e)[:200])
                    continue
                with lock:
                    lat.append((time.perf_counter(), time.perf_counter() - t))

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    while (len(lat) < clients or time.perf_counter() - start < warmup) and not errors:  # each client answered once
        time.sleep(0.05)
    t0, n0 = time.perf_counter(), len(lat)
    while (time.perf_counter() - t0 < seconds or len(lat) - n0 < MIN_REQUESTS) and time.perf_counter() - t0 < 300:
        time.sleep(0.05)  # at least MIN_REQUESTS answers in the window (a 1080p frame takes seconds)
    t1 = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    s = np.array([d for end, d in lat if t0 <= end <= t1])
    q = (lambda p: float(np.percentile(s, p) * 1e3)) if len(s) else (lambda p: float("nan"))
    return {"frames_per_s": len(s) / (t1 - t0), "p50_ms": q(50), "p99_ms": q(99), "requests": len(s),
            "errors": len(errors), "first_error": (errors or [""])[0]}


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for c, rows in res["cells"].items():
        mp = [r["megapixels"] for r in rows]
        axes[0].plot(mp, [r["frames_per_s"] for r in rows], "o-", label=f"{c} classes")
        axes[1].plot(mp, [r["p99_ms"] for r in rows], "o-", label=f"{c} classes")
        axes[2].plot(mp, [r["peak_pss_mb"] for r in rows], "o-", label=f"{c} classes")
    for ax, title in zip(axes, ("frames/s", "p99 ms per frame", "peak memory of the served tree, MB (PSS)"),
                         strict=True):
        ax.set_xlabel("megapixels per frame (256x256 .. 1920x1080)")
        ax.set_title(title)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.suptitle(f"served segmenter, {res['args']['clients']} clients, one frame per request", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=Path("runs/demo/seg-export"))
    ap.add_argument("--classes", default="6,60,254", help="class counts (the export's own count uses its own list)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sizes", default=SIZES, help="WxH picture sizes, smallest first")
    ap.add_argument("--clients", type=int, default=2, help="requests in flight (`dnc segment`'s default)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--scenes", type=int, default=24, help="real test scenes the pictures and lists come from")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-cost/seg"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    scenes = a.out / "scenes"
    if not (scenes / "classes.json").is_file():
        write_scenes(scenes, "fine", size=64, train=1, test=a.scenes, seed=5)
    source = np.asarray(Image.open(sorted((scenes / "images" / "test").iterdir())[0]).convert("RGB"))
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    own = centroid_set.load(a.export)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(os.sched_getaffinity(0))} cores", "args": {k: str(v) for k, v in vars(a).items()},
           "export": str(a.export), "cells": {}}
    for c in (int(v) for v in a.classes.split(",")):
        folder = a.export if c == own.num_classes else class_set(a.export, scenes, c, a.k, a.out)
        repo = a.out / f"repo-{c}"
        repository.build(a.export, repo, centroids=folder, name="seg")
        rows = []
        with TritonServer(repo, 0, 0, 0) as server:
            for w, h in tqdm(sizes, desc=f"{c} classes", unit="size"):
                frame = np.asarray(Image.fromarray(source).resize((w, h), Image.BILINEAR))
                with Sampler(server.proc.pid) as s:
                    row = frames_load(server.http_url, "seg", frame, a.clients, a.seconds, a.warmup)
                row.update(size=f"{w}x{h}", megapixels=w * h / 1e6, peak_pss_mb=s.peak["pss"] / MB,
                           peak_rss_mb=s.peak["rss"] / MB)
                rows.append(row)
        res["cells"][str(c)] = rows
        (a.out / "results.json").write_text(json.dumps(res, indent=1))
    plot(res, a.out / "seg.png")
    print("| classes | picture | frames/s | p50 ms | p99 ms | peak PSS MB | failed |\n|---|---|---|---|---|---|---|")
    for c, rows in res["cells"].items():
        for r in rows:
            print(f"| {c} | {r['size']} | {r['frames_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                  f"{r['peak_pss_mb']:.0f} | {r['errors']} |")


if __name__ == "__main__":
    main()
