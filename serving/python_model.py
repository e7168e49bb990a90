"""Triton python-backend models of a DNC repository: the prep step, or one ONNX graph run with onnxruntime.

Each role is a class of its own (PrepModel, GraphModel; what they share is in _Model and the functions
below); TritonPythonModel, which Triton's stub loads, builds the one its config's `role` names.

`dnc repo build` copies this file to <model>/1/model.py (and, for the prep step, core/preprocess.py
beside it). It runs inside Triton's python stub, so it imports only numpy, onnxruntime, PIL and Triton's
own utils. Every request is checked before any arithmetic; a bad one gets an INVALID_ARG error (HTTP 400)
naming the picture or tensor and the problem while the rest of the batch is served, and one line in the
server log (no traceback). Config parameters:
- role "prep": exactly one of float32 `images` (preprocessed), uint8 `pixels` (N, H, W, 1|3) at any size,
  or `encoded` PNG/JPEG bytes (N, 1); pixels and bytes are preprocessed by preprocess.py as the
  `preprocessing` parameter (the export's manifest) says, refused beyond `max_pixels` per picture and
  per request (all its pictures together; for bytes, read from their headers before any is decoded);
  floats must be finite and within the range the preprocessing produces. Out: the checked images and,
  for a segmenter, each picture's own (height, width) for the head.
- role "graph": `intra_op_threads` (0: one per core), `arena` ("1": onnxruntime's CPU arena, for graphs whose
  inputs have one size), `input_check` (JSON, repository.input_check):
  images finite and in range, or embeddings finite, not all zero, no value beyond max_abs. A segmenter's
  head also has `size_input` (the (N, 2) output sizes: one per request, checked against `max_pixels`),
  and `max_pixels` bounds the pixels of one request (items x H x W, of the images or of the output size)
  and of one run of the graph (a batch of larger total is run in pieces),
  `maps_input` (optional bool: fill the score maps) and `map_outputs` (sent as 0 x 0 unless asked). A head
  has `abstain_input` (optional bool: false turns abstention off for the request; fed to the graph's own
  optional input of that name only then, so the graph's default, on, holds otherwise), and `expect_input`
  (optional bytes: the set id the request must be answered by; the head's own is its graph's metadata under
  `set_id_key`): a request asking for another list gets an UNAVAILABLE error (HTTP 503) naming both, so a
  load balancer may try another replica and a pinned client learns the list changed.
An output holding NaN or inf is never sent: that request gets an error instead. The dynamic batcher hands
several requests at once: those of one input shape are run as one batch and split again.
Memory is handed back after each request (issue 23, item 5): onnxruntime runs without its CPU arena where
pictures come in any size (a segmenter's: the arena kept the largest request's buffers for good), buffers
of 1 MB and more are mapped for themselves (a fixed mmap threshold: glibc's own rises to the largest buffer
freed and then keeps such buffers in its heap), and after a call that handled more than TRIM_PIXELS pixels
glibc's free heap pages are returned (malloc_trim). The stub's
embedded interpreter ignores PYTHONPATH, so `dnc serve` names the environment holding numpy, PIL and
onnxruntime in DNC_SITE_PACKAGES (unset in the official container, which has them).
"""

import ctypes
import importlib.util
import json
import os
import site
import sys
from pathlib import Path

for _dir in filter(None, os.environ.get("DNC_SITE_PACKAGES", "").split(os.pathsep)):
    site.addsitedir(_dir)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

TOLERANCE = 1e-3  # of the channel's range: resizing and float rounding stay inside it
TRIM_PIXELS = 1 << 18  # a call that handled more pixels than this returns glibc's free pages afterwards


MMAP_THRESHOLD = 1 << 20  # buffers from 1 MB up are mapped for themselves, unmapped when freed
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _libc():
    """glibc, set so freed large buffers go back to the system at once: a fixed mmap threshold (glibc
    otherwise raises it to the largest buffer freed, and keeps later buffers of that size in its heap)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        return libc
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set or trim
        return None


_LIBC = _libc()


def _give_back(pixels):
    """Return freed heap memory to the system after a large call: glibc keeps it (in its arenas, above the
    mmap threshold it raised itself) and the stub's resident size would stay at the largest request's."""
    if _LIBC is not None and pixels > TRIM_PIXELS:
        _LIBC.malloc_trim(0)


def _error(message, code="INVALID_ARG"):
    """An error response, and one line in the server log (no traceback, bounded length)."""
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_warn(f"refused a request: {message[:300]}")
    kind = getattr(pb_utils.TritonError, code, None)
    err = pb_utils.TritonError(message, kind) if kind is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(error=err)


def _sibling(name):
    """A module copied beside this file (Triton's stub does not put the model folder on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"dnc_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered first, as an import would: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _Model:
    """What every role shares: the config's tensors and parameters, the check of images against the
    preprocessing's range, the pixels a call handled (memory handed back after a large one)."""

    def __init__(self, args, params):
        cfg = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in cfg["input"]]
        self.outputs = [o["name"] for o in cfg["output"]]
        self.check = json.loads(params.get("input_check", "{}"))
        if self.check.get("kind") == "images":
            low, high = np.asarray(self.check["low"]), np.asarray(self.check["high"])
            slack = TOLERANCE * (high - low)
            self.low, self.high = (low - slack).reshape(1, -1, 1, 1), (high + slack).reshape(1, -1, 1, 1)
        self.max_pixels = int(params.get("max_pixels", "0")) or None
        self.pixels = 0  # handled in the current call

    def execute(self, requests):
        self.pixels = 0
        try:
            return self.answer(requests)
        finally:
            _give_back(self.pixels)

    def answer(self, requests):
        raise NotImplementedError

    def _image_problem(self, x):
        rows = x.reshape(len(x), -1)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            return f"image {int(np.argmin(finite))} of the request holds NaN or inf values"
        outside = ((x < self.low) | (x > self.high)).reshape(len(x), -1).any(axis=1)
        if outside.any():
            i = int(np.argmax(outside))
            return (f"image {i} of the request has values in [{x[i].min():.4g}, {x[i].max():.4g}], outside the "
                    f"range the preprocessing produces ({_ranges(self.check)}): send preprocessed pixels, "
                    "((pixel / 255) - mean) / std, or send uint8 pixels or PNG/JPEG bytes instead")
        return None


class PrepModel(_Model):
    """Role "prep": a request's float images, uint8 pixels or encoded pictures -> checked, preprocessed
    images (and, for a segmenter, each picture's own size), by preprocess.py copied beside this file."""

    def __init__(self, args, params):
        super().__init__(args, params)
        self.P = _sibling("preprocess")
        self.prep = json.loads(params["preprocessing"])
        self.names = json.loads(params["names"])

    def answer(self, requests):
        return [self._prep(r) for r in requests]

    def _prep(self, request):
        given = {}
        for kind in ("images", "pixels", "encoded"):
            t = pb_utils.get_input_tensor_by_name(request, self.names[kind])
            if t is not None:
                given[kind] = t.as_numpy()
        if len(given) != 1:
            return _error(f"give exactly one of {self.names['images']} (float32, preprocessed), {self.names['pixels']} "
                          f"(uint8, N x height x width x channels) or {self.names['encoded']} (PNG/JPEG bytes, N x 1); "
                          f"got {', '.join(self.names[k] for k in given) or 'none'}")
        kind, x = given.popitem()
        name = self.names[kind]
        if x.shape[0] == 0:
            return _error(f"{name}: empty batch (0 items)")
        try:
            if kind == "images":
                problem = self._image_problem(x)
                if problem:
                    return _error(f"{name}: {problem}")
                self._check_each(name, x.shape[3], x.shape[2])
                self._check_budget(name, len(x) * x.shape[2] * x.shape[3], len(x))
                images = x.astype(np.float32, copy=False)
            elif kind == "pixels":  # (N, H, W, C): sizes known before any work
                self._check_each(name, x.shape[2], x.shape[1])
                self._check_budget(name, len(x) * x.shape[1] * x.shape[2], len(x))
                images = self.P.normalise(np.stack([self.P.prepare_pixels(x[i], self.prep, self.max_pixels,
                                                                          f"picture {i} of the request")
                                                    for i in range(len(x))]), self.prep)
            else:
                opened = [self._header(x[i], i) for i in range(len(x))]  # headers only: nothing decoded yet
                self._check_budget(name, sum(im.size[0] * im.size[1] for im in opened), len(opened))
                sizes = {im.size for im in opened}
                if self.P.resize_mode(self.prep) == "none" and len(sizes) > 1:
                    return _error(f"{name}: the pictures of one request have different sizes ("
                                  f"{', '.join(f'{w}x{h}' for w, h in sorted(sizes))}); a segmenter answers at each "
                                  "picture's size: send pictures of different sizes in separate requests")
                arrays = [self.P.prepare(self.P.load(im, f"picture {i} of the request"), self.prep)
                          for i, im in enumerate(opened)]
                images = self.P.normalise(np.stack(arrays), self.prep)
        except self.P.ImageError as e:
            return _error(str(e))
        tensors = [pb_utils.Tensor(self.names["out"], images)]
        if self.names.get("size"):
            hw = np.tile(np.asarray(images.shape[2:], np.int64), (len(images), 1))  # (N, 2)
            tensors.append(pb_utils.Tensor(self.names["size"], hw))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _header(self, item, i):
        what = f"picture {i} of the request"
        data = item.reshape(-1)[0] if item.size == 1 else None
        if not isinstance(data, bytes):
            raise self.P.ImageError(f"{what}: {self.names['encoded']} holds one PNG or JPEG file per picture "
                                    "(N x 1 bytes)")
        return self.P.open_header(data, self.max_pixels, what, self.prep)

    def _check_each(self, name, w, h):
        """A picture above the per-picture limit is told so, with its remedy (fewer pictures would not help)."""
        if w * h > self.max_pixels:
            raise self.P.ImageError(f"{name}: each picture is {w} x {h} ({w * h / 1e6:.1f} million pixels), more than "
                                    f"the {self.max_pixels / 1e6:.1f} million this model takes per picture: send it "
                                    "downscaled (the dnc client's `downscale` does, and brings the answer back)")
        self.P.check_size(f"{name} (each picture)", w, h, max_pixels=self.max_pixels, prep=self.prep)  # (aspect ratio)

    def _check_budget(self, name, pixels, count=None):
        """One request carries at most max_pixels pixels in all (one largest picture's worth)."""
        self.pixels += pixels
        if pixels > self.max_pixels:
            fewer = _fewer(pixels, count, self.max_pixels)
            raise self.P.ImageError(f"{name}: the request's pictures hold {pixels / 1e6:.1f} million pixels in all, "
                                    f"more than the {self.max_pixels / 1e6:.1f} million one request may carry "
                                    f"(the entry model's max_pixels parameter): {fewer}")


class GraphModel(_Model):
    """Role "graph": one ONNX graph (an embedding or a head) run with onnxruntime on checked inputs, the
    requests of one input shape run as one batch (in pieces of at most `max_pixels`) and split again."""

    def __init__(self, args, params):
        super().__init__(args, params)
        self.size_input = params.get("size_input") or None
        self.maps_input = params.get("maps_input") or None
        self.abstain_input = params.get("abstain_input") or None
        self.expect_input = params.get("expect_input") or None
        self.map_outputs = set(filter(None, params.get("map_outputs", "").split(",")))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # An arena keeps the largest run's buffers resident for good: right for a graph whose inputs have one
        # size (a classifier's: its peak is its ordinary load at max batch, and reusing the buffers saves the page
        # faults of fresh ones, 15-25% of a run), wrong for a segmenter's pictures of any size (issue 23).
        opts.enable_cpu_mem_arena = params.get("arena") == "1"
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.graph_inputs = [i.name for i in self.session.get_inputs()]
        self.graph_shapes = {i.name: i.shape for i in self.session.get_inputs()}  # ints fixed, strings free
        meta = self.session.get_modelmeta().custom_metadata_map
        self.set_id = meta.get(params.get("set_id_key", ""), "")  # the class list a head answers with

    def answer(self, requests):
        responses = [None] * len(requests)
        groups = {}  # input shapes (and output size, abstention) -> [(request index, feeds, maps wanted)]
        for i, request in enumerate(requests):
            feeds, maps = {}, False
            for name in self.inputs:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if name == self.maps_input:
                    maps = t is not None and bool(t.as_numpy().any())
                elif name == self.abstain_input:
                    if t is not None and not t.as_numpy().any():  # turned off for this request
                        feeds[name] = np.zeros(1, bool)
                elif name == self.expect_input:
                    if t is not None:
                        responses[i] = self._other_list(t.as_numpy())
                elif t is not None:
                    feeds[name] = t.as_numpy()
            if responses[i] is not None:  # asked for another class list
                continue
            problem = self._problem(feeds)
            if problem:
                responses[i] = _error(problem)
                continue
            if self.size_input:
                feeds[self.size_input] = feeds[self.size_input][0]  # (2,): one size per request (checked)
            key = tuple((n, a.shape[1:] if n != self.size_input else tuple(a)) for n, a in sorted(feeds.items()))
            # (a request without abstention has the feed `abstain` and so a group of its own)
            groups.setdefault(key, []).append((i, feeds, maps))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _other_list(self, wanted):
        """None when every item asks for this head's class list, else the refusal naming both lists."""
        asked = {v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in wanted.reshape(-1)}
        if asked <= {self.set_id}:
            return None
        other = sorted(asked - {self.set_id})[0][:64]
        return _error(f"{self.expect_input}: this server answers with class list {self.set_id}, not {other!r} (the "
                      "list the request asks for): the list was swapped; retry (a replica may still have it) or ask "
                      f"without {self.expect_input}", "UNAVAILABLE")

    def _item_pixels(self, feeds):
        """Pixels one item of a request costs this graph (its output size, or its image input's H x W), or
        None for a graph with no pixels (a classifier's head)."""
        if self.size_input:
            return int(np.prod(feeds[self.size_input].reshape(-1, 2)[0]))
        x = feeds[self.inputs[0]]
        return int(x.shape[2] * x.shape[3]) if x.ndim == 4 else None

    def _run_group(self, members, responses):
        once = (self.size_input, self.abstain_input)  # one per request, the same for the whole group
        batched = {n: (_joined([f[n] for _, f, _ in members]) if n not in once else members[0][1][n])
                   for n in members[0][1]}
        n_items = len(batched[self.inputs[0]])
        px = self._item_pixels(batched)
        self.pixels += n_items * (px or 0)
        step = max(1, self.max_pixels // px) if px and self.max_pixels else n_items  # bounded memory per run
        try:
            runs = []
            for a in range(0, n_items, step):
                feeds = {n: (batched[n][a:a + step] if n not in once else batched[n])
                         for n in self.graph_inputs + [m for m in once if m in batched]}
                runs.append(self.session.run(self.outputs, feeds))
            outs = [_joined(list(parts)) for parts in zip(*runs, strict=True)]
        except Exception as e:  # one line to each client, not a traceback in the log per request
            for i, _, _ in members:
                responses[i] = _error(f"inference failed: {str(e).splitlines()[0][:200]}", "INTERNAL")
            return
        start = 0
        for i, feeds, maps in members:
            stop = start + len(feeds[self.inputs[0]])
            parts = [out[start:stop] for out in outs]
            bad = [name for name, p in zip(self.outputs, parts, strict=True)
                   if p.dtype.kind == "f" and not np.isfinite(p).all()]
            if bad:
                responses[i] = _error(f"{bad[0]}: the model produced NaN or inf for this request", "INTERNAL")
            else:
                tensors = [pb_utils.Tensor(name, _triton_array(p[:, :0, :0] if name in self.map_outputs and not maps
                                                               else p))
                           for name, p in zip(self.outputs, parts, strict=True)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop

    def _problem(self, feeds):
        """What is wrong with one request's inputs, in words, or None."""
        first = self.inputs[0]
        x = feeds.get(first)
        if x is None:
            return f"{first}: missing"
        if x.shape[0] == 0:
            return f"{first}: empty batch (0 items)"
        if self.size_input:
            size = feeds.get(self.size_input)
            if size is None or size.shape != (len(x), 2) or (size != size[:1]).any():
                return f"{self.size_input}: one (height, width) per item, the same for the whole request"
            h, w = (int(v) for v in size[0])
            if h < 1 or w < 1 or h * w > self.max_pixels:
                return f"{self.size_input}: {h} x {w} is not an output size this model answers (1 to " \
                       f"{self.max_pixels} pixels)"
        for name, a in feeds.items():  # a step model called directly with another model's shapes: 400, not 500
            want = self.graph_shapes.get(name) if name != self.size_input else None
            if want and (a.ndim != len(want) or any(isinstance(d, int) and d != n
                                                    for d, n in zip(want[1:], a.shape[1:], strict=True))):
                dims = " x ".join(str(d) if isinstance(d, int) else "any" for d in want[1:])
                return f"{name}: {' x '.join(map(str, a.shape[1:]))} per item, but this model takes {dims}"
        px = self._item_pixels(feeds)
        if px and self.max_pixels and len(x) * px > self.max_pixels:
            return (f"{first}: the request's {len(x)} items hold {len(x) * px / 1e6:.1f} million pixels in all, more "
                    f"than the {self.max_pixels / 1e6:.1f} million one request may carry (the entry model's max_pixels "
                    f"parameter): {_fewer(len(x) * px, len(x), self.max_pixels)}")
        if self.check.get("kind") == "images":
            problem = self._image_problem(x)
            return f"{first}: {problem}" if problem else None
        what = "embedding"
        rows = x.reshape(len(x), -1)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            return f"{first}: {what} {int(np.argmin(finite))} of the request holds NaN or inf values"
        big = (np.abs(rows) > self.check["max_abs"]).any(axis=1)
        if big.any():
            return f"{first}: {what} {int(np.argmax(big))} of the request has values beyond +-{self.check['max_abs']:g}"
        zero = ~rows.any(axis=1)
        if zero.any():
            return f"{first}: {what} {int(np.argmax(zero))} of the request is all zeros"
        return None


ROLES = {"prep": PrepModel, "graph": GraphModel}


class TritonPythonModel:
    """What Triton's stub loads: the model of the role the config's `role` parameter names (one file
    serves every python model of a repository, so `dnc repo build` copies it as it is)."""

    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.model = ROLES[params.get("role", "graph")](args, params)

    def execute(self, requests):
        return self.model.execute(requests)


def _joined(arrays):
    """One array of several along axis 0; a single one as it is (no copy of a large request's tensors)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _fewer(pixels, count, budget):
    """The remedy for a request over its budget: how many of its pictures fit one request."""
    if count and count > 1 and pixels // count <= budget:
        return f"send at most {budget // (pixels // count)} of these per request"
    return "send fewer pictures per request"


def _ranges(check):
    return ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(check["low"], check["high"], strict=True))


def _triton_array(a):
    """onnxruntime returns strings as str objects; Triton's BYTES tensors want bytes objects."""
    if a.dtype == object:
        return np.array([s.encode() if isinstance(s, str) else s for s in a.reshape(-1)], dtype=object).reshape(a.shape)
    return a
