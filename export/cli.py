"""`dnc export`, `dnc centroids` and `dnc eval-onnx`: thin command-line wrappers over the export library."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnc.core import tasks
from dnc.core.images import DataError
from dnc.core.seg_folder import is_seg_folder

_D = argparse.ArgumentDefaultsHelpFormatter


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", formatter_class=_D,
                       help="freeze a checkpoint into ONNX graphs (embed, head, merged), a centroid set and a manifest")
    p.add_argument("checkpoint", help="training checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="export folder to write (replaced only if parity passes)")
    p.add_argument("--data", default=None, help="data set whose test images check parity (default: the checkpoint's)")
    p.add_argument("--parity-samples", type=int, default=256, help="real test images in the parity check")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch a server forms (TensorRT profile max)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: one per core)")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 embedding graph")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs a CUDA GPU)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("centroids", formatter_class=_D,
                       help="compute a centroid set (a new class list) from labelled images with embed.onnx only")
    _onnx_input_flags(p, data_required=False)
    p.add_argument("--out", required=True, help="centroid set folder to write (set + head.onnx)")
    p.add_argument("--from", dest="base", default=None, metavar="SET",
                   help="edit this set instead of computing one from --data: only added classes are embedded, the "
                   "others keep their sub-centroids bit-identical (a new set id)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=FOLDER",
                   help="with --from: add class NAME from a folder of its images, or to a segmentation set from a "
                   "segmentation folder's masks (its class NAME, or its only class besides the background); "
                   "repeatable")
    p.add_argument("--remove", action="append", default=[], metavar="NAME", help="with --from: drop class NAME")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="with --from: rename a class")
    p.add_argument("--K", type=_k, default=4,
                   help="sub-centroids per class (fewer for classes with fewer images); `all`: every image of a "
                   "class is one (class folders: the head is then 1-nearest-neighbour); `auto`: each class's K among "
                   "1, 4, 16, 64, all (segmentation: 255, the most a set holds), chosen on a held-out fifth of the "
                   "images")
    p.add_argument("--method", choices=["sinkhorn", "kmeans"], default="sinkhorn",
                   help="sinkhorn: the training rule (equipartition, argmax of the plan); kmeans: spherical k-means")
    p.add_argument("--keep-means", action="store_true",
                   help="keep cluster means as sub-centroids instead of replacing them by their nearest image")
    p.add_argument("--accept", type=float, default=0.95,
                   help="abstention: each class's threshold accepts this share of its held-out images (a served "
                   "answer below its class's threshold is \"unknown\")")
    p.add_argument("--calibration-share", type=float, default=0.2,
                   help="the share of each class's images (segmentation: of the images) held out of its sub-centroids "
                   "to calibrate its threshold on; 0: no thresholds (the set never answers unknown)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixels-per-image", type=int, default=64,
                   help="segmentation folders: at most this many cells of a class sampled from one image")
    p.add_argument("--pixels-per-class", type=int, default=4096,
                   help="segmentation folders: at most this many cells of a class in all (a seeded uniform sample)")
    p.set_defaults(func=cmd_centroids)

    p = sub.add_parser("eval-onnx", formatter_class=_D,
                       help="top-1 of an exported embedding with a centroid set on a labelled image folder")
    _onnx_input_flags(p)
    p.add_argument("--centroids", required=True, help="centroid set folder")
    p.set_defaults(func=cmd_eval_onnx)


def _k(text: str) -> int | str:
    """--K: a whole number, "all" (every image a sub-centroid) or "auto" (chosen on held-out images)."""
    if text in ("all", "auto"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, 'all' or 'auto', not {text!r}") from None


def _onnx_input_flags(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Flags shared by the commands that embed a labelled image folder with embed.onnx."""
    p.add_argument("--embed", required=True, help="an exported embed.onnx")
    p.add_argument("--data", required=data_required,
                   help="image folder, one subfolder per class (centroids: or train/ and test/ each holding them; "
                   "train/ is read); or a segmentation folder (images/, masks/, classes.json) with a segmenter's "
                   "embed.onnx")
    p.add_argument("--split", choices=["train", "test"], default=None,
                   help="segmentation folders, and image folders laid out as train/ and test/ (or val/): the "
                   "split to read (default: train for centroids, test for eval-onnx)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: one per core)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_export(a: argparse.Namespace) -> int:
    # torch (heavy, absent from client installs) only when an export runs
    from dnc.export.exporter import export_checkpoint

    m = export_checkpoint(a.checkpoint, a.out, a.data, a.parity_samples, threads=a.threads, fp16=not a.no_fp16,
                          max_batch=a.max_batch, tensorrt_engines=a.tensorrt)
    if a.json:
        print(json.dumps(m))
    elif tasks.of(m).dense:
        for kind, row in m["parity"].items():
            if isinstance(row, dict) and "merged" not in row:
                print(f"parity on {row['n']} {kind} images: cell embeddings max |diff| {row['embedding_max_abs']:.2e}")
            elif isinstance(row, dict):
                part = row["merged"]
                print(f"parity on {row['n']} {kind} images: labels agree on {100 * part['label_agreement']:.3f}% of "
                      f"pixels, scores max |diff| {part['pixel_score_max_abs']:.2e}"
                      + (f"; fp16 labels agree {100 * row['fp16']['label_agreement']:.3f}%" if "fp16" in row else ""))
        ev = m["evaluation"]
        print(f"test mIoU {ev['miou']:.2f}%  pixel accuracy {ev['pixel_acc']:.2f}%  (onnx parity passed)")
        print(f"exported to {a.out}: {', '.join(m['files'].values())}")
        if m.get("tensorrt"):
            print(f"TensorRT: {m['tensorrt']['reason']}")
    else:
        par = m["parity"]
        for kind in ("real", "random"):
            row = par[kind]
            part = row.get("merged", row)
            print(f"parity on {row['n']} {kind} inputs: embedding max |diff| {row['embedding_max_abs']:.2e}"
                  + (f", scores max |diff| {part['scores_max_abs']:.2e}, predictions agree "
                     f"{100 * part['predicted_agreement']:.1f}%" if "merged" in row else "")
                  + (f"; fp16 scores max |diff| {row['fp16']['scores_max_abs']:.2e}, agree "
                     f"{100 * row['fp16']['predicted_agreement']:.1f}%" if "fp16" in row else ""))
        print(f"exported to {a.out}: {', '.join(m['files'].values())}")
        trt = m.get("tensorrt")
        if trt and not trt["built"]:
            print(f"TensorRT engines not built: {trt['reason']}. The ONNX export above is complete; build the engines "
                  "on a CUDA machine with `dnc export --tensorrt`.")
        elif trt:
            agree = 100 * trt["predicted_agreement_vs_onnxruntime_fp32"]
            print(f"TensorRT {trt['tensorrt']} engines {', '.join(trt['files'])}: predicted classes agree with "
                  f"onnxruntime fp32 on {agree:.2f}% of {trt['n']} images")
    return 0


def cmd_centroids(a: argparse.Namespace) -> int:
    # onnxruntime (heavy, and not needed to build the parser of every layer's commands) only when run
    from dnc.export.recompute import choose_split, compute_set
    from dnc.export.seg_recompute import compute_seg_set, split_note

    if a.base is not None or a.add or a.remove or a.rename:
        return _edit(a)
    if a.data is None:
        raise DataError("--data is needed to compute a set (or --from SET to edit one)")
    split = a.split or "train"
    if is_seg_folder(a.data):
        if a.K == "all":
            raise DataError("--K all is for class folders; a segmentation set holds at most 255 sub-centroids per "
                            "class (its maps are uint8): give a number up to 255, or auto")
        note = split_note(Path(a.data), split)
        if not a.json:
            print(note, flush=True)
        res = compute_seg_set(a.embed, a.data, out=a.out, k=a.K, method=a.method, keep_means=a.keep_means,
                              threads=a.threads, seed=a.seed, split=split, per_image=a.pixels_per_image,
                              pixels_per_class=a.pixels_per_class, accept=a.accept,
                              calibration_share=a.calibration_share)
        if a.json:
            print(json.dumps(res))
        else:
            cells = ", ".join(f"{n} {v}" for n, v in zip(res["classes"], res["cells_per_class"], strict=True))
            print(f"segmentation centroid set {res['set_id']}: {len(res['classes'])} classes from {res['images']} "
                  f"{res['split']} images (cells sampled: {cells}), K per class {res['ks']}; "
                  f"{_thresholds_said(res, a)} -> {res['out']}")
        return 0
    folder, note = choose_split(a.data, split)  # a train/ and test/ layout: its split, said before the work
    _no_split_ignored(a.split, a.data, note)
    if note and not a.json:
        print(note, flush=True)
    res = compute_set(a.embed, folder, out=a.out, k=a.K, method=a.method, keep_means=a.keep_means,
                      batch_size=a.batch_size, threads=a.threads, seed=a.seed, accept=a.accept,
                      calibration_share=a.calibration_share)
    if a.json:
        print(json.dumps(dict(res, split_note=note)))
    else:
        print(f"centroid set {res['set_id']}: {len(res['classes'])} classes, {res['images']} images "
              f"({res['calibration_images']} held out to calibrate), K per class {res['ks']}; "
              f"{_thresholds_said(res, a)} (embed {res['embed_seconds']:.1f}s, cluster {res['cluster_seconds']:.1f}s) "
              f"-> {res['out']}")
    return 0


def _thresholds_said(res: dict, a: argparse.Namespace) -> str:
    """What a summary says of the set's abstention thresholds."""
    t = res.get("thresholds")
    if t is None:
        return "no thresholds (never answers unknown)"
    return f"thresholds accepting {a.accept:.0%} of held-out images, {min(t):.3f} to {max(t):.3f}"


def _edit(a: argparse.Namespace) -> int:
    from dnc.export.edit_set import edit_set, parse_pairs

    if a.base is None:
        raise DataError("--add, --remove and --rename edit a set: give it with --from SET")
    if a.data is not None or a.split is not None:
        raise DataError("--from edits a set: give each added class's images with --add NAME=FOLDER, not --data/--split")
    res = edit_set(a.base, a.embed, a.out, add=parse_pairs(a.add, "add"), remove=a.remove,
                   rename=parse_pairs(a.rename, "rename"), k=a.K, method=a.method, keep_means=a.keep_means,
                   batch_size=a.batch_size, threads=a.threads, seed=a.seed, accept=a.accept,
                   calibration_share=a.calibration_share, per_image=a.pixels_per_image,
                   pixels_per_class=a.pixels_per_class)
    if a.json:
        print(json.dumps(res))
    else:
        added = ", ".join(f"{n} ({c} images)" for n, c in res["added"].items()) or "none"
        print(f"centroid set {res['set_id']} from {res['base_set_id']}: {len(res['classes'])} classes, K per class "
              f"{res['ks']}; added {added}; removed {res['removed'] or 'none'}; renamed {res['renamed'] or 'none'}; "
              f"{_thresholds_said(res, a)} (embed {res['embed_seconds']:.1f}s) -> {res['out']}")
    return 0


def _no_split_ignored(split: str | None, data: str, note: str | None) -> None:
    """An explicit --split on a plain folder of classes would be silently ignored: refuse it instead."""
    if split is not None and note is None:
        raise DataError(f"--split {split}: {data} is a folder of classes, not laid out in splits (train/ and "
                        "test/); give the split's own folder as --data, or leave --split out")


def cmd_eval_onnx(a: argparse.Namespace) -> int:
    from dnc.export.evaluate import evaluate_folder
    from dnc.export.seg_evaluate import evaluate_seg_folder

    if is_seg_folder(a.data):
        res = evaluate_seg_folder(a.embed, a.centroids, data=a.data, threads=a.threads, split=a.split or "test")
        if a.json:
            print(json.dumps(res))
        else:
            print(f"mIoU {res['miou']:.2f}%  pixel accuracy {res['pixel_acc']:.2f}%  on {res['images']} images "
                  f"(set {res['set_id']})")
            for name, v in res["iou_per_class"].items():
                print(f"  {name:<16} IoU {'-' if v is None else f'{v:.2f}'}")
        return 0
    from dnc.export.recompute import choose_split

    _no_split_ignored(a.split, a.data, choose_split(a.data, a.split or "test")[1])
    res = evaluate_folder(a.embed, a.centroids, data=a.data, batch_size=a.batch_size, threads=a.threads, split=a.split)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"top-1 {res['top1']:.2f}% on {res['n']} images of {a.data} (centroid set {res['set_id']})")
        if res["accepted"] is not None:
            promised = f", calibrated to accept {res['accept']:.0%} of each class" if res.get("accept") else ""
            among = "-" if res["top1_accepted"] is None else f"{res['top1_accepted']:.2f}%"
            print(f"accepted (not unknown) {res['accepted']:.2f}%{promised}; top-1 among them {among}")
        for name, acc in res["per_class_top1"].items():
            print(f"  {name:<20} {acc:6.2f}%")
    return 0
