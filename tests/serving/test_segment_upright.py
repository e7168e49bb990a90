"""A segmenter answers EXIF-turned and 16-bit pictures, sent as their bytes, as it answers their upright 8-bit
twins: at the upright size (the client groups pictures by the size the server will turn them to, so a
turned picture shares a request with upright ones of that size), with the same labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dnc.clients.client import DNCClient
from dnc.core.preprocess import EXIF_ORIENTATION
from dnc.export.seg_infer import InProcessSegmenter
from dnc.serving import repository
from dnc.serving.server import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory, seg_export):
    repo = tmp_path_factory.mktemp("upright") / "repo"
    repository.build(seg_export[2], repo, threads=1)
    s = TritonServer(repo, 0, 0, 0)
    s.start(timeout=180)
    yield s
    s.stop()


def test_turned_and_deep_pictures_are_segmented_as_their_upright_twins(server, seg_export, tmp_path):
    rng = np.random.default_rng(11)
    upright = rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)  # (H, W, 3) as viewers show it
    Image.fromarray(upright).save(tmp_path / "a-upright.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # stored turned a quarter right; viewers turn it back left (ROTATE_90)
    Image.fromarray(np.rot90(upright, -1)).save(tmp_path / "b-turned.png", exif=exif)  # stored 52 x 36
    deep = rng.integers(0, 65536, (36, 52), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "c-deep.png")
    twin = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
    skipped: list = []
    with DNCClient(server.http_url, model=None, task="segmentation") as c:
        segs = {s.source.rsplit("/", 1)[-1]: s for s in c.segment_files([tmp_path], batch_size=8, skipped=skipped,
                                                                         how="encoded")}
    assert not skipped, skipped  # the turned picture went with the upright ones of its upright size
    local = InProcessSegmenter(seg_export[2], threads=1)
    want = local.run([upright])["labels"][0]
    assert segs["a-upright.png"].labels.shape == segs["b-turned.png"].labels.shape == (36, 52)
    assert np.array_equal(segs["b-turned.png"].labels, want)
    assert np.array_equal(segs["c-deep.png"].labels, local.run([np.repeat(twin[..., None], 3, 2)])["labels"][0])
