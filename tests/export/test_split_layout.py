"""`dnc centroids` on folders laid out in splits: train/ is used and said, split names are never classes, and a
segmentation folder says which split it is read at and refuses its parts given alone."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.images import DataError
from dnc.export import runtime
from dnc.export.recompute import embed_files, scan_labelled_folder
from dnc.training.data import load_dataset

pytestmark = pytest.mark.slow


def _picture(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(path)


def _centroids(embed, data, out, *extra):
    return main(["centroids", "--embed", str(embed), "--data", str(data), "--out", str(out), "--K", "2", *extra])


def test_a_split_layout_is_read_at_train_and_says_so(exported, fm_folder, tmp_path, capsys):
    out, _ = exported
    embed = out / F.EMBED_FILE
    assert _centroids(embed, fm_folder, tmp_path / "set") == 0
    printed = capsys.readouterr().out
    assert f"{fm_folder} has train/ and test/ splits: using {fm_folder / 'train'}" in printed
    cs = centroid_set.load(tmp_path / "set", centroid_set.fingerprint_file(embed), 32)
    assert len(cs.class_names) == 10 and "train" not in cs.class_names and "T-shirt-top" in cs.class_names
    assert cs.source["data"] == str((fm_folder / "train").resolve())
    assert all("/train/" in n for row in cs.exemplar_names for n in row)
    # The set's head, run by onnxruntime, sends the held-out images mostly to their own class.
    classes, files, labels = scan_labelled_folder(fm_folder, split="test")
    sess = runtime.session(embed, 2)
    x = embed_files(sess, files, runtime.preprocessing_of(sess), threads=2)
    pred = runtime.session(tmp_path / "set" / F.HEAD_FILE, 2).run([F.PREDICTED], {F.EMBEDDING: x})[0]
    assert classes == cs.class_names and (pred == labels).mean() >= 0.4
    # --split test reads the held-out split, and says so.
    assert _centroids(embed, fm_folder, tmp_path / "held-out", "--split", "test") == 0
    assert f"using {fm_folder / 'test'}" in capsys.readouterr().out
    assert centroid_set.load(tmp_path / "held-out").source["data"] == str((fm_folder / "test").resolve())
    # eval-onnx on the split layout reads its held-out split (the same answer as naming test/ itself),
    # or --split train
    runs = {}
    for data, extra in ((fm_folder, []), (fm_folder / "test", []), (fm_folder, ["--split", "train"])):
        assert main(["eval-onnx", "--embed", str(embed), "--centroids", str(tmp_path / "set"), "--data", str(data),
                     "--json", *extra]) == 0
        runs[(str(data), *extra)] = json.loads(capsys.readouterr().out)
    held_out, named, train = runs.values()
    assert held_out == named and held_out["n"] == 100 and train["n"] == 200


@pytest.mark.parametrize("split", ["train", "Test", "VAL", "validation"])
def test_split_names_are_never_class_names(exported, tmp_path, capsys, split):
    out, _ = exported
    data = tmp_path / "data"
    for name in ("Bag", "Coat", split):
        for i in range(2):
            _picture(data / name / f"{i}.png", 40 * i + 10)
    assert _centroids(out / F.EMBED_FILE, data, tmp_path / "set") == 2
    err = capsys.readouterr().err
    assert f"split folders ['{split}'] beside class folders ['Bag', 'Coat']" in err
    assert not (tmp_path / "set").exists()
    # Training's reader refuses it too, naming the folder (a class list is checked wherever it is read).
    expect = "has train/ but no test/ or val/" if split == "train" else f"class folder {data / split} has a split name"
    with pytest.raises(DataError, match=expect):
        load_dataset(str(data), "train", in_chans=1, image_size=28)


def test_a_folder_of_data_sets_is_not_a_class_list(exported, fm_folder, tmp_path, capsys):
    out, _ = exported
    embed = out / F.EMBED_FILE
    data = tmp_path / "data"
    shutil.copytree(fm_folder / "train" / "Bag", data / "Bag")
    shutil.copytree(fm_folder / "train" / "Coat", data / "Coat")
    shutil.copytree(fm_folder, data / "more" / "fm")  # a whole data set two levels down
    assert _centroids(embed, data, tmp_path / "set") == 2
    err = capsys.readouterr().err
    assert f"class folder {data.resolve() / 'more'} holds a split folder" in err and "it is a data set" in err
    shutil.rmtree(data / "more")
    (data / "Bag" / "train").mkdir()  # train/ test/ inside a class, as when a split layout is nested
    assert _centroids(embed, data, tmp_path / "set") == 2
    assert f"{data.resolve() / 'Bag' / 'train'}" in capsys.readouterr().err


def test_a_segmentation_folder_says_its_split_and_refuses_its_parts(seg_export, tmp_path, capsys):
    scenes, _, out, _ = seg_export
    embed = out / F.EMBED_FILE
    assert _centroids(embed, scenes, tmp_path / "set") == 0
    printed = capsys.readouterr().out
    assert f"{scenes} is a segmentation folder: using its train split ({scenes / 'images' / 'train'})" in printed
    assert "from 48 train images" in printed
    cs = centroid_set.load(tmp_path / "set")
    assert cs.source["split"] == "train" and cs.source["data"] == str(scenes.resolve())
    assert all(n.startswith(str(scenes.resolve() / "images" / "train")) for row in cs.exemplar_names for n in row)
    # --split test is read (and said): its 12 scenes hold no T-shirt, which is then refused by name.
    assert _centroids(embed, scenes, tmp_path / "test-set", "--split", "test") == 2
    said = capsys.readouterr()
    assert "using its test split" in said.out and "['T-shirt-top'] of" in said.err and "its test split" in said.err
    # Its parts given alone would read as a class list of "test" and "train": refused, naming the folder to give.
    for part in (scenes / "images", scenes / "images" / "train", scenes / "masks"):
        assert _centroids(embed, part, tmp_path / "bad") == 2
        assert f"is part of the segmentation folder {scenes.resolve()}" in capsys.readouterr().err
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "scenes").symlink_to(scenes, target_is_directory=True)
    assert _centroids(embed, parent, tmp_path / "bad") == 2
    assert f"holds 1: give one of them as --data, e.g. {parent / 'scenes'}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_split_given_for_a_plain_folder_of_classes_is_refused(exported, fm_folder, tmp_path, capsys):
    """--split on a folder that is not laid out in splits would be silently ignored: it is refused, named."""
    embed = exported[0] / F.EMBED_FILE
    assert _centroids(embed, fm_folder / "train", tmp_path / "set", "--split", "test") == 2
    assert f"--split test: {fm_folder / 'train'} is a folder of classes" in capsys.readouterr().err
    assert not (tmp_path / "set").exists()
    assert main(["eval-onnx", "--embed", str(embed), "--centroids", str(exported[0]), "--data",
                 str(fm_folder / "test"), "--split", "train"]) == 2
    assert f"--split train: {fm_folder / 'test'} is a folder of classes" in capsys.readouterr().err
