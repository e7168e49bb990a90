"""The segmentation head as an ONNX graph: a frozen centroid set -> per-pixel labels and evidence.

Built with onnx.helper from numpy (no torch), as the classification head (export/head_graph.py), so
`dnc centroids` can write one for a new class list. For cell embeddings x (N, D, h, w) and the output
size (H, W):
    xn = x / max(||x||, eps)                                   per cell
    sim = xn . P + pad                                         (N, h, w, C, Kmax); padded slots at PAD_SCORE
    cell scores = max_k sim, cell winners = argmax_k sim       (N, h, w, C)
    scores = bilinear resize of the cell scores to (H, W)      (N, H, W, C), half-pixel centres
    labels, pixel_score, pixel_margin = top-2 over classes     (N, H, W)
    pixel_subcentroid = winner of the label at the pixel's nearest cell (the cell holding its centre)
    per image and class: pixel count, mean pixel_score over its pixels, and the sub-centroid winning most
    of them (-1 for a class with no pixel), counted with scatter-adds over C and C*Kmax bins
The first four lines run in bands of output rows (export/seg_head_bands.py), each holding about
CLASS_PIXEL_BUDGET class-pixels, so no tensor of C x H x W (or C x Kmax x h x w) is ever whole: the
head's memory is bounded by the budget and the per-pixel answer (10 bytes a pixel), whatever C.
This is what training/segmenter.py and training/seg_task.py compute in torch. The served variant
(evidence=True) adds the anchored exemplar of each class's dominant sub-centroid (image id, name, y, x),
the class names and the set id, from tables frozen into the graph, so a response comes from one list;
and abstention: a pixel whose score is below its label's threshold (the set's, calibrated on held-out
images) is labelled UNKNOWN_LABEL, counted in `unknown_pixels` and in no class, unless the request sets
the optional input `abstain` false. Its score, margin and sub-centroid still say which class was nearest.
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
from dnc.export import seg_head_bands as bands
from dnc.export.head_graph import NORM_EPS, PAD_SCORE, _onnx_type, get_metadata, set_metadata

MAX_LABEL = 255  # labels and sub-centroid indices travel as uint8
UNKNOWN_LABEL = F.UNKNOWN_LABEL  # the label of a pixel no class's threshold accepts (a set has at most 254 classes)
CLASS_PIXEL_BUDGET = 1 << 23  # class-pixels one band of output rows holds (about 16 bytes each at the peak)


def build_seg_head(cs: CentroidSet, evidence: bool = False, normalise_input: bool = True,
                   budget: int = CLASS_PIXEL_BUDGET) -> onnx.ModelProto:
    """The segmentation head for a centroid set: inputs formats.SEG_HEAD_INPUTS, outputs
    formats.SEG_HEAD_OUTPUTS (and formats.SEG_EVIDENCE_OUTPUTS with `evidence`). `budget`: class-pixels
    one band of output rows holds (export/seg_head_bands.py); the answers do not depend on it."""
    validate(cs)
    if not tasks.task(cs.task).dense:
        raise CentroidSetError(f"centroid set {cs.set_id} is a {cs.task} set; a segmenter needs one made from "
                               "masks (dnc centroids on a segmentation folder)")
    c, kmax, d = cs.centroids.shape
    if c >= UNKNOWN_LABEL or kmax > MAX_LABEL:
        raise CentroidSetError(f"a segmentation head has at most {UNKNOWN_LABEL - 1} classes ({UNKNOWN_LABEL} labels "
                               f"unknown) and {MAX_LABEL} sub-centroids per class (uint8 maps); this set has {c} and "
                               f"{kmax}")
    if budget < 1:
        raise InputError(f"budget must be >= 1 class-pixel, got {budget}")
    init = _constants(cs, budget)
    n = [helper.make_node("Transpose", [F.PIXEL_EMBEDDING], ["seg.cells"], perm=[0, 2, 3, 1])]  # (N, h, w, D)
    n += bands.shape_nodes()
    n += bands.coordinate_nodes(0, "seg.h", "seg.H") + bands.coordinate_nodes(1, "seg.w", "seg.W")
    n += bands.column_weight_nodes() + bands.band_rows_nodes() + bands.loop_nodes(c, kmax, normalise_input)
    n += [
        helper.make_node("Identity", ["seg.score"], [F.PIXEL_SCORE]),  # (N, H, W)
        helper.make_node("Identity", ["seg.margin"], [F.PIXEL_MARGIN]),
        helper.make_node("Identity", ["seg.sub"], [F.PIXEL_SUBCENTROID]),
        helper.make_node("Cast", ["seg.labels"], ["seg.labels64"], to=TensorProto.INT64),
    ]
    if evidence:
        ab_init, ab_nodes = _abstention(cs)
        init += ab_init
        n += ab_nodes
    else:
        n += [helper.make_node("Identity", ["seg.labels"], [F.LABELS]),
              helper.make_node("Identity", ["seg.labels64"], ["seg.count_label"])]
    n += _per_class_nodes()
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
    if evidence:  # optional: a graph input with an initializer is one a caller may leave out
        inputs.append(helper.make_tensor_value_info(F.ABSTAIN, TensorProto.BOOL, [1]))
    graph = helper.make_graph(n, "dnc_seg_head", inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", F.OPSET)], producer_name="dnc-stack")
    model.ir_version = 8
    set_metadata(model, {F.META_SET_ID: cs.set_id, F.META_CLASS_NAMES: json.dumps(cs.class_names),
                         F.META_FINGERPRINT: cs.embed_fingerprint, F.META_TASK: tasks.SEGMENTATION.name})
    onnx.checker.check_model(model, full_check=True)
    return model


def _constants(cs: CentroidSet, budget: int) -> list:
    """The head's initialisers: the set's sub-centroids (D, C*Kmax), the padding scores of absent
    sub-centroids, and the small constants the nodes use."""
    c, kmax, d = cs.centroids.shape
    flat = cs.centroids.reshape(c * kmax, d).astype(np.float32)
    pad = np.where(cs.k_mask.reshape(-1), 0.0, PAD_SCORE).astype(np.float32)
    i64 = lambda v, name: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    f32 = lambda v, name: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    init = [
        numpy_helper.from_array(np.ascontiguousarray(flat.T), "seg.centroids_t"),  # (D, C*Kmax)
        numpy_helper.from_array(pad, "seg.pad"),  # (C*Kmax,)
        f32(NORM_EPS, "seg.eps"), f32(0.5, "seg.half"), f32(1.0, "seg.one_f"), f32(0.0, "seg.zero_f"),
        i64(0, "seg.i0"), i64(1, "seg.i1"), i64(2, "seg.i2"), i64(c, "seg.C"), i64(kmax, "seg.kmax"),
        i64(budget, "seg.budget"), i64([0], "seg.v0"), i64([1], "seg.v1"), i64([2], "seg.two"),
        i64([-1], "seg.minus1"), i64([c, kmax], "seg.ck_shape"), i64([1, -1, 1, 1], "seg.shape_r"),
        i64([1, 1, -1, 1], "seg.shape_c"), i64([c * kmax], "seg.ck"), i64([0, c, kmax], "seg.shape_nck"),
        i64([c + 1], "seg.c1_vec"), i64([(c + 1) * kmax], "seg.c1k"), i64([c], "seg.c_end"),
        i64([c * kmax], "seg.ck_end"), i64([c + 1], "seg.c_after"),
        numpy_helper.from_array(np.array(-1, np.int32), "seg.none"),
    ]
    return init


def _abstention(cs: CentroidSet) -> tuple[list, list]:
    """The served head's labels: UNKNOWN_LABEL where the pixel's score is below its label's threshold (and
    the request did not turn abstention off); seg.count_label counts such pixels in bin C, after the classes."""
    c = cs.num_classes
    init = [numpy_helper.from_array(cs.class_thresholds, "ab.thresholds"),  # (C,)
            numpy_helper.from_array(np.array([True]), F.ABSTAIN),  # the default of the optional input
            numpy_helper.from_array(np.array(UNKNOWN_LABEL, np.uint8), "ab.unknown"),
            numpy_helper.from_array(np.array(c, np.int64), "ab.c")]
    nodes = [
        helper.make_node("Gather", ["ab.thresholds", "seg.labels64"], ["ab.thr"], axis=0),  # (N, H, W)
        helper.make_node("Less", ["seg.score", "ab.thr"], ["ab.below"]),
        helper.make_node("And", ["ab.below", F.ABSTAIN], ["ab.unknown_px"]),  # (N, H, W) bool
        helper.make_node("Where", ["ab.unknown_px", "ab.unknown", "seg.labels"], [F.LABELS]),
        helper.make_node("Where", ["ab.unknown_px", "ab.c", "seg.labels64"], ["seg.count_label"]),
    ]
    return init, nodes


def _per_class_nodes() -> list:
    """Per image and class, by scatter-adds over the N x H x W answer (nothing of size C x H x W): pixel
    counts and score sums in float64, and votes for bin label * Kmax + sub-centroid whose winner is the
    class's dominant sub-centroid. Pixels labelled unknown (seg.count_label C) go to one more bin, which
    gives seg.unknown_count and counts in no class."""
    return [
        helper.make_node("Concat", ["seg.n1", "seg.minus1"], ["seg.flat_shape"], axis=0),
        helper.make_node("Reshape", ["seg.count_label", "seg.flat_shape"], ["seg.label_flat"]),  # (N, H*W)
        helper.make_node("Cast", ["seg.score"], ["seg.score_d"], to=TensorProto.DOUBLE),
        helper.make_node("Reshape", ["seg.score_d", "seg.flat_shape"], ["seg.score_flat"]),
        helper.make_node("Shape", ["seg.label_flat"], ["seg.np_shape"]),
        helper.make_node("ConstantOfShape", ["seg.np_shape"], ["seg.ones_d"],
                         value=helper.make_tensor("one", TensorProto.DOUBLE, [1], [1.0])),
        helper.make_node("Concat", ["seg.n1", "seg.c1_vec"], ["seg.nc_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["seg.nc_shape"], ["seg.zeros_nc"],
                         value=helper.make_tensor("zero", TensorProto.DOUBLE, [1], [0.0])),
        helper.make_node("ScatterElements", ["seg.zeros_nc", "seg.label_flat", "seg.ones_d"], ["seg.count_all"],
                         axis=1, reduction="add"),  # (N, C + 1)
        helper.make_node("ScatterElements", ["seg.zeros_nc", "seg.label_flat", "seg.score_flat"], ["seg.sum_all"],
                         axis=1, reduction="add"),
        helper.make_node("Slice", ["seg.count_all", "seg.v0", "seg.c_end", "seg.v1"], ["seg.count_d"]),  # (N, C)
        helper.make_node("Slice", ["seg.sum_all", "seg.v0", "seg.c_end", "seg.v1"], ["seg.sum_d"]),
        helper.make_node("Slice", ["seg.count_all", "seg.c_end", "seg.c_after", "seg.v1"], ["seg.unknown_d"]),
        helper.make_node("Cast", ["seg.count_d"], [F.CLASS_PIXELS], to=TensorProto.INT32),
        helper.make_node("Cast", ["seg.one_f"], ["seg.one_d"], to=TensorProto.DOUBLE),
        helper.make_node("Max", ["seg.count_d", "seg.one_d"], ["seg.count_1"]),
        helper.make_node("Div", ["seg.sum_d", "seg.count_1"], ["seg.mean_d"]),
        helper.make_node("Cast", ["seg.mean_d"], [F.CLASS_SCORE], to=TensorProto.FLOAT),  # (N, C), 0 where absent
        helper.make_node("Cast", ["seg.sub"], ["seg.sub64"], to=TensorProto.INT64),
        helper.make_node("Mul", ["seg.count_label", "seg.kmax"], ["seg.row"]),
        helper.make_node("Add", ["seg.row", "seg.sub64"], ["seg.slot"]),  # (N, H, W)
        helper.make_node("Reshape", ["seg.slot", "seg.flat_shape"], ["seg.slot_flat"]),  # (N, H*W)
        helper.make_node("ConstantOfShape", ["seg.np_shape"], ["seg.ones"],
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Concat", ["seg.n1", "seg.c1k"], ["seg.bins_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["seg.bins_shape"], ["seg.zeros"],
                         value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("ScatterElements", ["seg.zeros", "seg.slot_flat", "seg.ones"], ["seg.votes_all"], axis=1,
                         reduction="add"),  # (N, (C + 1)*Kmax)
        helper.make_node("Slice", ["seg.votes_all", "seg.v0", "seg.ck_end", "seg.v1"], ["seg.votes"]),  # (N, C*Kmax)
        helper.make_node("Reshape", ["seg.votes", "seg.shape_nck"], ["seg.votes_ck"]),  # (N, C, Kmax)
        helper.make_node("ArgMax", ["seg.votes_ck"], ["seg.dom64"], axis=2, keepdims=0),  # (N, C)
        helper.make_node("Cast", ["seg.dom64"], ["seg.dom32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["seg.count_d"], ["seg.present"], to=TensorProto.BOOL),
        helper.make_node("Where", ["seg.present", "seg.dom32", "seg.none"], [F.CLASS_SUBCENTROID]),
    ]


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
        helper.make_node("Squeeze", ["seg.unknown_d", "seg.v1"], ["ev.unknown_n"]),  # (N,)
        helper.make_node("Cast", ["ev.unknown_n"], [F.UNKNOWN_PIXELS], to=TensorProto.INT32),
    ]
    return init, nodes


def attach_seg_head(embed: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: images (N, Cin, H, W) -> pixel embeddings -> the head's outputs at (H, W), the output
    size read from the images' shape. Carries the metadata of both parts."""
    from onnx import compose

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
