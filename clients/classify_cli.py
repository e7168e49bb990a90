"""`dnc classify`: classify image files and folders on a running DNC server, with evidence."""

from __future__ import annotations

import argparse
import json
import sys

from dnc.clients import flags
from dnc.clients.client import DEFAULT_URLS, INPUTS, PROTOCOLS, DNCClient, Prediction, collect_images
from dnc.clients.model_option import say_choice
from dnc.clients.printable import shown
from dnc.core import tasks
from dnc.core.errors import InputError

_D = argparse.ArgumentDefaultsHelpFormatter
DEFAULT_CONCURRENCY = 2  # requests in flight of `dnc classify`, chosen by measurement (docs/BENCHMARKS.md, issue 27)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", formatter_class=_D,
                       help="classify images on a running server: label, score, sub-centroid, exemplar, margin")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    p.add_argument("--url", default=None, help=f"server address (default {DEFAULT_URLS['http']} for http, "
                   f"{DEFAULT_URLS['grpc']} for grpc)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="http")
    p.add_argument("--model", default=None, help="the served classifier's name (`dnc repo build --name`); default: "
                   "the one classifier the server serves (dnc among several)")
    p.add_argument("--input", choices=INPUTS, default="pixels", dest="how",
                   help="how pictures travel: uint8 pixels at their own size (the server resizes and normalises), "
                        "the files' PNG/JPEG bytes, or float32 preprocessed here")
    p.add_argument("--top-k", type=int, default=1, help="best classes to show per image")
    p.add_argument("--batch-size", type=int, default=None, help="at most this many images per request; default: as "
                   "many as fit the served model's max batch and the pixels it takes per request (read from the "
                   "server)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight: the next "
                   "pictures are read while earlier requests are answered (the default is measured: "
                   "docs/BENCHMARKS.md, issue 27)")
    p.add_argument("--downscale", action="store_true", help="images above the served model's per-picture limit are "
                   "sent downscaled (aspect kept); without it they are skipped with a message")
    p.add_argument("--no-abstain", dest="abstain", action="store_false",
                   help="answer the best class even when its score is below the class's threshold (by default such an "
                   "image is answered \"unknown\", with the nearest class as its evidence)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_classify)


def cmd_classify(a: argparse.Namespace) -> int:
    if a.top_k < 1 or a.concurrency < 1:
        raise InputError(f"`top_k` and `concurrency` must be >= 1, got {a.top_k} and {a.concurrency}")
    files = collect_images(a.paths)  # a missing path is named before any server is contacted
    skipped: list[tuple[str, str]] = []
    with DNCClient(a.url, a.protocol, a.model, task=tasks.CLASSIFICATION, downscale=a.downscale,
                   abstain=a.abstain) as client:
        say_choice(a, client, tasks.CLASSIFICATION)
        preds = client.classify_files(files, a.top_k, a.batch_size, skipped=skipped, how=a.how,
                                      concurrency=a.concurrency)
    if a.json:
        for p in preds:
            print(json.dumps(p.to_dict()))
    elif preds:
        print(table(preds))
    for path, reason in skipped:
        print(f"dnc classify: skipped {shown(path)}: {flags.shown(shown(reason), a)}", file=sys.stderr)
    if skipped:
        print(f"dnc classify: {len(skipped)} of {len(files)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


def table(preds: list[Prediction]) -> str:
    """A readable table: one row per image (its answer: the best class, or "unknown" when the best class's
    score is below its threshold), indented rows for the runners-up; every row is evidence (the nearest
    classes, their scores, sub-centroids and exemplars), unknown answers included."""
    sources = [shown(p.source) for p in preds]  # names from files: control characters escaped
    width = min(48, max([len(s) for s in sources] + [5]))
    head = (f"{'image':<{width}}  {'answer':<16} {'rank':>4}  {'label':<16} {'score':>6}  {'thresh':>6}  "
            f"{'margin':>6}  {'sub':>3}  exemplar")
    rows = [head, "-" * len(head)]
    for p, source in zip(preds, sources, strict=True):
        src = source if len(source) <= width else "..." + source[-width + 3:]
        for r in p.top:
            first = r.rank == 1
            threshold = f"{p.threshold:6.3f}" if first and p.threshold > -1 else ""
            rows.append(f"{src if first else '':<{width}}  {shown(p.answer) if first else '':<16} {r.rank:>4}  "
                        f"{shown(r.label):<16} {r.score:6.3f}  {threshold:>6}  "
                        f"{(f'{p.margin:6.3f}' if first else ''):>6}  {r.subcentroid:>3}  {shown(r.exemplar or '-')}")
    sets = sorted({p.set_id for p in preds})
    unknown = sum(not p.known for p in preds)
    rows.append(f"{len(preds)} image(s), {unknown} unknown, class list {', '.join(sets)}")
    return "\n".join(rows)
