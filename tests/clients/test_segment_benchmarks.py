"""The benchmarks of `dnc segment`'s jobs run at HEAD (issue 27, item 1), with tiny settings, so that none rots
unseen: benchmarks/video/video_serving.py (video jobs in-process and through the real tritonserver, a swap under
load) and benchmarks/figures/demo_segment_figure.py (the README's figure, drawn from `dnc segment`'s label and
overlay PNGs before and after a list swap). Their full runs: docs/BENCHMARKS.md."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dnc.clients.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=300) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.mark.triton
def test_video_serving_benchmark_runs(tmp_path, seg_export, other_seg_set, opencv_doc):
    """4-frame generated clips and 2 frames of vtest.avi, the command's default flags and one (batch, concurrency)
    pair, no Ray: every frame out
    through both protocols, the served masks as good as in-process, no frame lost to the swap."""
    out = tmp_path / "bench"
    _run(ROOT / "benchmarks" / "video" / "video_serving.py", "--segmenter", seg_export[2], "--other-set", other_seg_set,
         "--out", out, "--threads", "1", "--frames", "4", "--real-frames", "2", "--pairs", "default,4x2", "--skip-ray",
         timeout=400)
    got = json.loads((out / "results.json").read_text())
    assert set(got["inputs"]) == {"256x256", "640x480", "vtest 768x576"}
    for name, row in got["inputs"].items():
        frames = 2 if name.startswith("vtest") else 4
        served = ("http default", "grpc default", "http b4 c2", "grpc b4 c2")
        assert set(row) == {"in_process", *served, "best_triton", "ratio", "default_over_best_pair"}, row
        assert row["default_over_best_pair"] == row["http default"]["frames_per_s"] / max(
            row[k]["frames_per_s"] for k in ("http b4 c2", "grpc b4 c2"))
        for key in ("in_process", *served):
            assert row[key]["frames"] == frames and row[key]["failed"] == 0 and row[key]["frames_per_s"] > 0, row
            assert row[key]["miou"] == row["in_process"]["miou"]  # the same labels served as in-process
            shares = row[key]["time_share"]  # where the job's time went (the rest: bookkeeping)
            assert set(shares) == {"decode", "wait", "write"} and 0 < sum(shares.values()) <= 1.01, row[key]
        if frames == 4:
            assert 0 <= row["in_process"]["miou"] <= 100
        else:
            assert row["in_process"]["miou"] is None  # real footage: no truth
        assert row["ratio"] > 0
    swap = got["swap"]
    assert swap["failed_videos"] == 0 and swap["frames_in"] == swap["frames_out"] == 4, swap
    assert sum(swap["frames_per_list"].values()) == 4 and swap["answering_seconds"] >= 0
    assert "ray" not in got and not (out / "repo" / ".dnc-server.json").exists()  # the server was stopped


def test_demo_segment_figure_runs(tmp_path, seg_export, other_seg_set):
    """The figure from a demo-like folder: two test scenes segmented with the export's list and with another."""
    scenes = seg_export[0] / "images" / "test"
    demo = tmp_path / "demo"
    (demo / "data" / "scenes-fine" / "images").mkdir(parents=True)
    (demo / "data" / "scenes-fine" / "images" / "test").symlink_to(scenes)
    pictures = [str(scenes / f"{i:06d}.png") for i in (0, 3)]
    for when, centroids in (("coarse", []), ("fine", ["--centroids", str(other_seg_set)])):
        assert main(["segment", *pictures, "--out", str(demo / "segmented" / when), "--in-process",
                     str(seg_export[2]), "--threads", "1", *centroids]) == 0
    out = tmp_path / "figure.png"
    _run(ROOT / "benchmarks" / "figures" / "demo_segment_figure.py", "--demo", demo, "--scenes", "0,3", "--out", out)
    w, h = Image.open(pictures[0]).size
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (2 * (3 * h + 18 + 6), 5 * (3 * w + 6), 3)  # 2 scenes x (picture, 2 x overlay and labels)
    tile = sheet[18:18 + 3 * h, :3 * w]  # the first picture, enlarged 3 times, nearest-neighbour
    assert (tile == np.asarray(Image.open(pictures[0]).convert("RGB").resize((3 * w, 3 * h), Image.NEAREST))).all()
