"""Accuracy metrics, the per-epoch log (CSV and JSON) and its plot (PNG)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at C)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, kmax)
    hit = top == labels[:, None]
    return [int(hit[:, : min(k, logits.shape[1])].any(1).sum()) for k in ks]


def write_log(history: list[dict], out_dir: Path) -> None:
    """Write the history as log.csv and log.json, and plot it to curves.png."""
    if not history:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out_dir / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    (out_dir / "log.json").write_text(json.dumps(history, indent=1))
    plot_history(history, out_dir / "curves.png")


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss; train/test top-1 and test top-5 (segmenters: pixel accuracy and mIoU); and, for DNC
    runs, the live sub-centroids per class on test images (mean and fewest) with the mean pairwise cosine
    of a class's sub-centroids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    live = any(r.get("test_live") is not None for r in history)
    fig, axes = plt.subplots(1, 3 if live else 2, figsize=(15 if live else 10, 4))
    a, b = axes[0], axes[1]
    a.plot(ep, [r.get("train_loss") for r in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key in ("train_top1", "test_top1", "test_top5", "train_pixel_acc", "test_pixel_acc", "test_miou"):
        if any(key in r for r in history):
            b.plot(ep, [r.get(key) for r in history], marker="o", label=key)
    seg = any("test_miou" in r for r in history)
    b.set(xlabel="epoch", ylabel="pixel accuracy, mIoU (%)" if seg else "accuracy (%)",
          title="segmentation" if seg else "accuracy")
    b.legend()
    b.grid(alpha=0.3)
    if live:
        _plot_live(axes[2], history)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_live(ax, history: list[dict]) -> None:
    ep = [r["epoch"] for r in history]
    ax.plot(ep, [r.get("test_live") for r in history], marker="o", label="live per class (mean)")
    ax.plot(ep, [r.get("test_live_min") for r in history], marker="v", label="live per class (fewest)")
    ax.set(xlabel="epoch", ylabel="live sub-centroids (test images, >= 5% of class)", title="sub-centroids in use")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    cos = ax.twinx()
    cos.plot(ep, [r.get("centroid_cos") for r in history], color="grey", linestyle="--", marker=".",
             label="mean pairwise cosine")
    cos.set(ylabel="pairwise cosine within a class", ylim=(-0.1, 1.05))
    lines = ax.get_legend_handles_labels()
    more = cos.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
