"""`dnc centroids --from SET`: a class list edited a class at a time (issue 25, item 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.edit_set import edit_set
from dnc.export.recompute import compute_set, embed_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eight(tmp_path_factory, exported, fm_folder):
    """A set of 8 of the 10 classes (Shirt and Sneaker left out), from the served embedding's images."""
    root = tmp_path_factory.mktemp("eight")
    for d in sorted((fm_folder / "train").iterdir()):
        if d.name not in ("Shirt", "Sneaker"):
            (root / d.name).symlink_to(d)
    out = root.parent / "eight-set"
    compute_set(exported[0] / F.EMBED_FILE, root, out, k=4, threads=2)
    return out


def _few(src, dst, n):
    """A folder of the first n images of a class folder (copies: an added class is a user's few images)."""
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir())[:n]:
        shutil.copy(f, dst / f.name)
    return dst


def test_an_edit_keeps_untouched_classes_bit_identical(eight, exported, fm_folder, tmp_path):
    embed = exported[0] / F.EMBED_FILE
    base = centroid_set.load(eight)
    shirts = _few(fm_folder / "train" / "Shirt", tmp_path / "shirts", 20)
    res = edit_set(eight, embed, tmp_path / "edited", add={"Shirt": str(shirts)}, remove=["Bag"],
                   rename={"Coat": "Jacket"}, k=4, threads=2)
    cs = centroid_set.load(tmp_path / "edited", expect_fingerprint=base.embed_fingerprint)
    kept = [n for n in base.class_names if n != "Bag"]
    assert cs.class_names == [("Jacket" if n == "Coat" else n) for n in kept] + ["Shirt"]
    assert res["set_id"] == cs.set_id != base.set_id and res["base_set_id"] == base.set_id
    for i, name in enumerate(kept):  # untouched rows: the same bytes, ids and exemplars
        j = base.class_names.index(name)
        k = base.ks[j]
        assert cs.ks[i] == k
        assert cs.centroids[i, :k].tobytes() == base.centroids[j, :k].tobytes()
        assert (cs.exemplar_ids[i, :k] == base.exemplar_ids[j, :k]).all()
        assert cs.exemplar_names[i] == base.exemplar_names[j]
    # the added class: 4 sub-centroids, each a real image of the folder, against an independent embedding
    files = sorted(p.resolve() for p in shirts.iterdir())
    sess = runtime.session(embed, 2)
    x = embed_files(sess, files, runtime.preprocessing_of(sess), threads=2).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert cs.ks[-1] == 4 and cs.anchored and len(set(cs.exemplar_ids[cs.k_mask].tolist())) == int(cs.k_mask.sum())
    for j, name in enumerate(cs.exemplar_names[-1]):
        np.testing.assert_allclose(cs.centroids[-1, j], x[files.index(Path(name))], atol=1e-5)
    assert cs.source["from"] == "edit" and cs.source["base_set_id"] == base.set_id
    # thresholds: the untouched classes' bit-identical, the added class's calibrated on the images held out of
    # its sub-centroids (the seeded hold-out of abstention.hold_out: 4 of 20), checked in float64
    from dnc.export.abstention import hold_out

    kept_rows = [base.class_names.index(n) for n in kept]
    assert cs.thresholds[:-1].tobytes() == base.thresholds[kept_rows].tobytes()
    held = np.flatnonzero(hold_out(np.zeros(len(files), int), 0.2, seed=0))
    anchors = [files.index(Path(name)) for name in cs.exemplar_names[-1]]
    assert len(held) == 4 and not set(held) & set(anchors)
    best = np.sort((x[held] @ cs.centroids[-1, :4].astype(np.float64).T).max(axis=1))
    assert abs(cs.thresholds[-1] - best[0]) < 1e-5  # 95% of 4 images: the lowest
    # the head written beside it answers the added class for its sub-centroids' own images
    head = runtime.session(tmp_path / "edited" / F.HEAD_FILE, 2)
    pred = head.run([F.PREDICTED], {F.EMBEDDING: x[anchors].astype(np.float32)})[0]
    assert (pred == len(cs.class_names) - 1).all()


def test_an_edit_refuses_a_set_of_another_embedding_and_bad_names(eight, exported, seg_export, tmp_path):
    other = seg_export[2] / F.EMBED_FILE  # a segmenter's embedding: another model
    with pytest.raises(ValueError, match="segmenter|fingerprint|paired"):
        edit_set(eight, other, tmp_path / "x", remove=["Bag"])
    embed = exported[0] / F.EMBED_FILE
    with pytest.raises(ValueError, match="no class 'Shirt'"):
        edit_set(eight, embed, tmp_path / "x", remove=["Shirt"])
    with pytest.raises(ValueError, match="both removed and renamed"):
        edit_set(eight, embed, tmp_path / "x", remove=["Bag"], rename={"Bag": "Sack"})
    with pytest.raises(ValueError, match="'Coat'"):  # a rename onto a name the list holds
        edit_set(eight, embed, tmp_path / "x", rename={"Bag": "Coat"})
    assert not (tmp_path / "x").exists()  # nothing written by a refused edit


def test_the_command_edits_and_names_its_flags(eight, exported, fm_folder, tmp_path, capsys):
    embed = str(exported[0] / F.EMBED_FILE)
    sneakers = _few(fm_folder / "train" / "Sneaker", tmp_path / "sneakers", 5)
    assert main(["centroids", "--embed", embed, "--from", str(eight), "--add", f"Sneaker={sneakers}",
                 "--remove", "Trouser", "--out", str(tmp_path / "cli"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classes"][-1] == "Sneaker" and "Trouser" not in res["classes"] and res["added"] == {"Sneaker": 5}
    assert main(["centroids", "--embed", embed, "--add", f"Sneaker={sneakers}", "--out", str(tmp_path / "y")]) == 2
    assert "give it with --from SET" in capsys.readouterr().err
    assert main(["centroids", "--embed", embed, "--from", str(eight), "--add", "Sneaker", "--out",
                 str(tmp_path / "y")]) == 2
    assert "--add takes NAME=VALUE, got 'Sneaker'" in capsys.readouterr().err
