"""The speed benchmarks run at HEAD (issue 27, item 1): benchmarks/speed/step_time.py and onnx_latency.py with
tiny settings, so that neither rots unseen. Their full runs: docs/BENCHMARKS.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SPEED = ROOT / "benchmarks" / "speed"


def _run(*args):
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_step_time_benchmark_runs(tmp_path):
    out = tmp_path / "step.json"
    _run(SPEED / "step_time.py", "--classes", "10", "--width", "8", "--embed-dim", "32", "--batch-size", "8",
         "--image-size", "16", "--rounds", "1", "--steps", "1", "--out", out)
    assert json.loads(out.read_text())


def test_onnx_latency_benchmark_runs(tmp_path, dnc_checkpoint):
    out = tmp_path / "latency.json"
    _run(SPEED / "onnx_latency.py", "--checkpoint", dnc_checkpoint, "--batches", "1", "--threads", "1", "--rounds",
         "1", "--block", "2", "--out", out)
    assert json.loads(out.read_text())
