"""The `dnc classify` command's default flags against every (--batch-size, --concurrency) pair (issue 27).

    python benchmarks/serving/client_defaults.py --export runs/demo/export --images runs/demo/data/fine/test

A user runs `dnc classify FOLDER` against a served classifier; what they wait for is the whole command:
start-up, reading every file, the requests and printing. One real tritonserver (python runtime, `dnc repo
build` defaults) serves the export; the real command runs as a subprocess on --images (--limit files) with
no flag ("default"), and with each pair of --batch-sizes x --concurrency; rounds interleave the settings,
and each figure is the median over --rounds of files / wall seconds. Target: the default within 10% of the
best pair. Results: --out (JSON) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dnc.core.images import image_files
from dnc.serving import repository
from dnc.serving.server import TritonServer

DNC = Path(sys.executable).with_name("dnc")


def folder_of(images: Path, limit: int, into: Path) -> int:
    """Copies of the first `limit` files under `images` in `into` (copies: the client refuses links); how many."""
    files = image_files(images)[:limit]
    if not files:
        raise SystemExit(f"no image files under {images}")
    into.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        shutil.copyfile(f, into / f"{i:06d}{f.suffix}")
    return len(files)


def run(folder: Path, url: str, flags: list[str]) -> float:
    """Wall seconds of `dnc classify FOLDER --json` with `flags`."""
    t = time.perf_counter()
    p = subprocess.run([str(DNC), "classify", str(folder), "--url", url, "--json", *flags], capture_output=True,
                       text=True, timeout=1800)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"dnc classify {' '.join(flags)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="runs/demo/export")
    ap.add_argument("--images", default="runs/demo/data/fine/test")
    ap.add_argument("--limit", type=int, default=2000, help="files classified per run")
    ap.add_argument("--batch-sizes", default="8,16,32,64")
    ap.add_argument("--concurrency", default="1,2,4", help="requests in flight (1 where the command has no flag)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="runs/bench-client-defaults/results.json")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    has_concurrency = "--concurrency" in subprocess.run([str(DNC), "classify", "--help"], capture_output=True,
                                                        text=True).stdout
    concs = [int(c) for c in a.concurrency.split(",")] if has_concurrency else [1]
    settings = {"default": []}
    for b in map(int, a.batch_sizes.split(",")):
        for c in concs:
            settings[f"b{b} c{c}"] = ["--batch-size", str(b)] + (["--concurrency", str(c)] if has_concurrency else [])
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(os.sched_getaffinity(0))} cores", "args": vars(a), "flags": settings, "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        n = folder_of(Path(a.images), a.limit, folder)
        repo = Path(tmp) / "repo"
        repository.build(Path(a.export), repo)
        with TritonServer(repo, 0, 0, 0) as server:
            run(folder, server.http_url, [])  # warm-up: the server's first requests, the file cache
            with tqdm(total=a.rounds * len(settings), desc="runs", unit="run") as bar:
                for _ in range(a.rounds):
                    for name, flags in settings.items():
                        res["seconds"].setdefault(name, []).append(run(folder, server.http_url, flags))
                        bar.update(1)
    res["files"] = n
    res["images_per_s"] = {k: n / float(np.median(v)) for k, v in res["seconds"].items()}
    best = max((k for k in settings if k != "default"), key=res["images_per_s"].get)
    res["best"], res["default_over_best"] = best, res["images_per_s"]["default"] / res["images_per_s"][best]
    out.write_text(json.dumps(res, indent=1))
    print(f"| flags | images/s (median of {a.rounds}) | / best |\n|---|---|---|")
    for k, v in sorted(res["images_per_s"].items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.0f} | {v / res['images_per_s'][best]:.3f} |")
    print(f"default / best ({best}): {res['default_over_best']:.3f} (target >= 0.9: "
          f"{'met' if res['default_over_best'] >= 0.9 else 'missed'})")


if __name__ == "__main__":
    main()
