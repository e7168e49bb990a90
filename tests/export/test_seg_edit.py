"""Segmentation sets with many sub-centroids (`--K` up to 255 or auto) and edited a class at a time from
masks (`dnc centroids --from SET --add NAME=SEGFOLDER`; issue 25, items 1 and 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set, preprocess
from dnc.core import formats as F
from dnc.core.images import DataError
from dnc.core.seg_folder import read_pair, split_files
from dnc.export import runtime
from dnc.export.edit_set import edit_set
from dnc.export.seg_recompute import SEG_AUTO_CANDIDATES, compute_seg_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(seg_export, tmp_path_factory):
    """A 3-per-class segmentation set of the small segmenter's scenes."""
    scenes, _, out, _ = seg_export
    dst = tmp_path_factory.mktemp("seg-base") / "set"
    compute_seg_set(out / F.EMBED_FILE, scenes, dst, k=3, threads=2, seed=3)
    return dst


def _cells(sess, prep, path):
    """(D, h, w) float64 unit cell embeddings of one scene, and its (H, W) mask."""
    image, mask = read_pair(path, str(path).replace("/images/", "/masks/"))
    emb = sess.run([F.PIXEL_EMBEDDING], {F.IMAGES: preprocess.normalise(image[None], prep)})[0][0].astype(np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=0, keepdims=True), 1e-12), mask


def test_an_edit_of_a_segmentation_set_keeps_untouched_rows_and_adds_from_masks(seg_export, base, tmp_path):
    scenes, _, out, _ = seg_export
    embed = out / F.EMBED_FILE
    cs0 = centroid_set.load(base)
    res = edit_set(base, embed, tmp_path / "edited", remove=["Shirt"], rename={"Coat": "Jacket"},
                   add={"Shirt": str(scenes)}, k=5, threads=2)
    cs = centroid_set.load(tmp_path / "edited", expect_fingerprint=cs0.embed_fingerprint)
    assert cs.task == "segmentation" and res["set_id"] == cs.set_id != cs0.set_id
    kept = [n for n in cs0.class_names if n != "Shirt"]
    assert cs.class_names == [("Jacket" if n == "Coat" else n) for n in kept] + ["Shirt"]
    for i, name in enumerate(kept):  # untouched rows: the same bytes, exemplars, pixels and thresholds
        j = cs0.class_names.index(name)
        k = cs0.ks[j]
        assert cs.ks[i] == k and cs.centroids[i, :k].tobytes() == cs0.centroids[j, :k].tobytes()
        assert (cs.exemplar_yx[i, :k] == cs0.exemplar_yx[j, :k]).all()
        assert cs.exemplar_names[i] == cs0.exemplar_names[j]
        assert cs.thresholds[i].tobytes() == cs0.thresholds[j].tobytes()
    # the added class: each sub-centroid is the cell of a real Shirt pixel, checked on a fresh embedding
    sess = runtime.session(embed, 2)
    prep = runtime.preprocessing_of(sess)
    shirt = cs.num_classes - 1
    assert cs.ks[shirt] == 5 and cs.anchored
    for k in range(5):
        name, (y, x) = cs.exemplar_names[shirt][k], cs.exemplar_yx[shirt, k]
        cells, mask = _cells(sess, prep, name)
        assert mask[y, x] == cs0.class_names.index("Shirt")
        h, w = cells.shape[1:]
        np.testing.assert_allclose(cs.centroids[shirt, k], cells[:, y * h // 32, x * w // 32], atol=1e-5)
    # its threshold: calibrated on the Shirt cells of the held-out images only (the seeded 20% of the split),
    # none of which anchors a sub-centroid: an independent float64 reference over all their Shirt cells
    images = [p.resolve() for p, _ in split_files(scenes, "train")]
    draw = np.random.default_rng([0, 1])
    held = [p for p in images if draw.random() < 0.2]
    assert held and not {str(p) for p in held} & set(cs.exemplar_names[shirt])
    scores = []
    for p in held:
        cells, mask = _cells(sess, prep, p)
        h, w = cells.shape[1:]
        rows = np.clip(np.ceil(np.arange(h) * 32 / h - 0.5), 0, 31).astype(int)
        cols = np.clip(np.ceil(np.arange(w) * 32 / w - 0.5), 0, 31).astype(int)
        ys, xs = np.nonzero(mask[rows][:, cols] == cs0.class_names.index("Shirt"))
        scores += list((cells[:, ys, xs].T @ cs.centroids[shirt, :5].astype(np.float64).T).max(1))
    want = np.sort(scores)[int(np.floor(0.05 * len(scores) + 1e-9))]
    assert abs(cs.thresholds[shirt] - want) < 1e-5
    # the head written beside it is a segmentation head of the new list
    head = runtime.session(tmp_path / "edited" / F.HEAD_FILE, 2)
    assert {o.name for o in head.get_outputs()} >= {F.LABELS}


def test_an_added_class_is_named_in_its_folder_or_its_only_one(seg_export, base, tmp_path):
    scenes, _, out, _ = seg_export
    embed = out / F.EMBED_FILE
    with pytest.raises(DataError, match="has no class 'Hat' and more than one besides its background .*--rename it"):
        edit_set(base, embed, tmp_path / "x", add={"Hat": str(scenes)})
    with pytest.raises(DataError, match="is not one"):
        edit_set(base, embed, tmp_path / "x", add={"Hat": str(tmp_path)})
    with pytest.raises(DataError, match="give a number"):
        edit_set(base, embed, tmp_path / "x", remove=["Bag"], add={"Bag": str(scenes)}, k="all")
    assert not (tmp_path / "x").exists()
    # a folder of one class besides the background: that class, whatever its name there
    one = tmp_path / "one"
    shutil.copytree(scenes, one)
    meta = json.loads((one / "classes.json").read_text())
    bag = meta["classes"].index("Bag")
    for _, mp in split_files(one, "train"):
        from PIL import Image

        m = np.asarray(Image.open(mp))
        Image.fromarray(np.where(m == bag, 1, np.where(m == 255, 255, 0)).astype(np.uint8)).save(mp)
    meta.update(classes=[meta["classes"][meta["background"]], "my bag"], palette=meta["palette"][:2], background=0)
    (one / "classes.json").write_text(json.dumps(meta))
    res = edit_set(base, embed, tmp_path / "sack", remove=["Bag"], add={"Sack": str(one)}, k=2, threads=2)
    assert res["classes"][-1] == "Sack" and res["ks"][-1] == 2


def test_large_k_and_auto_for_segmentation_sets(seg_export, tmp_path, capsys):
    scenes, _, out, _ = seg_export
    embed = str(out / F.EMBED_FILE)
    res = compute_seg_set(embed, scenes, tmp_path / "auto", k="auto", threads=2, seed=3)
    assert set(res["held_out_accuracy"]["single"]) == {str(c) for c in SEG_AUTO_CANDIDATES}
    cs = centroid_set.load(tmp_path / "auto")
    assert cs.source["k_asked"] == "auto" and cs.source["k"] == res["k"] and len(res["k"]) == cs.num_classes
    assert cs.ks == [min(kc, n) for kc, n in zip(res["k"], res["cells_per_class"], strict=True)]
    # an edit that removes the classes with the most sub-centroids (several may tie; which K a class gets
    # rests on held-out accuracies, whose float rounding differs between CPUs): the others' rows keep every byte
    widest = [n for n, k in zip(cs.class_names, cs.ks, strict=True) if k == max(cs.ks)]
    edited = edit_set(tmp_path / "auto", embed, tmp_path / "narrower", remove=widest, threads=2)
    cut = centroid_set.load(tmp_path / "narrower")
    assert not set(widest) & set(edited["classes"]) and cut.centroids.shape[1] == max(cut.ks) < max(cs.ks)
    for i, name in enumerate(cut.class_names):
        j = cs.class_names.index(name)
        assert cut.centroids[i, :cut.ks[i]].tobytes() == cs.centroids[j, :cs.ks[j]].tobytes()
        assert (cut.exemplar_yx[i, :cut.ks[i]] == cs.exemplar_yx[j, :cs.ks[j]]).all()
    big = compute_seg_set(embed, scenes, tmp_path / "big", k=255, threads=2, seed=3)
    assert max(big["ks"]) > 4 and all(k <= 255 for k in big["ks"])  # every sampled cell, up to the cap
    with pytest.raises(ValueError, match="1 to 255"):
        compute_seg_set(embed, scenes, tmp_path / "x", k=256)
    assert main(["centroids", "--embed", embed, "--data", str(scenes), "--K", "all", "--out", str(tmp_path / "y")]) == 2
    assert "up to 255, or auto" in capsys.readouterr().err
