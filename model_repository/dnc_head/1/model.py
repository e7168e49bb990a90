"""Triton python-backend model that runs one ONNX graph with onnxruntime (the `python` runtime).

`dnc repo build --runtime python` copies this file to <model>/1/model.py beside <model>/1/model.onnx.
It runs inside Triton's python stub, so it imports only numpy, onnxruntime and Triton's own utils.
Config parameters: `intra_op_threads` (onnxruntime threads, 0: one per core), `passthrough` ("true": no
graph, the checked input is the output: the guard step of the native runtimes) and `input_check` (JSON,
from repository.input_check): every request is checked before any arithmetic, and a bad one gets an
INVALID_ARG error (HTTP 400) naming the image or embedding and the problem while the rest of the batch
is served:
- images: finite and within [low, high] per channel, the range the export's preprocessing produces;
- embeddings: finite, no value beyond max_abs, not all zero.
An output holding NaN or inf is never sent: that request gets an error instead. Each failure is one
line in the server log (no traceback). The dynamic batcher hands several requests at once:
they are run as one batch and split again. The stub's embedded interpreter ignores PYTHONPATH, so
`dnc serve` names the environment holding numpy and onnxruntime in DNC_SITE_PACKAGES (unset in the
official container, which has them).
"""

import json
import os
import site
from pathlib import Path

for _dir in filter(None, os.environ.get("DNC_SITE_PACKAGES", "").split(os.pathsep)):
    site.addsitedir(_dir)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

TOLERANCE = 1e-3  # of the channel's range: resizing and float rounding stay inside it


def _error(message, code="INVALID_ARG"):
    """An error response, and one line in the server log (no traceback, bounded length)."""
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_warn(f"refused a request: {message[:300]}")
    kind = getattr(pb_utils.TritonError, code, None)
    err = pb_utils.TritonError(message, kind) if kind is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(error=err)


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.input = cfg["input"][0]["name"]
        self.outputs = [o["name"] for o in cfg["output"]]
        self.check = json.loads(params.get("input_check", "{}"))
        if self.check.get("kind") == "images":
            low, high = np.asarray(self.check["low"]), np.asarray(self.check["high"])
            slack = TOLERANCE * (high - low)
            self.low, self.high = (low - slack).reshape(1, -1, 1, 1), (high + slack).reshape(1, -1, 1, 1)
        self.passthrough = params.get("passthrough", "false") == "true"  # a guard step: check, then pass on
        if self.passthrough:
            self.session = None
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = [None] * len(requests)
        arrays, served = [], []
        for i, request in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            problem = self._problem(x)
            if problem:
                responses[i] = _error(f"{self.input}: {problem}")
            else:
                arrays.append(x)
                served.append(i)
        if arrays:
            try:
                batch = np.concatenate(arrays)
                outs = [batch] if self.passthrough else self.session.run(self.outputs, {self.input: batch})
            except Exception as e:  # one line to each client, not a traceback in the log per request
                for i in served:
                    responses[i] = _error(f"inference failed: {str(e).splitlines()[0][:200]}", "INTERNAL")
                return responses
            start = 0
            for i, x in zip(served, arrays, strict=True):
                stop = start + len(x)
                parts = [out[start:stop] for out in outs]
                bad = [name for name, p in zip(self.outputs, parts, strict=True)
                       if p.dtype.kind == "f" and not np.isfinite(p).all()]
                if bad:
                    responses[i] = _error(f"{bad[0]}: the model produced NaN or inf for this request", "INTERNAL")
                else:
                    tensors = [pb_utils.Tensor(name, _triton_array(p))
                               for name, p in zip(self.outputs, parts, strict=True)]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def _problem(self, x):
        """What is wrong with one request's input, in words, or None."""
        if x.shape[0] == 0:
            return "empty batch (0 items)"
        if x.dtype.kind != "f":
            return None
        what = "image" if self.check.get("kind") == "images" else "embedding"
        rows = x.reshape(len(x), -1)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            return f"{what} {int(np.argmin(finite))} of the request holds NaN or inf values"
        if self.check.get("kind") == "images":
            outside = ((x < self.low) | (x > self.high)).reshape(len(x), -1).any(axis=1)
            if outside.any():
                i = int(np.argmax(outside))
                return (f"image {i} of the request has values in [{x[i].min():.4g}, {x[i].max():.4g}], outside the "
                        f"range the preprocessing produces ({_ranges(self.check)}): send preprocessed pixels, "
                        "((pixel / 255) - mean) / std")
        if self.check.get("kind") == "embeddings":
            big = (np.abs(rows) > self.check["max_abs"]).any(axis=1)
            if big.any():
                return f"embedding {int(np.argmax(big))} of the request has values beyond +-{self.check['max_abs']:g}"
            zero = ~rows.any(axis=1)
            if zero.any():
                return f"embedding {int(np.argmax(zero))} of the request is all zeros"
        return None


def _ranges(check):
    return ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(check["low"], check["high"], strict=True))


def _triton_array(a):
    """onnxruntime returns strings as str objects; Triton's BYTES tensors want bytes objects."""
    if a.dtype == object:
        return np.array([s.encode() if isinstance(s, str) else s for s in a.reshape(-1)], dtype=object).reshape(a.shape)
    return a
