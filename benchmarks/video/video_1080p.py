"""Benchmark: a 1080p clip segmented through Triton with `dnc segment`'s default flags (issue 23, item 7).

Makes a clip of --frames frames at --size (default 300 at 1920x1080, 25 fps, H.264) from real footage:
the frames of Debian opencv-doc's videos (vtest.avi, Megamind.avi, tree.avi), one after the other and
again from the start, each upscaled bilinearly to the clip's size, so the clip is the same on every run.
Builds a repository of the segmenter export (`dnc repo build --name scenes`, defaults), serves it with
`dnc serve --detach`, and runs `dnc segment CLIP --out OUT --url HTTP` with no other flag: the client reads
the served model's pixel budget and sizes each request to it. Reports frames/s, the frames per request
it chose, the budget it read, where the time went, and whether every frame came out.

    .venv/bin/python benchmarks/video/video_1080p.py --export runs/demo/seg-export --out runs/bench-video-1080p
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.clients.cli import main as dnc
from dnc.core import video
from dnc.serving import repository
from dnc.serving.state import read_state, stop_detached

SOURCES = [Path("/usr/share/doc/opencv-doc/examples/data") / n for n in ("vtest.avi", "Megamind.avi", "tree.avi")]


def make_clip(path: Path, frames: int, width: int, height: int, sources: list[Path] = SOURCES) -> dict:
    """Write the clip (see the module's text); returns what it was made of."""
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y opencv-doc")
    used: dict[str, int] = {}
    written = 0
    with video.H264Writer(path, width, height, Fraction(25)) as out:
        while written < frames:
            for src in sources:
                for f in video.frames(src):
                    if written == frames:
                        break
                    out.write(np.asarray(Image.fromarray(f.rgb).resize((width, height), Image.BILINEAR)))
                    used[src.name] = used.get(src.name, 0) + 1
                    written += 1
    return {"frames": written, "width": width, "height": height, "fps": 25, "from": used}


def run(export: Path, out: Path, frames: int, width: int, height: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "clip" / f"clip{width}x{height}.mp4"
    clip.parent.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    made = make_clip(clip, frames, width, height)
    made_s = time.perf_counter() - t0
    repo = out / "repo"
    if repo.exists():
        stop_detached(repo)
    repository.build(export, repo, name="scenes")
    assert dnc(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                "--detach"]) == 0
    try:
        url = read_state(repo)["http"]
        shutil.rmtree(out / "segmented", ignore_errors=True)  # (a rerun would skip the clip as done)
        command = ["segment", str(clip), "--out", str(out / "segmented"), "--url", url]
        t0 = time.perf_counter()
        status = dnc(command)
        seconds = time.perf_counter() - t0
        from dnc.clients.client import DNCClient

        with DNCClient(url, model="scenes") as c:
            budget, max_batch = c.max_pixels, c.max_batch
    finally:
        stop_detached(repo)
    summary_file = out / "segmented" / f"{clip.stem}.summary.json"
    s = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return {"status": status, "command": "dnc " + " ".join(command[:-1]) + " HTTP_ADDRESS",
            "clip": made, "clip_written_s": round(made_s, 1), "frames_out": s.get("frames"),
            "all_frames": s.get("frames") == frames, "frames_per_request": s.get("frames_per_request"),
            "server_max_pixels": budget, "server_max_batch": max_batch, "command_s": round(seconds, 1),
            "frames_per_s": s.get("frames_per_s"), "time_share": s.get("time_share"),
            "met": status == 0 and s.get("frames") == frames and frames >= 300 and width * height >= 1920 * 1080,
            "cpus": os.cpu_count(), "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, required=True, help="export folder (`dnc export`) of a segmenter")
    p.add_argument("--frames", type=int, default=300, help="frames of the clip")
    p.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the clip (even sides)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-video-1080p"), help="folder for the clip, the "
                   "repository, the outputs and results.json")
    a = p.parse_args(argv)
    width, height = (int(v) for v in a.size.lower().split("x"))
    result = run(a.export, a.out, a.frames, width, height)
    (a.out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0 if result["status"] == 0 and result["all_frames"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
