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


def test_served_ratio_benchmark_runs(tmp_path, exported, fm_folder):
    """served_ratio.py (issue 27): every input kind, in-process and served in one round."""
    out = tmp_path / "results.json"
    _run(BENCH / "served_ratio.py", "--export", exported[0], "--images", fm_folder / "test", "--out", out,
         "--concurrency", "1", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--request-batch", "4",
         "--max-batch", "8", "--threads", "1")
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"float32", "pixels", "encoded"}
    for kind, s in res["summary"].items():
        row = res["rounds"][kind][0]
        assert all(v["errors"] == 0 and v["requests"] > 0 for k, v in row.items() if not k.startswith("inprocess")), row
        assert s["inprocess"] > 0 and s["served"] > 0 and s["ratio"] == s["served"] / s["inprocess"], s


def test_cls_cost_curves_benchmark_runs(tmp_path, exported, fm_folder):
    """cls_cost_curves.py (issue 27): lists of real embeddings swapped in, a batch sweep, the plot."""
    out, plot = tmp_path / "cls.json", tmp_path / "cls.png"
    _run(BENCH / "cls_cost_curves.py", "--export", exported[0], "--images", fm_folder / "train", "--requests-from",
         fm_folder / "test", "--classes", "3,12", "--k", "2", "--batches", "1,4", "--request-batch", "4",
         "--concurrency", "1", "--seconds", "0.5", "--warmup", "0.2", "--embed-limit", "40", "--threads", "1",
         "--out", out, "--plot", plot)
    res = json.loads(out.read_text())
    assert [(r["classes"], r["k"]) for r in res["lists"]] == [(3, 2), (12, 2)]  # 24 sub-centroids from 40 pictures
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 and r["head_ms_per_image"] > 0 for r in res["lists"])
    assert [r["batch"] for r in res["batches"]] == [1, 4] and all(r["errors"] == 0 for r in res["batches"])
    assert plot.stat().st_size > 10_000


def test_client_defaults_benchmark_runs(tmp_path, exported, fm_folder):
    """client_defaults.py (issue 27): the real `dnc classify` with no flag and with a pair of flags."""
    out = tmp_path / "results.json"
    _run(BENCH / "client_defaults.py", "--export", exported[0], "--images", fm_folder / "test", "--limit", "12",
         "--batch-sizes", "4", "--concurrency", "1", "--rounds", "1", "--out", out)
    res = json.loads(out.read_text())
    assert res["files"] == 12 and set(res["images_per_s"]) == {"default", "b4 c1"}
    assert res["default_over_best"] == res["images_per_s"]["default"] / res["images_per_s"]["b4 c1"]


def test_seg_cost_curves_benchmark_runs(tmp_path, seg_export):
    """memory/seg_cost_curves.py (issue 27): the export's own list and one of real cells, two picture sizes."""
    from dnc.core import centroid_set

    own = centroid_set.load(seg_export[2]).num_classes
    out = tmp_path / "seg"
    _run(ROOT / "benchmarks" / "memory" / "seg_cost_curves.py", "--export", seg_export[2], "--classes",
         f"{own},{own + 3}", "--k", "2", "--sizes", "64x64,96x80", "--seconds", "0.5", "--warmup", "0.2",
         "--scenes", "16", "--out", out, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert list(res["cells"]) == [str(own), str(own + 3)]
    for rows in res["cells"].values():
        assert [r["size"] for r in rows] == ["64x64", "96x80"]
        assert all(r["errors"] == 0 and r["frames_per_s"] > 0 and r["peak_pss_mb"] > 10 for r in rows), rows
    assert (out / "seg.png").stat().st_size > 10_000
