"""A class added to a set by `dnc centroids --from SET --add`, before it joins the set (export/edit_set.py).

Made from a folder of the class's images (export/edit_set.py) or from a segmentation folder's masks
(export/seg_edit.py); either way it carries what the set's rows need, and nothing of how it was read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Added(NamedTuple):
    """subcentroids: (k', D) unit rows; near: (k',) index into `files` of the image anchoring each;
    threshold: its abstention threshold, None when nothing was held out; files: the images read (paths);
    yx: (k', 2) int32 anchoring pixel of each sub-centroid in its image (segmentation), else None."""

    subcentroids: np.ndarray
    near: np.ndarray
    threshold: float | None
    files: list
    yx: np.ndarray | None = None
