"""Benchmark (issue 9, paper appendix E): do sub-centroids of merged classes find the hidden sub-categories?

For models trained on Fashion-MNIST's 5 coarse classes (a folder written by `dnc write-folder
--labels coarse`, whose file names are Fashion-MNIST indices, so each test image's fine label is
known), inside each merged coarse class (tops = 4 fine classes, footwear = 3) on its test images:
- how many sub-centroids are live (nearest of the class's for >= 5% of its images),
- purity and NMI of "winning sub-centroid" against the hidden fine label,
- the same figures for offline clustering of the same test embeddings with the `dnc centroids`
  rule (k-means++ seeds + Sinkhorn rounds, export/clustering.py), K clusters per class.
A picture per model: for each coarse class, its sub-centroids' anchored exemplars (nearest training
image of the class, paper section 4.3) in a row, titled with the fine classes each sub-centroid wins.

    .venv/bin/python benchmarks/accuracy/subcategory_discovery.py --coarse runs/bench-c2f/data/coarse \
        --model new-s0=runs/bench-c2f/s0/dnc/checkpoint.safetensors --out runs/bench-discovery
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dnc.export.clustering import cluster
from dnc.training import checkpoint as ckpt_io
from dnc.training.anchor import anchor_model
from dnc.training.batches import normalise
from dnc.training.data import load_dataset
from dnc.training.folders import FASHION_MNIST_COARSE
from dnc.training.liveness import LIVE_SHARE

MERGED = ("tops", "footwear")


def purity(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose cluster's most common truth label is their own."""
    return float(sum(np.bincount(truth[pred == c]).max() for c in np.unique(pred)) / len(truth))


def nmi(pred: np.ndarray, truth: np.ndarray) -> float:
    """Normalised mutual information (arithmetic-mean normalisation), 0 when either side is constant."""
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    joint = np.zeros((p.max() + 1, t.max() + 1))
    np.add.at(joint, (p, t), 1)
    joint /= joint.sum()
    pp, pt = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pp[:, None] * pt[None, :])[nz])).sum())
    hp, ht = -float((pp * np.log(pp)).sum()), -float((pt * np.log(pt)).sum())
    return 0.0 if hp == 0 or ht == 0 else mi / ((hp + ht) / 2)


@torch.no_grad()
def embed(model, data, batch_size: int = 512) -> torch.Tensor:
    """(N, D) L2-normalised embeddings of every image of `data`, in order."""
    model.eval()
    out = []
    for i in range(0, len(data), batch_size):
        x = data.load(torch.arange(i, min(i + batch_size, len(data))))
        out.append(F.normalize(model.encoder(normalise(x, model.cfg.mean, model.cfg.std)), dim=-1))
    return torch.cat(out)


def fine_labels(data, fmnist) -> np.ndarray:
    """Hidden fine label of each image of a coarse folder (its file name is the Fashion-MNIST index)."""
    return fmnist.labels.numpy()[[int(Path(p).stem) for p in data.paths]]


def measure(checkpoint: str, coarse: Path, k_offline: int, seed: int) -> tuple[dict, object, object]:
    ck = ckpt_io.load(checkpoint)
    model = ck.build_model()
    test = load_dataset(str(coarse), "test", model.cfg.in_chans, model.cfg.image_size)
    fmnist = load_dataset("fashion-mnist", "test")
    fmnist_names = list(fmnist.class_names)
    fine = fine_labels(test, fmnist)
    x = embed(model, test)
    labels = test.labels
    won = model.head.own_class_winners(x, labels).numpy()

    def fines_won(sel: np.ndarray, k: int) -> list[str]:  # fine classes >= 20% of a sub-centroid's wins
        f = fine[sel][won[sel] == k]
        return [fmnist_names[v] for v in np.unique(f) if (f == v).mean() >= 0.2]

    res = {}
    for name in MERGED:
        c = list(test.class_names).index(name)
        idx = (labels == c).numpy()
        share = np.bincount(won[idx], minlength=model.head.ks[c]) / idx.sum()
        offline = cluster(x[idx].numpy(), k_offline, seed=seed)[1]
        res[name] = {
            "images": int(idx.sum()), "K": model.head.ks[c], "live": int((share >= LIVE_SHARE).sum()),
            "share": [round(float(s), 3) for s in share],
            "purity": purity(won[idx], fine[idx]), "nmi": nmi(won[idx], fine[idx]),
            "offline_live": int((np.bincount(offline, minlength=k_offline) / idx.sum() >= LIVE_SHARE).sum()),
            "offline_purity": purity(offline, fine[idx]), "offline_nmi": nmi(offline, fine[idx]),
            "fine_of_subcentroid": [fines_won(idx, k) for k in range(model.head.ks[c])],
        }
    return res, model, test


def exemplar_picture(model, coarse: Path, result: dict, path: Path, title: str) -> None:
    """One row per coarse class: the anchored exemplar of each of its sub-centroids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = load_dataset(str(coarse), "train", model.cfg.in_chans, model.cfg.image_size)
    ids = anchor_model(model, train, torch.device("cpu"))["exemplars"]  # (C, K) training ids
    names = list(train.class_names)
    kmax = max(len(r) for r in ids)
    fig, axes = plt.subplots(len(names), kmax, figsize=(1.6 * kmax, 1.7 * len(names)), squeeze=False)
    for c, row in enumerate(ids):
        for k in range(kmax):
            ax = axes[c][k]
            ax.axis("off")
            if k < len(row) and row[k] >= 0:
                ax.imshow(train.load(torch.tensor([row[k]]))[0, 0].numpy(), cmap="gray")
                fines = result.get(names[c], {}).get("fine_of_subcentroid")
                label = ", ".join(f.split("/")[0] for f in fines[k]) if fines else ""
                ax.set_title(f"{names[c]} #{k}\n{label}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coarse", required=True, help="coarse Fashion-MNIST folder (train/ and test/)")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                    help="a DNC checkpoint trained on the coarse folder (repeatable)")
    ap.add_argument("--K", type=int, default=4, help="clusters per class for the offline clustering")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-discovery")
    ap.add_argument("--redo", action="store_true", help="measure models already in OUT/results.json again")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    assert set(MERGED) <= set(FASHION_MNIST_COARSE)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for spec in a.model:
        name, _, checkpoint = spec.partition("=")
        if name in results and not a.redo:
            print(f"{name}: already in {results_path} (--redo to measure it again)", flush=True)
            continue
        res, model, _ = measure(checkpoint, Path(a.coarse), a.K, a.seed)
        exemplar_picture(model, Path(a.coarse), res, out / f"exemplars-{name}.png", f"{name}: anchored exemplars")
        results[name] = {"checkpoint": checkpoint, "date": time.strftime("%Y-%m-%d"), **res}
        results_path.write_text(json.dumps(results, indent=1))
        for cls in MERGED:
            r = res[cls]
            print(f"{name} {cls}: live {r['live']}/{r['K']} purity {r['purity']:.3f} NMI {r['nmi']:.3f} | offline "
                  f"live {r['offline_live']} purity {r['offline_purity']:.3f} NMI {r['offline_nmi']:.3f} | "
                  f"{r['fine_of_subcentroid']}", flush=True)


if __name__ == "__main__":
    main()
