"""Benchmark (issue 9): live sub-centroids and top-1 on short schedules, with and without revival.

Trains DNC K=4 variants on the `make demo` coarse Fashion-MNIST folder (5 classes, 4,000 training
images each, all 10,000 test images) or on the generated multi-mode set of modes.py (this folder),
one variant after another, and prints each epoch's test top-1, live sub-centroids per class (nearest
for >= 5% of the class's test images), mean pairwise cosine within a class, and revivals so far.
Results are appended to OUT/results.json. Run by hand, e.g.

    .venv/bin/dnc write-folder --out runs/demo/data/coarse --labels coarse --per-class 4000 --test-per-class 0
    .venv/bin/python benchmarks/accuracy/subcentroid_revival.py --data coarse --epochs 2 --variants base,revive
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from modes import write_modes  # this folder's generated multi-mode set (tests/training/test_mechanism.py uses it too)

from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig

VARIANTS = {
    "default": dict(k=4),  # the product's ModelConfig defaults
    "base": dict(k=4, revive=False),  # the paper's random initialisation, mu = 0.999
    # The variants below were first run before the readiness margin (training/head.py READY_MARGIN) existed;
    # docs/BENCHMARKS.md names the commit of each figure.
    "init-only": dict(k=4, revive=True, revive_every=10**9, revive_momentum=0.999),  # never re-checked
    "revive": dict(k=4, revive=True, revive_every=50, revive_momentum=0.999),
    "revive-mu0.99": dict(k=4, revive=True, revive_every=50, momentum=0.99, revive_momentum=0.99),
    "k1": dict(k=1, revive=False),
    "assign1": dict(k=4, revive=False, assign_weight=1.0),
    "assign0.3": dict(k=4, revive=False, assign_weight=0.3),
    "assign0.1": dict(k=4, revive=False, assign_weight=0.1),
    "init-mu0.99-r200": dict(k=4, revive=True, revive_every=200, momentum=0.99, revive_momentum=0.99),
    "init-mu0.99": dict(k=4, revive=True, revive_every=10**9, momentum=0.99, revive_momentum=0.99),
    "init-assign0.1": dict(k=4, revive=True, revive_every=10**9, revive_momentum=0.999, assign_weight=0.1),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["coarse", "modes"], default="coarse")
    ap.add_argument("--coarse-folder", default="runs/demo/data/coarse")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--variants", default="base,init-only,revive,revive-mu0.99")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-revival")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.data == "modes":
        data = out / "modes"
        if not (data / "test").is_dir():
            write_modes(data, seed=0)
        model = dict(num_classes=2, in_chans=1, image_size=16, width=8, embed_dim=16, memory_size=64, memory_cap=16)
        run = dict(batch_size=32, lr=0.05, warmup_epochs=0.5)
    else:
        data = Path(a.coarse_folder)
        model = dict(num_classes=5, in_chans=1, image_size=28)
        run = dict(warmup_epochs=0.3)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in a.variants.split(","):
        key = f"{a.data}/{name}/e{a.epochs}/s{a.seed}"
        t0 = time.time()
        r = train(TrainConfig(data=str(data), out=str(out / key), epochs=a.epochs, seed=a.seed, workers=0, **run),
                  ModelConfig(mean=[0.5], std=[0.5], **model, **VARIANTS[name]))
        rows = [{k: h.get(k) for k in ("epoch", "step", "test_top1", "test_live", "test_live_min", "centroid_cos",
                                       "live_per_class", "revivals")} for h in r["history"]]
        results[key] = {"rows": rows, "minutes": round((time.time() - t0) / 60, 1), "threads": a.threads,
                        "date": time.strftime("%Y-%m-%d")}
        results_path.write_text(json.dumps(results, indent=1))
        for row in rows:
            print(key, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
