"""A segmenter's export run in-process with onnxruntime: what the server answers, without a server.

The same steps as a served segmenter, from the same descriptions: the manifest's preprocessing executed by
core/preprocess.py, embed.onnx, and the head graph the repository serves (build_seg_head with its
evidence tables) for the export's centroid set or another one. `dnc segment --in-process` uses it; the
tests and benchmarks compare the server with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnc.core import centroid_set, manifest, preprocess, tasks
from dnc.core import formats as F
from dnc.core.errors import InputError
from dnc.export import runtime
from dnc.export.seg_head_graph import build_seg_head

MAX_PIXELS = tasks.SEGMENTATION.max_pixels  # per picture, as a served segmenter by default


class InProcessSegmenter:
    """uint8 pictures in, the served head's outputs out (numpy arrays named as formats.py names them)."""

    def __init__(self, export_dir: str | Path, centroids: str | Path | None = None, threads: int = 0):
        export_dir = Path(export_dir)
        meta = manifest.read(export_dir)
        if not tasks.of(meta).dense or meta.get("head") != "dnc":
            raise InputError(f"{export_dir} is not a DNC segmenter's export (task {tasks.of(meta)}, head "
                             f"{meta.get('head')}): in-process segmentation takes a segmenter's `dnc export` folder")
        self.preprocessing = meta["preprocessing"]
        self.task = tasks.SEGMENTATION.name
        self.embed = runtime.session(export_dir / F.EMBED_FILE, threads)
        dim = {o.name: o.shape for o in self.embed.get_outputs()}[F.PIXEL_EMBEDDING][1]  # (N, D, h, w)
        cs = centroid_set.load(centroids or export_dir, expect_fingerprint=meta["embed_fingerprint"], expect_dim=dim)
        if not tasks.task(cs.task).dense:
            raise InputError(f"{centroids} is a {cs.task} centroid set; a segmenter needs one made from masks")
        self.set_id = cs.set_id
        self.head = runtime.session(build_seg_head(cs, evidence=True).SerializeToString(), threads)
        self.outputs = [o.name for o in self.head.get_outputs()]

    def prepare(self, pixels: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 pictures (H, W[, C]) of one size -> (N, C, H, W) float32 graph input."""
        arrays = [preprocess.prepare_pixels(p, self.preprocessing, MAX_PIXELS, f"picture {i}")
                  for i, p in enumerate(pixels)]
        if len({a.shape for a in arrays}) > 1:
            raise InputError("pictures of one batch must share a size")
        return preprocess.normalise(np.stack(arrays), self.preprocessing)

    def run(self, pixels: list[np.ndarray] | np.ndarray, maps: bool = False, abstain: bool = True
            ) -> dict[str, np.ndarray]:
        """The served head's outputs for pictures of one size; `abstain` False turns abstention off."""
        x = self.prepare(pixels)  # (N, C, H, W)
        emb = self.embed.run([F.PIXEL_EMBEDDING], {F.IMAGES: x})[0]  # (N, D, h, w)
        feeds = {F.PIXEL_EMBEDDING: emb, F.OUTPUT_SIZE: np.asarray(x.shape[2:], np.int64)}
        if not abstain:
            feeds[F.ABSTAIN] = np.zeros(1, bool)
        outs = self.head.run(self.outputs, feeds)
        res = dict(zip(self.outputs, outs, strict=True))
        if not maps:
            for n in F.MAP_OUTPUTS:
                res[n] = res[n][:, :0, :0]
        return res
