"""The per-pixel part of the segmentation head, run in bands of output rows so its memory is bounded.

Why: the head's dense work is classes x pixels. Scoring every cell against all C*Kmax sub-centroids,
upsampling the C class maps to the output size and taking the top-2 over classes in one go held several
(N, C, H, W) tensors at once (16-19 bytes per class-pixel measured: 4.2 GB for 254 classes at 1 MP), so
a request's memory grew with the class count while the per-request pixel budget ignored it. Here an
ONNX Loop walks the output in bands of R rows, R = max(1, budget // (N * W * C)) (at most H): each band
scores only the cell rows its pixels read (bilinear neighbours and nearest cell), upsamples them to its
R x W pixels and keeps per pixel only label, score, margin and sub-centroid. Nothing of size C x H x W
or C x Kmax x h x w exists at any time; a band holds about `budget` class-pixels (a few float copies of
them) plus its cell rows' C*Kmax scores.

The upsampling is the bilinear, half-pixel-centre resize of onnxruntime's Resize (source coordinate
(y + 0.5) / (H / h) - 0.5 in float32, clamped to [0, h - 1]), done rows then columns: scores equal the
single-pass graph's within float rounding (1e-6), so labels differ only where two classes tie to that
precision (tests: against a float64 reference and against the one-band graph).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from dnc.core import formats as F

BAND = "band"  # prefix of names inside the loop body


def coordinate_nodes(axis: int, size_in: str, size_out: str) -> list:
    """Nodes giving, for each output row (axis 0) or column (axis 1), the two cells it interpolates
    (seg.{r,c}0, seg.{r,c}1, int64 (H,)), the weight of the second (seg.{r,c}d, float32 (H,)) and its
    nearest cell (seg.{r,c}n: the cell holding the pixel centre, min(floor((y + 0.5) * h / H), h - 1))."""
    a = "seg.r" if axis == 0 else "seg.c"
    out = [
        helper.make_node("Range", ["seg.i0", size_out, "seg.i1"], [f"{a}.idx"]),  # (H,)
        helper.make_node("Cast", [f"{a}.idx"], [f"{a}.idx_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [size_out], [f"{a}.out_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [size_in], [f"{a}.in_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", [f"{a}.out_f", f"{a}.in_f"], [f"{a}.scale"]),  # as Resize: sizes -> float scale
        helper.make_node("Add", [f"{a}.idx_f", "seg.half"], [f"{a}.centre"]),
        helper.make_node("Div", [f"{a}.centre", f"{a}.scale"], [f"{a}.src0"]),
        helper.make_node("Sub", [f"{a}.src0", "seg.half"], [f"{a}.src1"]),
        helper.make_node("Sub", [f"{a}.in_f", "seg.one_f"], [f"{a}.last_f"]),
        helper.make_node("Min", [f"{a}.src1", f"{a}.last_f"], [f"{a}.src2"]),
        helper.make_node("Max", [f"{a}.src2", "seg.zero_f"], [f"{a}.src"]),  # clamped to [0, h - 1]
        helper.make_node("Cast", [f"{a}.src"], [f"{a}.lo"], to=TensorProto.INT64),  # floor (src >= 0)
        helper.make_node("Sub", [size_in, "seg.i1"], [f"{a}.last"]),
        helper.make_node("Min", [f"{a}.lo", f"{a}.last"], [f"{a}0"]),
        helper.make_node("Add", [f"{a}0", "seg.i1"], [f"{a}.hi"]),
        helper.make_node("Min", [f"{a}.hi", f"{a}.last"], [f"{a}1"]),
        helper.make_node("Cast", [f"{a}0"], [f"{a}0_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", [f"{a}.src", f"{a}0_f"], [f"{a}d"]),  # weight of the second cell
        # nearest cell, in float64 as the single-pass graph and the torch training code
        helper.make_node("Cast", [f"{a}.idx"], [f"{a}.idx_d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", [size_out], [f"{a}.out_d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", [size_in], [f"{a}.in_d"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["seg.half"], [f"{a}.half_d"], to=TensorProto.DOUBLE),
        helper.make_node("Add", [f"{a}.idx_d", f"{a}.half_d"], [f"{a}.centre_d"]),
        helper.make_node("Mul", [f"{a}.centre_d", f"{a}.in_d"], [f"{a}.scaled_d"]),
        helper.make_node("Div", [f"{a}.scaled_d", f"{a}.out_d"], [f"{a}.pos_d"]),
        helper.make_node("Floor", [f"{a}.pos_d"], [f"{a}.floor_d"]),
        helper.make_node("Cast", [f"{a}.floor_d"], [f"{a}.near"], to=TensorProto.INT64),
        helper.make_node("Min", [f"{a}.near", f"{a}.last"], [f"{a}n"]),
    ]
    return out


def band_rows_nodes() -> list:
    """seg.rows_per_band = min(H, max(1, budget // (N * W * C))) and seg.bands = ceil(H / rows), int64
    scalars; the budget is the initialiser seg.budget (class-pixels a band holds)."""
    return [
        helper.make_node("Mul", ["seg.N", "seg.W"], ["seg.nw"]),
        helper.make_node("Mul", ["seg.nw", "seg.C"], ["seg.nwc"]),
        helper.make_node("Div", ["seg.budget", "seg.nwc"], ["seg.fit"]),  # integer division
        helper.make_node("Max", ["seg.fit", "seg.i1"], ["seg.fit1"]),
        helper.make_node("Min", ["seg.fit1", "seg.H"], ["seg.rows_per_band"]),
        helper.make_node("Add", ["seg.H", "seg.rows_per_band"], ["seg.h_plus"]),
        helper.make_node("Sub", ["seg.h_plus", "seg.i1"], ["seg.h_plus1"]),
        helper.make_node("Div", ["seg.h_plus1", "seg.rows_per_band"], ["seg.bands"]),
    ]


def band_body(c: int, kmax: int, normalise: bool) -> onnx.GraphProto:
    """The loop body: band i of rows [i*R, i*R + R) (rows past H repeat the last row; the caller drops
    them) -> labels, sub-centroids (uint8), scores and margins (float32), each (N, R, W). Reads from the
    outer graph: seg.cells (N, h, w, D), the coordinates of coordinate_nodes, seg.rows_per_band."""
    b = BAND
    n = [
        helper.make_node("Identity", [f"{b}.cond_in"], [f"{b}.cond_out"]),
        helper.make_node("Mul", [f"{b}.i", "seg.rows_per_band"], [f"{b}.first"]),
        helper.make_node("Range", ["seg.i0", "seg.rows_per_band", "seg.i1"], [f"{b}.steps"]),  # (R,)
        helper.make_node("Add", [f"{b}.first", f"{b}.steps"], [f"{b}.rows_any"]),
        helper.make_node("Sub", ["seg.H", "seg.i1"], [f"{b}.last_row"]),
        helper.make_node("Min", [f"{b}.rows_any", f"{b}.last_row"], [f"{b}.rows"]),  # (R,) output rows
        helper.make_node("Gather", ["seg.r0", f"{b}.rows"], [f"{b}.y0"], axis=0),  # (R,) cell rows read
        helper.make_node("Gather", ["seg.r1", f"{b}.rows"], [f"{b}.y1"], axis=0),
        helper.make_node("Gather", ["seg.rd", f"{b}.rows"], [f"{b}.dy"], axis=0),
        helper.make_node("Gather", ["seg.rn", f"{b}.rows"], [f"{b}.yn"], axis=0),
        helper.make_node("Concat", [f"{b}.y0", f"{b}.y1", f"{b}.yn"], [f"{b}.read"], axis=0),
        helper.make_node("ReduceMin", [f"{b}.read"], [f"{b}.lo"], keepdims=1),  # (1,)
        helper.make_node("ReduceMax", [f"{b}.read"], [f"{b}.top"], keepdims=1),
        helper.make_node("Add", [f"{b}.top", "seg.v1"], [f"{b}.end"]),
        helper.make_node("Slice", ["seg.cells", f"{b}.lo", f"{b}.end", "seg.v1"], [f"{b}.cells"]),  # (N, rc, w, D)
    ]
    x = f"{b}.cells"
    if normalise:
        n += [helper.make_node("ReduceL2", [x], [f"{b}.norm"], axes=[3], keepdims=1),  # (N, rc, w, 1)
              helper.make_node("Max", [f"{b}.norm", "seg.eps"], [f"{b}.norm_c"]),
              helper.make_node("Div", [x, f"{b}.norm_c"], [f"{b}.xn"])]
        x = f"{b}.xn"
    n += [
        helper.make_node("MatMul", [x, "seg.centroids_t"], [f"{b}.sim_flat"]),  # (N, rc, w, C*Kmax)
        helper.make_node("Add", [f"{b}.sim_flat", "seg.pad"], [f"{b}.sim_padded"]),
        helper.make_node("Shape", [f"{b}.sim_flat"], [f"{b}.nrw"], start=0, end=3),
        helper.make_node("Concat", [f"{b}.nrw", "seg.ck_shape"], [f"{b}.sim_shape"], axis=0),
        helper.make_node("Reshape", [f"{b}.sim_padded", f"{b}.sim_shape"], [f"{b}.sim"]),  # (N, rc, w, C, Kmax)
        helper.make_node("ReduceMax", [f"{b}.sim"], [f"{b}.cell_scores"], axes=[4], keepdims=0),  # (N, rc, w, C)
        helper.make_node("ArgMax", [f"{b}.sim"], [f"{b}.cell_win"], axis=4, keepdims=0),  # (N, rc, w, C) int64
        # bilinear: rows, then columns (band-local cell rows: y - lo)
        helper.make_node("Sub", [f"{b}.y0", f"{b}.lo"], [f"{b}.y0l"]),
        helper.make_node("Sub", [f"{b}.y1", f"{b}.lo"], [f"{b}.y1l"]),
        helper.make_node("Gather", [f"{b}.cell_scores", f"{b}.y0l"], [f"{b}.g0"], axis=1),  # (N, R, w, C)
        helper.make_node("Gather", [f"{b}.cell_scores", f"{b}.y1l"], [f"{b}.g1"], axis=1),
        helper.make_node("Reshape", [f"{b}.dy", "seg.shape_r"], [f"{b}.dy4"]),  # (1, R, 1, 1)
        helper.make_node("Sub", ["seg.one_f", f"{b}.dy4"], [f"{b}.dy4c"]),
        helper.make_node("Mul", [f"{b}.g0", f"{b}.dy4c"], [f"{b}.g0w"]),
        helper.make_node("Mul", [f"{b}.g1", f"{b}.dy4"], [f"{b}.g1w"]),
        helper.make_node("Add", [f"{b}.g0w", f"{b}.g1w"], [f"{b}.rowv"]),  # (N, R, w, C)
        helper.make_node("Gather", [f"{b}.rowv", "seg.c0"], [f"{b}.h0"], axis=2),  # (N, R, W, C)
        helper.make_node("Gather", [f"{b}.rowv", "seg.c1"], [f"{b}.h1"], axis=2),
        helper.make_node("Mul", [f"{b}.h0", "seg.dx4c"], [f"{b}.h0w"]),
        helper.make_node("Mul", [f"{b}.h1", "seg.dx4"], [f"{b}.h1w"]),
        helper.make_node("Add", [f"{b}.h0w", f"{b}.h1w"], [f"{b}.scores"]),  # (N, R, W, C)
        helper.make_node("TopK", [f"{b}.scores", "seg.two"], [f"{b}.top_v", f"{b}.top_i"], axis=3),  # (N, R, W, 2)
        helper.make_node("Gather", [f"{b}.top_v", "seg.i0"], [f"{b}.score"], axis=3),  # (N, R, W)
        helper.make_node("Gather", [f"{b}.top_v", "seg.i1"], [f"{b}.second"], axis=3),
        helper.make_node("Sub", [f"{b}.score", f"{b}.second"], [f"{b}.margin"]),
        helper.make_node("Gather", [f"{b}.top_i", "seg.i0"], [f"{b}.label64"], axis=3),  # (N, R, W)
        helper.make_node("Cast", [f"{b}.label64"], [f"{b}.label"], to=TensorProto.UINT8),
        # the label's winning sub-centroid at the pixel's nearest cell: one gather from the flat cell winners
        helper.make_node("Sub", [f"{b}.yn", f"{b}.lo"], [f"{b}.ynl"]),  # (R,)
        helper.make_node("Shape", [f"{b}.cell_win"], [f"{b}.w"], start=2, end=3),  # (1,) w
        helper.make_node("Mul", [f"{b}.ynl", f"{b}.w"], [f"{b}.row_cell"]),
        helper.make_node("Unsqueeze", [f"{b}.row_cell", "seg.v1"], [f"{b}.row_cell2"]),  # (R, 1)
        helper.make_node("Add", [f"{b}.row_cell2", "seg.cn"], [f"{b}.cell"]),  # (R, W): cell index in the band
        helper.make_node("Mul", [f"{b}.cell", "seg.C"], [f"{b}.cell_c"]),
        helper.make_node("Add", [f"{b}.cell_c", f"{b}.label64"], [f"{b}.pick"]),  # (N, R, W)
        helper.make_node("Shape", [f"{b}.pick"], [f"{b}.pick_shape"]),
        helper.make_node("Shape", [f"{b}.pick"], [f"{b}.n"], start=0, end=1),
        helper.make_node("Concat", [f"{b}.n", "seg.minus1"], [f"{b}.flat"], axis=0),
        helper.make_node("Reshape", [f"{b}.cell_win", f"{b}.flat"], [f"{b}.win_flat"]),  # (N, rc*w*C)
        helper.make_node("Reshape", [f"{b}.pick", f"{b}.flat"], [f"{b}.pick_flat"]),  # (N, R*W)
        helper.make_node("GatherElements", [f"{b}.win_flat", f"{b}.pick_flat"], [f"{b}.sub_flat"], axis=1),
        helper.make_node("Reshape", [f"{b}.sub_flat", f"{b}.pick_shape"], [f"{b}.sub64"]),
        helper.make_node("Cast", [f"{b}.sub64"], [f"{b}.sub"], to=TensorProto.UINT8),
    ]
    outs = [(f"{b}.cond_out", TensorProto.BOOL), (f"{b}.label", TensorProto.UINT8), (f"{b}.sub", TensorProto.UINT8),
            (f"{b}.score", TensorProto.FLOAT), (f"{b}.margin", TensorProto.FLOAT)]
    inputs = [helper.make_tensor_value_info(f"{b}.i", TensorProto.INT64, []),
              helper.make_tensor_value_info(f"{b}.cond_in", TensorProto.BOOL, [])]
    outputs = [helper.make_tensor_value_info(name, t, None) for name, t in outs]
    return helper.make_graph(n, "dnc_seg_band", inputs, outputs)


BAND_OUTPUTS = ("labels", "sub", "score", "margin")  # scan outputs of the loop, in body order


def loop_nodes(c: int, kmax: int, normalise: bool) -> list:
    """The loop over bands and the reassembly of its scan outputs (bands, N, R, W) into seg.{labels, sub,
    score, margin} (N, H, W); seg.cells and the coordinates must exist before."""
    stacked = [f"seg.bands_{o}" for o in BAND_OUTPUTS]
    n = [
        helper.make_node("Loop", ["seg.bands", ""], stacked, body=band_body(c, kmax, normalise)),
        helper.make_node("Concat", ["seg.n1", "seg.minus1", "seg.W1"], ["seg.nhw_any"], axis=0),
    ]
    for name, src in zip(BAND_OUTPUTS, stacked, strict=True):
        n += [
            helper.make_node("Transpose", [src], [f"{src}_t"], perm=[1, 0, 2, 3]),  # (N, bands, R, W)
            helper.make_node("Reshape", [f"{src}_t", "seg.nhw_any"], [f"{src}_rows"]),  # (N, bands*R, W)
            helper.make_node("Slice", [f"{src}_rows", "seg.v0", "seg.H1", "seg.v1"], [f"seg.{name}"]),  # (N, H, W)
        ]
    return n


def shape_nodes() -> list:
    """seg.cells (N, h, w, D) from the input; int64 scalars seg.N, seg.h, seg.w, seg.H, seg.W and their
    (1,) twins seg.n1, seg.W1, seg.H1."""
    return [
        helper.make_node("Shape", ["seg.cells"], ["seg.nhwd"]),
        helper.make_node("Gather", ["seg.nhwd", "seg.i0"], ["seg.N"], axis=0),
        helper.make_node("Gather", ["seg.nhwd", "seg.i1"], ["seg.h"], axis=0),
        helper.make_node("Gather", ["seg.nhwd", "seg.i2"], ["seg.w"], axis=0),
        helper.make_node("Gather", [F.OUTPUT_SIZE, "seg.i0"], ["seg.H"], axis=0),
        helper.make_node("Gather", [F.OUTPUT_SIZE, "seg.i1"], ["seg.W"], axis=0),
        helper.make_node("Unsqueeze", ["seg.N", "seg.v0"], ["seg.n1"]),
        helper.make_node("Unsqueeze", ["seg.H", "seg.v0"], ["seg.H1"]),
        helper.make_node("Unsqueeze", ["seg.W", "seg.v0"], ["seg.W1"]),
    ]


def column_weight_nodes() -> list:
    """seg.dx4 / seg.dx4c, (1, 1, W, 1): the weights of each column's second and first cell."""
    return [
        helper.make_node("Reshape", ["seg.cd", "seg.shape_c"], ["seg.dx4"]),
        helper.make_node("Sub", ["seg.one_f", "seg.dx4"], ["seg.dx4c"]),
    ]
