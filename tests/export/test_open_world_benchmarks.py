"""The issue-25 benchmarks run with tiny settings (their figures: docs/BENCHMARKS.md, issue 25):
benchmarks/accuracy/open_set.py (few-shot edits and open-set detection) and coarse_to_fine.py --sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "accuracy"
pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run


def test_the_open_set_benchmark_runs(fmnist_ready, tmp_path):
    out = tmp_path / "open"
    _run(str(BENCH / "open_set.py"), "--seed", "0", "--epochs", "1", "--width", "8", "--per-class", "30",
         "--shots", "1,5", "--far-count", "20", "--out", str(out))
    got = json.loads((out / "results.json").read_text())["s0"]
    assert set(got["few_shot"]) >= {"shots1", "shots5", "old_top1_before", "reference_new_top1"}
    scores = got["open_set"]["scores"]
    assert {"dnc K4", "dnc Kall", "softmax MSP", "softmax energy"} <= set(scores)
    assert all(0 <= v[g]["auroc"] <= 1 and 0 <= v[g]["fpr95"] <= 1 for v in scores.values() for g in v)
    assert got["open_set"]["counts"] == {"known": 240, "near": 60, "digits": 20, "photos": 20, "noise": 20}
    report = _run(str(BENCH / "open_set.py"), "--report", "--out", str(out)).stdout
    assert "| 5 |" in report and "softmax MSP" in report and "known_accepted" in report


def test_the_coarse_to_fine_benchmark_makes_sets_of_many_subcentroids(fmnist_ready, tmp_path):
    out = tmp_path / "c2f"
    _run(str(BENCH / "coarse_to_fine.py"), "--epochs", "1", "--width", "8", "--per-class", "30", "--heads", "dnc",
         "--sets", "2,all", "--out", str(out))
    sets = json.loads((out / "results.json").read_text())["s0/dnc"]["sets"]
    assert sets["2"]["subcentroids"] == 20 and sets["all"]["subcentroids"] == 10 * 24
    assert sets["all"]["head_bytes"] > sets["2"]["head_bytes"]
    assert 0 < sets["all"]["live"] <= sets["all"]["subcentroids"]
    assert "Fine sets of the dnc runs" in _run(str(BENCH / "coarse_to_fine.py"), "--report", "--out", str(out)).stdout


@pytest.mark.triton
def test_the_large_k_latency_benchmark_runs(exported, fm_folder, tmp_path):
    from dnc.export.recompute import compute_set

    for k in (2, "all"):
        compute_set(exported[0] / "embed.onnx", fm_folder / "train", tmp_path / f"set-{k}", k=k, threads=1)
    _run(str(ROOT / "benchmarks" / "serving" / "large_k_latency.py"), "--export", str(exported[0]), "--set",
         str(tmp_path / "set-2"), "--set", str(tmp_path / "set-all"), "--images", str(fm_folder / "test"),
         "--batch", "8", "--requests", "3", "--rounds", "2", "--warmup", "1", "--out", str(tmp_path / "lat"))
    got = json.loads((tmp_path / "lat" / "results.json").read_text())["sets"]
    assert got["set-2"]["median_vs_first"] == 1.0 and got["set-all"]["subcentroids"] > got["set-2"]["subcentroids"]
    assert all(r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] for r in got.values())


def test_the_segmentation_open_world_benchmark_runs(fmnist_ready, tmp_path):
    out = tmp_path / "seg"
    _run(str(BENCH / "seg_open_world.py"), "--seed", "0", "--epochs", "1", "--train", "60", "--test", "6",
         "--init", "scratch", "--width", "8", "--out", str(out))
    got = json.loads((out / "results.json").read_text())["s0"]
    assert {f"K{k}" for k in ("10", "64", "255", "auto")} <= set(got["induction"])
    assert all(0 <= got["induction"][f"K{k}"]["miou"] <= 100 for k in ("10", "auto"))
    scores = got["unknown"]["scores"]
    assert set(scores) == {"softmax MSP", "dnc K4", "dnc Kauto"}
    assert all(0 <= v["auroc"] <= 1 and 0 <= v["fpr95"] <= 1 for v in scores.values())
    assert got["unknown"]["pixels"]["unknown"] > 0 and got["unknown"]["pixels"]["known"] > 0
    report = _run(str(BENCH / "seg_open_world.py"), "--report", "--out", str(out)).stdout
    assert "| K auto |" in report and "softmax MSP" in report


def test_the_condensed_nearest_neighbour_benchmark_runs(exported, fm_folder, tmp_path):
    out = tmp_path / "condensed.json"
    _run(str(BENCH / "condensed_nn.py"), "--embed", str(exported[0] / "embed.onnx"), "--data", str(fm_folder),
         "--out", str(out))
    got = json.loads(out.read_text())
    assert 0 < got["kept"] <= got["train_images"] and got["passes_added"][-1] == 0
    assert 0 <= got["condensed_top1"] <= 100 and 0 <= got["one_nn_top1"] <= 100


def test_the_segmentation_large_k_timing_runs(seg_export, tmp_path):
    from dnc.export.seg_recompute import compute_seg_set

    scenes, _, export, _ = seg_export
    for k in (3, 255):
        compute_seg_set(export / "embed.onnx", scenes, tmp_path / f"K{k}", k=k, threads=1)
    out = tmp_path / "seg-large-k.json"
    _run(str(ROOT / "benchmarks" / "speed" / "seg_large_k.py"), "--export", str(export), "--set", str(tmp_path / "K3"),
         "--set", str(tmp_path / "K255"), "--images", str(scenes / "images" / "test"), "--sizes", "32,48",
         "--pictures", "2", "--repeat", "1", "--rounds", "1", "--out", str(out))
    got = json.loads(out.read_text())["sets"]
    small, big = got[str(tmp_path / "K3")], got[str(tmp_path / "K255")]
    assert big["subcentroids"] > small["subcentroids"] and small["48"]["ratio"] == 1.0 and big["48"]["head_ms"] > 0
