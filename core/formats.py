"""Tensor names, dtypes and file names of the exported graphs: the only module that spells them.

Export writes graphs with these names, serving builds Triton configs from them, clients read
responses by them. Shapes use -1 for dimensions that are free (batch everywhere, and the class
count C downstream of the head, so a head with another class list can replace it).
"""

from __future__ import annotations

from dataclasses import dataclass

OPSET = 17

# Graph inputs/outputs.
IMAGES = "images"  # (N, Cin, H, W) float32, preprocessed as the manifest says
EMBEDDING = "embedding"  # (N, D) float32, L2-normalised
SCORES = "scores"  # (N, C) float32: each class's best sub-centroid cosine (max over K)
PREDICTED = "predicted"  # (N,) int32: argmax over classes
SUBCENTROID = "subcentroid"  # (N, C) int32: the winning sub-centroid of each class
TOP_SCORE = "top_score"  # (N,) float32: score of the predicted class
MARGIN = "margin"  # (N,) float32: best minus second-best class score


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name; "object" for strings (ONNX STRING, Triton TYPE_STRING/BYTES)
    dims: tuple[str, ...]  # symbolic: "N" batch, "C" classes, "D" embedding, "Cin", "H", "W"


HEAD_OUTPUTS = (
    TensorSpec(SCORES, "float32", ("N", "C")),
    TensorSpec(PREDICTED, "int32", ("N",)),
    TensorSpec(SUBCENTROID, "int32", ("N", "C")),
    TensorSpec(TOP_SCORE, "float32", ("N",)),
    TensorSpec(MARGIN, "float32", ("N",)),
)
# The serving head adds the evidence of each prediction (build_head(top_k=k), k = min(top_k, C)),
# ranked best class first; strings come from the head itself, so a response's labels, set id and
# scores always come from one class list, even while a swap is under way.
TOPK_CLASS = "topk_class"  # (N, k) int32: class ids, best first
TOPK_LABEL = "topk_label"  # (N, k) string: their names
TOPK_SCORE = "topk_score"  # (N, k) float32: their scores (cosine to the winning sub-centroid)
TOPK_SUBCENTROID = "topk_subcentroid"  # (N, k) int32: the winning sub-centroid of each
TOPK_EXEMPLAR_ID = "topk_exemplar_id"  # (N, k) int64: its anchoring image's id, -1 when not anchored
TOPK_EXEMPLAR = "topk_exemplar"  # (N, k) string: that image's path or name, "" when not anchored
SET_ID = "set_id"  # (N,) string: the centroid set (class list version) that answered
KNOWN = "known"  # (N,) bool: the predicted class's score clears its threshold (else the answer is "unknown")
THRESHOLD = "threshold"  # (N,) float32: that class's threshold (-1 where its set has none: accepts all)
# A served head's optional input: false turns abstention off for the request (every `known` true, a
# segmenter labels no pixel UNKNOWN_LABEL); absent or true, the set's thresholds decide.
ABSTAIN = "abstain"  # (1,) bool
# A served head's optional input: the class list (set id) a request must be answered by. A server on another
# list refuses the request (UNAVAILABLE, HTTP 503), naming both: a fleet mid-swap, or a video job pinned to
# the list its first frame was answered by.
EXPECT_SET_ID = "expect_set_id"  # (1,) bytes
EVIDENCE_OUTPUTS = (
    TensorSpec(TOPK_CLASS, "int32", ("N", "k")),
    TensorSpec(TOPK_LABEL, "object", ("N", "k")),
    TensorSpec(TOPK_SCORE, "float32", ("N", "k")),
    TensorSpec(TOPK_SUBCENTROID, "int32", ("N", "k")),
    TensorSpec(TOPK_EXEMPLAR_ID, "int64", ("N", "k")),
    TensorSpec(TOPK_EXEMPLAR, "object", ("N", "k")),
    TensorSpec(SET_ID, "object", ("N",)),
    TensorSpec(KNOWN, "bool", ("N",)),
    TensorSpec(THRESHOLD, "float32", ("N",)),
)
EMBED_INPUT = TensorSpec(IMAGES, "float32", ("N", "Cin", "H", "W"))
EMBED_OUTPUT = TensorSpec(EMBEDDING, "float32", ("N", "D"))

# Segmentation (a segmenter's export): the embedding graph takes images of any height and width and
# gives cell embeddings at its stride; the head upsamples class scores to OUTPUT_SIZE and answers per
# pixel and, per image, per class. Labels and sub-centroid indices are uint8 (C <= 254, Kmax <= 255); the
# served head labels a pixel no class's threshold accepts UNKNOWN_LABEL.
UNKNOWN_LABEL = 255
PIXEL_EMBEDDING = "pixel_embedding"  # (N, D, h, w) float32, not normalised (the head normalises each cell)
OUTPUT_SIZE = "output_size"  # (2,) int64: H, W of the answer (the merged graph reads the images' own)
LABELS = "labels"  # (N, H, W) uint8: class id per pixel
PIXEL_SUBCENTROID = "pixel_subcentroid"  # (N, H, W) uint8: winning sub-centroid of the label (nearest cell)
PIXEL_SCORE = "pixel_score"  # (N, H, W) float32: the label's score (upsampled best-sub-centroid cosine)
PIXEL_MARGIN = "pixel_margin"  # (N, H, W) float32: best minus second-best class score
CLASS_PIXELS = "class_pixels"  # (N, C) int32: pixels labelled with each class
CLASS_SCORE = "class_score"  # (N, C) float32: mean pixel_score over those pixels (0 for none)
CLASS_SUBCENTROID = "class_subcentroid"  # (N, C) int32: the sub-centroid winning most of them (-1 for none)
CLASS_EXEMPLAR_ID = "class_exemplar_id"  # (N, C) int64: its anchoring image's id, -1 when none
CLASS_EXEMPLAR_YX = "class_exemplar_yx"  # (N, C, 2) int32: the anchoring pixel (y, x), -1 when none
CLASS_EXEMPLAR = "class_exemplar"  # (N, C) string: the anchoring image's path or name, "" when none
CLASS_LABEL = "class_label"  # (N, C) string: class names, index = class id
UNKNOWN_PIXELS = "unknown_pixels"  # (N,) int32: pixels labelled unknown (255: no threshold accepts them)
SEG_EMBED_OUTPUT = TensorSpec(PIXEL_EMBEDDING, "float32", ("N", "D", "h", "w"))
SEG_EMBED_INPUT = TensorSpec(IMAGES, "float32", ("N", "Cin", "H", "W"))
SEG_HEAD_INPUTS = (SEG_EMBED_OUTPUT, TensorSpec(OUTPUT_SIZE, "int64", ("2",)))
SEG_HEAD_OUTPUTS = (
    TensorSpec(LABELS, "uint8", ("N", "H", "W")),
    TensorSpec(PIXEL_SUBCENTROID, "uint8", ("N", "H", "W")),
    TensorSpec(PIXEL_SCORE, "float32", ("N", "H", "W")),
    TensorSpec(PIXEL_MARGIN, "float32", ("N", "H", "W")),
    TensorSpec(CLASS_PIXELS, "int32", ("N", "C")),
    TensorSpec(CLASS_SCORE, "float32", ("N", "C")),
    TensorSpec(CLASS_SUBCENTROID, "int32", ("N", "C")),
)
SEG_EVIDENCE_OUTPUTS = (
    TensorSpec(CLASS_EXEMPLAR_ID, "int64", ("N", "C")),
    TensorSpec(CLASS_EXEMPLAR_YX, "int32", ("N", "C", "2")),
    TensorSpec(CLASS_EXEMPLAR, "object", ("N", "C")),
    TensorSpec(CLASS_LABEL, "object", ("N", "C")),
    TensorSpec(SET_ID, "object", ("N",)),
    TensorSpec(UNKNOWN_PIXELS, "int32", ("N",)),
)

# Files of an export folder and of a centroid set folder.
EMBED_FILE = "embed.onnx"
EMBED_FP16_FILE = "embed.fp16.onnx"
HEAD_FILE = "head.onnx"
MERGED_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
SET_TENSORS_FILE = "centroids.safetensors"
SET_JSON_FILE = "centroids.json"

# ONNX metadata keys (metadata_props) that make each graph self-describing.
META_PREPROCESSING = "dnc.preprocessing"  # on embed graphs, and a parameter of the served entry model: JSON
META_SET_ID = "dnc.set_id"  # on head graphs: the centroid set (class list version) it freezes
META_CLASS_NAMES = "dnc.class_names"  # on head graphs: JSON list, index = class id
META_FINGERPRINT = "dnc.embed_fingerprint"  # on head graphs: the embedding model it pairs with
META_PRECISION = "dnc.precision"  # on embed graphs: fp32 or fp16 (backbone precision)
META_TASK = "dnc.task"  # on segmentation graphs: "segmentation" (absent: classification)

# Engines built by `dnc export --tensorrt`, beside the ONNX graphs.
EMBED_PLAN_FILE = "embed.plan"
HEAD_PLAN_FILE = "head.plan"

# Raw inputs of a served entry model (give exactly one of images, pixels, encoded per request): the
# server's prep step executes the manifest's preprocessing (core/preprocess.py) on them.
PIXELS = "pixels"  # (N, H, W, Cin') uint8 at the pictures' own size; Cin' 1 (gray) or 3 (RGB)
ENCODED = "encoded"  # (N, 1) bytes: one PNG or JPEG file per picture
MAPS = "maps"  # (N, 1) bool, segmenters, optional: true also fills pixel_subcentroid/score/margin (else 0 x 0)
MAP_OUTPUTS = (PIXEL_SUBCENTROID, PIXEL_SCORE, PIXEL_MARGIN)
CHECKED_IMAGES = "images_checked"  # the prep step's output: the request's images, preprocessed and checked
RAW_INPUTS = (
    TensorSpec(IMAGES, "float32", ("N", "Cin", "H", "W")),
    TensorSpec(PIXELS, "uint8", ("N", "H", "W", "Cin")),
    TensorSpec(ENCODED, "object", ("N", "1")),
)

# Triton model names: a repository serves several models, each a family of four Triton models named
# after it (`dnc repo build --name NAME`): NAME, the entry model clients call (an ensemble), and the
# three steps it chains; the head is the part a swap replaces.
DEFAULT_MODEL = "dnc"
MODEL_NAME_RULE = r"[a-z][a-z0-9-]{0,39}"  # no "_": a family's step names can never be another's entry


@dataclass(frozen=True)
class Family:
    entry: str
    prep: str  # python: pixels/bytes/floats -> checked, preprocessed images
    embed: str  # images -> embedding (classifier) or cell embeddings (segmenter)
    head: str  # embedding -> scores and evidence from a frozen centroid set


def family(name: str = DEFAULT_MODEL) -> Family:
    return Family(name, f"{name}_prep", f"{name}_embed", f"{name}_head")


ENTRY_MODEL, PREP_MODEL, EMBED_MODEL, HEAD_MODEL = (getattr(family(), f) for f in ("entry", "prep", "embed", "head"))
