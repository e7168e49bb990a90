"""`dnc centroids`: a new class list from labelled real images, with embed.onnx only."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.evaluate import evaluate_folder
from dnc.export.recompute import compute_set, embed_files, scan_labelled_folder

pytestmark = pytest.mark.slow


def test_set_classifies_its_own_images_back(exported, fm_folder, tmp_path):
    out, _ = exported
    res = compute_set(out / F.EMBED_FILE, fm_folder / "train", tmp_path / "set", k=4, threads=2)
    cs = centroid_set.load(tmp_path / "set")
    assert res["set_id"] == cs.set_id and cs.ks == [4] * 10 and cs.anchored
    assert cs.embed_fingerprint == centroid_set.fingerprint_file(out / F.EMBED_FILE)
    # Every exemplar is a real image of its own folder, and (replaced) it is its sub-centroid exactly.
    classes, files, labels = scan_labelled_folder(fm_folder / "train")
    sess = runtime.session(out / F.EMBED_FILE, 2)
    x = embed_files(sess, files, runtime.preprocessing_of(sess), threads=2)
    for c, names in enumerate(cs.exemplar_names):
        assert all(f"/{classes[c]}/" in n for n in names) and len(set(names)) == len(names)
        for j, ident in enumerate(cs.exemplar_ids[c, : cs.ks[c]]):
            np.testing.assert_allclose(cs.centroids[c, j], x[ident], atol=1e-5)
    head = runtime.session(tmp_path / "set" / F.HEAD_FILE, 2)
    pred = head.run([F.PREDICTED], {F.EMBEDDING: x})[0]
    truth = labels  # folder order == set order here
    exemplar_rows = cs.exemplar_ids[cs.k_mask]
    assert (pred[exemplar_rows] == truth[exemplar_rows]).all()  # an exemplar is its own nearest centroid
    acc = (pred == truth).mean()
    assert acc >= 0.6, f"only {acc:.0%} of the folder's own images classify back to their folder"
    ev = evaluate_folder(out / F.EMBED_FILE, tmp_path / "set", fm_folder / "train", threads=2)
    assert abs(ev["top1"] - 100 * acc) < 1e-9


def test_kmeans_and_keep_means(exported, fm_folder, tmp_path):
    out, _ = exported
    compute_set(out / F.EMBED_FILE, fm_folder / "train", tmp_path / "km", k=3, method="kmeans", keep_means=True)
    cs = centroid_set.load(tmp_path / "km")
    assert cs.ks == [3] * 10 and cs.source["method"] == "kmeans" and cs.exemplar_names is not None
    # Means are kept: sub-centroids are not their exemplar's embedding (but for single-image clusters).
    classes, files, _ = scan_labelled_folder(fm_folder / "train")
    sess = runtime.session(out / F.EMBED_FILE, 2)
    x = embed_files(sess, [files[i] for i in cs.exemplar_ids[cs.k_mask]], runtime.preprocessing_of(sess))
    assert (np.abs(cs.centroids[cs.k_mask] - x).max(axis=1) > 1e-3).mean() > 0.8


def test_small_classes_get_fewer_subcentroids_and_bad_folders_are_refused(exported, fm_folder, tmp_path):
    import shutil

    out, _ = exported
    data = tmp_path / "data"
    shutil.copytree(fm_folder / "train", data)
    small = sorted((data / "Bag").iterdir())
    for f in small[2:]:
        f.unlink()
    compute_set(out / F.EMBED_FILE, data, tmp_path / "s", k=4, calibration_share=0)
    cs = centroid_set.load(tmp_path / "s")
    assert cs.ks[cs.class_names.index("Bag")] == 2 and max(cs.ks) == 4 and cs.thresholds is None
    compute_set(out / F.EMBED_FILE, data, tmp_path / "s", k=4)  # one of Bag's two images calibrates its threshold
    cs = centroid_set.load(tmp_path / "s")
    bag = cs.class_names.index("Bag")
    assert cs.ks[bag] == 1 and cs.source["calibration"]["images"][bag] == 1
    embed = str(out / F.EMBED_FILE)
    (data / "Bag" / "broken.png").write_bytes(b"not a png")
    assert main(["centroids", "--embed", embed, "--data", str(data), "--out", str(tmp_path / "b")]) == 2
    (data / "Bag" / "broken.png").unlink()
    (data / "Empty").mkdir()
    assert main(["centroids", "--embed", embed, "--data", str(data), "--out", str(tmp_path / "b")]) == 2
    one = tmp_path / "one"
    shutil.copytree(fm_folder / "train" / "Bag", one / "Bag")
    assert main(["centroids", "--embed", embed, "--data", str(one), "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()


def test_cli_messages_name_the_culprit(exported, fm_folder, tmp_path, capsys):
    out, _ = exported
    data = tmp_path / "d"
    import shutil

    shutil.copytree(fm_folder / "test", data)
    (data / "Coat" / "broken.png").write_bytes(b"not a png")
    embed = str(out / F.EMBED_FILE)
    assert main(["centroids", "--embed", embed, "--data", str(data), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "broken.png" in err
    (data / "Coat" / "broken.png").unlink()
    (data / "Empty").mkdir()
    assert main(["centroids", "--embed", embed, "--data", str(data), "--out", str(tmp_path / "s")]) == 2
    assert "class folder" in (err := capsys.readouterr().err) and "Empty has no readable images" in err
    assert main(["centroids", "--embed", embed, "--data", str(fm_folder / "test" / "Bag"),
                 "--out", str(tmp_path / "s")]) == 2
    assert "a class list needs at least two" in capsys.readouterr().err
    # Writing a set over the export folder would delete the embedding it pairs with: refused.
    assert main(["centroids", "--embed", embed, "--data", str(fm_folder / "test"), "--out", str(out)]) == 2
    assert "holds manifest.json" in capsys.readouterr().err and (out / F.EMBED_FILE).is_file()
    assert main(["centroids", "--embed", str(tmp_path / "nope.onnx"), "--data", str(data), "--out",
                 str(tmp_path / "s")]) == 2
    assert "ONNX graph not found" in capsys.readouterr().err
    (data / "Empty").rmdir()
    assert main(["centroids", "--embed", embed, "--data", str(data), "--out", str(tmp_path / "s"), "--K", "2"]) == 0
    assert main(["eval-onnx", "--embed", embed, "--centroids", str(tmp_path / "s"), "--data", str(data),
                 "--json"]) == 0
    assert '"top1"' in capsys.readouterr().out


def test_a_set_for_another_embedding_is_refused(exported, fm_folder, tmp_path, capsys):
    out, _ = exported
    compute_set(out / F.EMBED_FILE, fm_folder / "test", tmp_path / "s", k=1)
    # The right fingerprint but another width: refused by D.
    cs = centroid_set.load(tmp_path / "s")
    cs.centroids = np.ascontiguousarray(cs.centroids[:, :, :5] / np.linalg.norm(cs.centroids[:, :, :5], axis=-1,
                                                                                 keepdims=True))
    centroid_set.save(cs, tmp_path / "narrow")
    assert main(["eval-onnx", "--embed", str(out / F.EMBED_FILE), "--centroids", str(tmp_path / "narrow"),
                 "--data", str(fm_folder / "test")]) == 2
    assert "D=5 but the embedding model outputs D=32" in capsys.readouterr().err
    other = tmp_path / "other.onnx"
    other.write_bytes((out / F.EMBED_FP16_FILE).read_bytes())
    assert main(["eval-onnx", "--embed", str(other), "--centroids", str(tmp_path / "s"),
                 "--data", str(fm_folder / "test")]) == 2
    assert "recompute it with `dnc centroids`" in capsys.readouterr().err


def test_runs_without_torch(exported, fm_folder, tmp_path):
    out, _ = exported
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from dnc.export.recompute import compute_set\n"
        f"r = compute_set({str(out / F.EMBED_FILE)!r}, {str(fm_folder / 'test')!r}, {str(tmp_path / 's')!r}, k=2)\n"
        "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        "print(r['set_id'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(fm_folder.parent),
                         env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == centroid_set.load(tmp_path / "s").set_id


def test_k_all_makes_the_head_one_nearest_neighbour(exported, fm_folder, tmp_path, capsys):
    """--K all: every training image is a sub-centroid of its class (no clustering), so the served head's
    answer is the class of the most cosine-similar training image: checked against a float64 1-NN over
    independently embedded images, on test images the set never saw (issue 25, item 1)."""
    embed = exported[0] / F.EMBED_FILE
    assert main(["centroids", "--embed", str(embed), "--data", str(fm_folder / "train"), "--K", "all",
                 "--out", str(tmp_path / "all"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    classes, files, labels = scan_labelled_folder(fm_folder / "train")
    cs = centroid_set.load(tmp_path / "all")
    calibration = cs.source["calibration"]["images"]
    assert res["ks"] == [int((labels == c).sum()) - calibration[c] for c in range(len(classes))]
    fit = np.array(sorted(cs.exemplar_ids[cs.k_mask].tolist()))  # the images that became sub-centroids
    held = np.setdiff1d(np.arange(len(files)), fit)  # the others: calibration images
    assert cs.anchored and len(fit) + len(held) == len(files) and len(held) == sum(calibration) > 0
    sess = runtime.session(embed, 2)
    prep = runtime.preprocessing_of(sess)
    train = embed_files(sess, files, prep, threads=2).astype(np.float64)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    for c in range(len(classes)):  # each threshold: from its class's images that are no sub-centroid (float64)
        own = unit(train[held[labels[held] == c]]) @ unit(train[fit[labels[fit] == c]]).T  # (held, fit) of class c
        best = np.sort(own.max(axis=1))
        assert len(best) == calibration[c]
        assert abs(cs.thresholds[c] - best[int(np.floor(0.05 * len(best) + 1e-9))]) < 1e-5
    _, test_files, test_labels = scan_labelled_folder(fm_folder / "test")
    test = embed_files(sess, test_files, prep, threads=2)
    train, labels = train[fit], labels[fit]
    want = labels[np.argmax(unit(test.astype(np.float64)) @ unit(train).T, axis=1)]  # (N,) float64 1-NN
    head = runtime.session(tmp_path / "all" / F.HEAD_FILE, 2)
    got = head.run([F.PREDICTED], {F.EMBEDDING: test})[0]
    assert (got == want).mean() >= 0.99, (got != want).sum()  # float32 vs float64: near-ties may flip
    with pytest.raises(SystemExit):  # argparse refuses it, naming what --K takes
        main(["centroids", "--embed", str(embed), "--data", str(fm_folder / "train"), "--K", "some",
              "--out", str(tmp_path / "x")])
    assert "a whole number, 'all' or 'auto', not 'some'" in capsys.readouterr().err


def test_k_auto_chooses_each_classs_k_on_held_out_images(exported, fm_folder, tmp_path):
    """`auto` on fresh random data with a known answer: a class made of 8 interleaved tight modes needs many
    sub-centroids, a class of one tight mode needs one (the smallest of the tied candidates), and each class
    gets its own; on real images the choice answers the held-out images at least as well as the best single
    K, and is recorded in the set."""
    from dnc.export.recompute import choose_k

    rng = np.random.default_rng(11)
    modes = rng.standard_normal((3, 8, 32))  # (class, mode, D)
    labels = np.repeat([0, 1, 2], 8 * 40)
    mode = np.tile(np.repeat(np.arange(8), 40), 3)
    mode[labels == 2] = 0  # class 2: one mode
    x = modes[labels, mode] + 0.05 * rng.standard_normal((960, 32))
    ks, scores = choose_k(x.astype(np.float32), labels, method="kmeans", seed=0)
    assert ks[0] in (16, 64, "all") and ks[1] in (16, 64, "all") and ks[2] == 1, (ks, scores)
    assert scores["per_class"] == 100.0 and scores["single"]["1"] < 90, scores
    res = compute_set(exported[0] / F.EMBED_FILE, fm_folder / "train", tmp_path / "auto", k="auto", threads=2)
    assert len(res["k"]) == len(res["classes"]) and set(res["held_out_top1"]["single"]) == {"1", "4", "16", "64", "all"}
    cs = centroid_set.load(tmp_path / "auto")
    assert cs.source["k_asked"] == "auto" and cs.source["k"] == res["k"]
    counts = [len(list((fm_folder / "train" / c).iterdir())) for c in res["classes"]]
    held = cs.source["calibration"]["images"]  # per class, held out for its threshold: never a sub-centroid
    for kc, got, n, h in zip(res["k"], cs.ks, counts, held, strict=True):  # each class built with its own K
        assert got == (n - h if kc == "all" else min(kc, n - h))
