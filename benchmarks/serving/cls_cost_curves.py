"""Cost curves of a served classifier: images/s and p99 latency as the class list and the batch grow (issue 27).

    python benchmarks/serving/cls_cost_curves.py --export runs/demo/export --images runs/demo/data/fine/train \
        --requests-from runs/demo/data/fine/test

One real tritonserver (python runtime, `dnc repo build` defaults, --threads for the embedding) serves the
export; class lists of every size in --classes x --k are swapped in (`dnc swap`'s library) one after the
other. Their sub-centroids are real embeddings: embed.onnx on the pictures under --images, drawn without
replacement while they last (then again), each anchored to its picture (so the evidence carries real
exemplar paths); class names are synthetic. What a list costs depends only on its shape (C x K x D), so
these lists cost what trained lists of that shape would. For each list: served images/s and per-request
p50/p99 with --concurrency client threads sending requests of --request-batch uint8 pictures (HTTP, every
evidence output asked for), and the head alone in-process (onnxruntime, one thread: what the list adds per
picture). Then, with the export's own list, the same figures for every request batch in --batches.
Results: --out (JSON), a markdown table on stdout and --plot (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from served_ratio import pictures, served  # this folder's ratio benchmark
from tqdm import tqdm

from dnc.core import centroid_set, preprocess
from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.core.images import image_files, read_picture
from dnc.export import runtime
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.serving.swap import swap


def real_embeddings(export: Path, folder: Path, limit: int, prep: dict, threads: int) -> tuple[np.ndarray, list]:
    """(N, D) embeddings of at most `limit` pictures under `folder`, and their paths."""
    files = image_files(folder)[:limit]
    if not files:
        raise SystemExit(f"no image files under {folder}")
    px = np.stack([preprocess.prepare(preprocess.from_pixels(read_picture(f, prep["color"], prep)), prep)
                   for f in tqdm(files, desc="read", unit="img")])
    return runtime.embed(runtime.session(export / F.EMBED_FILE, threads), px, prep), [str(f) for f in files]


def shaped_set(emb: np.ndarray, paths: list, fingerprint: str, classes: int, k: int, seed: int) -> CentroidSet:
    """A list of `classes` classes of k sub-centroids each, every one a real picture's embedding."""
    rng = np.random.default_rng(seed)
    need = classes * k
    order = np.concatenate([rng.permutation(len(emb)) for _ in range(-(-need // len(emb)))])[:need]
    cents = emb[order].reshape(classes, k, -1).astype(np.float32)
    cents /= np.linalg.norm(cents, axis=2, keepdims=True)
    ids = order.reshape(classes, k).astype(np.int64)
    names = [[paths[i] for i in row] for row in ids]
    return CentroidSet(cents, [k] * classes, [f"class {c}" for c in range(classes)], fingerprint, exemplar_ids=ids,
                       exemplar_names=names, source={"from": "benchmarks/serving/cls_cost_curves.py", "seed": seed})


def head_ms(repo: Path, dim: int, batch: int, seconds: float) -> float:
    """Median ms per picture of the served head alone, in-process, on unit embeddings, batches of `batch`."""
    head = runtime.session(repo / F.HEAD_MODEL / "1" / "model.onnx", 1)
    e = np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    head.run(None, {F.EMBEDDING: e})
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        head.run(None, {F.EMBEDDING: e})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3 / batch)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for k in res["args"]["k"].split(","):
        rows = [r for r in res["lists"] if r["k"] == int(k)]
        c = [r["classes"] for r in rows]
        axes[0].plot(c, [r["images_per_s"] for r in rows], "o-", label=f"K {k}: served images/s")
        axes[1].plot(c, [r["p99_ms"] for r in rows], "o-", label=f"K {k}: served p99 ms")
        axes[1].plot(c, [r["head_ms_per_image"] * res["args"]["request_batch"] for r in rows], "x--",
                     label=f"K {k}: head alone, ms per request")
    for ax, title in ((axes[0], "images/s vs classes"), (axes[1], "latency vs classes")):
        ax.set_xscale("log")
        ax.set_xlabel("classes")
        ax.set_title(f"{title} (batch {res['args']['request_batch']}, {res['args']['concurrency']} clients)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    b = [r["batch"] for r in res["batches"]]
    axes[2].plot(b, [r["images_per_s"] for r in res["batches"]], "o-", color="C0", label="images/s")
    axes[2].set_xscale("log", base=2)
    axes[2].set_xlabel("pictures per request")
    axes[2].set_ylabel("images/s")
    twin = axes[2].twinx()
    twin.plot(b, [r["p99_ms"] for r in res["batches"]], "s--", color="C3", label="p99 ms")
    twin.set_ylabel("p99 ms per request")
    axes[2].set_title(f"batch ({res['base_classes']} classes, {res['args']['concurrency']} clients)")
    axes[2].grid(alpha=0.3)
    lines = axes[2].get_lines() + twin.get_lines()
    axes[2].legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="runs/demo/export")
    ap.add_argument("--images", default="runs/demo/data/fine/train", help="pictures whose embeddings become "
                    "the lists' sub-centroids")
    ap.add_argument("--requests-from", default="runs/demo/data/fine/test", help="the requests' pictures")
    ap.add_argument("--classes", default="10,100,1000")
    ap.add_argument("--k", default="4,64")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--request-batch", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--embed-limit", type=int, default=20000, help="pictures embedded for the sub-centroids")
    ap.add_argument("--out", default="runs/bench-cost/cls.json")
    ap.add_argument("--plot", default="runs/bench-cost/cls.png")
    a = ap.parse_args()

    export, out = Path(a.export), Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repo = out.parent / "cls-repo"
    info = repository.build(export, repo, threads=a.threads, max_batch=64)
    prep, dim = info["preprocessing"], int(info["dim"])
    base = centroid_set.load(export)
    emb, paths = real_embeddings(export, Path(a.images), a.embed_limit, prep, a.threads)
    shapes = [(c, k) for k in map(int, a.k.split(",")) for c in map(int, a.classes.split(","))]
    sets = {}
    for c, k in shapes:
        folder = out.parent / f"set-C{c}-K{k}"
        centroid_set.save(shaped_set(emb, paths, base.embed_fingerprint, c, k, seed=c * 1000 + k), folder)
        sets[(c, k)] = folder
    batch_x = {b: pictures(Path(a.requests_from), b, prep)["pixels"] for b in map(int, a.batches.split(","))}
    x = pictures(Path(a.requests_from), a.request_batch, prep)["pixels"]
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(os.sched_getaffinity(0))} cores", "args": vars(a), "dim": dim, "embedded": len(emb),
           "base_classes": base.num_classes, "lists": [], "batches": []}
    with TritonServer(repo, 0, 0, 0) as server:
        for b, xb in tqdm(batch_x.items(), desc="batches", unit="cell"):
            row = served(server.http_url, "http", xb, a.concurrency, a.seconds, a.warmup)
            res["batches"].append({"batch": b, **row})
        for (c, k), folder in tqdm(sets.items(), desc="lists", unit="list"):
            t = swap(repo, folder, server.grpc_url, log_file=server.log_file)
            row = served(server.http_url, "http", x, a.concurrency, a.seconds, a.warmup)
            row.update(classes=c, k=k, swap_seconds=t["total_seconds"],
                       head_bytes=(repo / F.HEAD_MODEL / "1" / "model.onnx").stat().st_size,
                       head_ms_per_image=head_ms(repo, dim, a.request_batch, 2.0))
            res["lists"].append(row)
            out.write_text(json.dumps(res, indent=1))
    out.write_text(json.dumps(res, indent=1))
    plot(res, Path(a.plot))
    print("| classes | K | images/s | p50 ms | p99 ms | head alone ms/image | head.onnx MB | failed |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in res["lists"]:
        print(f"| {r['classes']} | {r['k']} | {r['images_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['head_ms_per_image']:.3f} | {r['head_bytes'] / 1e6:.1f} | {r['errors']} |")
    print("\n| pictures per request | images/s | p50 ms | p99 ms | failed |\n|---|---|---|---|---|")
    for r in res["batches"]:
        print(f"| {r['batch']} | {r['images_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")


if __name__ == "__main__":
    main()
