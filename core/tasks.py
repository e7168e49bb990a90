"""The two tasks, described once: what each reads and answers, so no module compares task strings.

A task's name ("classification", "segmentation") is what checkpoints, manifests, centroid sets, graphs
(`dnc.task` metadata) and served configs record; everything that differs between the tasks (graph
tensors, what a set is made from, how pictures are resized, the metric, the nouns in messages) is a field
here, and code asks the description (`task(name).dense`, `.metric`, ...) rather than the string.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnc.core import formats as F
from dnc.core import preprocess
from dnc.core.errors import InputError


@dataclass(frozen=True)
class Task:
    name: str  # as recorded in every artefact
    noun: str  # what users call one model of the task, in every message and table
    plural: str
    dense: bool  # answers per pixel (a label map) rather than per picture
    embed_output: F.TensorSpec  # what the embedding graph gives the head
    head_inputs: tuple[F.TensorSpec, ...]  # what the head graph takes
    head_outputs: tuple[F.TensorSpec, ...]  # the frozen head's answer
    evidence_outputs: tuple[F.TensorSpec, ...]  # what the serving head adds: names, exemplars, set id
    resize: str  # how preprocessing sizes a picture: "short_side" (then crop) or "none" (any H x W)
    crop: str  # "centre" or "none"
    metric: str  # what evaluation reports: "top1" (%) or "miou" (%); a checkpoint's history says test_METRIC
    max_pixels: int  # the largest picture a served model of the task takes by default
    data: str  # what a centroid set of this task is made from, for messages
    set_hint: str  # how one is made, for messages

    def __str__(self) -> str:
        return self.name


CLASSIFICATION = Task(
    name="classification", noun="classifier", plural="classifiers", dense=False,
    embed_output=F.EMBED_OUTPUT, head_inputs=(F.EMBED_OUTPUT,), head_outputs=F.HEAD_OUTPUTS,
    evidence_outputs=F.EVIDENCE_OUTPUTS,
    resize="short_side", crop="centre", metric="top1", max_pixels=preprocess.SERVED_MAX_PIXELS["classification"],
    data="class folders (one folder of images per class)",
    set_hint="`dnc centroids` on class folders")
SEGMENTATION = Task(
    name="segmentation", noun="segmenter", plural="segmenters", dense=True,
    embed_output=F.SEG_EMBED_OUTPUT, head_inputs=F.SEG_HEAD_INPUTS, head_outputs=F.SEG_HEAD_OUTPUTS,
    evidence_outputs=F.SEG_EVIDENCE_OUTPUTS,
    resize="none", crop="none", metric="miou", max_pixels=preprocess.SERVED_MAX_PIXELS["segmentation"],
    data="a segmentation folder's masks",
    set_hint="`dnc centroids` on a segmentation folder")
TASKS = {t.name: t for t in (CLASSIFICATION, SEGMENTATION)}
DEFAULT = CLASSIFICATION  # what artefacts written before tasks were recorded hold


def task(name: str | Task | None) -> Task:
    """The description of task `name` (None: an artefact from before tasks were recorded, a classifier);
    an unknown name is refused naming the known ones."""
    if isinstance(name, Task):
        return name
    if name is None:
        return DEFAULT
    found = TASKS.get(name)
    if found is None:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return found


def of(meta: dict, key: str = "task") -> Task:
    """The task an artefact's metadata (manifest, set, checkpoint config) records under `key`."""
    return task(meta.get(key))
