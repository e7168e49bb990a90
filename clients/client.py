"""Python client of a DNC Triton server: images in, predictions with nearest-centroid evidence out.

    with DNCClient("localhost:8000", protocol="http") as c:
        for p in c.classify_files(["shoe.png", "folder/"], top_k=3):
            print(p.source, p.top[0].label, p.top[0].score, p.margin, p.set_id)

HTTP and gRPC (tritonclient), binary tensors. The preprocessing comes from the served entry model's
config (the export's manifest, copied there by `dnc repo build`), so a client never re-types it.
Every answer names the class-list version (`set_id`) that produced it; labels come from the same
head, so they always match it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export import formats as F
from training.images import IMAGE_EXTENSIONS, DataError, image_files, read_image_array
from training.preprocess import normalise

log = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}


class ClientError(ValueError):
    """The server is down, not ready, refused the request, or answered something unusable."""


@dataclass
class Ranked:
    """One of the best classes of an image, with the sub-centroid that gave it its score."""
    rank: int
    class_id: int
    label: str
    score: float  # cosine similarity to the winning sub-centroid
    subcentroid: int
    exemplar_id: int  # id of the real image the sub-centroid is anchored to; -1 when not anchored
    exemplar: str  # that image's path or name; "" when not anchored


@dataclass
class Prediction:
    source: str  # file path, or the row index for arrays
    set_id: str  # the class list (centroid set version) that answered
    margin: float  # best minus second-best class score
    top: list[Ranked]

    @property
    def label(self) -> str:
        return self.top[0].label

    def to_dict(self) -> dict:
        return asdict(self)


def collect_images(paths: list[str | Path]) -> list[Path]:
    """Files named, and image files under folders named (recursively, sorted); refuses a missing path."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


class DNCClient:
    """A connection to the entry model of a DNC server; checks on creation that it is up and ready."""

    def __init__(self, url: str | None = None, protocol: str = "http", model: str = F.ENTRY_MODEL,
                 timeout: float = 60.0):
        if protocol not in PROTOCOLS:
            raise ClientError(f"unknown protocol {protocol!r}; choose http or grpc")
        if url is not None and not url.strip():
            raise ClientError("--url is empty: give the server's HOST:PORT, or leave --url out for "
                              f"{DEFAULT_URLS[protocol]}")
        self.url, self.protocol, self.model = url or DEFAULT_URLS[protocol], protocol, model
        if "://" in self.url:
            raise ClientError(f"--url {self.url}: give HOST:PORT without a scheme (e.g. localhost:8000)")
        try:
            if protocol == "http":
                import tritonclient.http as tc
                self._client = tc.InferenceServerClient(self.url, connection_timeout=timeout, network_timeout=timeout)
            else:
                import tritonclient.grpc as tc
                self._client = tc.InferenceServerClient(self.url)
        except Exception as e:  # tritonclient refuses malformed addresses with its own exception type
            raise ClientError(f"--url {self.url}: {_first_line(e)}") from e
        self._tc, self._timeout = tc, timeout
        try:
            self._connect()
        except BaseException:
            self._client.close()
            raise

    def _call(self, fn, *args, **kwargs):
        """A tritonclient call with this client's deadline (gRPC calls take it per call)."""
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self._timeout
        return fn(*args, **kwargs)

    def _connect(self) -> None:
        """Check the server is live and the model ready; read the model's batch size and preprocessing."""
        url, model = self.url, self.model
        try:
            live = self._call(self._client.is_server_live)
        except Exception as e:  # connection errors differ by protocol (socket errors, gRPC UNAVAILABLE)
            raise ClientError(f"no Triton server answers at {url} ({self.protocol}): is `dnc serve` running? "
                              f"({_first_line(e)})") from e
        if not live:
            raise ClientError(f"the Triton server at {url} is not live")
        try:
            ready = self._call(self._client.is_model_ready, model)
            cfg = self._call(self._client.get_model_config, model,
                             **({"as_json": True} if self.protocol == "grpc" else {})) if ready else {}
        except Exception as e:
            raise ClientError(f"the server at {url} could not describe model {model!r}: {_first_line(e)}") from e
        if not ready:
            raise ClientError(f"model {model!r} is not ready on {url}: it is missing from the server or still "
                              "loading (`dnc serve` loads it; check its log)")
        cfg = cfg.get("config", cfg)
        self.max_batch = int(cfg.get("max_batch_size", 0)) or 1
        try:
            self.preprocessing = json.loads(cfg["parameters"][F.META_PREPROCESSING]["string_value"])
        except (KeyError, TypeError, ValueError) as e:
            raise ClientError(f"model {model!r} on {url} carries no {F.META_PREPROCESSING} parameter: "
                              "is it a repository built by `dnc repo build`?") from e

    def infer(self, x: np.ndarray, outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Raw outputs for preprocessed images x (N, C, H, W) float32, sent in batches of max_batch."""
        if x.ndim != 4 or x.shape[0] == 0:
            raise ClientError(f"expected a non-empty (N, C, H, W) batch, got shape {x.shape}")
        names = outputs or tuple(s.name for s in F.HEAD_OUTPUTS + F.EVIDENCE_OUTPUTS)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for i in range(0, len(x), self.max_batch):
            chunk = np.ascontiguousarray(x[i:i + self.max_batch], dtype=np.float32)
            inp = self._tc.InferInput(F.IMAGES, list(chunk.shape), "FP32")
            if self.protocol == "http":
                inp.set_data_from_numpy(chunk, binary_data=True)
                req = [self._tc.InferRequestedOutput(n, binary_data=True) for n in names]
            else:
                inp.set_data_from_numpy(chunk)
                req = [self._tc.InferRequestedOutput(n) for n in names]
            try:
                res = self._call(self._client.infer, self.model, [inp], outputs=req)
            except Exception as e:
                raise ClientError(f"{self.url} refused the request: {_first_line(e)}") from e
            for n in names:
                parts[n].append(res.as_numpy(n))
        return {n: np.concatenate(v) for n, v in parts.items()}

    def classify(self, x: np.ndarray, top_k: int = 5, sources: list[str] | None = None) -> list[Prediction]:
        """Predictions with evidence for preprocessed images x (N, C, H, W); top_k is capped by what the
        server ranks (the repository's --top-k, and the number of classes)."""
        out = self.infer(x, tuple(s.name for s in F.EVIDENCE_OUTPUTS) + (F.MARGIN,))
        k = min(top_k, out[F.TOPK_CLASS].shape[1])
        preds = []
        for i in range(len(x)):
            top = [Ranked(r + 1, int(out[F.TOPK_CLASS][i, r]), _text(out[F.TOPK_LABEL][i, r]),
                          float(out[F.TOPK_SCORE][i, r]), int(out[F.TOPK_SUBCENTROID][i, r]),
                          int(out[F.TOPK_EXEMPLAR_ID][i, r]), _text(out[F.TOPK_EXEMPLAR][i, r])) for r in range(k)]
            preds.append(Prediction(sources[i] if sources else str(i), _text(out[F.SET_ID].reshape(-1)[i]),
                                    float(out[F.MARGIN].reshape(-1)[i]), top))
        return preds

    def read(self, files: list[Path]) -> np.ndarray:
        """Image files (any size, RGB or gray) -> (N, C, H, W) float32, preprocessed as the server says."""
        prep = self.preprocessing
        raw = np.stack([read_image_array(f, prep["channels"], prep["image_size"]) for f in files])  # uint8
        return normalise(raw, prep)

    def classify_files(self, paths: list[str | Path], top_k: int = 5, batch_size: int = 64,
                       skipped: list[tuple[str, str]] | None = None) -> list[Prediction]:
        """Predictions for image files and folders (see collect_images), read and sent in batches. With
        `skipped` given, a file that cannot be read (or is refused by the reader's size limits) is
        appended to it as (path, reason) and the others go on; without it, the first one raises."""
        if batch_size < 1:
            raise ClientError(f"--batch-size must be >= 1, got {batch_size}")
        files = collect_images(paths)
        preds: list[Prediction] = []
        with tqdm(total=len(files), desc="classify", unit="img", disable=len(files) <= batch_size or None) as bar:
            for i in range(0, len(files), batch_size):
                chunk = files[i:i + batch_size]
                if skipped is None:
                    x, good = self.read(chunk), chunk
                else:
                    x, good = self._read_readable(chunk, skipped)
                if good:
                    preds += self.classify(x, top_k, [str(f) for f in good])
                bar.update(len(chunk))
        return preds

    def _read_readable(self, files: list[Path], skipped: list[tuple[str, str]]) -> tuple[np.ndarray | None, list]:
        prep, arrays, good = self.preprocessing, [], []
        for f in files:
            try:
                arrays.append(read_image_array(f, prep["channels"], prep["image_size"]))
                good.append(f)
            except DataError as e:
                skipped.append((str(f), str(e)))
        return (normalise(np.stack(arrays), prep) if arrays else None), good

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DNCClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _first_line(e: Exception) -> str:
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__
