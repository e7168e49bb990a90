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
    """Two panels: training loss, and train/test top-1 and test top-5 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r.get("train_loss") for r in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key in ("train_top1", "test_top1", "test_top5"):
        if any(key in r for r in history):
            b.plot(ep, [r.get(key) for r in history], marker="o", label=key)
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
