"""benchmarks/accuracy/large_k.py runs with tiny settings (its figures: docs/BENCHMARKS.md, issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dnc.core import formats as F

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_large_k_benchmark_runs(exported, fm_folder, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy" / "large_k.py"), "--embed",
                          str(exported[0] / F.EMBED_FILE), "--train", str(fm_folder / "train"), "--test",
                          str(fm_folder / "test"), "--K", "2", "all", "--batch", "8", "--runs", "2", "--out",
                          str(tmp_path / "bench")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    got = json.loads((tmp_path / "bench" / "results.json").read_text())["sets"]
    assert got["2"]["subcentroids"] == 20 and got["all"]["subcentroids"] > got["2"]["subcentroids"]
    assert got["all"]["head_bytes"] > got["2"]["head_bytes"] and 0 <= got["all"]["top1"] <= 100
    assert got["2"]["embed_plus_head_vs_first"] == 1.0
