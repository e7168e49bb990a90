"""Benchmark: Fashion-MNIST test top-1 of the DNC (K=4), softmax and K=1 twins.

Same backbone, schedule, batch order and seed for every head; each twin is trained in turn and its
figures (top-1/top-5, wall time) appended to OUT/results.json. Run by hand, e.g.

    .venv/bin/python benchmarks/fmnist_twins.py --epochs 8 --out runs/bench-fmnist
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from training.loop import TrainConfig, train
from training.model import ModelConfig

# "dnc" is the product's default DNC head; "dnc-paper" the paper's initialisation and momentum (random
# unit sub-centroids, mu = 0.999, no clustering from memory): the ablation of issue 9.
TWINS = {"dnc": dict(head="dnc", k=4), "softmax": dict(head="softmax"), "k1": dict(head="dnc", k=1),
         "dnc-paper": dict(head="dnc", k=4, revive=False, momentum=0.999)}
LIVE_KEYS = ("test_live", "test_live_min", "centroid_cos", "live_per_class", "revivals")


def plot_twins(results: dict, path: Path) -> None:
    """Test top-1 per epoch of every twin trained so far, on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        curve = r["per_epoch_top1"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{name} ({curve[-1]:.2f}%)")
    ax.axhline(93.5, color="grey", linestyle="--", linewidth=1, label="target 93.5%")
    ax.set(xlabel="epoch", ylabel="Fashion-MNIST test top-1 (%)", title="DNC vs softmax vs K=1 (same backbone)")
    ax.set_ylim(bottom=max(0, min(min(r["per_epoch_top1"]) for r in results.values()) - 2))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    ap.add_argument("--out", default="runs/bench-fmnist")
    args = ap.parse_args()
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
        tcfg = TrainConfig(data="fashion-mnist", out=str(out / key), epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                           warmup_epochs=0.5, workers=0)
        t0 = time.time()
        r = train(tcfg, mcfg)
        last = r["history"][-1]
        results[key] = {"test_top1": last["test_top1"], "test_top5": last["test_top5"],
                        "wall_minutes": round((time.time() - t0) / 60, 1), "epochs": args.epochs, "seed": args.seed,
                        "per_epoch_top1": [h["test_top1"] for h in r["history"]],
                        "per_epoch_live": [{k: h.get(k) for k in LIVE_KEYS} for h in r["history"]],
                        "model": mcfg.to_dict(), "machine": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
        results_path.write_text(json.dumps(results, indent=1))
        plot_twins(results, out / "twins.png")
        print(f"{key}: top-1 {last['test_top1']:.2f}%, live {last.get('test_live')} in "
              f"{results[key]['wall_minutes']} min", flush=True)


if __name__ == "__main__":
    main()
