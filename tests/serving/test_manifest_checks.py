"""`dnc repo build` refuses an export whose manifest.json preprocessing no real export writes (issue 23, item
10): each bad manifest, made from a real export with only manifest.json edited (the fingerprint covers
embed.onnx), exits 2 with a message naming the field, its value and what is allowed, and writes nothing;
the real exports still build; the in-process segmenter refuses the same manifests."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dnc.clients.cli import main
from dnc.core import formats as F
from dnc.core import manifest
from dnc.export.seg_infer import InProcessSegmenter
from dnc.serving import repository

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _edited(src: Path, dest: Path, **changes) -> Path:
    """A copy of the export `src` whose manifest's preprocessing has `changes` (None: field removed)."""
    shutil.copytree(src, dest)
    meta = json.loads((dest / F.MANIFEST_FILE).read_text())
    for k, v in changes.items():
        if v is None:
            meta["preprocessing"].pop(k)
        else:
            meta["preprocessing"][k] = v
    (dest / F.MANIFEST_FILE).write_text(json.dumps(meta))  # (json writes NaN as NaN, as an edit would)
    return dest


def _build(export: Path, repo: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["repo", "build", str(export), "--repo", str(repo)])
    return rc, capsys.readouterr().err


CLASSIFIER_CASES = {  # name: (changes, what the message must say)
    "huge image": ({"image_size": 20000}, ["image_size is 20000", "from 1 to 4096"]),
    "zero std": ({"std": [0]}, ["std is [0]", "from 0.01 to 1.0"]),
    "NaN mean": ({"mean": [math.nan]}, ["mean is [nan]", "finite"]),
    "huge scale": ({"scale": 1e30}, ["scale is 1e+30", "1/255"]),
    "CMYK": ({"color": "CMYK"}, ["color is 'CMYK'", "'L' with 1 channel"]),
    "3 channels, 1-channel graph": ({"channels": 3, "color": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3},
                                    ["channels is 3 but embed.onnx's input images is", "allowed 1"]),
    "no resize": ({"resize": "none", "crop": "none"}, ["resize is 'none'", "'short_side'"]),
    "other size than the graph": ({"image_size": 32}, ["image_size is 32 but embed.onnx's input", "allowed 28"]),
    "mean edited within range": ({"mean": [0.3]}, ["mean is [0.3] but embed.onnx was exported with [0.5]"]),
    "a task the export is not": ({"task": "segmentation"}, ["preprocessing task is 'segmentation'"]),
    "resize missing": ({"resize": None}, ["resize is None"]),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_CASES))
def test_a_classifier_export_with_a_bad_preprocessing_is_refused_by_repo_build(case, exported, tmp_path, capsys):
    changes, said = CLASSIFIER_CASES[case]
    bad = _edited(exported[0], tmp_path / "export", **changes)
    rc, err = _build(bad, tmp_path / "repo", capsys)
    assert rc == 2, err
    assert f"{bad / F.MANIFEST_FILE}: preprocessing refused" in err and "export the checkpoint again with `dnc " \
        "export`" in err
    for s in said:
        assert s in err, err
    assert not (tmp_path / "repo" / repository.INFO_FILE).exists()


SEGMENTER_CASES = {
    "huge image": ({"image_size": 20000}, ["image_size is 20000"]),
    "resized like a classifier": ({"resize": "short_side"}, ["resize is 'short_side'", "'none'"]),
    "1 channel, 3-channel graph": ({"channels": 1, "color": "L", "mean": [0.5], "std": [0.5]},
                                   ["channels is 1 but embed.onnx's input images is", "allowed 3"]),
    "std of two channels": ({"std": [0.5, 0.5]}, ["std is [0.5, 0.5]", "3 finite numbers"]),
    "negative std": ({"std": [-0.5] * 3}, ["std is [-0.5, -0.5, -0.5]"]),
    "classification task": ({"task": None}, ["preprocessing task is None but the export's task is 'segmentation'"]),
}


@pytest.mark.parametrize("case", list(SEGMENTER_CASES))
def test_a_segmenter_export_with_a_bad_preprocessing_is_refused(case, seg_export, tmp_path, capsys):
    changes, said = SEGMENTER_CASES[case]
    bad = _edited(seg_export[2], tmp_path / "export", **changes)
    rc, err = _build(bad, tmp_path / "repo", capsys)
    assert rc == 2 and "preprocessing refused" in err, err
    for s in said:
        assert s in err, err
    with pytest.raises(ValueError, match="preprocessing refused"):  # `dnc segment --in-process` reads it too
        InProcessSegmenter(bad, threads=1)


def test_the_real_exports_build_and_their_manifests_read(exported, seg_export, tmp_path, capsys):
    for export in (exported[0], seg_export[2]):
        assert manifest.read(export)["preprocessing"] == json.loads(
            (export / F.MANIFEST_FILE).read_text())["preprocessing"]
    rc, err = _build(exported[0], tmp_path / "repo", capsys)
    assert rc == 0, err
    capsys.readouterr()
    assert main(["repo", "build", str(seg_export[2]), "--repo", str(tmp_path / "repo"), "--name", "seg"]) == 0
    assert set(repository.read_info(tmp_path / "repo")["models"]) == {"dnc", "seg"}


def test_an_older_exports_sentence_resize_and_missing_fields_are_accepted(exported, tmp_path):
    """Exports before 2026-11-26 wrote the resize mode as a sentence and had no interpolation or crop (their
    embed.onnx carries the same description; only the fields' checks are shown here)."""
    from dnc.core.preprocessing_check import field_problems

    prep = dict(json.loads((exported[0] / F.MANIFEST_FILE).read_text())["preprocessing"])
    prep["resize"] = "short side to image_size (bilinear), then centre crop image_size x image_size"
    del prep["interpolation"], prep["crop"]
    assert field_problems(prep, "classification") == []


def test_the_dnc_command_itself_exits_2(exported, tmp_path):
    bad = _edited(exported[0], tmp_path / "export", image_size=20000)
    r = subprocess.run([sys.executable, "-m", "dnc.clients.cli", "repo", "build", str(bad), "--repo",
                        str(tmp_path / "repo")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "image_size is 20000" in r.stderr, r.stderr
