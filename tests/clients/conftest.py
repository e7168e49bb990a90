"""Fixtures of the video-job tests: a second class list for the test segmenter, so that a rerun sees the
list change as it would after `dnc swap`."""

import pytest


@pytest.fixture(scope="session")
def other_seg_set(tmp_path_factory, seg_export):
    """Another segmentation centroid set of the seg_export embedding (K=2, from its own training scenes)."""
    from dnc.core import formats as F
    from dnc.export.seg_recompute import compute_seg_set

    out = tmp_path_factory.mktemp("other-seg-set") / "set"
    compute_seg_set(seg_export[2] / F.EMBED_FILE, seg_export[0], out, k=2, threads=1, seed=0)
    return out
