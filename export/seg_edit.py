"""An added class of a segmentation set, from a segmentation folder's masks (`dnc centroids --from SET --add`).

The folder is read as `dnc centroids` reads one (export/seg_recompute.py: its train split, each image
embedded at its own size, a seeded bounded sample of each class's cells, a share of the images held out
to calibrate): only the cells of the one class named are kept. That class is the folder's class of the
same name, or its only class besides the background (a user's few labelled pictures of one new thing).
Its sub-centroids are anchored to distinct real cells, each recorded as (image, y, x), and its threshold
accepts `accept` of the cells of the held-out images, as for a set computed whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dnc.core.images import DataError
from dnc.core.seg_folder import SegClasses, is_seg_folder, read_classes
from dnc.export import abstention
from dnc.export.added_class import Added
from dnc.export.seg_recompute import check_seg_k, embedded_scenes, pool_subcentroids, sample_cells

log = logging.getLogger(__name__)


def folder_class(root: Path, classes: SegClasses, name: str) -> int:
    """The class id of `root` (whose class list is `classes`) whose cells become the added class `name`: its
    class of that name, else its only class besides the background; DataError naming its classes otherwise."""
    if name in classes.names:
        return classes.names.index(name)
    others = [i for i in range(len(classes.names)) if i != classes.background]
    if len(others) == 1:
        log.info("the added class %r is %s's only class, %r", name, root, classes.names[others[0]])
        return others[0]
    raise DataError(f"{root} has no class {name!r} and more than one besides its background "
                    f"({', '.join(classes.names)}): name the added class as one of them, e.g. "
                    f"--add {classes.names[others[0]]}={root}, and --rename it after")


def class_from_masks(sess, prep: dict, root: Path, name: str, k: int, method: str, keep_means: bool, seed: int,
                     calibration: tuple[float, float], per_image: int = 64, pixels_per_class: int = 4096) -> Added:
    """An added class from the masks of segmentation folder `root` (see the module's docstring);
    `calibration` = (accept, share of the images held out)."""
    if not is_seg_folder(root):
        raise DataError(f"the added class {name!r} of a segmentation set is read from a segmentation folder "
                        f"(images/, masks/, classes.json); {root} is not one")
    if k == "all" or k == "auto":
        raise DataError(f"--K {k} is not for an added class of a segmentation set: give a number (1-255)")
    check_seg_k(k)
    classes = read_classes(root)
    cls = folder_class(root, classes, name)
    accept, share = calibration
    rng = np.random.default_rng(seed)
    pools, held, names = sample_cells(embedded_scenes(sess, root, "train", prep, classes, desc=f"embed {name}"),
                                      len(classes.names), rng, per_image, pixels_per_class,
                                      held_rng=np.random.default_rng([seed, 1]), share=share)
    if not pools or len(pools[cls].x) == 0:
        raise DataError(f"the class {classes.names[cls]!r} of {root} (the added class {name!r}) labels no pixel of its "
                        f"train split outside the {share:.0%} of images held out to calibrate")
    cents, meta = pool_subcentroids(pools[cls], k, method, seed + 1000, keep_means)  # (not the sampling's stream)
    threshold = None
    if share > 0:
        threshold = abstention.class_threshold(cents, held[cls].x, accept)
        if len(held[cls].x) == 0:
            log.warning("no held-out image shows the added class %r: it accepts every pixel it wins", name)
    return Added(cents, meta[:, 0], threshold, names, meta[:, 1:].astype(np.int32))
