"""The preprocessing description and its executor: files, uint8 pixels and encoded bytes give one answer,
against independent references (PIL's own operations, numpy float64), and every refusal names the problem."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dnc.core import preprocess as P
from dnc.core.images import read_image_array

MEAN, STD = [0.2, 0.4, 0.6], [0.25, 0.3, 0.35]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _with_declared_size(png: bytes, w: int, h: int) -> bytes:
    """The PNG with its IHDR chunk claiming w x h (CRC fixed), the data left as it was."""
    ihdr = bytearray(png[8 + 8:8 + 8 + 13])
    ihdr[0:8] = struct.pack(">II", w, h)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return png[:16] + bytes(ihdr) + crc + png[16 + 13 + 4:]


@pytest.mark.parametrize("color,chans", [("L", 1), ("RGB", 3)])
def test_pixels_bytes_and_files_give_the_same_array(tmp_path, rng, color, chans):
    pic = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    prep = P.describe(chans, 24, MEAN[:chans], STD[:chans])
    path = tmp_path / "pic.png"
    Image.fromarray(pic).save(path)
    from_file = read_image_array(path, chans, 24)
    from_pixels = P.prepare_pixels(pic, prep, 10**6)
    from_bytes = P.prepare(P.decode(path.read_bytes(), 10**6, prep=prep), prep)
    # reference: PIL's own operations, written out independently
    im = Image.fromarray(pic).convert(color).resize((37, 24), Image.BILINEAR).crop((6, 0, 30, 24))
    ref = np.asarray(im).reshape(24, 24, chans).transpose(2, 0, 1)
    for got in (from_file, from_pixels, from_bytes):
        assert got.shape == (chans, 24, 24) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref)


def test_segmenter_keeps_the_pictures_own_size(rng):
    prep = P.describe(3, 32, MEAN, STD, task="segmentation")
    pic = rng.integers(0, 256, (31, 57, 3), dtype=np.uint8)
    np.testing.assert_array_equal(P.prepare_pixels(pic, prep, 10**6), pic.transpose(2, 0, 1))
    gray = rng.integers(0, 256, (31, 57), dtype=np.uint8)  # a gray picture to an RGB model: PIL's L -> RGB
    np.testing.assert_array_equal(P.prepare_pixels(gray, prep, 10**6), np.stack([gray] * 3))
    assert P.prepare(P.decode(_png(pic), 10**6, prep=prep), prep).shape == (3, 31, 57)


def test_normalise_matches_float64(rng):
    prep = P.describe(3, 8, MEAN, STD)
    x = rng.integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    ref = (x.astype(np.float64) / 255 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    got = P.normalise(x, prep)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)
    low, high = P.value_range(prep)
    assert np.all(got.min(axis=(0, 2, 3)) >= np.array(low) - 1e-6)
    assert np.all(got.max(axis=(0, 2, 3)) <= np.array(high) + 1e-6)


def test_old_manifests_resize_sentences_still_read():
    assert P.resize_mode({"resize": "short side to image_size (bilinear), then centre crop image_size x "
                                    "image_size"}) == "short_side"
    assert P.resize_mode({"resize": "none: any height and width (trained on image_size x image_size)"}) == "none"
    with pytest.raises(P.ImageError, match="unknown resize mode"):
        P.resize_mode({"resize": "stretch"})


@pytest.mark.parametrize("what,data,says", [
    ("empty", b"", "empty"),
    ("text", b"hello, not an image", "not a PNG or JPEG"),
    ("gif", None, "not a PNG or JPEG"),
    ("truncated", "truncated", "cannot decode"),
    ("huge", "huge", "million"),
    ("large", "large", "more than the 4.0 million accepted"),
])
def test_bad_bytes_are_refused_by_name(rng, what, data, says):
    png = _png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    if what == "gif":
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "GIF")
        data = buf.getvalue()
    elif data == "truncated":
        data = png[:len(png) // 2]
    elif data == "huge":
        data = _with_declared_size(png, 60000, 60000)
    elif data == "large":
        data = _with_declared_size(png, 5000, 5000)
    with pytest.raises(P.ImageError, match=says) as e:
        P.decode(data, 4_000_000, what="image 3 of the request")
    assert "image 3 of the request" in str(e.value)


@pytest.mark.parametrize("shape,dtype,says", [
    ((10, 10, 4), np.uint8, "1 \\(gray\\) or 3 \\(RGB\\)"),
    ((10, 10, 2), np.uint8, "1 \\(gray\\) or 3 \\(RGB\\)"),
    ((10,), np.uint8, "height x width"),
    ((10, 10, 3), np.float32, "uint8"),
    ((0, 10, 3), np.uint8, "no pixels"),
    ((3000, 3000, 1), np.uint8, "million"),
    ((10, 400, 3), np.uint8, "aspect ratio"),
])
def test_bad_pixels_are_refused_by_name(shape, dtype, says):
    prep = P.describe(3, 16, MEAN, STD)
    with pytest.raises(P.ImageError, match=says):
        P.prepare_pixels(np.zeros(shape, dtype), prep, 4_000_000)


def test_the_typed_description_reads_and_writes_what_artefacts_hold():
    """Preprocessing.to_dict is describe()'s JSON object, from_dict reads it back (and the older sentence
    form of `resize`), a missing field is named, and the executor takes either form with the same result."""
    from dnc.core.preprocess import ImageError, Preprocessing, describe, normalise, prepare, typed

    for chans, task in ((1, "classification"), (3, "segmentation")):
        d = describe(chans, 32, [0.3] * chans, [0.25] * chans, task=task)
        p = Preprocessing.from_dict(d)
        assert p.to_dict() == d and typed(p) is p and typed(d) == p
        assert (p.resize, p.crop, p.color) == (("none", "none", "RGB") if chans == 3 else ("short_side", "centre", "L"))
    old = dict(describe(3, 32, [0.5] * 3, [0.25] * 3), resize="short side to 32, then centre crop")
    assert Preprocessing.from_dict(old).resize == "short_side"
    with pytest.raises(ImageError, match="'mean'"):
        Preprocessing.from_dict({k: v for k, v in old.items() if k != "mean"})
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (2, 3, 5, 6), dtype=np.uint8)
    d = describe(3, 32, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4])
    want = (images.astype(np.float64) / 255 - np.array(d["mean"])[None, :, None, None]) / np.array(d["std"])[
        None, :, None, None]  # float64 reference
    for form in (d, Preprocessing.from_dict(d)):
        np.testing.assert_allclose(normalise(images, form), want, rtol=1e-5, atol=1e-5)
    im = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert np.array_equal(prepare(im, d), prepare(im, Preprocessing.from_dict(d)))
