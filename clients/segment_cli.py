"""`dnc segment`: segment image files and folders on a running server (or in-process), with evidence files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clients.client import DEFAULT_URLS, INPUTS, PROTOCOLS, DNCClient, collect_images, read_picture
from clients.seg_results import table, write
from training.images import DataError

_D = argparse.ArgumentDefaultsHelpFormatter


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", formatter_class=_D,
                       help="segment images: a class-index PNG, an overlay and the evidence JSON per image")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, help="folder for NAME.labels.png, NAME.overlay.png, NAME.evidence.json")
    p.add_argument("--model", default="dnc", help="the served segmenter's name")
    p.add_argument("--url", default=None, help=f"server address (default {DEFAULT_URLS['http']} for http, "
                   f"{DEFAULT_URLS['grpc']} for grpc)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="http")
    p.add_argument("--input", choices=INPUTS, default="pixels", dest="how",
                   help="how pictures travel: uint8 pixels at their own size, the files' PNG/JPEG bytes, or "
                        "float32 preprocessed here")
    p.add_argument("--batch-size", type=int, default=8, help="pictures per request (pictures of one size)")
    p.add_argument("--maps", action="store_true", help="also ask for the winning sub-centroid and score maps "
                   "(kept in memory by the Python client; the files hold labels and evidence)")
    p.add_argument("--in-process", default=None, metavar="EXPORT",
                   help="no server: run this segmenter export with onnxruntime (the same preprocessing and head)")
    p.add_argument("--centroids", default=None, help="with --in-process: a centroid set instead of the export's")
    p.add_argument("--threads", type=int, default=0, help="with --in-process: onnxruntime threads (0: per core)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (its evidence)")
    p.set_defaults(func=cmd_segment)


def cmd_segment(a: argparse.Namespace) -> int:
    if a.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.centroids and not a.in_process:
        raise ValueError("--centroids goes with --in-process (a server's class list changes with `dnc swap`)")
    files = collect_images(a.paths)  # a missing path is named before any server is contacted
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    skipped: list[tuple[str, str]] = []
    if a.in_process:
        segs, color = _in_process(a, files, skipped)
    else:
        with DNCClient(a.url, a.protocol, a.model) as client:
            segs = client.segment_files(files, a.batch_size, skipped, a.how, a.maps)
            color = client.preprocessing["color"]
    names: set[str] = set()
    for s in segs:
        name = _unique(Path(s.source).stem, names)
        paths = write(s, read_picture(s.source, color), out, name)
        if a.json:
            print(json.dumps({**s.evidence(), "files": {k: str(v) for k, v in paths.items()}}))
    if segs and not a.json:
        print(table(segs))
        print(f"wrote {len(segs)} x (labels PNG, overlay PNG, evidence JSON) to {out}")
    for path, reason in skipped:
        print(f"dnc segment: skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        print(f"dnc segment: {len(skipped)} of {len(files)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


def _in_process(a: argparse.Namespace, files: list[Path], skipped: list[tuple[str, str]]) -> tuple[list, str]:
    """Segment files one by one with the export in-process; returns the segmentations and the model's color."""
    from tqdm import tqdm

    from clients.seg_results import segmentations
    from export.seg_infer import InProcessSegmenter

    seg = InProcessSegmenter(a.in_process, a.centroids, a.threads)
    color, result = seg.preprocessing["color"], []
    for f in tqdm(files, desc="segment", unit="img", disable=len(files) <= 1 or None):
        try:
            pixels = read_picture(f, color)
        except DataError as e:
            skipped.append((str(f), str(e)))
            continue
        result += segmentations(seg.run([pixels], a.maps), [str(f)])
    return result, color


def _unique(stem: str, used: set[str]) -> str:
    """The file stem, or stem-2, stem-3... when two inputs share a name."""
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name
