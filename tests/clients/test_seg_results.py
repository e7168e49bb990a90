"""Overlays with their legend: the blended picture checked against a float64 reference, and a legend that
shows exactly the colours of the classes present (a fixed height for video frames)."""

import numpy as np
import pytest

from dnc.clients.seg_results import BACKGROUND, LEGEND_MIN_WIDTH, ClassEvidence, Segmentation, overlay, palette

NAMES = [BACKGROUND, "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]


def _seg(labels: np.ndarray) -> Segmentation:
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    classes = [ClassEvidence(int(ids[i]), NAMES[ids[i]], int(counts[i]), float(counts[i]) / labels.size, 0.7, 0, -1,
                             "", (-1, -1)) for i in order]
    return Segmentation("pic", "set-a", labels, NAMES, classes)


def _colours_in(img: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, 3), axis=0)}


@pytest.mark.parametrize("shape", [(64, 64), (37, 301), (240, 320)])
def test_overlay_blends_as_the_reference_and_keeps_pixels_in_place(rng, shape):
    picture = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, shape).astype(np.uint8)  # background and three classes
    im = np.asarray(overlay(picture, _seg(labels), alpha=0.3))
    pal = np.asarray(palette(NAMES), np.float64)
    want = np.where((labels > 0)[..., None], 0.7 * picture.astype(np.float64) + 0.3 * pal[labels], picture)
    got = im[:shape[0], :shape[1]].astype(np.float64)
    assert np.abs(got - want).max() <= 0.5 + 1e-9  # rounding only
    assert im.shape[1] == max(shape[1], LEGEND_MIN_WIDTH) and im.shape[0] > shape[0]


def test_legend_shows_the_colours_of_the_classes_present_only(rng):
    picture = np.full((96, 200, 3), 128, np.uint8)
    labels = np.zeros((96, 200), np.uint8)
    labels[:40, :50], labels[50:, 100:] = 3, 9  # Pullover and Bag (and background, which has no swatch)
    im = np.asarray(overlay(picture, _seg(labels)))
    strip = _colours_in(im[96:])
    pal = palette(NAMES)
    assert {pal[3], pal[9]} <= strip
    assert not ({pal[c] for c in (1, 2, 4, 5, 6, 7, 8, 10)} & strip)


def test_fixed_rows_keep_one_size_and_count_the_rest(rng):
    few = rng.integers(0, 2, (120, 160)).astype(np.uint8)
    many = rng.integers(0, 11, (120, 160)).astype(np.uint8)
    pic = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a, b = (np.asarray(overlay(pic, _seg(lab), legend_rows=2)) for lab in (few, many))
    assert a.shape == b.shape and a.shape[0] % 2 == 0
    shown = _colours_in(b[120:]) & set(palette(NAMES)[1:])
    assert 0 < len(shown) < 10  # some classes did not fit: "+N more" stands for them
    grown = np.asarray(overlay(pic, _seg(many)))  # without a fixed height every class gets a place
    assert set(palette(NAMES)[1:]) <= _colours_in(grown[120:]) and grown.shape[0] > b.shape[0]
