"""The segmenter's speed benchmark runs at HEAD (issue 27, item 1): benchmarks/speed/seg_timing.py (what a DNC head
costs a segmenter: training step against the parametric twin, onnxruntime latency of the exported head graph
against a 1x1 convolution) with tiny settings, so that it does not rot unseen. Its full runs: docs/BENCHMARKS.md."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_seg_timing_benchmark_runs(tmp_path, fmnist_ready):
    out = tmp_path / "seg-timing.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed" / "seg_timing.py"), "--width", "4",
                          "--embed-dim", "8", "--K", "2", "--batch-size", "2", "--rounds", "2", "--steps", "1",
                          "--latency-rounds", "2", "--block", "1", "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = json.loads(out.read_text())
    step = got["training_step"]
    assert step["steps_timed"] == 1 and step["K"] == 2 and step["image_size"] == 64, step
    assert all(0 < v < 60 for v in step["median_s"].values()) and set(step["median_s"]) == {"dnc", "softmax"}
    assert math.isclose(step["ratio_dnc_over_softmax"], step["median_s"]["dnc"] / step["median_s"]["softmax"])
    latency = got["onnxruntime_latency"]
    assert set(latency) == {"64x64 batch 8", "256x256 batch 1"}
    for row in latency.values():
        assert set(row["median_ms"]) == {"dnc", "conv1x1"} and all(v > 0 for v in row["median_ms"].values()), row
        assert math.isfinite(row["ratio_dnc_over_conv1x1"]) and row["ratio_dnc_over_conv1x1"] > 0
