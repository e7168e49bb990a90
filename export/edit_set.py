"""`dnc centroids --from SET`: a new class list made from an existing one, a class at a time.

Edits are applied in the order remove, rename, add, to a classification set paired with the given
embed.onnx (its fingerprint is checked first: a set from another embedding is refused). Only an added
class is embedded and clustered (export/recompute.py's rule: K sub-centroids, each anchored to a distinct
real image of the class); every untouched class keeps its sub-centroids, exemplar ids and names
bit-identical, so the edit costs the new images alone, not the whole list. The result is a new set (its
own set id, since the content changed) written with its head.onnx, like any set `dnc swap` serves; its
`source` records the set it came from and the edits. Thresholds (export/abstention.py) travel the same
way: untouched classes keep theirs, an added class is calibrated on a share of its images held out from
its sub-centroids (as `dnc centroids` does), so adding a class never moves the others' decisions. A
segmentation set is edited the same way, with the segmenter's embed.onnx: an added class comes from a
segmentation folder's masks (export/seg_edit.py), and every row keeps its anchoring pixels.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnx

from dnc.core import centroid_set, tasks
from dnc.core import formats as F
from dnc.core.centroid_set import UNCALIBRATED, CentroidSet
from dnc.core.class_names import check_class_names
from dnc.core.errors import InputError
from dnc.core.images import DataError, image_files
from dnc.core.staging import check_destination, staged
from dnc.export import abstention, runtime
from dnc.export.added_class import Added
from dnc.export.head_graph import build_head
from dnc.export.recompute import ALL, class_subcentroids, embed_files
from dnc.export.seg_edit import class_from_masks
from dnc.export.seg_head_graph import build_seg_head

log = logging.getLogger(__name__)


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """["A=B", ...] -> {A: B}; a malformed item or a repeated A is refused, naming it."""
    out: dict[str, str] = {}
    for item in items:
        left, sep, right = item.partition("=")
        if not sep or not left or not right:
            raise InputError(f"`{what}` takes NAME=VALUE, got {item!r}")
        if left in out:
            raise InputError(f"`{what}` names {left!r} twice")
        out[left] = right
    return out


def edit_set(base: str | Path, embed_path: str | Path, out: str | Path, add: dict[str, str] | None = None,
             remove: list[str] | None = None, rename: dict[str, str] | None = None, k: int | str = 4,
             method: str = "sinkhorn", keep_means: bool = False, batch_size: int = 256, threads: int = 0,
             seed: int = 0, accept: float = abstention.DEFAULT_ACCEPT,
             calibration_share: float = abstention.DEFAULT_SHARE, per_image: int = 64,
             pixels_per_class: int = 4096) -> dict:
    """Write to `out` the set `base` with classes removed, renamed ({old: new}) and added ({name: folder of
    that class's images, or for a segmentation set a segmentation folder whose masks show it; `per_image`
    and `pixels_per_class` sample its cells as `dnc centroids` does}); returns a summary (set ids, classes,
    K per class, images embedded, seconds)."""
    add, remove, rename = dict(add or {}), list(remove or []), dict(rename or {})
    if not (add or remove or rename):
        raise InputError("an edit needs at least one of `add`, `remove` or `rename`")
    if (k != ALL and (not isinstance(k, int) or k < 1)) or batch_size < 1:
        raise InputError(f"an edit's `K` must be >= 1 or {ALL!r} (auto chooses over a whole list's held-out images: "
                         f"recompute the list for it), and `batch_size` >= 1; got {k!r} and {batch_size}")
    abstention.check_calibration(accept, calibration_share)
    embed_path, out = Path(embed_path), Path(out)
    check_destination(out, F.SET_TENSORS_FILE, refuse_if=(F.MANIFEST_FILE, F.EMBED_FILE))
    sess = runtime.session(embed_path, threads)
    prep = runtime.preprocessing_of(sess, embed_path)
    cs = centroid_set.load(base)
    dense = tasks.task(cs.task).dense  # the graph's task first: the clearest word for a graph of another model
    runtime.check_task(prep, tasks.task(cs.task), embed_path, "segmentation folders" if dense else "class folders")
    centroid_set.check_pairing(cs, centroid_set.fingerprint_file(embed_path), runtime.embed_dim_of(sess), str(base))
    kept = _remove_and_rename(cs, remove, rename, base)
    t0 = time.time()
    added = {}
    for i, (name, folder) in enumerate(add.items()):
        how = dict(k=k, method=method, keep_means=keep_means, seed=seed + i, calibration=(accept, calibration_share))
        added[name] = (class_from_masks(sess, prep, Path(folder), name, per_image=per_image,
                                        pixels_per_class=pixels_per_class, **how) if dense else
                       _class_from_folder(sess, prep, Path(folder), name, batch_size=batch_size, threads=threads,
                                          **how))
    seconds = time.time() - t0
    new = _assemble(cs, kept, rename, added, source={
        "from": "edit", "base_set_id": cs.set_id, "base": str(Path(base).resolve()), "remove": remove,
        "rename": rename, "add": {n: str(Path(f).resolve()) for n, f in add.items()}, "k": k, "method": method,
        "keep_means": keep_means, "calibration": {"accept": accept, "share": calibration_share, "seed": seed}})
    with staged(out) as tmp:
        centroid_set.save(new, tmp)
        onnx.save(build_seg_head(new) if dense else build_head(new), tmp / F.HEAD_FILE)
    log.info("centroid set %s (from %s: -%d, renamed %d, +%d) -> %s", new.set_id, cs.set_id, len(remove),
             len(rename), len(added), out)
    return {"set_id": new.set_id, "base_set_id": cs.set_id, "classes": list(new.class_names), "ks": list(new.ks),
            "added": {n: len(a.files) for n, a in added.items()}, "removed": remove, "renamed": rename,
            "thresholds": None if new.thresholds is None else [round(float(t), 4) for t in new.thresholds],
            "embed_seconds": seconds, "out": str(out)}


def _remove_and_rename(cs: CentroidSet, remove: list[str], rename: dict[str, str], base) -> list[int]:
    """The indices of the classes kept, after checking every name the edits give."""
    names = list(cs.class_names)
    unknown = [n for n in [*remove, *rename] if n not in names]
    if unknown:
        raise InputError(f"{base} has no class {unknown[0]!r} (its classes: {', '.join(names)})")
    both = set(remove) & set(rename)
    if both:
        raise InputError(f"class {sorted(both)[0]!r} is both removed and renamed")
    return [i for i, n in enumerate(names) if n not in remove]


def _class_from_folder(sess, prep: dict, folder: Path, name: str, k: int | str, method: str, keep_means: bool,
                       batch_size: int, threads: int, seed: int, calibration: tuple[float, float]) -> Added:
    """An added class from a folder of its images: `calibration` = (accept, share) holds out that share of
    them to calibrate its threshold on, the rest make its sub-centroids (k' = min(k, images left))."""
    if not folder.is_dir():
        raise DataError(f"the images of the added class {name!r} should be a folder; {folder} is not one")
    files = [f.resolve() for f in image_files(folder)]
    if not files:
        raise DataError(f"{folder} (the added class {name!r}) holds no images")
    x = embed_files(sess, files, prep=prep, batch_size=batch_size, threads=threads or 2, desc=f"embed {name}")
    accept, share = calibration
    held = abstention.hold_out(np.zeros(len(files), int), share, seed)
    fit = np.flatnonzero(~held)
    if k == ALL:  # each image its own sub-centroid
        cents, near = x[fit] / np.linalg.norm(x[fit], axis=1, keepdims=True), np.arange(len(fit))
    else:
        cents, near = class_subcentroids(x[fit], min(k, len(fit)), method=method, seed=seed, keep_means=keep_means)
    threshold = None
    if share > 0:
        threshold = abstention.class_threshold(cents, x[held], accept)
        if not held.any():
            log.warning("the added class %r has one image: nothing to calibrate its threshold on, it accepts every "
                        "image it wins", name)
    return Added(cents, fit[near], threshold, files)


def _thresholds(cs: CentroidSet, kept: list[int], added: dict[str, Added]) -> np.ndarray | None:
    """The edited set's thresholds: the kept classes' as they were, the added ones' as calibrated; None when
    neither the base set nor any added class has one."""
    if cs.thresholds is None and all(a.threshold is None for a in added.values()):
        return None
    new = [UNCALIBRATED if a.threshold is None else a.threshold for a in added.values()]
    return np.concatenate([cs.class_thresholds[kept], np.asarray(new, np.float32)]).astype(np.float32)


def _assemble(cs: CentroidSet, kept: list[int], rename: dict[str, str], added: dict[str, Added],
              source: dict) -> CentroidSet:
    """The edited set: kept rows copied as they are (zero-padded when the widest class grows), then the
    added classes; exemplar ids of added images continue after the base set's largest."""
    names = [rename.get(cs.class_names[i], cs.class_names[i]) for i in kept] + list(added)
    check_class_names(names, "the edited class list")
    ks = [cs.ks[i] for i in kept] + [len(a.subcentroids) for a in added.values()]
    kmax, d = max(ks), cs.dim
    cents = np.zeros((len(names), kmax, d), np.float32)  # (C', Kmax', D)
    ids = np.full((len(names), kmax), -1, np.int64)
    old_kmax = min(cs.centroids.shape[1], kmax)  # (a removed class may have been the widest: only padding is cut)
    cents[:len(kept), :old_kmax] = cs.centroids[kept, :old_kmax]
    base_ids = cs.exemplar_ids if cs.exemplar_ids is not None else np.full(cs.centroids.shape[:2], -1, np.int64)
    ids[:len(kept), :old_kmax] = base_ids[kept, :old_kmax]
    exemplar_names = [list(cs.exemplar_names[i]) if cs.exemplar_names else [None] * cs.ks[i] for i in kept]
    yx = None
    if cs.exemplar_yx is not None:  # a segmentation set: the anchoring pixels travel with their rows
        yx = np.full((len(names), kmax, 2), -1, np.int32)  # (C', Kmax', 2)
        yx[:len(kept), :old_kmax] = cs.exemplar_yx[kept, :old_kmax]
    next_id = int(base_ids.max(initial=-1)) + 1
    for row, a in enumerate(added.values(), start=len(kept)):
        cents[row, :len(a.subcentroids)] = a.subcentroids
        ids[row, :len(a.subcentroids)] = next_id + a.near
        next_id += len(a.files)
        exemplar_names.append([str(a.files[i]) for i in a.near])
        if yx is not None:
            yx[row, :len(a.subcentroids)] = a.yx
    return CentroidSet(centroids=cents, ks=ks, class_names=names, embed_fingerprint=cs.embed_fingerprint,
                       exemplar_ids=ids, exemplar_names=exemplar_names, source=source, task=cs.task,
                       exemplar_yx=yx, thresholds=_thresholds(cs, kept, added))
