"""Exemplar paths stay meaningful: recorded absolute, whatever folder `dnc centroids` ran in, and still naming
real files when the set is moved and served from elsewhere; sets written before (relative names) still load."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.head_graph import build_head
from dnc.export.recompute import embed_files, scan_labelled_folder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_exemplars_name_real_files_from_anywhere(exported, fm_folder, tmp_path):
    out, _ = exported
    work = tmp_path / "work"
    shutil.copytree(fm_folder / "test", work / "data")
    # Run where the data is, with a relative --data, as a user in their project folder does.
    res = subprocess.run([sys.executable, "-m", "dnc.clients.cli", "centroids", "--embed", str(out / F.EMBED_FILE),
                          "--data", "data", "--out", "set", "--K", "2"], cwd=work, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    shutil.move(work / "set", tmp_path / "elsewhere")  # the set moves away from where it was made
    cs = centroid_set.load(tmp_path / "elsewhere")
    names = [n for row in cs.exemplar_names for n in row]
    assert cs.source["data"] == str((work / "data").resolve())
    assert all(Path(n).is_absolute() and Path(n).is_file() for n in names)
    assert all(Path(n).parent.name == cs.class_names[c] for c, row in enumerate(cs.exemplar_names) for n in row)
    # The served head (onnxruntime) answers with those absolute names: an exemplar is its own best evidence.
    sess = runtime.session(out / F.EMBED_FILE, 2)
    x = embed_files(sess, [Path(n) for n in names], runtime.preprocessing_of(sess), threads=2)
    path = tmp_path / "served.onnx"
    path.write_bytes(build_head(cs, top_k=1).SerializeToString())
    shown = runtime.session(path, 2).run([F.TOPK_EXEMPLAR], {F.EMBEDDING: x})[0][:, 0]
    assert [s.decode() if isinstance(s, bytes) else s for s in shown] == names


def test_sets_with_relative_exemplar_names_still_load(exported, fm_folder, tmp_path):
    out, _ = exported
    classes, files, labels = scan_labelled_folder(fm_folder / "test")
    sess = runtime.session(out / F.EMBED_FILE, 2)
    x = embed_files(sess, files[:20], runtime.preprocessing_of(sess), threads=2)  # 10 of each of 2 classes
    cents = np.stack([x[:2], x[10:12]]) / np.linalg.norm(np.stack([x[:2], x[10:12]]), axis=-1, keepdims=True)
    old = centroid_set.CentroidSet(centroids=cents.astype(np.float32), ks=[2, 2], class_names=classes[:2],
                                   embed_fingerprint=centroid_set.fingerprint_file(out / F.EMBED_FILE),
                                   exemplar_ids=np.array([[0, 1], [10, 11]]),
                                   exemplar_names=[["data/a/0.png", "data/a/1.png"], ["data/b/0.png", "data/b/1.png"]],
                                   source={"from": "images", "data": "data"})
    centroid_set.save(old, tmp_path / "old")
    back = centroid_set.load(tmp_path / "old")
    assert back.exemplar_names == old.exemplar_names and back.set_id == old.set_id
    build_head(back, top_k=1)  # still servable
