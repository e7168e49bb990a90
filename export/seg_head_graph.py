"""The segmentation head as an ONNX graph: a frozen centroid set -> per-pixel labels and evidence.

Built with onnx.helper from numpy (no torch), as the classification head (export/head_graph.py), so
`dnc centroids` can write one for a new class list. For cell embeddings x (N, D, h, w) and the output
size (H, W):
    xn = x / max(||x||, eps)                                   per cell
    sim = xn . P + pad                                         (N, h, w, C, Kmax); padded slots at PAD_SCORE
    cell scores = max_k sim, cell winners = argmax_k sim       (N, h, w, C)
    scores = bilinear resize of the cell scores to (H, W)      (N, C, H, W), half-pixel centres
    labels, pixel_score, pixel_margin = top-2 over classes     (N, H, W)
    pixel_subcentroid = winner of the label at the pixel's nearest cell (the cell holding its centre)
    per image and class: pixel count, mean pixel_score over its pixels, and the sub-centroid winning most
    of them (-1 for a class with no pixel), counted with a scatter-add over C*Kmax bins
This is what training/segmenter.py and training/seg_task.py compute in torch. The served variant
(evidence=True) adds the anchored exemplar of each class's dominant sub-centroid (image id, name, y, x),
the class names and the set id, from tables frozen into the graph, so a response comes from one list.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import formats as F
from export.centroid_set import CentroidSet, CentroidSetError, validate
from export.head_graph import NORM_EPS, PAD_SCORE, _onnx_type, set_metadata

MAX_LABEL = 255  # labels and sub-centroid indices travel as uint8


def build_seg_head(cs: CentroidSet, evidence: bool = False, normalise_input: bool = True) -> onnx.ModelProto:
    """The segmentation head for a centroid set: inputs formats.SEG_HEAD_INPUTS, outputs
    formats.SEG_HEAD_OUTPUTS (and formats.SEG_EVIDENCE_OUTPUTS with `evidence`)."""
    validate(cs)
    if cs.task != "segmentation":
        raise CentroidSetError(f"centroid set {cs.set_id} is a {cs.task} set; a segmenter needs one made from "
                               "masks (dnc centroids on a segmentation folder)")
    c, kmax, d = cs.centroids.shape
    if c > MAX_LABEL or kmax > MAX_LABEL:
        raise CentroidSetError(f"a segmentation head has at most {MAX_LABEL} classes and sub-centroids per class "
                               f"(uint8 maps); this set has {c} and {kmax}")
    flat = cs.centroids.reshape(c * kmax, d).astype(np.float32)
    pad = np.where(cs.k_mask.reshape(-1), 0.0, PAD_SCORE).astype(np.float32)
    init = [
        numpy_helper.from_array(np.ascontiguousarray(flat.T), "seg.centroids_t"),  # (D, C*Kmax)
        numpy_helper.from_array(pad, "seg.pad"),  # (C*Kmax,)
        numpy_helper.from_array(np.array(NORM_EPS, np.float32), "seg.eps"),
        numpy_helper.from_array(np.array([0, 0, 0, c, kmax], np.int64), "seg.shape_nhwck"),
        numpy_helper.from_array(np.array([2], np.int64), "seg.two"),
        numpy_helper.from_array(np.array(0, np.int64), "seg.i0"),
        numpy_helper.from_array(np.array(1, np.int64), "seg.i1"),
        numpy_helper.from_array(np.array([1], np.int64), "seg.v1"),
        numpy_helper.from_array(np.array([3], np.int64), "seg.v3"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "seg.hw_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "seg.minus1"),
        numpy_helper.from_array(np.array(0.5, np.float32), "seg.half"),
        numpy_helper.from_array(np.array(1.0, np.float32), "seg.one_f"),
        numpy_helper.from_array(np.array(-1, np.int32), "seg.none"),
        numpy_helper.from_array(np.arange(c, dtype=np.int64).reshape(1, c, 1, 1), "seg.class_ids"),
        numpy_helper.from_array(np.array([c * kmax], np.int64), "seg.ck"),
        numpy_helper.from_array(np.array(kmax, np.int64), "seg.kmax"),
        numpy_helper.from_array(np.array([0, c, kmax], np.int64), "seg.shape_nck"),
    ]
    x = F.PIXEL_EMBEDDING
    n = []
    if normalise_input:
        n += [helper.make_node("ReduceL2", [x], ["seg.norm"], axes=[1], keepdims=1),  # (N, 1, h, w)
              helper.make_node("Max", ["seg.norm", "seg.eps"], ["seg.norm_c"]),
              helper.make_node("Div", [x, "seg.norm_c"], ["seg.xn"])]
        x = "seg.xn"
    n += [
        helper.make_node("Transpose", [x], ["seg.cells"], perm=[0, 2, 3, 1]),  # (N, h, w, D)
        helper.make_node("MatMul", ["seg.cells", "seg.centroids_t"], ["seg.sim_flat"]),  # (N, h, w, C*Kmax)
        helper.make_node("Add", ["seg.sim_flat", "seg.pad"], ["seg.sim_padded"]),
        helper.make_node("Reshape", ["seg.sim_padded", "seg.shape_nhwck"], ["seg.sim"]),  # (N, h, w, C, Kmax)
        helper.make_node("ReduceMax", ["seg.sim"], ["seg.cell_scores"], axes=[4], keepdims=0),  # (N, h, w, C)
        helper.make_node("ArgMax", ["seg.sim"], ["seg.cell_win"], axis=4, keepdims=0),  # (N, h, w, C)
        helper.make_node("Transpose", ["seg.cell_scores"], ["seg.cell_scores_t"], perm=[0, 3, 1, 2]),  # (N, C, h, w)
        # bilinear resize to (H, W): sizes = (N, C) of the cell scores, then the requested output size
        helper.make_node("Shape", ["seg.cell_scores_t"], ["seg.nc"], start=0, end=2),
        helper.make_node("Concat", ["seg.nc", F.OUTPUT_SIZE], ["seg.sizes"], axis=0),
        helper.make_node("Resize", ["seg.cell_scores_t", "", "", "seg.sizes"], ["seg.scores"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),  # (N, C, H, W)
        helper.make_node("TopK", ["seg.scores", "seg.two"], ["seg.top_v", "seg.top_i"], axis=1),  # (N, 2, H, W)
        helper.make_node("Gather", ["seg.top_v", "seg.i0"], [F.PIXEL_SCORE], axis=1),  # (N, H, W)
        helper.make_node("Gather", ["seg.top_v", "seg.i1"], ["seg.second"], axis=1),
        helper.make_node("Sub", [F.PIXEL_SCORE, "seg.second"], [F.PIXEL_MARGIN]),
        helper.make_node("Gather", ["seg.top_i", "seg.i0"], ["seg.labels64"], axis=1),  # (N, H, W)
        helper.make_node("Cast", ["seg.labels64"], [F.LABELS], to=TensorProto.UINT8),
    ]
    n += _nearest_cells()
    n += [
        helper.make_node("Gather", ["seg.cell_win", "seg.rows"], ["seg.win_rows"], axis=1),  # (N, H, w, C)
        helper.make_node("Gather", ["seg.win_rows", "seg.cols"], ["seg.win_px"], axis=2),  # (N, H, W, C)
        helper.make_node("Unsqueeze", ["seg.labels64", "seg.v3"], ["seg.labels_u"]),  # (N, H, W, 1)
        helper.make_node("GatherElements", ["seg.win_px", "seg.labels_u"], ["seg.sub_u"], axis=3),
        helper.make_node("Squeeze", ["seg.sub_u", "seg.v3"], ["seg.sub64"]),  # (N, H, W)
        helper.make_node("Cast", ["seg.sub64"], [F.PIXEL_SUBCENTROID], to=TensorProto.UINT8),
        # per image and class: pixel count and the sum of pixel scores, via a one-hot over classes
        helper.make_node("Unsqueeze", ["seg.labels64", "seg.v1"], ["seg.labels_c"]),  # (N, 1, H, W)
        helper.make_node("Equal", ["seg.labels_c", "seg.class_ids"], ["seg.onehot_b"]),  # (N, C, H, W)
        helper.make_node("Cast", ["seg.onehot_b"], ["seg.onehot"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["seg.onehot", "seg.hw_axes"], ["seg.count_f"], keepdims=0),  # (N, C)
        helper.make_node("Cast", ["seg.count_f"], [F.CLASS_PIXELS], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", [F.PIXEL_SCORE, "seg.v1"], ["seg.score_c"]),  # (N, 1, H, W)
        helper.make_node("Mul", ["seg.onehot", "seg.score_c"], ["seg.score_oh"]),
        helper.make_node("ReduceSum", ["seg.score_oh", "seg.hw_axes"], ["seg.score_sum"], keepdims=0),
        helper.make_node("Max", ["seg.count_f", "seg.one_f"], ["seg.count_1"]),
        helper.make_node("Div", ["seg.score_sum", "seg.count_1"], [F.CLASS_SCORE]),  # (N, C), 0 where absent
        # the dominant sub-centroid: votes of every pixel for bin label * Kmax + sub-centroid
        helper.make_node("Mul", ["seg.labels64", "seg.kmax"], ["seg.row"]),
        helper.make_node("Add", ["seg.row", "seg.sub64"], ["seg.slot"]),  # (N, H, W)
        helper.make_node("Shape", ["seg.slot"], ["seg.n"], start=0, end=1),
        helper.make_node("Concat", ["seg.n", "seg.minus1"], ["seg.flat_shape"], axis=0),
        helper.make_node("Reshape", ["seg.slot", "seg.flat_shape"], ["seg.slot_flat"]),  # (N, H*W)
        helper.make_node("Shape", ["seg.slot_flat"], ["seg.slot_shape"]),
        helper.make_node("ConstantOfShape", ["seg.slot_shape"], ["seg.ones"],
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Concat", ["seg.n", "seg.ck"], ["seg.bins_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["seg.bins_shape"], ["seg.zeros"],
                         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("ScatterElements", ["seg.zeros", "seg.slot_flat", "seg.ones"], ["seg.votes"], axis=1,
                         reduction="add"),  # (N, C*Kmax)
        helper.make_node("Reshape", ["seg.votes", "seg.shape_nck"], ["seg.votes_ck"]),  # (N, C, Kmax)
        helper.make_node("ArgMax", ["seg.votes_ck"], ["seg.dom64"], axis=2, keepdims=0),  # (N, C)
        helper.make_node("Cast", ["seg.dom64"], ["seg.dom32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["seg.count_f"], ["seg.present"], to=TensorProto.BOOL),
        helper.make_node("Where", ["seg.present", "seg.dom32", "seg.none"], [F.CLASS_SUBCENTROID]),
    ]
    specs = F.SEG_HEAD_OUTPUTS
    if evidence:
        ev_init, ev_nodes = _evidence(cs)
        init += ev_init
        n += ev_nodes
        specs = specs + F.SEG_EVIDENCE_OUTPUTS
    sizes = {"N": "batch", "C": c, "D": d, "H": "height", "W": "width", "h": "cells_h", "w": "cells_w", "2": 2}
    outputs = [helper.make_tensor_value_info(s.name, _onnx_type(s.dtype), [sizes[v] for v in s.dims]) for s in specs]
    inputs = [helper.make_tensor_value_info(F.PIXEL_EMBEDDING, TensorProto.FLOAT, ["batch", d, "cells_h", "cells_w"]),
              helper.make_tensor_value_info(F.OUTPUT_SIZE, TensorProto.INT64, [2])]
    graph = helper.make_graph(n, "dnc_seg_head", inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", F.OPSET)], producer_name="dnc-stack")
    model.ir_version = 8
    set_metadata(model, {F.META_SET_ID: cs.set_id, F.META_CLASS_NAMES: json.dumps(cs.class_names),
                         F.META_FINGERPRINT: cs.embed_fingerprint, F.META_TASK: "segmentation"})
    onnx.checker.check_model(model, full_check=True)
    return model


def _nearest_cells() -> list:
    """Nodes giving seg.rows (H,) and seg.cols (W,): the cell holding each pixel centre,
    min(floor((y + 0.5) * h / H), h - 1), from the cell map's and the output's sizes."""
    out = [helper.make_node("Shape", ["seg.cell_win"], ["seg.hw_cells"], start=1, end=3)]  # (2,) h, w
    for name, axis in (("rows", 0), ("cols", 1)):
        a = f"seg.{name}"
        out += [
            helper.make_node("Gather", [F.OUTPUT_SIZE, f"seg.i{axis}"], [f"{a}.out"], axis=0),  # () H
            helper.make_node("Gather", ["seg.hw_cells", f"seg.i{axis}"], [f"{a}.cells"], axis=0),  # () h
            helper.make_node("Range", ["seg.i0", f"{a}.out", "seg.i1"], [f"{a}.idx"]),  # (H,)
            helper.make_node("Cast", [f"{a}.idx"], [f"{a}.idx_f"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", [f"{a}.out"], [f"{a}.out_f"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", [f"{a}.cells"], [f"{a}.cells_f"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["seg.half"], [f"{a}.half"], to=TensorProto.DOUBLE),
            helper.make_node("Add", [f"{a}.idx_f", f"{a}.half"], [f"{a}.centre"]),
            helper.make_node("Mul", [f"{a}.centre", f"{a}.cells_f"], [f"{a}.scaled"]),
            helper.make_node("Div", [f"{a}.scaled", f"{a}.out_f"], [f"{a}.pos"]),
            helper.make_node("Floor", [f"{a}.pos"], [f"{a}.floor"]),
            helper.make_node("Cast", [f"{a}.floor"], [f"{a}.i"], to=TensorProto.INT64),
            helper.make_node("Sub", [f"{a}.cells", "seg.i1"], [f"{a}.last"]),
            helper.make_node("Min", [f"{a}.i", f"{a}.last"], [a]),
        ]
    return out


def _evidence(cs: CentroidSet) -> tuple[list, list]:
    """Tables frozen from the set, and the nodes that look up each class's dominant sub-centroid in them."""
    c, kmax, _ = cs.centroids.shape
    ids = np.full((c, kmax), -1, np.int64) if cs.exemplar_ids is None else cs.exemplar_ids.astype(np.int64)
    yx = np.full((c, kmax, 2), -1, np.int32) if cs.exemplar_yx is None else cs.exemplar_yx.astype(np.int32)
    names = [[""] * kmax for _ in range(c)]
    for ci, row in enumerate(cs.exemplar_names or []):
        for ki, name in enumerate(row):
            names[ci][ki] = name or ""
    names = [nm if i >= 0 else "" for nm, i in zip(sum(names, []), ids.reshape(-1), strict=True)]
    # one extra row at the end answers for classes with no pixel (-1 / "")
    ids_t = np.concatenate([ids.reshape(-1), [-1]])
    yx_t = np.concatenate([yx.reshape(-1, 2), [[-1, -1]]]).astype(np.int32)
    names_t = names + [""]

    def strings(name: str, values: list[str]):
        return helper.make_tensor(name, TensorProto.STRING, [len(values)], [v.encode() for v in values])

    init = [
        numpy_helper.from_array(ids_t, "ev.exemplar_ids"),  # (C*Kmax + 1,)
        numpy_helper.from_array(yx_t, "ev.exemplar_yx"),  # (C*Kmax + 1, 2)
        strings("ev.exemplar_names", names_t),
        strings("ev.class_names", list(cs.class_names)),  # (C,)
        strings("ev.set_id", [cs.set_id]),
        numpy_helper.from_array(np.arange(c, dtype=np.int64)[None] * kmax, "ev.row0"),  # (1, C)
        numpy_helper.from_array(np.array(c * kmax, np.int64), "ev.none_slot"),
        numpy_helper.from_array(np.arange(c, dtype=np.int64)[None], "ev.class_range"),  # (1, C)
    ]
    nodes = [
        helper.make_node("Add", ["ev.row0", "seg.dom64"], ["ev.slot_any"]),  # (N, C)
        helper.make_node("Where", ["seg.present", "ev.slot_any", "ev.none_slot"], ["ev.slot"]),
        helper.make_node("Gather", ["ev.exemplar_ids", "ev.slot"], [F.CLASS_EXEMPLAR_ID], axis=0),  # (N, C)
        helper.make_node("Gather", ["ev.exemplar_yx", "ev.slot"], [F.CLASS_EXEMPLAR_YX], axis=0),  # (N, C, 2)
        helper.make_node("Gather", ["ev.exemplar_names", "ev.slot"], [F.CLASS_EXEMPLAR], axis=0),
        helper.make_node("Mul", ["seg.dom64", "seg.i0"], ["ev.zeros_nc"]),  # (N, C) zeros
        helper.make_node("Add", ["ev.zeros_nc", "ev.class_range"], ["ev.cls"]),  # (N, C) class ids
        helper.make_node("Gather", ["ev.class_names", "ev.cls"], [F.CLASS_LABEL], axis=0),  # (N, C)
        helper.make_node("Gather", ["ev.zeros_nc", "seg.i0"], ["ev.zeros_n"], axis=1),  # (N,)
        helper.make_node("Gather", ["ev.set_id", "ev.zeros_n"], [F.SET_ID], axis=0),  # (N,)
    ]
    return init, nodes


def attach_seg_head(embed: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: images (N, Cin, H, W) -> pixel embeddings -> the head's outputs at (H, W), the output
    size read from the images' shape. Carries the metadata of both parts."""
    from onnx import compose

    from export.head_graph import get_metadata

    head = onnx.ModelProto.FromString(head.SerializeToString())
    head.ir_version = embed.ir_version
    merged = compose.merge_models(embed, head, io_map=[(F.PIXEL_EMBEDDING, F.PIXEL_EMBEDDING)],
                                  outputs=[s.name for s in F.SEG_HEAD_OUTPUTS])
    # the head's size input becomes the images' height and width
    keep = [i for i in merged.graph.input if i.name != F.OUTPUT_SIZE]
    del merged.graph.input[:]
    merged.graph.input.extend(keep)
    merged.graph.node.insert(0, helper.make_node("Shape", [F.IMAGES], [F.OUTPUT_SIZE], start=2, end=4))
    set_metadata(merged, {**get_metadata(embed), **get_metadata(head)})
    onnx.checker.check_model(merged)
    return merged
