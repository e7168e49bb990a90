"""The segmentation head run in bands of output rows (export/seg_head_bands.py): the same answers as an
independent float64 reference and as the graph run in one band, for band heights that do not divide the
output, one-row bands and a batch; and its memory bounded whatever the class count (issue 23, item 5)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.export.seg_head_graph import build_seg_head
from tests.training import reference as ref

ROOT = Path(__file__).resolve().parents[2]
FP = "sha256:" + "cd" * 32


def _set(rng, ks, d):
    c, kmax = len(ks), max(ks)
    p = rng.standard_normal((c, kmax, d))
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    p *= (np.arange(kmax)[None] < np.asarray(ks)[:, None])[..., None]
    return CentroidSet(p.astype(np.float32), list(ks), [f"c{i}" for i in range(c)], FP, task="segmentation")


def _run(model, emb, size):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {F.PIXEL_EMBEDDING: emb.astype(np.float32), F.OUTPUT_SIZE: np.array(size, np.int64)})
    return dict(zip([o.name for o in sess.get_outputs()], out, strict=True))


# rows per band = budget // (N * W * C): 3 rows of 29 (29 = 9 * 3 + 2), 1 row, 4 rows of 18 (no cells shared
# evenly), and one band holding everything
@pytest.mark.parametrize("cells,size,rows", [((4, 5), (29, 21), 3), ((7, 3), (29, 10), 1), ((5, 6), (18, 23), 4),
                                             ((2, 9), (33, 70), 10**6)])
def test_bands_match_the_float64_reference_and_one_band(rng, cells, size, rows):
    ks = tuple(int(k) for k in rng.integers(1, 5, size=7))
    cs = _set(rng, ks, d=10)
    n, c = 3, len(ks)
    emb = rng.standard_normal((n, 10, *cells)) * rng.uniform(0.5, 3)
    got = _run(build_seg_head(cs, evidence=True, budget=rows * n * size[1] * c), emb, size)
    whole = _run(build_seg_head(cs, evidence=True, budget=2**40), emb, size)
    want = ref.segment(emb, cs.centroids, cs.ks, *size)
    labels = got[F.LABELS].astype(np.int64)
    assert got[F.LABELS].dtype == np.uint8 and labels.shape == (n, *size)
    for name in (F.LABELS, F.PIXEL_SUBCENTROID, F.PIXEL_SCORE, F.PIXEL_MARGIN, F.CLASS_PIXELS, F.CLASS_SUBCENTROID):
        assert np.array_equal(got[name], whole[name]), name  # band height changes nothing
    same = labels == want["labels"]
    assert same.mean() >= 0.999
    np.testing.assert_allclose(got[F.PIXEL_SCORE], want["top_score"], atol=1e-5)
    np.testing.assert_allclose(got[F.PIXEL_MARGIN], want["margin"], atol=1e-5)
    assert np.array_equal(got[F.PIXEL_SUBCENTROID][same], want["subcentroid"][same])
    kmax = max(ks)
    sub = got[F.PIXEL_SUBCENTROID].astype(np.int64)
    for i in range(n):
        count = np.bincount(labels[i].ravel(), minlength=c)
        assert np.array_equal(got[F.CLASS_PIXELS][i], count)
        sums = np.bincount(labels[i].ravel(), weights=got[F.PIXEL_SCORE][i].ravel().astype(np.float64), minlength=c)
        np.testing.assert_allclose(got[F.CLASS_SCORE][i], sums / np.maximum(count, 1), atol=1e-6)
        votes = np.bincount((labels[i] * kmax + sub[i]).ravel(), minlength=c * kmax)
        assert np.array_equal(got[F.CLASS_SUBCENTROID][i], np.where(count > 0, votes.reshape(c, kmax).argmax(1), -1))


def test_an_output_smaller_than_the_cells(rng):
    """Downscaling (more cells than pixels) reads at most a few cell rows per band too."""
    cs = _set(rng, (2, 3, 1), d=6)
    emb = rng.standard_normal((2, 6, 11, 9))
    got = _run(build_seg_head(cs, budget=2 * 3 * 3), emb, (3, 3))
    want = ref.segment(emb, cs.centroids, cs.ks, 3, 3)
    np.testing.assert_allclose(got[F.PIXEL_SCORE], want["top_score"], atol=1e-5)
    assert (got[F.LABELS] == want["labels"]).mean() >= 0.99


PEAK = """
import resource, sys
import numpy as np, onnxruntime as ort
from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.export.seg_head_graph import build_seg_head
rng = np.random.default_rng(0)
c, k, d, side = 254, 4, 32, 1024
p = rng.standard_normal((c, k, d)); p /= np.linalg.norm(p, axis=-1, keepdims=True)
cs = CentroidSet(p.astype(np.float32), [k] * c, [f"c{i}" for i in range(c)], "sha256:" + "cd" * 32,
                 task="segmentation")
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(build_seg_head(cs, evidence=True).SerializeToString(), o, providers=["CPUExecutionProvider"])
emb = rng.standard_normal((1, d, side // 4, side // 4)).astype(np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = s.run([F.LABELS], {F.PIXEL_EMBEDDING: emb, F.OUTPUT_SIZE: np.array([side, side], np.int64)})[0]
print(before // 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, len(np.unique(labels)))
"""


def test_254_classes_at_a_megapixel_stay_small():
    """The single-pass graph peaked at 3.9 GB here (16 bytes per class-pixel: 254 x 1024 x 1024 x ~15);
    in bands the run adds 125 MB (measured), whatever C."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    before, peak, distinct = (int(v) for v in run.stdout.split())
    assert distinct > 200  # the classes really compete for the pixels
    assert peak - before < 600, f"the head's run took {peak - before} MB over the {before} MB before it"
