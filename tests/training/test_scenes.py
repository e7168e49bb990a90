"""FashionScenes and the segmentation folder: deterministic by seed, masks exactly where items were
pasted, and the reader's refusals (each naming the file)."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from dnc.core.images import DataError
from dnc.core.seg_folder import read_classes, read_pair
from dnc.training import scenes
from dnc.training.data import load_dataset
from dnc.training.seg_data import load_seg_folder


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_scenes_are_deterministic_by_seed(tmp_path, fmnist_ready):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        scenes.write_scenes(tmp_path / name, "coarse", size=32, train=12, test=4, seed=seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    # scene i depends on (seed, split, i) only: writing fewer scenes gives the same first ones
    scenes.write_scenes(tmp_path / "d", "coarse", size=32, train=5, test=1, seed=3)
    for i in range(5):
        name = f"images/train/{i:06d}.png"
        assert (tmp_path / "d" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    with pytest.raises(DataError, match="exists and is not empty"):
        scenes.write_scenes(tmp_path / "a", "fine", size=32, train=1, test=1)
    classes = read_classes(tmp_path / "a")
    assert classes.names == ["background", "tops", "trouser", "dress", "footwear", "bag"]
    assert classes.background == 0 and classes.ignore_index == 255


def test_masks_match_the_pasted_items(fmnist_ready):
    items = load_dataset("fashion-mnist", "test")
    labels = items.labels.numpy()
    photos = scenes.load_photos()
    checked = 0
    for i in range(40):
        image, mask, pasted = scenes.make_scene(items, labels, photos, 64, seed=7, split="test", index=i)
        # the background alone, from the same draws: every pixel labelled background shows it unchanged
        bg = scenes.background(np.random.default_rng([7, 1, i]), photos, 64)
        assert np.array_equal(image[mask == 0], bg[mask == 0])
        assert set(np.unique(mask)) <= {0} | {c + 1 for _, c, *_ in pasted}
        # the last item pasted is covered by nothing: its silhouette, clipped to the scene, is its label
        idx, cls, top, left, side = pasted[-1]
        grey = np.asarray(Image.fromarray(items.images[idx, 0].numpy()).resize((side, side), Image.BILINEAR))
        want = np.zeros((64, 64), bool)
        ys, xs = np.nonzero(grey > scenes.SILHOUETTE_LEVEL)  # the silhouette's outline pixels at least
        keep = (ys + top >= 0) & (ys + top < 64) & (xs + left >= 0) & (xs + left < 64)
        want[ys[keep] + top, xs[keep] + left] = True
        assert np.all(mask[want] == cls + 1), i
        # an item pixel is painted: it differs from the background at almost every labelled pixel
        if (mask > 0).sum() > 50:
            changed = np.any(image != bg, axis=2)[mask > 0].mean()
            assert changed > 0.95, (i, changed)
            checked += 1
    assert checked >= 30


@pytest.fixture
def small_folder(tmp_path, fmnist_ready):
    scenes.write_scenes(tmp_path / "s", "fine", size=32, train=6, test=3, seed=0)
    return tmp_path / "s"


def test_reader_loads_what_the_writer_wrote(small_folder):
    data = load_seg_folder(small_folder, "test", 32)
    assert data.images.shape == (3, 3, 32, 32) and data.masks.shape == (3, 32, 32)
    img = np.asarray(Image.open(small_folder / "images/test/000001.png")).transpose(2, 0, 1)
    assert np.array_equal(data.images[1].numpy(), img)
    assert np.array_equal(data.masks[1].numpy(), np.asarray(Image.open(small_folder / "masks/test/000001.png")))
    x, y = data.batch(torch.tensor([2, 0]))
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and y.shape == (2, 32, 32)
    # resized on read: images bilinear, masks nearest (only class ids survive)
    small = load_seg_folder(small_folder, "test", 16)
    assert set(np.unique(small.masks.numpy())) <= set(np.unique(data.masks.numpy()))


def test_reader_refusals_name_the_file(small_folder):
    m = small_folder / "masks/train/000002.png"
    arr = np.asarray(Image.open(m)).copy()
    arr[0, 0] = 20  # neither a class id (0-10) nor the ignore index
    Image.fromarray(arr).save(m)
    with pytest.raises(DataError, match="000002.png holds value 20"):
        load_seg_folder(small_folder, "train", 32)
    neg = np.zeros((32, 32), np.int32)
    neg[3, 3] = -1  # would wrap to 255 (the ignore index) as uint8
    Image.fromarray(neg, mode="I").save(m, format="TIFF")  # 32-bit signed content under the .png name
    with pytest.raises(DataError, match="000002.png holds value -1"):
        load_seg_folder(small_folder, "train", 32)
    arr[0, 0] = 255  # the ignore index is fine
    Image.fromarray(arr).save(m)
    assert int((load_seg_folder(small_folder, "train", 32).masks[2] == 255).sum()) == 1
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(m)  # colours, not class ids
    with pytest.raises(DataError, match="000002.png is a RGB image"):
        read_pair(small_folder / "images/train/000002.png", m)
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(m)
    with pytest.raises(DataError, match="but its mask .*000002.png is 32 x 16"):
        read_pair(small_folder / "images/train/000002.png", m)
    m.unlink()
    with pytest.raises(DataError, match="000002.png has no mask"):
        load_seg_folder(small_folder, "train", 32)
    (small_folder / "classes.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="classes.json is not a dnc-segmentation-folder"):
        read_classes(small_folder)
    with pytest.raises(DataError, match=f"images/train is not a segmentation folder.*give the folder that holds it: "
                                        f"{small_folder}"):
        load_seg_folder(small_folder / "images" / "train", "train", 32)
