"""Triton python-backend model that runs one ONNX graph with onnxruntime (the `python` runtime).

`dnc repo build --runtime python` copies this file to <model>/1/model.py beside <model>/1/model.onnx.
It runs inside Triton's python stub, so it imports only numpy, onnxruntime and Triton's own utils.
Config parameters: `intra_op_threads` (onnxruntime threads, 0: one per core) and `reject_non_finite`
("true": a request holding NaN or inf gets an error naming it, and the rest of the batch is served).
The dynamic batcher hands several requests at once: they are run as one batch and split again.
The stub's embedded interpreter ignores PYTHONPATH, so `dnc serve` names the environment holding
numpy and onnxruntime in DNC_SITE_PACKAGES (unset in the official container, which has them).
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


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.input = cfg["input"][0]["name"]
        self.outputs = [o["name"] for o in cfg["output"]]
        self.reject_non_finite = params.get("reject_non_finite", "false") == "true"
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
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(problem))
            else:
                arrays.append(x)
                served.append(i)
        if arrays:
            outs = self.session.run(self.outputs, {self.input: np.concatenate(arrays)})
            start = 0
            for i, x in zip(served, arrays, strict=True):
                stop = start + len(x)
                tensors = [pb_utils.Tensor(name, _triton_array(out[start:stop]))
                           for name, out in zip(self.outputs, outs, strict=True)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def _problem(self, x):
        if x.shape[0] == 0:
            return f"{self.input}: empty batch (0 images)"
        if self.reject_non_finite and x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int(np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0][0])
            return f"{self.input}: image {bad} of the request holds NaN or inf values"
        return None


def _triton_array(a):
    """onnxruntime returns strings as str objects; Triton's BYTES tensors want bytes objects."""
    if a.dtype == object:
        return np.array([s.encode() if isinstance(s, str) else s for s in a.reshape(-1)], dtype=object).reshape(a.shape)
    return a
