"""Writing in-memory data sets out as image folders, with the coarse Fashion-MNIST label map."""

import numpy as np
import pytest
import torch

from dnc.core.images import DataError, read_image_array
from dnc.training.data import FASHION_MNIST_CLASSES, ImageData, load_dataset
from dnc.training.folders import FASHION_MNIST_COARSE, coarse_index, folder_name, write_image_folder


def _small(rng, n=40):
    imgs = torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, n))
    return ImageData("t", "train", list(FASHION_MNIST_CLASSES), labels, in_chans=1, image_size=28, mean=[0.5],
                     std=[0.5], images=imgs)


def test_coarse_folders_hold_the_right_images_pixel_for_pixel(rng, tmp_path):
    data = _small(rng)
    counts = write_image_folder(data, tmp_path, FASHION_MNIST_COARSE)
    assert sorted(counts) == sorted(FASHION_MNIST_COARSE)
    fine_of = {f: c for c, fines in FASHION_MNIST_COARSE.items() for f in fines}
    expect = {c: 0 for c in FASHION_MNIST_COARSE}
    for y in data.labels.tolist():
        expect[fine_of[FASHION_MNIST_CLASSES[y]]] += 1
    assert counts == expect
    for i in range(len(data)):
        coarse = fine_of[FASHION_MNIST_CLASSES[int(data.labels[i])]]
        back = read_image_array(tmp_path / coarse / f"{i:06d}.png", 1, 28)
        np.testing.assert_array_equal(back, data.images[i].numpy())


def test_fine_folder_names_and_per_class_cap(rng, tmp_path):
    counts = write_image_folder(_small(rng, 200), tmp_path, None, per_class=3)
    assert folder_name("T-shirt/top") == "T-shirt-top" and "T-shirt-top" in counts
    assert all(v == 3 for v in counts.values())
    assert all(len(list((tmp_path / f).iterdir())) == 3 for f in counts)


def test_incomplete_label_map_is_refused():
    with pytest.raises(DataError, match=r"does not place the classes \['Bag'\]"):
        coarse_index(FASHION_MNIST_CLASSES, {k: v for k, v in FASHION_MNIST_COARSE.items() if k != "bag"})


def test_real_fashion_mnist_test_split(tmp_path, fmnist_ready):
    counts = write_image_folder(load_dataset("fashion-mnist", "test"), tmp_path, FASHION_MNIST_COARSE, per_class=5)
    assert counts == {"tops": 5, "trouser": 5, "dress": 5, "footwear": 5, "bag": 5}
