"""Data sources on real images: Fashion-MNIST IDX files, image folders (any size, RGB or gray,
unreadable files), the CIFAR python format, and the batch augmentation."""

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnc.training.batches import augment, epoch_batches
from dnc.training.data import DataError, load_dataset


@pytest.fixture(scope="module")
def fm_test(fmnist_ready):
    return load_dataset("fashion-mnist", "test")


def test_fashion_mnist_from_debian_package(fm_test):
    train = load_dataset("fashion-mnist", "train")
    assert len(train) == 60000 and len(fm_test) == 10000
    assert fm_test.images.shape == (10000, 1, 28, 28) and fm_test.images.dtype == torch.uint8
    assert torch.bincount(fm_test.labels).tolist() == [1000] * 10
    assert fm_test.name_of(7) == "fashion-mnist/test/7"


def _write_folder(root, fm, per_class=12, classes=(0, 1, 7)):
    """Real Fashion-MNIST images as files of mixed sizes and modes."""
    for c in classes:
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        idx = torch.nonzero(fm.labels == c).flatten()[:per_class]
        for j, i in enumerate(idx.tolist()):
            im = Image.fromarray(fm.images[i, 0].numpy())
            if j % 3 == 1:
                im = im.convert("RGB").resize((40, 56))
            elif j % 3 == 2:
                im = im.resize((64, 64))
            im.save(d / f"{j:03d}.png")
    return root


def test_image_folder_split_sizes_and_modes(tmp_path, fm_test):
    root = _write_folder(tmp_path / "imgs", fm_test)
    train = load_dataset(str(root), "train", in_chans=3, image_size=32)
    test = load_dataset(str(root), "test", in_chans=3, image_size=32)
    assert train.class_names == ["class_0", "class_1", "class_7"]
    assert len(train) + len(test) == 36 and len(test) == 3  # every 10th file per class held out
    assert not set(train.paths) & set(test.paths)
    x = train.load(torch.arange(len(train)))
    assert x.shape == (33, 3, 32, 32) and x.dtype == torch.uint8
    gray = load_dataset(str(root), "train", in_chans=1, image_size=28)
    # A 28x28 gray file read back at 28 px is the original pixels.
    i = gray.paths.index(str(root / "class_0" / "000.png"))
    assert torch.equal(gray.load(torch.tensor([i]))[0, 0], fm_test.images[torch.nonzero(fm_test.labels == 0)[0, 0], 0])


def test_split_folders_share_the_training_class_list(tmp_path, fm_test):
    root = tmp_path / "ds"
    _write_folder(root / "train", fm_test, per_class=4)
    _write_folder(root / "val", fm_test, per_class=2, classes=(0, 7))  # class_1 missing
    with pytest.raises(DataError, match=r"missing \['class_1'\]"):
        load_dataset(str(root), "test", in_chans=1, image_size=28)
    _write_folder(root / "test", fm_test, per_class=2)  # test/ wins over val/
    test = load_dataset(str(root), "test", in_chans=1, image_size=28)
    assert test.class_names == ["class_0", "class_1", "class_7"] and len(test) == 6
    assert all("/test/" in p for p in test.paths)
    lonely = tmp_path / "lonely"
    _write_folder(lonely / "train", fm_test, per_class=2)
    with pytest.raises(DataError, match="has train/ but no test/ or val/"):
        load_dataset(str(lonely), "train")


def test_unreadable_image_is_skipped_or_refused_by_path(tmp_path, fm_test, caplog):
    root = _write_folder(tmp_path / "imgs", fm_test, per_class=4)
    bad = root / "class_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(str(root), "train", in_chans=1, image_size=28)
    assert str(bad) in caplog.text and str(bad) not in data.paths
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(str(root), "train", in_chans=1, image_size=28, on_bad="error")


def test_bad_paths_and_empty_classes_are_named(tmp_path, fm_test):
    with pytest.raises(DataError, match="does not exist: .*nowhere"):
        load_dataset(str(tmp_path / "nowhere"), "train")
    root = _write_folder(tmp_path / "imgs", fm_test, per_class=3)
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class has no readable images"):
        load_dataset(str(root), "train")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(str(root / "class_0"), "train")


def test_cifar_python_format(tmp_path, fm_test):
    # Published CIFAR-10 layout, filled with real (Fashion-MNIST) pixels padded to 32x32 RGB.
    imgs = np.pad(fm_test.images[:60, 0].numpy(), ((0, 0), (2, 2), (2, 2)))
    rgb = np.repeat(imgs[:, None], 3, axis=1).reshape(60, -1)
    labels = fm_test.labels[:60].tolist()
    for i in range(1, 6):
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rgb[(i - 1) * 10: i * 10], b"labels": labels[(i - 1) * 10: i * 10]}, f)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": rgb[50:], b"labels": labels[50:]}, f)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in fm_test.class_names]}, f)
    train, test = load_dataset(str(tmp_path), "train"), load_dataset(str(tmp_path), "test")
    assert len(train) == 50 and len(test) == 10 and train.in_chans == 3
    assert torch.equal(train.images[3, 1, 2:30, 2:30], fm_test.images[3, 0])
    assert train.labels.tolist() == labels[:50]


def test_augment_is_a_crop_or_flip_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (16, 1, 12, 12), dtype=torch.uint8)
    out = augment(x, g, pad=2)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(16):
        found = any(torch.equal(out[b], win) or torch.equal(out[b], win.flip(-1))
                    for dy in range(5) for dx in range(5) for win in [xp[b, :, dy:dy + 12, dx:dx + 12]])
        assert found, b
    assert not torch.equal(augment(x, torch.Generator().manual_seed(0), 2), augment(x, g, 2))


def test_epoch_batches_shard_and_replay():
    a = epoch_batches(100, 8, seed=3, epoch=2, shuffle=True, rank=0, world=2)
    b = epoch_batches(100, 8, seed=3, epoch=2, shuffle=True, rank=1, world=2)
    assert [t.tolist() for t in a] == [t.tolist() for t in epoch_batches(100, 8, 3, 2, shuffle=True, rank=0, world=2)]
    assert len(a) == len(b) == 6  # 50 per rank -> 6 full batches
    assert not set(torch.cat(a).tolist()) & set(torch.cat(b).tolist())


def test_image_folder_paths_are_absolute_wherever_it_is_read(tmp_path, fm_test, monkeypatch):
    """Exemplar names come from these paths (`dnc anchor`): relative ones would break when the run moves."""
    _write_folder(tmp_path / "work" / "imgs", fm_test)
    monkeypatch.chdir(tmp_path / "work")
    data = load_dataset("imgs", "train", in_chans=1, image_size=28)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.paths)
    assert data.name_of(0) == str((tmp_path / "work" / "imgs").resolve() / "class_0" / "000.png")
