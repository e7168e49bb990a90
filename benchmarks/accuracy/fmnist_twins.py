"""Benchmark: Fashion-MNIST test top-1 of the DNC (K=4), softmax and K=1 twins.

Same backbone, schedule, batch order and seed for every head; each twin is trained in turn and its
figures (top-1/top-5, wall time) appended to OUT/results.json. Run by hand, e.g.

    .venv/bin/python benchmarks/accuracy/fmnist_twins.py --epochs 8 --out runs/bench-fmnist
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig

# "dnc" is the product's default DNC head; "dnc-paper" the paper's initialisation and momentum (random
# unit sub-centroids, mu = 0.999, no clustering from memory): the ablation of issue 9.
TWINS = {"dnc": dict(head="dnc", k=4), "softmax": dict(head="softmax"), "k1": dict(head="dnc", k=1),
         "dnc-paper": dict(head="dnc", k=4, revive=False, momentum=0.999)}
LIVE_KEYS = ("test_live", "test_live_min", "centroid_cos", "live_per_class", "revivals")


def by_twin(results: dict, epochs: int | None = None) -> dict[str, list[dict]]:
    """Runs grouped by twin (keys twin/e{epochs}/s{seed}), optionally only those of one schedule."""
    groups: dict[str, list[dict]] = {}
    for key, r in sorted(results.items()):
        name, ep, _ = key.split("/")
        if epochs is None or ep == f"e{epochs}":
            groups.setdefault(f"{name}/{ep}", []).append(r)
    return groups


def plot_twins(results: dict, path: Path) -> None:
    """Test top-1 per epoch of every twin (mean over its seeds, band from the lowest to the highest)
    and, for DNC twins, the mean live sub-centroids per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, lx) = plt.subplots(1, 2, figsize=(12, 4))
    for name, runs in by_twin(results).items():
        curves = np.array([r["per_epoch_top1"] for r in runs])  # (seeds, epochs)
        ep = np.arange(1, curves.shape[1] + 1)
        line = ax.plot(ep, curves.mean(0), marker="o", label=f"{name} ({curves[:, -1].mean():.2f}%, n={len(runs)})")
        ax.fill_between(ep, curves.min(0), curves.max(0), color=line[0].get_color(), alpha=0.2)
        live = [[e.get("test_live") for e in r.get("per_epoch_live", [])] for r in runs]
        if live and all(v is not None for row in live for v in row) and live[0]:
            lx.plot(ep, np.mean(live, 0), marker="o", color=line[0].get_color(), label=name)
    ax.axhline(93.5, color="grey", linestyle="--", linewidth=1, label="target 93.5% (16 epochs)")
    ax.set(xlabel="epoch", ylabel="Fashion-MNIST test top-1 (%)", title="twins: mean over seeds, band min-max")
    ax.set_ylim(bottom=max(0, min(min(r["per_epoch_top1"]) for r in results.values()) - 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    lx.axhline(3, color="grey", linestyle="--", linewidth=1, label="target: 3 of 4")
    lx.set(xlabel="epoch", ylabel="live sub-centroids per class (test, mean)", title="sub-centroids in use",
           ylim=(0, 4.2))
    lx.grid(alpha=0.3)
    lx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(results: dict, epochs: int) -> None:
    """Markdown table of the runs of one schedule: mean and spread over seeds, live sub-centroids."""
    import numpy as np

    print("| twin | seeds | test top-1, mean ± sd | per seed | live per class, mean at epochs 2.. "
          "(lowest epoch) | fewest live in a class, last epoch |")
    print("|---|---|---|---|---|---|")
    for name, runs in by_twin(results, epochs).items():
        top1 = np.array([r["test_top1"] for r in runs])
        sd = f" ± {top1.std(ddof=1):.2f}" if len(top1) > 1 else ""
        live = [[e.get("test_live") for e in r.get("per_epoch_live", [])] for r in runs]
        if len(live[0]) > 1 and all(len(row) == len(live[0]) and None not in row for row in live):
            mean_live = np.mean(live, 0)  # (epochs,)
            live_text = f"{mean_live[1:].mean():.2f} ({mean_live[1:].min():.2f})"
            fewest = ", ".join(str(r["per_epoch_live"][-1]["test_live_min"]) for r in runs)
        else:
            live_text = fewest = "-"
        print(f"| {name} | {len(runs)} | {top1.mean():.2f}{sd} | {', '.join(f'{v:.2f}' for v in top1)} | "
              f"{live_text} | {fewest} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--heads", default="dnc,softmax,k1", help=f"comma list of twins: {', '.join(TWINS)}")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--train-limit", type=int, default=0, help="only the first N training images (0: all)")
    ap.add_argument("--test-limit", type=int, default=0, help="only the first N test images (0: all)")
    ap.add_argument("--out", default="runs/bench-fmnist")
    ap.add_argument("--redo", action="store_true", help="train twins already in OUT/results.json again")
    ap.add_argument("--report", action="store_true", help="only print the table of the runs at --epochs in OUT")
    args = ap.parse_args()
    if args.report:
        results = json.loads((Path(args.out) / "results.json").read_text())
        report(results, args.epochs)
        plot_twins(results, Path(args.out) / "twins.png")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.heads.split(","):
        mcfg = ModelConfig(num_classes=10, arch=args.arch, width=args.width, embed_dim=args.embed_dim,
                           **TWINS[name])
        key = f"{name}/e{args.epochs}/s{args.seed}"
        if key in results and not args.redo:
            print(f"{key}: already in {results_path} (--redo to train it again)", flush=True)
            continue
        tcfg = TrainConfig(data="fashion-mnist", out=str(out / key), epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                           warmup_epochs=0.5, workers=0, train_limit=args.train_limit,
                           test_limit=args.test_limit)
        t0 = time.time()
        partial = out / key / "checkpoint.safetensors"
        resumed = partial.exists() and not args.redo  # a run stopped with its session: go on exactly
        if resumed:
            print(f"{key}: resuming {partial}", flush=True)
            tcfg.resume = str(partial)
        r = train(tcfg, None if resumed else mcfg)
        last = r["history"][-1]
        results[key] = {"test_top1": last["test_top1"], "test_top5": last["test_top5"],
                        "wall_minutes": round((time.time() - t0) / 60, 1), "epochs": args.epochs, "seed": args.seed,
                        "per_epoch_top1": [h["test_top1"] for h in r["history"]],
                        "per_epoch_live": [{k: h.get(k) for k in LIVE_KEYS} for h in r["history"]],
                        "model": mcfg.to_dict(), "machine": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
                        "resumed": resumed}  # wall_minutes then counts the resumed part only
        results_path.write_text(json.dumps(results, indent=1))
        plot_twins(results, out / "twins.png")
        print(f"{key}: top-1 {last['test_top1']:.2f}%, live {last.get('test_live')} in "
              f"{results[key]['wall_minutes']} min", flush=True)


if __name__ == "__main__":
    main()
