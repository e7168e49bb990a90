"""Benchmark: coarse-to-fine class-list swap without retraining (paper appendix E, "induction").

Train DNC (K=4) and softmax twins on Fashion-MNIST's 5 coarse classes (same backbone, schedule,
seed), export each, recompute centroids for the 10 fine classes from the 60,000 training images
with `dnc centroids` (onnxruntime only), and report fine test top-1 of both embeddings. Every step
is the `dnc` command a user would run; the `dnc centroids` timings (whole run, and its clustering
step alone) are recorded too.

    .venv/bin/python benchmarks/coarse_to_fine.py --epochs 8 --out runs/bench-c2f
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from export import formats as F

DNC = [sys.executable, "-m", "clients.cli"]


def run(*args: str) -> dict:
    """Run a dnc command; return its last stdout line parsed as JSON when it is JSON."""
    print("$ dnc " + " ".join(args), flush=True)
    t0 = time.time()
    res = subprocess.run([*DNC, *args], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit(f"dnc {args[0]} failed with exit code {res.returncode}")
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    out = json.loads(last) if last.startswith("{") else {}
    out["_wall_seconds"] = time.time() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=32, help="backbone base width (smaller for smoke runs)")
    ap.add_argument("--per-class", type=int, default=0, help="images per class in the folders (0: all; for smoke runs)")
    ap.add_argument("--out", default="runs/bench-c2f")
    args = ap.parse_args()
    out = Path(args.out)
    coarse, fine = out / "data" / "coarse", out / "data" / "fine"
    if not (coarse / "test").is_dir():
        run("write-folder", "--out", str(coarse), "--labels", "coarse", "--per-class", str(args.per_class))
    if not (fine / "test").is_dir():
        run("write-folder", "--out", str(fine), "--labels", "fine", "--per-class", str(args.per_class))
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "epochs": args.epochs, "K": args.K, "width": args.width, "twins": {}}
    for head in ("dnc", "softmax"):
        run_dir = out / head
        if not (run_dir / "checkpoint.safetensors").exists():
            run("train", "--data", str(coarse), "--channels", "1", "--image-size", "28", "--head", head,
                "--K", str(args.K), "--width", str(args.width), "--epochs", str(args.epochs),
                "--warmup-epochs", "0.5", "--seed", str(args.seed),
                "--workers", "0", "--out", str(run_dir))
        coarse_eval = run("eval", "--checkpoint", str(run_dir / "checkpoint.safetensors"), "--data", str(coarse),
                          "--json")
        run("export", str(run_dir / "checkpoint.safetensors"), "--out", str(run_dir / "export"), "--no-fp16",
            "--threads", str(args.threads), "--json")
        embed = str(run_dir / "export" / F.EMBED_FILE)
        cents = run("centroids", "--embed", embed, "--data", str(fine / "train"), "--out", str(run_dir / "fine-set"),
                    "--K", str(args.K), "--threads", str(args.threads), "--json")
        ev = run("eval-onnx", "--embed", embed, "--centroids", str(run_dir / "fine-set"), "--data", str(fine / "test"),
                 "--threads", str(args.threads), "--json")
        results["twins"][head] = {"coarse_test_top1": coarse_eval["top1"], "fine_test_top1": ev["top1"],
                                  "fine_per_class_top1": ev["per_class_top1"],
                                  "centroids_wall_seconds": cents["_wall_seconds"],
                                  "centroids_embed_seconds": cents["embed_seconds"],
                                  "centroids_cluster_seconds": cents["cluster_seconds"], "images": cents["images"]}
        print(f"{head}: coarse test top-1 {coarse_eval['top1']:.2f}%, fine test top-1 after recomputing centroids "
              f"{ev['top1']:.2f}% (dnc centroids: {cents['_wall_seconds']:.1f}s wall, clustering "
              f"{cents['cluster_seconds']:.2f}s)", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    gap = results["twins"]["dnc"]["fine_test_top1"] - results["twins"]["softmax"]["fine_test_top1"]
    results["dnc_minus_softmax"] = gap
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"DNC - softmax fine top-1: {gap:+.2f} points (target >= +5: {'met' if gap >= 5 else 'MISSED'})")


if __name__ == "__main__":
    main()
