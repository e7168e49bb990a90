"""Limits where untrusted input enters: image files (size and shape checked from the header, before any
decoding or resizing) and class names (every writer and reader of a class list)."""

from __future__ import annotations

import json
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from dnc.core import centroid_set
from dnc.core.class_names import MAX_LENGTH, check_class_names
from dnc.core.formats import SET_TENSORS_FILE
from dnc.core.images import MAX_ASPECT, DataError, read_image_array, scan_image_folder


@pytest.mark.parametrize(("w", "h", "says"), [(2_000_000, 1, "aspect ratio"), (1, 50_000_001, "million"),
                                              (10_000, 10_000, "million"), (33 * 20, 20, "aspect ratio")])
def test_images_too_large_or_too_thin_are_refused_before_decoding(tmp_path, w, h, says):
    """A PNG header may declare any size: the file is a few KB, the refusal takes milliseconds."""
    path = tmp_path / "img.png"
    if w * h <= 4_000_000:
        Image.new("L", (w, h)).save(path)
    else:  # too big to make honestly: a real small PNG whose header (IHDR, CRC recomputed) declares w x h
        Image.new("L", (8, 8)).save(path)
        data = bytearray(path.read_bytes())
        data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
        path.write_bytes(bytes(data))
        with Image.open(path) as im:
            assert im.size == (w, h)  # a valid header: the size check, not a decoding error, must refuse it
    assert path.stat().st_size < 100_000
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=f"img.png is {w} x {h} pixels.*{says}"):
        read_image_array(path, 1, 28)
    assert time.perf_counter() - t0 < 1.0


def test_crafted_files_are_refused_not_crashed(tmp_path):
    """Whatever PIL raises on a damaged file becomes a DataError naming it (callers skip or report it)."""
    Image.new("L", (8, 8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    flipped = data[:45] + bytes(b ^ 0xFF for b in data[45:55]) + data[55:]  # damaged compressed pixels
    for i, bad in enumerate((data[:20], data[:40], flipped)):
        (tmp_path / f"bad{i}.png").write_bytes(bytes(bad))
        with pytest.raises(DataError, match=f"bad{i}.png"):
            read_image_array(tmp_path / f"bad{i}.png", 1, 8)


def test_images_within_the_limits_are_read(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (20, int(20 * MAX_ASPECT)), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    x = read_image_array(tmp_path / "wide.png", 1, 16)
    assert x.shape == (1, 16, 16)
    centre = np.asarray(Image.fromarray(wide).resize((int(16 * MAX_ASPECT), 16), Image.BILINEAR))
    left = (centre.shape[1] - 16) // 2
    assert np.array_equal(x[0], centre[:, left:left + 16])


@pytest.mark.parametrize(("names", "says"), [
    (["cat", 5], r"class name 1 \(5\) is a int"),
    (["cat", ""], r"class name 1 \(''\) is empty"),
    (["cat", "d\nog"], "control character '\\\\n'"),
    (["cat", "d\x00og"], "control character '\\\\x00'"),
    (["cat", "\x1b[31mred"], "control character '\\\\x1b'"),
    (["cat", "x" * 100_000], f"100000 characters \\(at most {MAX_LENGTH}\\)"),
    (["cat", "\u202egod"], "control character '\\\\u202e'"),
    (["cat", "dog", "cat"], "class names 0 and 2 are both 'cat'"),
    ("cat,dog", "must be a list"),
])
def test_bad_class_names_are_refused_naming_the_culprit(names, says):
    with pytest.raises(ValueError, match=says):
        check_class_names(names, "test")


def test_class_names_of_any_language_are_fine():
    assert check_class_names(["T-shirt/top", "Pullover", "Äpfel", "靴", "a b"], "test")


def test_centroid_sets_and_folders_apply_the_rule(tmp_path):
    rng = np.random.default_rng(1)
    c = rng.normal(size=(2, 1, 4)).astype(np.float32)
    c /= np.linalg.norm(c, axis=-1, keepdims=True)
    cs = centroid_set.CentroidSet(c, [1, 1], ["ok", "bad\nname"], "sha256:" + "0" * 64)
    with pytest.raises(centroid_set.CentroidSetError, match="control character"):
        centroid_set.save(cs, tmp_path / "set")
    cs.class_names = ["ok", "fine"]
    centroid_set.save(cs, tmp_path / "set")
    path = tmp_path / "set" / SET_TENSORS_FILE  # a set edited by hand: a list where a name should be
    with safe_open(str(path), framework="np") as f:
        meta, tensors = json.loads(f.metadata()["dnc"]), {k: f.get_tensor(k) for k in f.keys()}
    meta["class_names"][1] = ["not", "a string"]
    save_file(tensors, str(path), metadata={"dnc": json.dumps(meta)})
    with pytest.raises(centroid_set.CentroidSetError, match="class name 1 .* is a list"):
        centroid_set.load(tmp_path / "set")
    root = tmp_path / "folders"
    for name in ("a", "b\tc"):
        (root / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / name / "x.png")
    with pytest.raises(DataError, match="class name 1 .* control character"):
        scan_image_folder(root)


def test_checkpoints_apply_the_rule():
    """A model config (what every checkpoint carries and is rebuilt from) refuses a bad class list."""
    from dnc.training.model import ModelConfig

    with pytest.raises(ValueError, match="model config: class name 2 .* control character"):
        ModelConfig(num_classes=3, class_names=["a", "b", "c\x00"])
    assert ModelConfig(num_classes=2, class_names=["a", "b"]).class_names == ["a", "b"]
