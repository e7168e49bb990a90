"""The DNC head as an ONNX graph: a frozen centroid set -> cosine -> max over K -> evidence.

Built directly with onnx.helper from numpy (no torch), so `dnc centroids` can write a head for a new
class list with onnxruntime installed only. The graph, for embeddings x (N, D):
    xn = x / max(||x||, eps)                        (N, D)
    sim = xn @ P^T + pad                            (N, C*Kmax); pad is 0, or PAD_SCORE on padded slots
    sim = reshape(sim, (N, C, Kmax))
    scores = max_k sim, subcentroid = argmax_k sim  (N, C)
    top-2 over classes -> predicted, top_score, margin
and, for the served head (top_k), the evidence of the best k classes and the abstention decision:
    threshold = thresholds[predicted], known = top_score >= threshold or not abstain   (N,)
where `abstain` is an optional input (a graph input with a default of true) a request sets false to
turn abstention off, and a set without thresholds has UNCALIBRATED (-1) for every class.
Padded slots are zero vectors pushed to PAD_SCORE, below any real cosine (>= -1), so they never win.
Everything stays fp32. The class list version, class names and embedding fingerprint are written
into the graph's metadata so the served head says which list answered.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnc.core import formats as F
from dnc.core import tasks
from dnc.core.centroid_set import CentroidSet, CentroidSetError, validate
from dnc.core.errors import InputError

PAD_SCORE = -3.0  # a padded slot's similarity: below every real cosine in [-1, 1]
NORM_EPS = 1e-12  # as torch.nn.functional.normalize


def build_head(cs: CentroidSet, normalise_input: bool = True, top_k: int | None = None) -> onnx.ModelProto:
    """The head graph for a centroid set: input `embedding` (N, D), outputs formats.HEAD_OUTPUTS.

    normalise_input: L2-normalise the input first. The standalone head does, so it is exact for any
    embedding; the merged graph does not, since its embedding graph ends in that normalisation.
    top_k: also output formats.EVIDENCE_OUTPUTS for the best min(top_k, C) classes (the served head)."""
    validate(cs)
    if tasks.task(cs.task).dense:
        raise CentroidSetError(f"centroid set {cs.set_id} is a {cs.task} set (made from masks); a classifier needs "
                               "one made from labelled images")
    c, kmax, d = cs.centroids.shape
    flat = cs.centroids.reshape(c * kmax, d).astype(np.float32)  # (C*Kmax, D)
    init = [
        numpy_helper.from_array(np.ascontiguousarray(flat.T), "head.centroids_t"),  # (D, C*Kmax)
        numpy_helper.from_array(np.array(NORM_EPS, np.float32), "head.eps"),
        numpy_helper.from_array(np.array([-1, c, kmax], np.int64), "head.shape_nck"),
        numpy_helper.from_array(np.array([2], np.int64), "head.two"),
        numpy_helper.from_array(np.array(0, np.int64), "head.i0"),
        numpy_helper.from_array(np.array(1, np.int64), "head.i1"),
    ]
    nodes = [
        helper.make_node("ReduceL2", [F.EMBEDDING], ["head.norm"], axes=[1], keepdims=1),  # (N, 1)
        helper.make_node("Max", ["head.norm", "head.eps"], ["head.norm_c"]),
        helper.make_node("Div", [F.EMBEDDING, "head.norm_c"], ["head.xn"]),  # (N, D)
    ] if normalise_input else []
    nodes.append(helper.make_node("MatMul", ["head.xn" if normalise_input else F.EMBEDDING, "head.centroids_t"],
                                  ["head.sim_flat"]))  # (N, C*Kmax)
    if not normalise_input:
        init = [t for t in init if t.name != "head.eps"]
    sim_flat = "head.sim_flat"
    if not cs.k_mask.all():
        pad = np.where(cs.k_mask.reshape(-1), 0.0, PAD_SCORE).astype(np.float32)  # (C*Kmax,)
        init.append(numpy_helper.from_array(pad, "head.pad"))
        nodes.append(helper.make_node("Add", ["head.sim_flat", "head.pad"], ["head.sim_padded"]))
        sim_flat = "head.sim_padded"
    nodes += [
        helper.make_node("Reshape", [sim_flat, "head.shape_nck"], ["head.sim"]),  # (N, C, Kmax)
        helper.make_node("ReduceMax", ["head.sim"], [F.SCORES], axes=[2], keepdims=0),  # (N, C)
        helper.make_node("ArgMax", ["head.sim"], ["head.win64"], axis=2, keepdims=0),
        helper.make_node("Cast", ["head.win64"], [F.SUBCENTROID], to=TensorProto.INT32),
        helper.make_node("TopK", [F.SCORES, "head.two"], ["head.top_v", "head.top_i"], axis=1),  # (N, 2)
        helper.make_node("Gather", ["head.top_v", "head.i0"], [F.TOP_SCORE], axis=1),  # (N,)
        helper.make_node("Gather", ["head.top_v", "head.i1"], ["head.second"], axis=1),
        helper.make_node("Sub", [F.TOP_SCORE, "head.second"], [F.MARGIN]),
        helper.make_node("Gather", ["head.top_i", "head.i0"], ["head.pred64"], axis=1),
        helper.make_node("Cast", ["head.pred64"], [F.PREDICTED], to=TensorProto.INT32),
    ]
    specs = F.HEAD_OUTPUTS
    if top_k is not None:
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        ev_init, ev_nodes = _evidence(cs, min(top_k, c))
        init += ev_init
        nodes += ev_nodes
        specs = specs + F.EVIDENCE_OUTPUTS
    sizes = {"N": "batch", "C": c, "D": d, "k": min(top_k or c, c)}
    outputs = [helper.make_tensor_value_info(s.name, _onnx_type(s.dtype), [sizes[x] for x in s.dims]) for s in specs]
    inputs = [helper.make_tensor_value_info(F.EMBEDDING, TensorProto.FLOAT, ["batch", d])]
    if top_k is not None:  # optional: a graph input with an initializer is one a caller may leave out
        inputs.append(helper.make_tensor_value_info(F.ABSTAIN, TensorProto.BOOL, [1]))
    graph = helper.make_graph(nodes, "dnc_head", inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", F.OPSET)], producer_name="dnc-stack")
    model.ir_version = 8  # the IR version of opset 17
    set_metadata(model, {F.META_SET_ID: cs.set_id, F.META_CLASS_NAMES: json.dumps(cs.class_names),
                         F.META_FINGERPRINT: cs.embed_fingerprint})
    onnx.checker.check_model(model, full_check=True)
    return model


def _onnx_type(dtype: str) -> int:
    return TensorProto.STRING if dtype == "object" else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _evidence(cs: CentroidSet, k: int) -> tuple[list, list]:
    """Initialisers and nodes that rank the best k classes and look up their evidence in tables
    frozen from the set: names (C,), exemplar ids and names (C*Kmax,), the set id."""
    c, kmax, _ = cs.centroids.shape
    ids = np.full((c, kmax), -1, np.int64) if cs.exemplar_ids is None else cs.exemplar_ids.astype(np.int64)
    names = [[""] * kmax for _ in range(c)]
    for ci, row in enumerate(cs.exemplar_names or []):
        for ki, name in enumerate(row):
            names[ci][ki] = name or ""
    names = [n if i >= 0 else "" for n, i in zip(sum(names, []), ids.reshape(-1), strict=True)]  # no name without an id

    def strings(name: str, values: list[str]):
        return helper.make_tensor(name, TensorProto.STRING, [len(values)], [v.encode() for v in values])

    init = [
        strings("ev.class_names", list(cs.class_names)),  # (C,)
        strings("ev.exemplar_names", names),  # (C*Kmax,)
        strings("ev.set_id", [cs.set_id]),  # (1,)
        numpy_helper.from_array(ids.reshape(-1), "ev.exemplar_ids"),  # (C*Kmax,)
        numpy_helper.from_array(np.array([k], np.int64), "ev.k"),
        numpy_helper.from_array(np.array(kmax, np.int64), "ev.kmax"),
        numpy_helper.from_array(cs.class_thresholds, "ev.thresholds"),  # (C,)
        numpy_helper.from_array(np.array([True]), F.ABSTAIN),  # the default of the optional input
    ]
    nodes = [
        helper.make_node("TopK", [F.SCORES, "ev.k"], [F.TOPK_SCORE, "ev.cls"], axis=1),  # (N, k)
        helper.make_node("Cast", ["ev.cls"], [F.TOPK_CLASS], to=TensorProto.INT32),
        helper.make_node("Gather", ["ev.class_names", "ev.cls"], [F.TOPK_LABEL], axis=0),  # (N, k)
        helper.make_node("GatherElements", ["head.win64", "ev.cls"], ["ev.win"], axis=1),  # (N, k)
        helper.make_node("Cast", ["ev.win"], [F.TOPK_SUBCENTROID], to=TensorProto.INT32),
        helper.make_node("Mul", ["ev.cls", "ev.kmax"], ["ev.row"]),
        helper.make_node("Add", ["ev.row", "ev.win"], ["ev.slot"]),  # (N, k): index into (C*Kmax,)
        helper.make_node("Gather", ["ev.exemplar_ids", "ev.slot"], [F.TOPK_EXEMPLAR_ID], axis=0),
        helper.make_node("Gather", ["ev.exemplar_names", "ev.slot"], [F.TOPK_EXEMPLAR], axis=0),
        helper.make_node("Mul", ["head.pred64", "head.i0"], ["ev.zeros"]),  # (N,) zeros
        helper.make_node("Gather", ["ev.set_id", "ev.zeros"], [F.SET_ID], axis=0),  # (N,)
        helper.make_node("Gather", ["ev.thresholds", "head.pred64"], [F.THRESHOLD], axis=0),  # (N,)
        helper.make_node("GreaterOrEqual", [F.TOP_SCORE, F.THRESHOLD], ["ev.clears"]),
        helper.make_node("Not", [F.ABSTAIN], ["ev.no_abstain"]),  # (1,)
        helper.make_node("Or", ["ev.clears", "ev.no_abstain"], [F.KNOWN]),  # (N,)
    ]
    return init, nodes


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (replace) string metadata_props on a model."""
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in values.items():
        model.metadata_props.add(key=k, value=v)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def attach_head(embed: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """One graph for users who deploy one file: images -> embedding -> head outputs.

    `head` may skip its own input normalisation (build_head(normalise_input=False)): the embedding
    graph already ends in it.
    The merged graph keeps `embedding` as an output too (the evidence a caller may want to keep),
    and carries the metadata of both parts."""
    from onnx import compose

    head = onnx.ModelProto.FromString(head.SerializeToString())
    head.ir_version = embed.ir_version  # merging needs one IR version
    merged = compose.merge_models(embed, head, io_map=[(F.EMBEDDING, F.EMBEDDING)],
                                  outputs=[F.EMBEDDING] + [s.name for s in F.HEAD_OUTPUTS])
    set_metadata(merged, {**get_metadata(embed), **get_metadata(head)})
    onnx.checker.check_model(merged)
    return merged
