"""The serving benchmarks run at HEAD (issue 27, item 1): each script with tiny settings, on the real
tritonserver, with real pictures (random values are refused by the served model's input check, which is
how triton_serving.py came to report 0 images/s). Their full runs: docs/BENCHMARKS.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "serving"


def _run(*args, timeout=400):
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def test_triton_serving_benchmark_runs(tmp_path, exported, other_set, fm_folder):
    out = tmp_path / "results.json"
    _run(BENCH / "triton_serving.py", "--export", exported[0], "--centroids", other_set, "--images",
         fm_folder / "test", "--out", out, "--threads", "1", "--request-batch", "4", "--seconds", "1",
         "--concurrency", "1,2", "--swaps", "2", "--swap-concurrency", "1")
    res = json.loads(out.read_text())
    for row in res["triton"].values():  # every request answered
        assert row["errors"] == 0 and row["images_per_s"] > 0 and 0 < row["vs_inprocess"], row
    assert res["swap"]["failed_requests"] == 0 and len(res["swap"]["set_ids_seen"]) == 2, res["swap"]


def test_reliability_benchmark_runs(tmp_path, exported, other_set, fm_folder):
    out = tmp_path / "results.json"
    _run(BENCH / "reliability.py", "--export", exported[0], "--centroids", other_set, "--images", fm_folder / "test",
         "--swaps", "2", "--steady-seconds", "1", "--threads-per-protocol", "1", "--kills", "1", "--bad", "6",
         "--out", out)
    res = json.loads(out.read_text())
    assert res["swaps"]["failed_requests"] == 0 and res["swaps"]["requests_steady"] > 0, res["swaps"]
    assert res["kill9"]["restarts"] == 1 and res["bad_requests"]["still_same_list"], res


def test_seg_serving_benchmark_runs(tmp_path, exported, seg_export, fm_folder):
    """seg_serving.py: the segmenter beside the classifier, in-process against served, swaps under load."""
    from dnc.core import formats as F
    from dnc.export.seg_recompute import compute_seg_set

    other = tmp_path / "other-set"
    compute_seg_set(seg_export[2] / F.EMBED_FILE, seg_export[0], other, k=2, threads=1, seed=0)
    out = tmp_path / "bench"
    _run(BENCH / "seg_serving.py", "--classifier", exported[0], "--segmenter", seg_export[2], "--other-set", other,
         "--out", out, "--threads", "1", "--seconds", "0.5", "--swaps", "1", timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert res["swaps"]["failures"] == 0 and res["swaps"]["classifier_kept_its_list"], res["swaps"]
