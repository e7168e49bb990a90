"""Benchmark (issue 25): segmentation lists for the open world on FashionScenes, one seed per call.

    induction  a DNC segmenter trained on the coarse scenes (5 groups + background), started from the
               coarse-to-fine benchmark's DNC classifier of the same seed; fine lists recomputed from the
               fine scenes' masks with `dnc centroids --K` 10 (the issue-11 protocol's list), 64, 255 and
               auto; fine test mIoU with `dnc eval-onnx`. Target (issue 25): at least 42% mIoU.
    unknown    a DNC segmenter and its parametric twin trained on the fine scenes with Shirt and Sneaker
               pixels ignored (8 classes + background), each started from the open-set benchmark's 8-class
               classifier of its kind; on the fine test scenes, known-class pixels against the pixels of
               Shirt and Sneaker items: pixel AUROC and FPR at 95% TPR of the served DNC pixel score (the
               product's list from the 8-class masks, K 4 with thresholds, and K auto) against the twin's
               maximum softmax probability, and the served abstention (pixels labelled unknown).

Both use the `make demo` segmenter recipe (SEGFLAGS, `--epochs`, default 3) on `--train` scenes of 64 px. A
seed already in OUT/results.json is skipped; `--report` prints the tables of docs/BENCHMARKS.md.

    .venv/bin/python benchmarks/accuracy/seg_open_world.py --seed 0     # then 1, 2
    .venv/bin/python benchmarks/accuracy/seg_open_world.py --report
`--init scratch` trains the segmenters from scratch (the tests' tiny run; no classifier needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from coarse_to_fine import run  # (this folder: the same `dnc` command runner)
from open_set import NEW, auroc, fpr95

from dnc.core import formats as F
from dnc.core.seg_folder import read_classes, read_pair, split_files
from dnc.export.seg_infer import InProcessSegmenter
from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import normalise

SEGFLAGS = ["--batch-size", "16", "--optimizer", "adamw", "--lr", "0.002", "--weight-decay", "0.0001",
            "--warmup-epochs", "0.3", "--workers", "0"]
INDUCTION_KS = ("10", "64", "255", "auto")
UNKNOWN_KS = ("4", "auto")


def scenes(args, labels: str) -> Path:
    root = Path(args.out) / "data" / f"scenes-{labels}"
    if not (root / "classes.json").is_file():
        run("write-scenes", "--out", str(root), "--labels", labels, "--train", str(args.train), "--test",
            str(args.test))
    return root


def eight(args, fine: Path) -> Path:
    """The fine scenes with Shirt and Sneaker pixels ignored (255) and the other ids packed: 8 classes + background.
    Images are the fine scenes' own (linked); masks are written here, gray class-index PNGs."""
    from PIL import Image

    from dnc.core.seg_folder import IMAGES_DIR, MASKS_DIR, SegClasses, write_classes

    root = Path(args.out) / "data" / "scenes-eight"
    if (root / "classes.json").is_file():
        return root
    src = read_classes(fine)
    keep = [i for i, n in enumerate(src.names) if n not in NEW]
    lut = np.full(256, 255, np.uint8)
    lut[keep] = np.arange(len(keep))
    for split in ("train", "test"):  # (classes.json is written last: a folder without it is made again)
        (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        if not (root / IMAGES_DIR / split).is_symlink():
            (root / IMAGES_DIR / split).symlink_to((fine / IMAGES_DIR / split).resolve())
        (root / MASKS_DIR / split).mkdir(parents=True, exist_ok=True)
        for _, mp in split_files(fine, split):
            Image.fromarray(lut[np.asarray(Image.open(mp))]).save(root / MASKS_DIR / split / mp.name)
    write_classes(root, SegClasses([src.names[i] for i in keep], [src.palette[i] for i in keep], background=0))
    return root


def trained(args, name: str, data: Path, head: str, init: str | None) -> Path:
    run_dir = Path(args.out) / f"s{args.seed}" / name
    if not (run_dir / "checkpoint.safetensors").exists():
        run("train", "--data", str(data), "--head", head, "--epochs", str(args.epochs), "--seed", str(args.seed),
            "--out", str(run_dir), *SEGFLAGS, *(["--init", init] if init else []),
            *(["--width", str(args.width)] if args.width else []))
    if head == "dnc" and not (run_dir / "export" / F.EMBED_FILE).exists():
        run("export", str(run_dir / "checkpoint.safetensors"), "--out", str(run_dir / "export"), "--no-fp16",
            "--json")
    return run_dir


def init_of(args, pattern: str) -> str | None:
    if args.init == "scratch":
        return None
    path = Path(pattern.format(seed=args.seed))
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the benchmark that trains it first (see the module docstring), "
                         "or give --init scratch")
    return str(path)


def fine_set(embed: Path, data: Path, k: str, out: Path) -> dict:
    if not (out / F.SET_TENSORS_FILE).exists():
        run("centroids", "--embed", str(embed), "--data", str(data), "--K", k, "--out", str(out), "--json")
    return json.loads((out / F.SET_JSON_FILE).read_text())


def live_subcentroids(export: Path, set_dir: Path, images: np.ndarray) -> int:
    """Sub-centroids that win at least one pixel of the pictures (N, 3, H, W) uint8 under the served head
    (abstention off: every pixel is answered by a class)."""
    seg = InProcessSegmenter(export, set_dir)
    won: set[tuple[int, int]] = set()
    for i in range(0, len(images), 50):
        out = seg.run(images[i:i + 50].transpose(0, 2, 3, 1), maps=True, abstain=False)
        pairs = np.stack([out[F.LABELS].ravel(), out[F.PIXEL_SUBCENTROID].ravel()], 1)
        won |= {tuple(p) for p in np.unique(pairs, axis=0).tolist()}
    return len(won)


def test_images(fine: Path) -> np.ndarray:
    return np.stack([read_pair(ip, mp)[0] for ip, mp in split_files(fine, "test")])  # (N, 3, H, W): one size


def induction(args) -> dict:
    coarse, fine = scenes(args, "coarse"), scenes(args, "fine")
    run_dir = trained(args, "induction-dnc", coarse, "dnc", init_of(args, args.coarse_classifier))
    embed = run_dir / "export" / F.EMBED_FILE
    res = {"coarse_miou": json.loads((run_dir / "log.json").read_text())[-1]["test_miou"]}
    images = test_images(fine)
    for k in INDUCTION_KS:
        meta = fine_set(embed, fine, k, run_dir / f"fine-K{k}")
        got = run("eval-onnx", "--embed", str(embed), "--centroids", str(run_dir / f"fine-K{k}"), "--data", str(fine),
                  "--json")
        res[f"K{k}"] = {"miou": got["miou"], "pixel_acc": got["pixel_acc"], "ks": meta["ks"],
                        "live": live_subcentroids(run_dir / "export", run_dir / f"fine-K{k}", images),
                        "k_chosen": meta["source"].get("k"), "held_out": meta["source"].get("held_out_accuracy")}
        print(f"s{args.seed} induction K{k}: fine mIoU {got['miou']:.2f} (K per class {meta['ks']}, "
              f"{res[f'K{k}']['live']} live)", flush=True)
    return res


def softmax_msp(run_dir: Path, images: np.ndarray) -> np.ndarray:
    """(N, H, W) maximum softmax probability per pixel of the parametric twin (PyTorch), images (N, 3, H, W) uint8."""
    model = ckpt_io.load(run_dir / "checkpoint.safetensors").build_model().eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            _, logits = model(normalise(torch.from_numpy(images[i:i + 32]), model.cfg.mean, model.cfg.std))
            out.append(torch.softmax(logits.float(), 1).max(1).values.numpy())
    return np.concatenate(out)


def unknown(args) -> dict:
    fine = scenes(args, "fine")
    data = eight(args, fine)
    dnc = trained(args, "eight-dnc", data, "dnc",
                  init_of(args, args.eight_classifier.format(kind="dnc8", seed="{seed}")))
    soft = trained(args, "eight-softmax", data, "softmax",
                   init_of(args, args.eight_classifier.format(kind="softmax8", seed="{seed}")))
    pairs = [read_pair(ip, mp) for ip, mp in split_files(fine, "test")]
    images = np.stack([p[0] for p in pairs])  # (N, 3, H, W) uint8: one size
    truth = np.stack([p[1] for p in pairs])  # (N, H, W) fine ids
    classes = read_classes(fine)
    new = np.isin(truth, [classes.names.index(n) for n in NEW])
    known = (truth != 255) & ~new  # every pixel of a known class, the background's included
    items = known & (truth != classes.background)  # the known classes' items alone: the harder half
    scores = {"softmax MSP": softmax_msp(soft, images)}
    res: dict = {"pixels": {"known": int(known.sum()), "unknown": int(new.sum())}, "abstention": {}}
    for k in UNKNOWN_KS:
        meta = fine_set(dnc / "export" / F.EMBED_FILE, data, k, dnc / f"set-K{k}")
        seg = InProcessSegmenter(dnc / "export", dnc / f"set-K{k}")
        outs = [seg.run(images[i:i + 50].transpose(0, 2, 3, 1), maps=True) for i in range(0, len(images), 50)]
        score = np.concatenate([o[F.PIXEL_SCORE] for o in outs])
        labels = np.concatenate([o[F.LABELS] for o in outs])
        scores[f"dnc K{k}"] = score
        res["abstention"][f"K{k}"] = {
            "known_accepted": float(100 * (labels[known] != F.UNKNOWN_LABEL).mean()),
            "known_items_accepted": float(100 * (labels[items] != F.UNKNOWN_LABEL).mean()),
            "unknown_rejected": float(100 * (labels[new] == F.UNKNOWN_LABEL).mean()), "ks": meta["ks"]}
    res["pixels"]["known_items"] = int(items.sum())
    res["scores"] = {n: {"auroc": auroc(s[known], s[new]), "fpr95": fpr95(s[known], s[new]),
                         "items_auroc": auroc(s[items], s[new]), "items_fpr95": fpr95(s[items], s[new])}
                     for n, s in scores.items()}
    for n, r in res["scores"].items():
        print(f"s{args.seed} {n}: pixel AUROC {r['auroc']:.3f}, FPR95 {r['fpr95']:.3f}; against known items alone "
              f"{r['items_auroc']:.3f}, {r['items_fpr95']:.3f}", flush=True)
    print(f"s{args.seed} abstention: {res['abstention']}", flush=True)
    return res


def report(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    seeds = sorted(results)

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    print(f"seeds: {', '.join(seeds)}\n\n| fine list from masks | fine test mIoU | sub-centroids per seed "
          "(largest K; live) |\n|---|---|---|")
    for k in INDUCTION_KS:
        rows = [results[s]["induction"][f"K{k}"] for s in seeds]
        sizes = ", ".join(f"{sum(r['ks'])} ({max(r['ks'])}; {r.get('live', '?')} live)" for r in rows)
        print(f"| K {k} | {ms([r['miou'] for r in rows])} | {sizes} |")
    print(f"\ncoarse test mIoU {ms([results[s]['induction']['coarse_miou'] for s in seeds])}")
    print("\n| pixel score (Shirt, Sneaker items unknown) | AUROC, all known pixels | FPR95 | AUROC, known items "
          "alone | FPR95 |\n|---|---|---|---|---|")
    for n in results[seeds[0]]["unknown"]["scores"]:
        rows = [results[s]["unknown"]["scores"][n] for s in seeds]
        print(f"| {n} | " + " | ".join(ms([100 * r[m] for r in rows]) for m in ("auroc", "fpr95", "items_auroc",
                                                                                "items_fpr95")) + " |")
    print("\n| served abstention | known pixels accepted % | known items' pixels accepted % | unknown-item pixels "
          "rejected % |\n|---|---|---|---|")
    for k in UNKNOWN_KS:
        rows = [results[s]["unknown"]["abstention"][f"K{k}"] for s in seeds]
        print(f"| K {k} | {ms([r['known_accepted'] for r in rows])} | {ms([r['known_items_accepted'] for r in rows])} "
              f"| {ms([r['unknown_rejected'] for r in rows])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=4000, help="training scenes of each label set")
    ap.add_argument("--test", type=int, default=300, help="test scenes")
    ap.add_argument("--width", type=int, default=0, help="backbone width when --init scratch (0: the default)")
    ap.add_argument("--init", choices=["classifiers", "scratch"], default="classifiers")
    ap.add_argument("--coarse-classifier", default="runs/bench-c2f3/s{seed}/dnc/checkpoint.safetensors")
    ap.add_argument("--eight-classifier", default="runs/bench-open3/s{seed}/{kind}/checkpoint.safetensors")
    ap.add_argument("--out", default="runs/bench-seg-open3")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if a.report:
        return report(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if f"s{a.seed}" in results:
        print(f"s{a.seed}: already in {path}", flush=True)
        return
    t0 = time.time()
    res = {"induction": induction(a), "unknown": unknown(a), "epochs": a.epochs, "train": a.train, "test": a.test,
           "init": a.init, "date": time.strftime("%Y-%m-%d")}
    res["seconds"] = round(time.time() - t0)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[f"s{a.seed}"] = res
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
