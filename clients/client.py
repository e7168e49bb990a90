"""Python client of a DNC Triton server: images in, predictions with nearest-centroid evidence out.

    with DNCClient("localhost:8000", protocol="http", model="dnc") as c:
        for p in c.classify_files(["shoe.png", "folder/"], top_k=3):
            print(p.source, p.top[0].label, p.top[0].score, p.margin, p.set_id)
    with DNCClient("localhost:8000", model="scenes") as c:       # a segmenter
        for s in c.segment_files(["frame.png"]):
            print(s.source, s.labels.shape, [(e.label, e.fraction) for e in s.classes])

HTTP and gRPC (tritonclient), binary tensors. Pictures travel as the server takes them raw (INPUTS):
uint8 pixels at their own size (the default), the files' PNG/JPEG bytes, or float32 preprocessed here;
the server preprocesses raw ones as the export's manifest says (core/preprocess.py, the same code
this client runs for float32). Every answer names the class-list version (`set_id`) that produced it;
labels come from the same head, so they always match it. Requests carry as many pictures as fit the
served model's pixel budget, read from the server; pictures above its per-picture limit are refused before
sending, or sent downscaled with `downscale` and answered at their own size (clients/sizing.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dnc.clients import sizing
from dnc.clients.errors import ClientError
from dnc.clients.inflight import InFlight
from dnc.clients.predictions import Prediction, Ranked
from dnc.clients.seg_results import Segmentation, segmentations
from dnc.clients.served_models import choose_model, of_task, served_text, wanted_task
from dnc.clients.video_requests import Requests
from dnc.core import formats as F
from dnc.core import preprocess, tasks
from dnc.core.images import IMAGE_EXTENSIONS, DataError, image_files, read_picture

log = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
INPUTS = ("pixels", "encoded", "float32")  # how pictures travel (formats.PIXELS, ENCODED, IMAGES)
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
RETRY_WAITS = (2.0, 6.0, 15.0)  # seconds before each retry of an image request (4 attempts in all): long
# enough for a supervised server to come back after a crash (README: longest 8.64 s to ready)


ABSTENTION_OUTPUTS = (F.KNOWN, F.THRESHOLD, F.UNKNOWN_PIXELS)  # what a repository built before abstention lacks
REFUSED = {"400", "StatusCode.INVALID_ARGUMENT"}  # tritonclient's status() of a request refused for its input


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

    def __init__(self, url: str | None = None, protocol: str = "http", model: str | None = F.ENTRY_MODEL,
                 timeout: float = 60.0, task: str | tasks.Task | None = None, downscale: bool = False,
                 abstain: bool = True, expect_set_id: str | None = None):
        """`model` None: the one served model of `task` (see choose_model; `chosen` is then True). `task` (a
        core/tasks.py description or its name): a model of another task is refused, naming those of this one.
        `downscale`: files above the model's per-picture limit are sent downscaled (clients/sizing.py).
        `abstain` False: every request turns abstention off (the best class is the answer, however low).
        `expect_set_id`: every request must be answered by this class list (a server on another refuses it).
        `task` (the served model's, read from the server) is then a tasks.Task."""
        if protocol not in PROTOCOLS:
            raise ClientError(f"unknown `protocol` {protocol!r}; choose http or grpc")
        if url is not None and not url.strip():
            raise ClientError("`url` is empty: give the server's HOST:PORT, or leave `url` out for "
                              f"{DEFAULT_URLS[protocol]}")
        self.url, self.protocol, self.model = url or DEFAULT_URLS[protocol], protocol, model
        self.chosen, self._want, self.downscale, self.abstain = model is None, wanted_task(task), downscale, abstain
        self.expect_set_id = expect_set_id
        self.served: dict[str, str] = {}  # the DNC models served, name -> task name (read when choosing the model)
        if "://" in self.url:
            raise ClientError(f"`url` {self.url}: give HOST:PORT without a scheme (e.g. localhost:8000)")
        self._local, self._clients, self._timeout = threading.local(), [], timeout
        self._pools: dict[int, Requests] = {}  # request threads by concurrency, kept for the client's life
        try:
            if protocol == "http":
                import tritonclient.http as tc
            else:
                import tritonclient.grpc as tc
            self._tc = tc
            self._client  # noqa: B018 (this thread's connection, made now: a malformed address is refused here)
        except Exception as e:  # tritonclient refuses malformed addresses with its own exception type
            raise ClientError(f"`url` {self.url}: {_first_line(e)}") from e
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    @property
    def _client(self):
        """This thread's connection: tritonclient's are not thread-safe, so each thread sending requests (see
        `concurrency`) makes its own; close() closes them all."""
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._tc.InferenceServerClient(
                self.url, **({"connection_timeout": self._timeout, "network_timeout": self._timeout}
                             if self.protocol == "http" else {}))
            self._clients.append(c)
        return c

    def _call(self, fn, *args, **kwargs):
        """A tritonclient call with this client's deadline (gRPC calls take it per call)."""
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self._timeout
        return fn(*args, **kwargs)

    def _connect(self) -> None:
        """Check the server is live and the model ready (choosing it when not named); read the model's
        batch size, preprocessing and pixel budget per request (`max_pixels`)."""
        url = self.url
        try:
            live = self._call(self._client.is_server_live)
        except Exception as e:  # connection errors differ by protocol (socket errors, gRPC UNAVAILABLE)
            raise ClientError(f"no Triton server answers at {url} ({self.protocol}): is `dnc serve` running? "
                              f"({_first_line(e)})") from e
        if not live:
            raise ClientError(f"the Triton server at {url} is not live")
        if self.model is None:
            self.served = self.served_models()
            self.model = choose_model(self.served, self._want, url)
        model = self.model
        try:
            ready = self._call(self._client.is_model_ready, model)
            cfg = self._config(model) if ready else {}
        except Exception as e:
            raise ClientError(f"the server at {url} could not describe model {model!r}: {_first_line(e)}") from e
        if not ready:
            served = served_text(self.served_models(), self._want, url)
            raise ClientError(f"model {model!r} is not ready on {url}: it is missing from the server or still "
                              f"loading (`dnc serve` loads it; check its log); {served}")
        self.max_batch = int(cfg.get("max_batch_size", 0)) or 1
        # what this model's entry takes and answers: a repository built before abstention has no `abstain`
        # input nor `known`, `threshold` and `unknown_pixels` outputs, and is still served (asked without them)
        self.served_inputs = {t.get("name") for t in cfg.get("input", [])}
        self.served_outputs = {t.get("name") for t in cfg.get("output", [])}
        try:
            self.preprocessing = json.loads(cfg["parameters"][F.META_PREPROCESSING]["string_value"])
            self.task = tasks.of(self.preprocessing)
        except (KeyError, TypeError, ValueError) as e:
            raise ClientError(f"model {model!r} on {url} carries no {F.META_PREPROCESSING} parameter: "
                              "is it a repository built by `dnc repo build`?") from e
        if self._want is not None and self.task is not self._want:
            served = self.served_models()
            fits = of_task(served, self._want)
            raise ClientError(f"model {model!r} on {url} is a {self.task.noun}, not a {self._want.noun}; "
                              f"{served_text(served, self._want, url)}"
                              + (f" (pass `model` {fits[0]})" if len(fits) == 1 else ""))
        self.max_pixels = sizing.served_budget(self._config, model)
        if self.max_pixels is None:
            raise ClientError(f"model {model!r} on {url} does not say how many pixels one request may carry (no "
                              f"{sizing.PARAMETER} parameter in its config nor in its prep step's): serve a "
                              "repository built by `dnc repo build`")

    def _config(self, model: str) -> dict:
        cfg = self._call(self._client.get_model_config, model, **({"as_json": True} if self.protocol == "grpc"
                                                                    else {}))
        return cfg.get("config", cfg)

    def served_models(self) -> dict[str, str]:
        """The DNC models this server has ready, name -> task. From Triton's statistics, which list every
        loaded model (the repository index is locked by `dnc serve`), keeping the entry models: those whose
        config carries the preprocessing parameter (step models NAME_prep... carry none)."""
        try:
            stats = self._call(self._client.get_inference_statistics,
                               **({"as_json": True} if self.protocol == "grpc" else {}))
        except Exception as e:
            raise ClientError(f"the server at {self.url} could not list its models: {_first_line(e)}") from e
        found = {}
        for name in sorted({m["name"] for m in stats.get("model_stats", []) if "_" not in m["name"]}):
            try:  # (a model unloaded since the statistics were read is not served)
                params = self._config(name).get("parameters", {})
                if F.META_PREPROCESSING in params and self._call(self._client.is_model_ready, name):
                    found[name] = (params.get(F.META_TASK, {}).get("string_value") or tasks.of(json.loads(
                        params[F.META_PREPROCESSING]["string_value"])).name)
            except Exception as e:
                log.debug("%s: model %s not listed: %s", self.url, name, _first_line(e))
        return found

    def infer(self, x: np.ndarray, outputs: tuple[str, ...] | None = None, name: str = F.IMAGES,
              extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Raw outputs for a batch `x` sent as input `name` (F.IMAGES: preprocessed (N, C, H, W) float32;
        F.PIXELS: (N, H, W, C) uint8; F.ENCODED: (N, 1) bytes), in requests of at most max_batch pictures and,
        for pixels and floats, of at most the model's pixel budget (clients/sizing.py)."""
        if x.ndim < 2 or x.shape[0] == 0:
            raise ClientError(f"expected a non-empty batch, got shape {x.shape}")
        names = outputs or self._answered(self.task.head_outputs + self.task.evidence_outputs)
        dtype = {F.IMAGES: ("FP32", np.float32), F.PIXELS: ("UINT8", np.uint8), F.ENCODED: ("BYTES", object)}[name]
        binary = {"binary_data": True} if self.protocol == "http" else {}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        hw = {F.PIXELS: x.shape[1:3], F.IMAGES: x.shape[2:4]}.get(name, ())
        step = sizing.per_request(self.max_pixels, int(np.prod(hw)), self.max_batch) if len(hw) == 2 else self.max_batch
        for i in range(0, len(x), step):
            inputs = []
            for n, arr in {name: x, **(extra or {})}.items():
                chunk = arr[i:i + step]
                kind, cast = dtype if n == name else ("BYTES", object) if arr.dtype == object else ("BOOL", bool)
                chunk = np.ascontiguousarray(chunk, dtype=cast)
                inp = self._tc.InferInput(n, list(chunk.shape), kind)
                inp.set_data_from_numpy(chunk, **binary)
                inputs.append(inp)
            req = [self._tc.InferRequestedOutput(n, **binary) for n in names]
            try:
                res = self._call(self._client.infer, self.model, inputs, outputs=req)
            except Exception as e:
                status = str(e.status()) if callable(getattr(e, "status", None)) else ""
                raise ClientError(f"{self.url} refused the request: {_first_line(e)}", status in REFUSED) from e
            for n in names:
                parts[n].append(res.as_numpy(n))
        return {n: np.concatenate(v) for n, v in parts.items()}

    def classify(self, x: np.ndarray, top_k: int = 5, sources: list[str] | None = None,
                 name: str = F.IMAGES) -> list[Prediction]:
        """Predictions with evidence for a batch x sent as input `name` (see infer); top_k is capped by what
        the server ranks (the repository's --top-k, and the number of classes)."""
        out = self.infer(x, self._answered(F.EVIDENCE_OUTPUTS) + (F.MARGIN,), name, self._abstain(len(x)))
        k = min(top_k, out[F.TOPK_CLASS].shape[1])
        preds = []
        for i in range(len(x)):
            top = [Ranked(rank=r + 1, class_id=int(out[F.TOPK_CLASS][i, r]), label=_text(out[F.TOPK_LABEL][i, r]),
                          score=float(out[F.TOPK_SCORE][i, r]), subcentroid=int(out[F.TOPK_SUBCENTROID][i, r]),
                          exemplar_id=int(out[F.TOPK_EXEMPLAR_ID][i, r]), exemplar=_text(out[F.TOPK_EXEMPLAR][i, r]))
                   for r in range(k)]
            preds.append(Prediction(sources[i] if sources else str(i), _text(out[F.SET_ID].reshape(-1)[i]),
                                    float(out[F.MARGIN].reshape(-1)[i]), top,
                                    known=bool(out[F.KNOWN].reshape(-1)[i]) if F.KNOWN in out else True,
                                    threshold=float(out[F.THRESHOLD].reshape(-1)[i]) if F.THRESHOLD in out else -1.0))
        return preds

    def _abstain(self, n: int) -> dict[str, np.ndarray]:
        """The optional inputs of a request of n pictures: the class list it must be answered by (when pinned),
        abstention turned off (none while it is on)."""
        if self.expect_set_id is not None:
            if F.EXPECT_SET_ID not in self.served_inputs:
                raise ClientError(f"model {self.model} on {self.url} cannot be asked for a given class list (built "
                                  "before pinning): rebuild its repository with `dnc repo build`")
            return {F.EXPECT_SET_ID: np.full((n, 1), self.expect_set_id.encode(), object)} | \
                self._abstain_off(n)
        return self._abstain_off(n)

    def _abstain_off(self, n: int) -> dict[str, np.ndarray]:
        if self.abstain:
            return {}
        if F.ABSTAIN not in self.served_inputs:  # a repository built before abstention never abstains anyway
            log.info("model %s on %s has no %s input (built before abstention): nothing to turn off", self.model,
                     self.url, F.ABSTAIN)
            return {}
        return {F.ABSTAIN: np.zeros((n, 1), bool)}

    def _answered(self, specs) -> tuple[str, ...]:
        """The names of `specs` this model answers (all but the abstention outputs of an older build)."""
        return tuple(s.name for s in specs if s.name in self.served_outputs or s.name not in ABSTENTION_OUTPUTS)

    def segment(self, pixels: np.ndarray, sources: list[str] | None = None, maps: bool = False,
                name: str = F.PIXELS) -> list[Segmentation]:
        """Segmentations with evidence of a batch of pictures of one size (see infer for `name`); `maps` also
        asks for the winning sub-centroid, score and margin maps."""
        if not self.task.dense:
            raise ClientError(f"model {self.model!r} is a {self.task.noun}; segmenting needs a "
                              f"{tasks.SEGMENTATION.noun}")
        wanted = (F.LABELS, *self._answered(F.SEG_HEAD_OUTPUTS[4:] + F.SEG_EVIDENCE_OUTPUTS),
                  *(F.MAP_OUTPUTS if maps else ()))
        extra = ({F.MAPS: np.ones((len(pixels), 1), bool)} if maps else {}) | self._abstain(len(pixels))
        return segmentations(self.infer(pixels, wanted, name, extra), sources or [str(i) for i in range(len(pixels))],
                             self.abstain)

    def read(self, files: list[Path]) -> np.ndarray:
        """Image files of one size after preprocessing -> (N, C, H, W) float32, preprocessed here as the
        server's manifest says (the float32 input)."""
        return np.stack([self._item(f, "float32") for f in files])

    def _send(self, files: list[Path], batch_size: int | None, skipped: list[tuple[str, str]] | None, how: str,
              call, on_result=None, concurrency: int = 1):
        """Read files and send them in requests that travel together (one size for pixels; any for bytes and
        float32 pictures of a classifier), each holding as many pictures as fit the model's pixel budget, at
        most `batch_size` (None: the model's max batch; clients/sizing.py); `call(batch, sources, name)` answers
        one request. A picture above the per-picture limit is refused before sending, or, with `downscale`,
        sent downscaled and its answer brought back to its size. Unreadable files, and pictures the server
        refuses (a refused request is sent again one picture at a time), go to `skipped`; without it, the
        first one raises. With `on_result`, each answer is handed to it as its request returns and none is
        kept (the list returned is empty). Up to `concurrency` requests are in flight while the next pictures
        are read (clients/inflight.py); answers come back in the order of the files."""
        if (batch_size is not None and batch_size < 1) or concurrency < 1:
            raise ClientError(f"`batch_size` and `concurrency` must be >= 1, got {batch_size} and {concurrency}")
        if how not in INPUTS:
            raise ClientError(f"unknown input `how` {how!r}; choose one of {', '.join(INPUTS)}")
        name = {"pixels": F.PIXELS, "encoded": F.ENCODED, "float32": F.IMAGES}[how]
        cap = min(batch_size or self.max_batch, self.max_batch)
        results, pending, key, held = [], [], None, 0
        originals: dict[str, tuple[int, int]] = {}  # source -> its (H, W), for pictures sent downscaled
        desc = "segment" if self.task.dense else "classify"

        def send(items: list[tuple[np.ndarray, str]]) -> tuple[list, list]:  # (answers, refused): on a request thread
            try:
                answers = call(np.stack([p for p, _ in items]), [s for _, s in items], name)
                return [sizing.restored(a, *originals[a.source]) if isinstance(a, Segmentation) and a.source in
                        originals else a for a in answers], []
            except ClientError as e:
                if not e.refused or skipped is None:
                    raise
                if len(items) == 1:  # this picture is what the server refuses: report it, go on
                    return [], [(items[0][1], str(e))]
                parts = [send([item]) for item in items]  # find which: one request each
                return [a for p in parts for a in p[0]], [r for p in parts for r in p[1]]

        def take(done: tuple[list, list]) -> None:  # on this thread, in the order of the requests
            answers, refused = done
            if refused:
                skipped.extend(refused)
            for a in answers:
                if on_result is None:
                    results.append(a)
                else:
                    on_result(a)

        def flush():
            nonlocal held
            if pending:
                flight.put(send, list(pending))
                pending.clear()
                held = 0

        if concurrency > 1 and concurrency not in self._pools:  # (threads reused: one connection each, not one a call)
            self._pools[concurrency] = Requests(concurrency)
        flight = InFlight(concurrency, take, self._pools.get(concurrency))
        with tqdm(total=len(files), desc=desc, unit="img", disable=len(files) <= cap or None) as bar, flight:
            for f in files:
                try:
                    item, shape, pixels, original = self._fitted(f, self._item(f, how), how)
                except DataError as e:
                    if skipped is None:
                        raise
                    skipped.append((str(f), str(e)))
                    bar.update(1)
                    continue
                if original and self.task.dense:
                    originals[str(f)] = original
                if pending and (shape != key or len(pending) >= cap or held + pixels > self.max_pixels):
                    flush()
                key, held = shape, held + pixels
                pending.append((item, str(f)))
                bar.update(1)
            flush()
            flight.drain()
        return results

    def _fitted(self, f: Path, item: np.ndarray, how: str):
        """(item, size key, pixels, None) for a picture within the model's per-picture limit; above it a
        DataError naming the picture, its size, the limit and `downscale`, or with `downscale` the picture
        downscaled to fit (item, key, pixels, its own (H, W))."""
        key, (w, h) = self._size_key(f, item, how)
        if w * h <= self.max_pixels:
            return item, key, w * h, None
        if not self.downscale:
            raise DataError(sizing.too_large(f"picture {f}", width=w, height=h, max_pixels=self.max_pixels,
                                             model=self.model))
        prep = self.preprocessing
        small = sizing.downscaled(item if how == "pixels" else read_picture(f, prep["color"], prep), self.max_pixels)
        item = {"pixels": lambda: small, "float32": lambda: self._float32(small),
                "encoded": lambda: np.array([sizing.png(small)], dtype=object)}[how]()
        key, (sw, sh) = self._size_key(f, item, how)
        log.info("%s: %dx%d sent downscaled to %dx%d (%s)", f, w, h, sw, sh, sizing.FLAG)
        return item, key, sw * sh, (h, w)

    def _size_key(self, f: Path, item: np.ndarray, how: str):
        """(what pictures that may share a request have in common, the picture's (width, height) as sent).
        Shared: pixels, and a segmenter's pictures in any form, one size (a segmenter answers at the picture's
        size); a classifier's bytes or floats, nothing."""
        if how != "encoded":
            h, w = item.shape[:2] if how == "pixels" else item.shape[1:3]
            return (item.shape if how == "pixels" or self.task.dense else None), (w, h)
        try:  # the header only, after the reader's cost scan; the size as the server will turn it upright
            with preprocess.open_bytes(item.reshape(-1)[0], f"image {f}") as im:
                w, h = im.size
                size = (h, w) if preprocess.orientation(im) >= 5 else (w, h)
        except preprocess.ImageError as e:
            raise DataError(str(e)) from None
        except Exception as e:  # a file with a PNG/JPEG signature and a damaged header
            raise DataError(f"cannot read image {f}: {type(e).__name__}: {e}") from None
        return (size if self.task.dense else None), size

    def _item(self, f: Path, how: str) -> np.ndarray:
        if how == "encoded":
            data = Path(f).read_bytes()
            if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8")):
                raise DataError(f"{f} is not a PNG or JPEG file: send it as pixels (`how` pixels)")
            return np.array([data], dtype=object)  # (1,)
        pixels = read_picture(f, self.preprocessing["color"], self.preprocessing)  # (H, W, C) at its own size
        return pixels if how == "pixels" else self._float32(pixels)

    def _float32(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> (C, H', W') float32, preprocessed here as the server's manifest says."""
        x = preprocess.prepare(preprocess.from_pixels(pixels), self.preprocessing)
        return preprocess.normalise(x[None], self.preprocessing)[0]

    def classify_files(self, paths: list[str | Path], top_k: int = 5, batch_size: int | None = None,
                       skipped: list[tuple[str, str]] | None = None, how: str = "pixels",
                       concurrency: int = 1) -> list[Prediction]:
        """Predictions for image files and folders (see collect_images), sent in batches as `how` says
        (INPUTS), up to `concurrency` requests in flight. With `skipped` given, a file that cannot be read (or is
        refused by the reader's size limits) is appended to it as (path, reason) and the others go on; without
        it, the first one raises."""
        return self._send(collect_images(paths), batch_size=batch_size, skipped=skipped, how=how,
                          call=lambda x, src, name: self.classify(x, top_k, src, name), concurrency=concurrency)

    def segment_files(self, paths: list[str | Path], batch_size: int | None = None,
                      skipped: list[tuple[str, str]] | None = None, how: str = "pixels", maps: bool = False,
                      on_result=None, waits: tuple[float, ...] = RETRY_WAITS) -> list[Segmentation]:
        """Segmentations of image files and folders, as classify_files does for predictions. With
        `on_result(segmentation)`, each answer is handed over as its request returns and none is kept (memory
        bounded by one request; the list returned is empty). A request that fails for a reason other than its
        input (connection closed or refused, server restarting) is sent again after each of `waits` seconds
        (len(waits) + 1 attempts; video requests retry too); a refused input is not retried."""
        return self._send(collect_images(paths), batch_size=batch_size, skipped=skipped, how=how,
                          call=lambda x, src, name: self.retried(lambda: self.segment(x, src, maps, name), src, waits),
                          on_result=on_result)

    def retried(self, request, sources: list[str], waits: tuple[float, ...] = RETRY_WAITS):
        """request(), sent again after each of `waits` seconds while it fails with a ClientError that does not
        refuse its input; the last failure raises, naming the pictures and the attempts."""
        for attempt in range(len(waits) + 1):
            try:
                return request()
            except ClientError as e:
                if e.refused:  # a refused input stays refused
                    raise
                if attempt == len(waits):
                    what = sources[0] if len(sources) == 1 else f"{sources[0]} and {len(sources) - 1} more"
                    raise ClientError(f"{e} (request for {what}, {attempt + 1} attempts)") from e
                log.warning("request for %s failed (%s); retrying in %g s (attempt %d of %d)", sources[0],
                            _first_line(e), waits[attempt], attempt + 2, len(waits) + 1)
                time.sleep(waits[attempt])
        raise AssertionError("unreachable")

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        for c in self._clients:
            c.close()

    def __enter__(self) -> DNCClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _first_line(e: Exception) -> str:
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__
