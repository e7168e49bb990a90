"""Request sizing and downscaling without a server (clients/sizing.py): frames per request from the budget,
the largest size of the same aspect within the limit, the refusal's words, the budget read from a config
(the entry's, else the prep step's), and an answer brought back to the picture's size."""

import json

import numpy as np
import pytest

from dnc.clients import sizing
from dnc.clients.seg_results import ClassEvidence, Segmentation
from dnc.core import formats as F
from dnc.serving import repository

BUDGET = 2048 * 2048  # a segmenter's default


@pytest.mark.parametrize(("w", "h", "cap", "want"), [(1280, 720, 8, 4), (1920, 1080, 8, 2), (640, 480, 8, 8),
                                                     (640, 480, 3, 3), (2048, 2048, 8, 1), (3840, 2160, 8, 1)])
def test_frames_per_request_fit_the_budget(w, h, cap, want):
    n = sizing.per_request(BUDGET, w * h, cap)
    assert n == want
    assert n == 1 or n * w * h <= BUDGET


@pytest.mark.parametrize(("w", "h"), [(3840, 2160), (4000, 3000), (2049, 2048), (100000, 50), (50, 100000)])
def test_fitted_keeps_the_aspect_within_the_limit(w, h):
    fw, fh = sizing.fitted(w, h, BUDGET)
    assert fw * fh <= BUDGET < (fw + 1) * (fh + 1)  # the largest: not a pixel more on both sides
    assert abs(fw / fh - w / h) / (w / h) < 0.01 + 1 / min(fw, fh)  # the aspect, to within a pixel
    assert sizing.fitted(1920, 1080, BUDGET) == (1920, 1080)  # a picture that fits is left alone


def test_the_refusal_names_the_picture_its_size_the_limit_and_the_flag():
    """(The library names its parameter, `downscale`; `dnc segment` shows it as --downscale: test_segment_serving.)"""
    msg = sizing.too_large("picture a/b.png", width=3840, height=2160, max_pixels=BUDGET, model="scenes")
    assert msg == ("picture a/b.png is 3840x2160 (8.3 million pixels), more than the 4.2 million the served model "
                   "'scenes' takes per picture: pass `downscale` to send it downscaled to 2730x1536 (its labels are "
                   "brought back to 3840x2160)")


def test_the_budget_is_read_from_the_entry_then_the_prep_step_then_none():
    prep = {"task": "segmentation", "channels": 3, "color": "RGB", "image_size": 32, "mean": [0.5] * 3,
            "std": [0.5] * 3, "resize": "none", "scale": 1 / 255}
    cfgs = repository.configs(prep, name="scenes", max_pixels=123456)
    assert cfgs["scenes"]["parameters"]["max_pixels"] == {"string_value": "123456"}  # the entry carries it
    assert sizing.served_budget(cfgs.__getitem__, "scenes") == 123456
    old = json.loads(json.dumps(cfgs))
    del old["scenes"]["parameters"]["max_pixels"]  # a repository built before the entry carried it
    assert sizing.served_budget(old.__getitem__, "scenes") == 123456  # from scenes_prep
    del old[F.family("scenes").prep]  # the prep step out of reach too
    assert sizing.served_budget(old.__getitem__, "scenes") is None


def test_an_answer_is_brought_back_to_the_pictures_size():
    """Labels by nearest neighbour (no label that was not answered), score maps bilinear, pixel counts and
    shares recounted at full size, the size the model saw recorded in the evidence."""
    labels = np.zeros((3, 4), np.uint8)
    labels[:, 2:] = 7
    labels[0, 0] = 3
    score = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    names = [f"c{i}" for i in range(8)]
    ev = [ClassEvidence(c, names[c], int((labels == c).sum()), 0.0, 0.5, 1, -1, "", (-1, -1)) for c in (0, 7, 3)]
    seg = Segmentation("p.png", "set", labels, names, ev, {F.PIXEL_SCORE: score,
                                                          F.PIXEL_SUBCENTROID: labels.copy()})
    big = sizing.restored(seg, 30, 40)
    assert big.labels.shape == (30, 40) and big.labels.dtype == np.uint8
    assert set(np.unique(big.labels)) == {0, 3, 7}
    assert (big.labels[:, 20:] == 7).all() and (big.labels[:10, :10] == 3).all()
    assert (big.labels == np.kron(labels, np.ones((10, 10), np.uint8))).all()  # nearest: each pixel a block
    assert big.maps[F.PIXEL_SCORE].shape == (30, 40) and big.maps[F.PIXEL_SCORE].dtype == np.float32
    assert 0 <= big.maps[F.PIXEL_SCORE].min() and big.maps[F.PIXEL_SCORE].max() <= 1
    assert (big.maps[F.PIXEL_SUBCENTROID] == big.labels).all()
    assert [(c.class_id, c.pixels) for c in big.classes] == [(7, 600), (0, 500), (3, 100)]
    assert sum(c.fraction for c in big.classes) == pytest.approx(1)
    ev = big.evidence()
    assert (ev["height"], ev["width"], ev["sent_height"], ev["sent_width"]) == (30, 40, 3, 4)
    assert "sent_height" not in seg.evidence() and sizing.restored(seg, 3, 4) is seg


def test_downscaled_pictures_keep_their_channels():
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    gray = rgb[:, :, :1]
    for pic in (rgb, gray):
        small = sizing.downscaled(pic, 30000)
        assert small.shape == (150, 200, pic.shape[2]) and small.dtype == np.uint8
    assert sizing.downscaled(rgb, 10**6) is rgb
