"""Pictures as viewers show them: EXIF orientation applied and 16-bit gray scaled (not clipped) to 8 bits,
in the one reader that training, `dnc centroids`, the clients and the server's prep step share. The
references are independent: PIL's own ImageOps.exif_transpose, and float64 rounding of v * 255 / 65535."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from dnc.core import preprocess as P
from dnc.core.images import DataError, read_image_array, read_picture


def _with_orientation(pixels: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[P.EXIF_ORIENTATION] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path, rng, fmt, orientation):
    stored = rng.integers(0, 256, (20, 34, 3), dtype=np.uint8)
    data = _with_orientation(stored, orientation, fmt)
    path = tmp_path / f"p.{fmt.lower()}"
    path.write_bytes(data)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert (want.shape[:2] == (34, 20)) == (orientation >= 5)  # 5-8 turn the picture a quarter
    assert np.array_equal(read_picture(path, "RGB"), want)
    seg = P.describe(3, 32, [0.5] * 3, [0.25] * 3, task="segmentation")  # RGB at the picture's own size
    served = P.prepare(P.decode(data, 10**6), seg)  # the prep step's path
    assert np.array_equal(served.transpose(1, 2, 0), want)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path, rng):
    deep = rng.integers(0, 65536, (24, 40), dtype=np.uint16)
    deep[0, :4] = [0, 128, 65407, 65535]  # both ends and the values that round across them
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    twin = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)  # (H, W) the 8-bit twin
    Image.fromarray(twin).save(tmp_path / "twin.png")
    assert np.array_equal(read_picture(tmp_path / "deep.png", "L")[..., 0], twin)
    assert np.array_equal(read_picture(tmp_path / "deep.png", "RGB"), read_picture(tmp_path / "twin.png", "RGB"))
    deep_in, twin_in = (read_image_array(tmp_path / f"{n}.png", 1, 16) for n in ("deep", "twin"))
    assert np.array_equal(deep_in, twin_in)
    data = (tmp_path / "deep.png").read_bytes()
    prep = P.describe(1, 32, [0.5], [0.25], task="segmentation")  # gray at the picture's own size
    assert np.array_equal(P.prepare(P.decode(data, 10**6), prep)[0], twin)
    assert (twin == 255).mean() < 0.01  # PIL's plain convert made most of these 255


def test_float_pictures_are_refused_naming_the_file(tmp_path, rng):
    Image.fromarray(rng.random((8, 8)).astype(np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match=r"f\.tiff holds 32-bit float pixels"):
        read_picture(tmp_path / "f.tiff", "L")
