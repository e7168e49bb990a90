"""Benchmark: what a class list with many sub-centroids buys and costs (issue 25, item 1).

For one exported embedding and a labelled train/test folder, builds a set per K as `dnc centroids --K K` does
(K a number, or `all`: every training image a sub-centroid, the head then 1-nearest-neighbour) and reports
for each: top-1 on the test split (as `dnc eval-onnx`), the set's sub-centroids and head.onnx bytes, the time
to build it, and onnxruntime latencies at batch B (median of R runs, in-process, `--threads`): the
embedding graph, the head, and the two together against the K=first set's (the served path adds the same
prep and transport to both, so the ratio of embed + head is the in-process share of it).

    .venv/bin/python benchmarks/accuracy/large_k.py --embed runs/demo/export/embed.onnx \\
        --train runs/demo/data/fine/train --test runs/demo/data/fine/test --K 4 16 64 all --out runs/bench-large-k
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.evaluate import evaluate_folder
from dnc.export.recompute import compute_set, embed_files, scan_labelled_folder


def latency(sess, name: str, x: np.ndarray, runs: int) -> float:
    """Median seconds of `runs` calls of `sess` on input `name` = x (after one warm-up call)."""
    sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(embed: Path, train: Path, test: Path, ks: list[str], out: Path, batch: int, runs: int, threads: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    sess = runtime.session(embed, threads)
    _, files, _ = scan_labelled_folder(test)
    picked = [files[i % len(files)] for i in range(batch)]
    embeddings = embed_files(sess, picked, runtime.preprocessing_of(sess), threads=threads)  # (B, D): the head's input
    prep = runtime.preprocessing_of(sess)  # the embedding's own latency on inputs of its size
    x = np.random.default_rng(0).standard_normal((batch, prep["channels"], prep["image_size"], prep["image_size"]),
                                                 dtype=np.float32)
    t_embed = latency(sess, F.IMAGES, x, runs)
    rows = {}
    for k in ks:
        folder = out / f"set-K{k}"
        t0 = time.time()
        compute_set(embed, train, folder, k=k if k in ("all", "auto") else int(k), threads=threads)
        built = time.time() - t0
        ev = evaluate_folder(embed, folder, test, threads=threads)
        head = runtime.session(folder / F.HEAD_FILE, threads)
        t_head = latency(head, F.EMBEDDING, embeddings, runs)
        meta = json.loads((folder / F.SET_JSON_FILE).read_text())
        rows[k] = {"top1": ev["top1"], "subcentroids": int(sum(meta["ks"])), "kmax": meta["kmax"],
                   "head_bytes": (folder / F.HEAD_FILE).stat().st_size, "build_s": round(built, 2),
                   "head_ms": round(1e3 * t_head, 3), "embed_plus_head_ms": round(1e3 * (t_embed + t_head), 3)}
        print(f"K={k}: top-1 {ev['top1']:.2f}%, {rows[k]['subcentroids']} sub-centroids, head {rows[k]['head_bytes']} "
              f"bytes, head {rows[k]['head_ms']} ms, embed+head {rows[k]['embed_plus_head_ms']} ms at batch {batch}",
              flush=True)
    first = rows[ks[0]]["embed_plus_head_ms"]
    for k in ks:
        rows[k]["embed_plus_head_vs_first"] = round(rows[k]["embed_plus_head_ms"] / first, 3)
    result = {"embed": str(embed), "train": str(train), "test": str(test), "batch": batch, "runs": runs,
              "threads": threads, "embed_ms": round(1e3 * t_embed, 3), "sets": rows, "machine": platform.machine(),
              "date": time.strftime("%Y-%m-%d")}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embed", type=Path, required=True)
    p.add_argument("--train", type=Path, required=True, help="class folders the sets are built from")
    p.add_argument("--test", type=Path, required=True, help="class folders top-1 is measured on")
    p.add_argument("--K", nargs="+", default=["4", "16", "64", "all"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    r = run(a.embed, a.train, a.test, a.K, a.out, a.batch, a.runs, a.threads)
    for k, row in r["sets"].items():
        print(f"K={k}: embed+head x{row['embed_plus_head_vs_first']} of K={a.K[0]}")


if __name__ == "__main__":
    main()
