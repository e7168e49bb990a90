"""benchmarks/video/video_1080p.py smoke-run with tiny settings (its 300-frame 1080p run: docs/BENCHMARKS.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_video_1080p_benchmark_runs(tmp_path, seg_export, opencv_doc):
    """6 frames at 1280x720 through `dnc serve` with default flags: every frame out, 4 per request."""
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/video/video_1080p.py"), "--export", str(seg_export[2]),
                          "--frames", "6", "--size", "1280x720", "--out", str(out)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == 0 and result["all_frames"] and result["frames_out"] == 6, result
    assert result["server_max_pixels"] == 2048 * 2048 and result["frames_per_request"] == 4, result
    assert result["clip"]["from"] == {"vtest.avi": 6} and not result["met"]  # (6 frames are not the target)
    assert not (out / "repo" / ".dnc-server.json").exists()  # the server was stopped
