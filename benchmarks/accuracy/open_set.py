"""Benchmark (issue 25): few-shot new classes and open-set detection on Fashion-MNIST models of 8 classes.

Per seed, on Fashion-MNIST with Shirt and Sneaker held out:
- trains a DNC classifier (K=4) and its softmax twin on the 8 other classes, and a DNC classifier on all 10
  (the reference), each with `dnc train`; exports the DNC models (`dnc export`);
- the product's list for the 8-class model: `dnc centroids --K 4` (thresholds at 95%), and `--K all`;
- few-shot: Shirt and Sneaker added with `dnc centroids --from --add` from N of their training images (N in
  --shots, seeded choice): top-1 on the new classes' test images and on the old classes' (10-way) against
  the 8-class list before the edit (8-way), and the reference model's top-1 on Shirt and Sneaker;
- open-set: knowns are the 8 classes' test images; near unknowns Shirt and Sneaker's test images; far
  unknowns `dnc write-unknowns` (digits, photo crops, noise: real data no model saw). Scores: the served DNC
  score (best class's max-over-K cosine) of the K=4 and K=all lists; the softmax twin's maximum probability
  and energy (logsumexp of its logits); k-th nearest-neighbour cosine (k=50, Sun et al. 2022) over each
  model's L2-normalised training embeddings. AUROC (knowns positive) and FPR at 95% TPR; and the calibrated
  decision of the K=4 list: share of knowns accepted, of unknowns rejected.
Results go to OUT/results.json keyed by seed (a seed already there is skipped); `--report` prints the tables
(mean and spread over seeds).

    .venv/bin/python benchmarks/accuracy/open_set.py --seed 0 --epochs 4 --out runs/bench-open3 \
        --fine runs/bench-c2f3/data/fine
    .venv/bin/python benchmarks/accuracy/open_set.py --report --out runs/bench-open3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from coarse_to_fine import mean_spread, run  # (this folder: the same `dnc` command runner)

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.images import image_files, read_image_array
from dnc.export import runtime
from dnc.export.abstention import class_scores, decide, unit
from dnc.export.edit_set import edit_set
from dnc.export.recompute import embed_files, scan_labelled_folder
from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import normalise

NEW = ("Shirt", "Sneaker")
FAR = ("digits", "photos", "noise")
KNN_K = 50


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known > score of an unknown), ties counted half (Mann-Whitney U over average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([known, unknown]))
    return float((ranks[:len(known)].sum() - len(known) * (len(known) + 1) / 2) / (len(known) * len(unknown)))


def fpr95(known: np.ndarray, unknown: np.ndarray) -> float:
    """Share of unknowns accepted at the threshold that accepts 95% of knowns."""
    return float((unknown >= np.quantile(known, 0.05)).mean())


def data(args) -> dict[str, Path]:
    out = Path(args.out) / "data"
    fine = Path(args.fine) if args.fine else out / "fine"
    if not (fine / "test").is_dir():
        run("write-folder", "--out", str(fine), "--labels", "fine", "--per-class", str(args.per_class))
    eight = out / "eight"
    for split in ("train", "test"):
        (eight / split).mkdir(parents=True, exist_ok=True)
        for d in sorted((fine / split).iterdir()):
            if d.name not in NEW and not (eight / split / d.name).exists():
                (eight / split / d.name).symlink_to(d.resolve())
    far = out / "far"
    if not (far / "noise").is_dir():
        run("write-unknowns", "--out", str(far), "--count", str(args.far_count), "--split", "test")
    return {"fine": fine, "eight": eight, "far": far}


def trained(args, name: str, folder: Path, head: str) -> Path:
    """The checkpoint of run `name` (trained now unless there)."""
    run_dir = Path(args.out) / f"s{args.seed}" / name
    if not (run_dir / "checkpoint.safetensors").exists():
        run("train", "--data", str(folder), "--channels", "1", "--image-size", "28", "--head", head, "--K", "4",
            "--width", str(args.width), "--epochs", str(args.epochs), "--warmup-epochs", "0.5", "--seed",
            str(args.seed), "--workers", "0", "--out", str(run_dir))
    if head == "dnc" and not (run_dir / "export" / F.EMBED_FILE).exists():
        run("export", str(run_dir / "checkpoint.safetensors"), "--out", str(run_dir / "export"), "--no-fp16",
            "--threads", str(args.threads), "--json")
    return run_dir


def torch_outputs(run_dir: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised embeddings (N, D), logits (N, C)) of image files by the checkpoint, in PyTorch."""
    model = ckpt_io.load(run_dir / "checkpoint.safetensors").build_model().eval()
    cfg = model.cfg
    emb, logits = [], []
    with torch.no_grad():
        for i in range(0, len(files), 512):
            x = torch.from_numpy(np.stack([read_image_array(f, cfg.in_chans, cfg.image_size)
                                           for f in files[i:i + 512]]))
            e, z = model(normalise(x, cfg.mean, cfg.std))
            emb.append(torch.nn.functional.normalize(e.float(), dim=-1).numpy())
            logits.append(z.float().numpy())
    return np.concatenate(emb), np.concatenate(logits)


def kth_nn(query: np.ndarray, bank: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """(N,) k-th largest cosine of each unit query row to the unit bank rows."""
    return np.concatenate([np.partition(query[i:i + 512] @ bank.T, -k, axis=1)[:, -k]
                           for i in range(0, len(query), 512)])


def few_shot(args, paths: dict, dnc8: Path, dnc10: Path, base: Path) -> dict:
    embed = dnc8 / "export" / F.EMBED_FILE
    sess = runtime.session(embed, args.threads)
    prep = runtime.preprocessing_of(sess, embed)
    classes, files, labels = scan_labelled_folder(paths["fine"] / "test")
    x = embed_files(sess, files, prep, threads=args.threads, desc="fine test")
    new = np.isin(np.array(classes)[labels], NEW)
    cs = centroid_set.load(base)
    before = class_scores(cs, x[~new]).argmax(1)
    old_truth = np.array([cs.class_names.index(classes[c]) for c in labels[~new]])
    res = {"old_top1_before": float(100 * (before == old_truth).mean())}
    ref = centroid_set.load(dnc10 / "export")
    ref_x = embed_files(runtime.session(dnc10 / "export" / F.EMBED_FILE, args.threads), [files[i] for i in
                        np.flatnonzero(new)], prep, threads=args.threads, desc="reference")
    ref_pred = class_scores(ref, ref_x).argmax(1)
    ref_truth = np.array([ref.class_names.index(classes[c]) for c in labels[new]])
    res["reference_new_top1"] = float(100 * (ref_pred == ref_truth).mean())
    rng = np.random.default_rng(args.seed)
    pools = {n: rng.permutation(image_files(paths["fine"] / "train" / n)) for n in NEW}
    for n in args.shots:
        shot_dir = Path(args.out) / f"s{args.seed}" / f"shots{n}"
        for name in NEW:
            (shot_dir / name).mkdir(parents=True, exist_ok=True)
            for f in pools[name][:n]:
                if not (shot_dir / name / f.name).exists():
                    (shot_dir / name / f.name).symlink_to(f.resolve())
        out = shot_dir / "set"
        edit_set(base, embed, out, add={name: str(shot_dir / name) for name in NEW}, threads=args.threads,
                 seed=args.seed)
        edited = centroid_set.load(out)
        pred = class_scores(edited, x).argmax(1)
        truth = np.array([edited.class_names.index(c) for c in classes])[labels]
        res[f"shots{n}"] = {"new_top1": float(100 * (pred[new] == truth[new]).mean()),
                            "old_top1": float(100 * (pred[~new] == truth[~new]).mean())}
        got = res[f"shots{n}"]
        print(f"s{args.seed} {n} shots: new {got['new_top1']:.2f}%, old {got['old_top1']:.2f}% (before "
              f"{res['old_top1_before']:.2f}%, reference on new {res['reference_new_top1']:.2f}%)", flush=True)
    return res


def open_set(args, paths: dict, dnc8: Path, soft8: Path, sets: dict[str, Path]) -> dict:
    known = sorted(f for d in sorted((paths["eight"] / "test").iterdir()) for f in image_files(d))
    groups = {"near": sorted(f for n in NEW for f in image_files(paths["fine"] / "test" / n)),
              **{k: image_files(paths["far"] / k) for k in FAR}}
    train = sorted(f for d in sorted((paths["eight"] / "train").iterdir()) for f in image_files(d))[::args.bank_every]
    embed = dnc8 / "export" / F.EMBED_FILE
    sess = runtime.session(embed, args.threads)
    prep = runtime.preprocessing_of(sess, embed)
    onnx_emb = {g: unit(embed_files(sess, fs, prep, threads=args.threads, desc=g))
                for g, fs in [("known", known), ("bank", train), *groups.items()]}
    soft = {g: torch_outputs(soft8, fs) for g, fs in [("known", known), ("bank", train), *groups.items()]}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, path in sets.items():
        cs = centroid_set.load(path)
        scores[f"dnc {name}"] = {g: class_scores(cs, e).max(1) for g, e in onnx_emb.items() if g != "bank"}
    scores["softmax MSP"] = {g: torch.softmax(torch.from_numpy(z), 1).max(1).values.numpy()
                             for g, (_, z) in soft.items() if g != "bank"}
    scores["softmax energy"] = {g: torch.logsumexp(torch.from_numpy(z), 1).numpy() for g, (_, z) in soft.items()
                                if g != "bank"}
    scores[f"kNN k={KNN_K}, DNC features"] = {g: kth_nn(e, onnx_emb["bank"]) for g, e in onnx_emb.items()
                                               if g != "bank"}
    scores[f"kNN k={KNN_K}, softmax features"] = {g: kth_nn(e, soft["bank"][0]) for g, (e, _) in soft.items()
                                                   if g != "bank"}
    res = {"scores": {}, "counts": {"known": len(known), **{g: len(f) for g, f in groups.items()}}}
    for name, s in scores.items():
        far = np.concatenate([s[k] for k in FAR])
        res["scores"][name] = {g: {"auroc": auroc(s["known"], u), "fpr95": fpr95(s["known"], u)}
                               for g, u in [("near", s["near"]), ("far", far), *[(k, s[k]) for k in FAR]]}
    res["abstention"] = abstention(sets["K4"], onnx_emb)  # the product's default list
    res["abstention_by_set"] = {name: abstention(path, onnx_emb) for name, path in sets.items()}
    for name, r in res["scores"].items():
        print(f"s{args.seed} {name}: AUROC near {r['near']['auroc']:.3f} far {r['far']['auroc']:.3f}; FPR95 near "
              f"{r['near']['fpr95']:.3f} far {r['far']['fpr95']:.3f}", flush=True)
    print(f"s{args.seed} abstention: {res['abstention']}", flush=True)
    return res


def abstention(set_path: Path, onnx_emb: dict[str, np.ndarray]) -> dict[str, float]:
    """The served decisions of a list with thresholds: % of knowns accepted, of each unknown group rejected."""
    cs = centroid_set.load(set_path)
    known = {g: decide(class_scores(cs, e), cs.thresholds)[1] for g, e in onnx_emb.items() if g != "bank"}
    return {"known_accepted": float(100 * known["known"].mean()),
            "near_rejected": float(100 * (~known["near"]).mean()),
            "far_rejected": float(100 * np.mean(np.concatenate([~known[k] for k in FAR]))),
            **{f"{k}_rejected": float(100 * (~known[k]).mean()) for k in FAR}}


def one_seed(args) -> None:
    results_path = Path(args.out) / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    key = f"s{args.seed}"
    if key in results and not args.redo:
        print(f"{key}: already in {results_path}", flush=True)
        return
    t0 = time.time()
    paths = data(args)
    dnc8 = trained(args, "dnc8", paths["eight"], "dnc")
    soft8 = trained(args, "softmax8", paths["eight"], "softmax")
    dnc10 = trained(args, "dnc10", paths["fine"], "dnc")
    sets = {}
    for k in ("4", "all"):
        sets[f"K{k}"] = dnc8 / f"set-K{k}"
        if args.redo and sets[f"K{k}"].exists():
            shutil.rmtree(sets[f"K{k}"])
        if not sets[f"K{k}"].exists():
            run("centroids", "--embed", str(dnc8 / "export" / F.EMBED_FILE), "--data", str(paths["eight"] / "train"),
                "--K", k, "--out", str(sets[f"K{k}"]), "--threads", str(args.threads), "--json")
    res = {"few_shot": few_shot(args, paths, dnc8, dnc10, sets["K4"]),
           "open_set": open_set(args, paths, dnc8, soft8, sets),
           "epochs": args.epochs, "per_class": args.per_class, "width": args.width, "date": time.strftime("%Y-%m-%d"),
           "seconds": round(time.time() - t0)}
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results[key] = res
    results_path.write_text(json.dumps(results, indent=1))


def report(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    rs = [results[k] for k in sorted(results)]
    print(f"Few-shot ({len(rs)} seeds): Shirt and Sneaker added to the 8-class list from N images each\n")
    print("| N | new classes top-1 | old classes top-1 after | old before | drop | new / reference |")
    print("|---|---|---|---|---|---|")
    shots = sorted({int(k[5:]) for r in rs for k in r["few_shot"] if k.startswith("shots")})
    for n in shots:
        got = [(r["few_shot"][f"shots{n}"], r["few_shot"]) for r in rs if f"shots{n}" in r["few_shot"]]
        print(f"| {n} | {mean_spread([g['new_top1'] for g, _ in got])} | {mean_spread([g['old_top1'] for g, _ in got])}"
              f" | {mean_spread([f['old_top1_before'] for _, f in got])} | "
              f"{mean_spread([f['old_top1_before'] - g['old_top1'] for g, f in got])} | "
              f"{mean_spread([g['new_top1'] / f['reference_new_top1'] for g, f in got])} |")
    print(f"\nreference (10-class DNC) top-1 on Shirt and Sneaker: "
          f"{mean_spread([r['few_shot']['reference_new_top1'] for r in rs])}\n")
    print("Open-set detection, AUROC / FPR at 95% TPR (knowns: the 8 classes' test images)\n")
    print("| score | near AUROC | near FPR95 | far AUROC | far FPR95 | digits | photos | noise |")
    print("|---|---|---|---|---|---|---|---|")
    for name in rs[0]["open_set"]["scores"]:
        v = lambda g, m, name=name: mean_spread([r["open_set"]["scores"][name][g][m] for r in rs])  # noqa: E731
        print(f"| {name} | {v('near', 'auroc')} | {v('near', 'fpr95')} | {v('far', 'auroc')} | {v('far', 'fpr95')} | "
              f"{v('digits', 'auroc')} | {v('photos', 'auroc')} | {v('noise', 'auroc')} |")
    print("\nCalibrated abstention (accept 95%):\n")
    by_set = [r["open_set"].get("abstention_by_set", {"K4": r["open_set"]["abstention"]}) for r in rs]
    for name in by_set[0]:
        got = [b[name] for b in by_set if name in b]
        print(f"- list {name} ({len(got)} seeds): " + "; ".join(
            f"{m} {mean_spread([g[m] for g in got])}" for m in got[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=4000, help="images per class of the fine folder it writes")
    ap.add_argument("--fine", default=None, help="an existing fine train/test folder (e.g. coarse_to_fine.py's)")
    ap.add_argument("--shots", default="1,5,20,100", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--far-count", type=int, default=1000, help="far unknowns of each kind")
    ap.add_argument("--bank-every", type=int, default=1, help="kNN bank: every Nth training image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-open3")
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    report(Path(args.out)) if args.report else one_seed(args)


if __name__ == "__main__":
    main()
