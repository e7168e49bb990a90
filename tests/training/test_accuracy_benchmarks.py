"""The accuracy benchmarks run at HEAD (issue 27, item 1): benchmarks/accuracy/fmnist_twins.py,
subcentroid_revival.py, subcategory_discovery.py, seg_head_drift.py and seg_benchmarks.py, and
benchmarks/device/pack_seg.py (what their GPU runs carry), each with tiny settings, so that none rots unseen.
The device scripts seg_gpu.sh and seg_induction_gpu.sh need CUDA: here their syntax is checked, and every script,
command and flag they invoke. Their full runs: docs/BENCHMARKS.md."""

import gzip
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "accuracy"
DEVICE = ROOT / "benchmarks" / "device"


def _run(*args, timeout=300) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _percent(v) -> bool:
    return isinstance(v, float | int) and math.isfinite(v) and 0 <= v <= 100


def test_fmnist_twins_benchmark_runs(tmp_path, fmnist_ready):
    out = tmp_path / "twins"
    _run(BENCH / "fmnist_twins.py", "--heads", "dnc,softmax", "--epochs", "1", "--width", "8", "--embed-dim", "32",
         "--batch-size", "64", "--train-limit", "512", "--test-limit", "256", "--threads", "2", "--out", out)
    got = json.loads((out / "results.json").read_text())
    assert set(got) == {"dnc/e1/s0", "softmax/e1/s0"}
    for name, r in got.items():
        assert _percent(r["test_top1"]) and r["test_top5"] >= r["test_top1"] and r["per_epoch_top1"] == [r["test_top1"]]
        assert r["model"]["head"] == name.split("/")[0] and r["model"]["width"] == 8
    assert 1 <= got["dnc/e1/s0"]["per_epoch_live"][0]["test_live"] <= 4
    assert (out / "twins.png").stat().st_size > 0
    report = _run(BENCH / "fmnist_twins.py", "--report", "--epochs", "1", "--out", out).stdout
    assert "| dnc/e1 | 1 |" in report and "| softmax/e1 | 1 |" in report


def test_revival_and_discovery_benchmarks_run_on_a_coarse_folder(tmp_path, fmnist_ready):
    """subcentroid_revival.py trains a 5-class model on a coarse folder; subcategory_discovery.py measures it."""
    from dnc.training.folders import write_dataset_folders

    coarse = tmp_path / "coarse"
    write_dataset_folders("fashion-mnist", coarse, "coarse", per_class=40, test_per_class=20)
    out = tmp_path / "revival"
    _run(BENCH / "subcentroid_revival.py", "--data", "coarse", "--coarse-folder", coarse, "--epochs", "1",
         "--variants", "default", "--threads", "2", "--out", out)
    rows = json.loads((out / "results.json").read_text())["coarse/default/e1/s0"]["rows"]
    assert len(rows) == 1 and _percent(rows[0]["test_top1"]) and len(rows[0]["live_per_class"]) == 5
    assert all(1 <= n <= 4 for n in rows[0]["live_per_class"])

    checkpoint = out / "coarse" / "default" / "e1" / "s0" / "checkpoint.safetensors"
    found = tmp_path / "discovery"
    _run(BENCH / "subcategory_discovery.py", "--coarse", coarse, "--model", f"m={checkpoint}", "--threads", "2",
         "--out", found)
    got = json.loads((found / "results.json").read_text())["m"]
    for name in ("tops", "footwear"):
        r = got[name]
        assert r["images"] == 20 and r["K"] == 4 and 1 <= r["live"] <= 4 and 1 <= r["offline_live"] <= 4, r
        assert abs(sum(r["share"]) - 1) < 0.01 and len(r["fine_of_subcentroid"]) == 4
        assert all(0 <= r[k] <= 1 for k in ("purity", "nmi", "offline_purity", "offline_nmi")), r
    assert (found / "exemplars-m.png").stat().st_size > 0


def test_seg_head_drift_diagnostic_runs(seg_export):
    scenes, checkpoint, _, _ = seg_export
    lines = [json.loads(x) for x in _run(BENCH / "seg_head_drift.py", checkpoint, "--data", scenes, "--steps",
                                         "2").stdout.splitlines()]
    assert len(lines) == 4 and _percent(lines[0]["trained_test_miou"])
    assert [(r["steps"], r["pace"]) for r in lines[1:]] == [(0, 0.0), (2, 1.0), (2, 0.0)]
    assert all(_percent(r["test_miou"]) for r in lines[1:])
    assert lines[1]["first_loss"] is None and all(math.isfinite(r["last_loss"]) for r in lines[2:])


def _classifiers(root: Path, checkpoints: dict[str, Path], seeds=(0,)) -> Path:
    """The layout fmnist_twins.py leaves ({kind}/e8/s{seed}/checkpoint.safetensors), from the session's models."""
    for kind, path in checkpoints.items():
        for seed in seeds:
            dest = root / kind / "e8" / f"s{seed}" / "checkpoint.safetensors"
            dest.parent.mkdir(parents=True)
            dest.symlink_to(path)
    return root


def test_seg_benchmarks_induction_runs(tmp_path, dnc_checkpoint, softmax_checkpoint):
    """The smoke run of benchmarks/device/seg_gpu.sh, smaller, on the CPU: coarse segmenters started from the
    classifiers, exported, a fine set from fine masks, its mIoU (each a `dnc` command)."""
    classifiers = _classifiers(tmp_path / "classifiers", {"dnc": dnc_checkpoint, "softmax": softmax_checkpoint})
    out = tmp_path / "seg"
    run = _run(BENCH / "seg_benchmarks.py", "induction", "--seeds", "0", "--out", out, "--train", "16", "--test", "8",
               "--size", "32", "--epochs", "1", "--jobs", "2", "--classifiers", classifiers, timeout=600)
    got = json.loads((out / "results.json").read_text())
    assert set(got) == {f"induction/{h}/s0{x}" for h in ("dnc", "softmax") for x in ("", "/fine-from-masks")}
    for head in ("dnc", "softmax"):
        trained, fine = got[f"induction/{head}/s0"], got[f"induction/{head}/s0/fine-from-masks"]
        assert f"--init {classifiers / head}" in trained["command"] and _percent(trained["miou"]), trained
        assert _percent(fine["miou"]) and _percent(fine["pixel_acc"]) and len(fine["iou_per_class"]) == 11, fine
    assert "induction/dnc/fine-from-masks" in run.stdout and "over 1 run(s)" in run.stdout


def test_pack_seg_packs_unpacks_and_brings_back(tmp_path, fmnist_ready, dnc_checkpoint, softmax_checkpoint):
    """pack: Fashion-MNIST re-compressed and the classifiers' encoders without head or optimiser state; unpack
    gives the same bytes back; bring-back: the induction checkpoints without optimiser state."""
    import torch

    from dnc.training import checkpoint as ckpt_io

    fmnist = tmp_path / "fmnist"  # the small files of the real set (its images are slow to compress at xz -9)
    fmnist.mkdir()
    for name in ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(fmnist_ready / name, fmnist / name)
    models = {"dnc": dnc_checkpoint, "softmax": softmax_checkpoint}
    classifiers = _classifiers(tmp_path / "classifiers", models, seeds=(0, 1, 2))
    dev = tmp_path / "dev"
    _run(DEVICE / "pack_seg.py", "pack", "--dev", dev, "--classifiers", classifiers, "--fmnist", fmnist)
    for kind, path in models.items():
        original = ckpt_io.load(path)
        assert original.optimizer_state is not None  # (what is dropped is there to drop)
        encoder = {k: v for k, v in original.model_state.items() if not k.startswith("head.")}
        for seed in (0, 1, 2):
            packed = ckpt_io.load(dev / "ckpt" / kind / "e8" / f"s{seed}" / "checkpoint.safetensors")
            assert packed.optimizer_state is None and packed.model_state.keys() == encoder.keys()
            assert all(torch.equal(v, encoder[k]) for k, v in packed.model_state.items())
    back = tmp_path / "fmnist-back"
    _run(DEVICE / "pack_seg.py", "unpack", "--dev", dev, "--fmnist", back)
    for f in fmnist.iterdir():
        assert gzip.decompress((back / f.name).read_bytes()) == gzip.decompress(f.read_bytes())

    bench = tmp_path / "bench"
    (bench / "induction" / "dnc" / "s0").mkdir(parents=True)  # any checkpoint with optimiser state will do
    (bench / "induction" / "dnc" / "s0" / "checkpoint.safetensors").symlink_to(dnc_checkpoint)
    _run(DEVICE / "pack_seg.py", "bring-back", bench, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dnc-s0.safetensors"]
    kept = ckpt_io.load(tmp_path / "out" / "dnc-s0.safetensors")
    assert kept.optimizer_state is None and kept.model_state.keys() == ckpt_io.load(dnc_checkpoint).model_state.keys()


def _invocations(script: Path) -> list[list[str]]:
    """Each `python3 ...` command line of a shell script, as words, up to its redirections and operators."""
    text = script.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        for part in line.split("python3 ")[1:]:
            words = []
            for w in part.split():
                if w[0] in ">|&;)" or w == "2>&1":
                    break
                words.append(w.strip('"'))
            if words and words[0] != "-c":
                out.append(words)
    return out


@pytest.mark.parametrize("script", ["seg_gpu.sh", "seg_induction_gpu.sh"])
def test_the_gpu_scripts_call_what_exists(script):
    """Without CUDA: the script parses, and each python3 command it runs exists and takes the flags given."""
    path = DEVICE / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True).returncode == 0
    calls = _invocations(path)
    assert len(calls) >= 3, calls
    helps: dict[tuple, str] = {}
    for words in calls:
        if words[0] == "-m":  # python3 -m dnc.clients.cli SUBCOMMAND ...
            target, rest = tuple(words[:3]), words[3:]
        else:
            assert (ROOT / words[0]).is_file(), words
            target, rest = (words[0],), words[1:]
        if target not in helps:
            helps[target] = _run(*target, "--help").stdout
        flags = [w for w in rest if w.startswith("--")]
        assert flags or rest, words
        missing = [f for f in flags if not re.search(rf"{re.escape(f)}(?![\w-])", helps[target])]
        assert not missing, f"{script}: {' '.join(words)}: not in --help: {missing}"
        if rest and not rest[0].startswith(("-", "$")):  # a command word: one of the script's choices
            assert rest[0] in helps[target], (words, helps[target])
