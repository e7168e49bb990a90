"""Benchmark: coarse-to-fine class-list swap without retraining (paper appendix E, "induction").

Train twins on Fashion-MNIST's 5 coarse classes (same backbone, schedule and seed): DNC K=4 (the
product's default, sub-centroids from data), DNC K=4 with the paper's random initialisation
(`--no-revive`) and softmax. Export each, then classify the 10 fine test classes two ways, from the
fine-labelled training images and the exported embedding only (onnxruntime, no retraining):
- product protocol: `dnc centroids --K 4` (anchored, the default) and `dnc eval-onnx`;
- paper protocol (appendix E): 1-nearest-neighbour (cosine) over all fine-labelled training embeddings.
Every step is the `dnc` command a user would run, except the 1-NN, done here in numpy. One seed per
invocation; runs are keyed `s{seed}/{head}` in OUT/results.json, and `--report` prints the per-class
table and the means and spreads over the seeds found (the gap is also averaged over the fine classes
that the coarse labels merged: tops and footwear).

    .venv/bin/python benchmarks/accuracy/coarse_to_fine.py --epochs 8 --per-class 4000 --seed 0 --out runs/bench-c2f3
    .venv/bin/python benchmarks/accuracy/coarse_to_fine.py --out runs/bench-c2f3 --report

`--sets 4,16,all,auto` also makes one fine set per K with `dnc centroids` (issue 25: sets that keep what
the embedding knows) for runs already trained or new, and records per set: fine top-1, the share of test
images accepted by its thresholds, sub-centroids and how many win a test image (live), head bytes. K:SHARE
sets another calibration share (`all:0`: every training image a sub-centroid, no thresholds: 1-NN).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.recompute import embed_files, scan_labelled_folder
from dnc.training.folders import FASHION_MNIST_COARSE, folder_name

DNC = [sys.executable, "-m", "dnc.clients.cli"]
HEADS = {"dnc": ["--head", "dnc"], "dnc-paper": ["--head", "dnc", "--no-revive"], "softmax": ["--head", "softmax"]}
# Fine classes (folder names) that share a coarse class with another: where induction has work to do.
MERGED = [folder_name(f) for fines in FASHION_MNIST_COARSE.values() if len(fines) > 1 for f in fines]


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


def nearest_neighbour(embed: str, train: Path, test: Path, threads: int) -> dict:
    """Paper protocol: each fine test image takes the label of its most cosine-similar fine training image."""
    sess = runtime.session(embed, threads)
    prep = runtime.preprocessing_of(sess, embed)
    classes, train_files, train_labels = scan_labelled_folder(train)
    test_classes, test_files, test_labels = scan_labelled_folder(test)
    if test_classes != classes:
        sys.exit(f"{test} has classes {test_classes}, {train} has {classes}")
    xtr = embed_files(sess, train_files, prep, threads=threads, desc="1-NN train")
    xte = embed_files(sess, test_files, prep, threads=threads, desc="1-NN test")
    xtr /= np.linalg.norm(xtr, axis=1, keepdims=True)
    xte /= np.linalg.norm(xte, axis=1, keepdims=True)
    pred = np.concatenate([train_labels[(xte[i:i + 1024] @ xtr.T).argmax(1)] for i in range(0, len(xte), 1024)])
    per_class = {c: float(100 * (pred[test_labels == i] == i).mean()) for i, c in enumerate(classes)}
    return {"top1": float(100 * (pred == test_labels).mean()), "per_class_top1": per_class}


def train_and_induce(args) -> None:
    out = Path(args.out)
    coarse, fine = out / "data" / "coarse", out / "data" / "fine"
    if not (coarse / "test").is_dir():
        run("write-folder", "--out", str(coarse), "--labels", "coarse", "--per-class", str(args.per_class))
    if not (fine / "test").is_dir():
        run("write-folder", "--out", str(fine), "--labels", "fine", "--per-class", str(args.per_class))
    results_path = out / "results.json"
    for head in args.heads.split(","):
        key = f"s{args.seed}/{head}"
        if results_path.exists() and key in json.loads(results_path.read_text()) and not args.redo:
            print(f"{key}: already in {results_path} (--redo to run it again)", flush=True)
            continue
        run_dir = out / key
        if args.redo and run_dir.exists():
            shutil.rmtree(run_dir)  # retrain: a kept checkpoint could be of another schedule
        if not (run_dir / "checkpoint.safetensors").exists():
            run("train", "--data", str(coarse), "--channels", "1", "--image-size", "28", *HEADS[head],
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
        product = run("eval-onnx", "--embed", embed, "--centroids", str(run_dir / "fine-set"),
                      "--data", str(fine / "test"), "--threads", str(args.threads), "--json")
        paper = nearest_neighbour(embed, fine / "train", fine / "test", args.threads)
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results[key] = {"coarse_test_top1": coarse_eval["top1"], "coarse_live": coarse_eval.get("live_per_class"),
                        "product_top1": product["top1"], "product_per_class": product["per_class_top1"],
                        "paper_top1": paper["top1"], "paper_per_class": paper["per_class_top1"],
                        "centroids_wall_seconds": round(cents["_wall_seconds"], 1), "epochs": args.epochs,
                        "per_class_images": args.per_class, "width": args.width, "K": args.K,
                        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                        "threads": args.threads}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{key}: coarse top-1 {coarse_eval['top1']:.2f}%, fine top-1 by centroids {product['top1']:.2f}%, "
              f"by 1-NN {paper['top1']:.2f}%", flush=True)
    if args.sets:
        for head in args.heads.split(","):
            add_sets(args, out / f"s{args.seed}" / head, f"s{args.seed}/{head}", fine, results_path)


def add_sets(args, run_dir: Path, key: str, fine: Path, results_path: Path) -> None:
    """Fine sets of each K in --sets from a trained run's export, measured on the fine test images."""
    from dnc.core import centroid_set

    results = json.loads(results_path.read_text())
    done = results.get(key, {}).get("sets", {})
    embed = str(run_dir / "export" / F.EMBED_FILE)
    again = set(args.redo_sets.split(","))
    todo = [k for k in args.sets.split(",") if k and (k not in done or args.redo or k in again)]
    if not todo:
        return
    sess = runtime.session(embed, args.threads)
    test_classes, test_files, test_labels = scan_labelled_folder(fine / "test")
    xte = embed_files(sess, test_files, runtime.preprocessing_of(sess, embed), threads=args.threads, desc="test")
    for k in todo:  # K, or K:SHARE for another calibration share (all:0: every image a sub-centroid, no thresholds)
        folder = run_dir / f"fine-set-K{k.replace(':', '-share')}"
        kk, _, share = k.partition(":")
        made = run("centroids", "--embed", embed, "--data", str(fine / "train"), "--out", str(folder), "--K", kk,
                   "--threads", str(args.threads), "--json", *(["--calibration-share", share] if share else []))
        cs = centroid_set.load(folder)
        head = runtime.session(folder / F.HEAD_FILE, args.threads)
        pred, top, sub = (np.concatenate(parts) for parts in zip(*[
            head.run([F.PREDICTED, F.TOP_SCORE, F.SUBCENTROID], {F.EMBEDDING: xte[i:i + 1024]})
            for i in range(0, len(xte), 1024)], strict=True))
        truth = np.array([cs.class_names.index(c) for c in test_classes])[test_labels]
        won = {(int(c), int(sub[i, c])) for i, c in enumerate(pred)}
        accepted = None if cs.thresholds is None else float(100 * (top >= cs.thresholds[pred]).mean())
        done[k] = {"top1": float(100 * (pred == truth).mean()), "accepted": accepted, "k_chosen": made.get("k"),
                   "subcentroids": int(sum(cs.ks)), "live": len(won),
                   "head_bytes": (folder / F.HEAD_FILE).stat().st_size, "held_out_top1": made.get("held_out_top1"),
                   "centroids_wall_seconds": round(made["_wall_seconds"], 1)}
        print(f"{key} K={k}: fine top-1 {done[k]['top1']:.2f}%, accepted {accepted}, {len(won)} of "
              f"{done[k]['subcentroids']} sub-centroids live", flush=True)
        results = json.loads(results_path.read_text())
        results.setdefault(key, {})["sets"] = done
        results_path.write_text(json.dumps(results, indent=1))


def mean_spread(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} (n={len(v)})" if len(v) > 1 else f"{v.mean():.2f} (n=1)"


def report(out: Path) -> None:
    """Markdown tables over every seed in OUT/results.json."""
    results = json.loads((out / "results.json").read_text())
    heads = [h for h in HEADS if any(k.endswith(f"/{h}") for k in results)]
    if not heads:
        sys.exit(f"no runs in {out / 'results.json'}")
    runs = {h: [v for k, v in sorted(results.items()) if k.endswith(f"/{h}")] for h in heads}
    print("| head | coarse top-1 | fine top-1, product (centroids K=4) | fine top-1, paper (1-NN) |"
          " merged classes, product | merged classes, paper |")
    print("|---|---|---|---|---|---|")
    for h in heads:
        rs = runs[h]
        merged = lambda r, p: float(np.mean([r[f"{p}_per_class"][c] for c in MERGED]))  # noqa: E731
        print(f"| {h} | {mean_spread([r['coarse_test_top1'] for r in rs])} | "
              f"{mean_spread([r['product_top1'] for r in rs])} | {mean_spread([r['paper_top1'] for r in rs])} | "
              f"{mean_spread([merged(r, 'product') for r in rs])} | {mean_spread([merged(r, 'paper') for r in rs])} |")
    classes = list(runs[heads[0]][0]["product_per_class"])
    print("\nPer fine class, mean over seeds (product / paper protocol):\n")
    print("| class | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for c in classes:
        cells = [f"{np.mean([r['product_per_class'][c] for r in runs[h]]):.1f} / "
                 f"{np.mean([r['paper_per_class'][c] for r in runs[h]]):.1f}" for h in heads]
        print(f"| {c}{' (merged)' if c in MERGED else ''} | " + " | ".join(cells) + " |")
    with_sets = {h: [r for r in runs[h] if r.get("sets")] for h in heads}
    for h, rs in with_sets.items():
        ks = sorted({k for r in rs for k in r["sets"]},
                    key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        if not ks:
            continue
        print(f"\nFine sets of the {h} runs (issue 25), mean over seeds:\n")
        print("| K | fine top-1 | accepted | sub-centroids | live | head MB | seeds |")
        print("|---|---|---|---|---|---|---|")
        for k in ks:
            got = [r["sets"][k] for r in rs if k in r["sets"]]
            acc = [g["accepted"] for g in got if g["accepted"] is not None]
            print(f"| {k} | {mean_spread([g['top1'] for g in got])} | {mean_spread(acc) if acc else '-'} | "
                  f"{np.mean([g['subcentroids'] for g in got]):.0f} | {np.mean([g['live'] for g in got]):.0f} | "
                  f"{np.mean([g['head_bytes'] for g in got]) / 1e6:.2f} | {len(got)} |")
    if "softmax" in runs:
        for h in [h for h in heads if h != "softmax"]:
            seeds = sorted({k.split("/")[0] for k in results if k.endswith(f"/{h}")} &
                           {k.split("/")[0] for k in results if k.endswith("/softmax")})
            for p in ("product", "paper"):
                gaps = [results[f"{s}/{h}"][f"{p}_top1"] - results[f"{s}/softmax"][f"{p}_top1"] for s in seeds]
                if gaps:
                    print(f"\n{h} - softmax, {p} protocol, paired by seed: {mean_spread(gaps)}", end="")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heads", default="dnc,dnc-paper,softmax", help=f"comma list of: {', '.join(HEADS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=32, help="backbone base width (smaller for smoke runs)")
    ap.add_argument("--per-class", type=int, default=0, help="images per class in the folders (0: all)")
    ap.add_argument("--out", default="runs/bench-c2f")
    ap.add_argument("--redo", action="store_true", help="run heads already in OUT/results.json again")
    ap.add_argument("--redo-sets", default="", help="make and measure the sets of these K again (comma list, each "
                    "also in --sets), keeping the trained runs")
    ap.add_argument("--sets", default="", help="also fine sets of these K (comma list: numbers, all, auto)")
    ap.add_argument("--report", action="store_true", help="only print the tables of the runs in OUT")
    args = ap.parse_args()
    if args.report:
        report(Path(args.out))
    else:
        train_and_induce(args)


if __name__ == "__main__":
    main()
