"""The configurations of a run, torch-free: what rebuilds a model (`ModelConfig`, carried inside checkpoints)
and how it is trained (`TrainConfig`). Kept apart from the modules that use torch so that the `dnc`
command builds its parser (defaults, help) without importing torch: client commands start fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dnc.core import tasks
from dnc.core.class_names import check_class_names
from dnc.core.errors import InputError


def normalise_ks(num_classes: int, k: int | list[int]) -> list[int]:
    """Expand K (one int for all classes, or one per class) to a per-class list and check it."""
    ks = [int(k)] * num_classes if isinstance(k, int) else [int(v) for v in k]
    if len(ks) != num_classes:
        raise InputError(f"K per class has {len(ks)} entries but there are {num_classes} classes")
    bad = [(c, v) for c, v in enumerate(ks) if v < 1]
    if bad:
        raise InputError(f"K must be >= 1 for every class; got K={bad[0][1]} for class {bad[0][0]}")
    return ks


HEADS = ("dnc", "softmax")
SEGMENTATION_K = 10  # sub-centroids per class of a segmenter, as the paper's segmentation (its K ablation)
# A segmenter's smoothed per-cell margin stays far below a classifier's (0.108 after 1,560 steps where the
# classifiers' gate is 0.2, docs/BENCHMARKS.md issue 11): its first clustering from memory waits for 0.05.
SEGMENTATION_READY_MARGIN = 0.05
# Segmenters' sub-centroids slow down with the learning rate: without it their loss rose as the learning rate
# ended (issue 11's 3-seed runs, docs/BENCHMARKS.md).
SEGMENTATION_ANNEAL = True


@dataclass(frozen=True)
class HeadConfig:
    """The settings of a DNC head (training/head.py): the head's fields of a `ModelConfig`, which holds
    their defaults (`ModelConfig.head_config()`; `HeadConfig.defaults(...)` outside a model config)."""

    k: int | list[int]
    temperature: float
    momentum: float
    epsilon: float
    sinkhorn_iters: int
    memory_size: int
    memory_cap: int
    revive: bool
    revive_every: int
    revive_momentum: float
    assign_weight: float
    anneal: bool
    ready_margin: float | None

    def __post_init__(self):
        if self.temperature <= 0:
            raise InputError(f"`temperature` must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise InputError(f"`momentum` must be in [0, 1), got {self.momentum}")
        if self.epsilon <= 0:
            raise InputError(f"Sinkhorn `epsilon` must be > 0, got {self.epsilon}")
        if self.revive_every < 1:
            raise InputError(f"`revive_every` must be >= 1 update, got {self.revive_every}")
        if not 0.0 <= self.revive_momentum < 1.0:
            raise InputError(f"`revive_momentum` must be in [0, 1), got {self.revive_momentum}")
        if self.assign_weight < 0:
            raise InputError(f"`assign_weight` (assignment-loss weight) must be >= 0, got {self.assign_weight}")

    @classmethod
    def defaults(cls, **changes) -> HeadConfig:
        """`ModelConfig`'s defaults, with `changes` (head fields) on top."""
        base = {f.name: f.default for f in fields(ModelConfig) if f.name in HEAD_FIELDS}
        return cls(**{**base, **changes})


HEAD_FIELDS = tuple(f.name for f in fields(HeadConfig))


@dataclass
class ModelConfig:
    num_classes: int
    task: str = tasks.CLASSIFICATION.name  # a core/tasks.py name
    arch: str = "resnet10"
    width: int = 32
    in_chans: int = 1
    image_size: int = 28
    embed_dim: int = 256
    head: str = "dnc"
    k: int | list[int] = 4
    temperature: float = 0.1
    momentum: float = 0.999
    epsilon: float = 0.05
    sinkhorn_iters: int = 3
    memory_size: int = 256
    memory_cap: int = 32
    revive: bool = True  # sub-centroids from data once the classes separate; dead ones re-clustered (head.py)
    revive_every: int = 200
    revive_momentum: float = 0.99  # momentum of sub-centroids once clustered from data (0.999 lags the embedding)
    assign_weight: float = 0.0  # weight of the sub-centroid assignment loss (training/head.py)
    anneal: bool = False  # sub-centroids move at the pace of the learning rate (head.py); segmenters' default
    ready_margin: float | None = None  # smoothed batch margin that opens the first clustering (None: head.READY_MARGIN)
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    class_names: list[str] = field(default_factory=list)
    # segmentation only
    decoder_dim: int = 128  # channels of the light decoder
    ignore_index: int = 255  # mask value that counts for nothing
    pixel_samples: int = 64  # pixels per class and step (seeded) that update the sub-centroids

    def __post_init__(self):
        task = tasks.task(self.task)  # refuses an unknown task
        if self.decoder_dim < 4 or self.pixel_samples < 1:
            raise InputError(f"decoder width (`decoder_dim`) must be >= 4 and `pixel_samples` >= 1, got "
                             f"{self.decoder_dim}, {self.pixel_samples}")
        if task.dense:
            if self.num_classes > 255 or max(normalise_ks(self.num_classes, self.k)) > 255:
                raise InputError(f"a {task.noun} has at most 255 classes and 255 sub-centroids per class (its maps "
                                 f"are uint8); got {self.num_classes} classes, K up to "
                                 f"{max(normalise_ks(self.num_classes, self.k))}")
            if not self.num_classes <= self.ignore_index <= 255:
                raise InputError(f"ignore index {self.ignore_index} must be in {self.num_classes}-255 (not a class id)")
            if self.assign_weight:
                raise InputError(f"the assignment loss (`assign_weight`) is a classification experiment; "
                                 f"{task.plural} train with cross-entropy alone")
        if self.head not in HEADS:
            raise InputError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.num_classes < 2:
            raise InputError(f"need at least 2 classes, got {self.num_classes}")
        if self.embed_dim < 1:
            raise InputError(f"embedding width (`embed_dim`) must be >= 1, got {self.embed_dim}")
        normalise_ks(self.num_classes, self.k)
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise InputError(f"mean/std need {self.in_chans} values (one per channel), "
                             f"got {len(self.mean)}/{len(self.std)}")
        if self.class_names:
            check_class_names(self.class_names, "model config")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise InputError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def small_stem(self) -> bool:
        """The 3x3/1 stem for small images (<= 64 px), the standard 7x7/2 stem above that."""
        return self.image_size <= 64

    def head_config(self) -> HeadConfig:
        """The settings of this model's DNC head."""
        return HeadConfig(**{name: getattr(self, name) for name in HEAD_FIELDS})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    data: str = "fashion-mnist"
    out: str = "runs/dnc"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the run
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    eval_batch_size: int = 512
    save_every: int = 0  # also checkpoint every N steps (0: end of each epoch only)
    max_steps: int = 0  # stop after this many steps in total (0: no limit); for smoke runs
    train_limit: int = 0  # use only the first N training samples (0: all)
    test_limit: int = 0
    resume: str = ""
    init: str = ""  # segmentation: start the backbone from this classifier checkpoint

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; use sgd or adamw")
        if self.schedule not in ("cosine", "step"):
            raise InputError(f"unknown schedule {self.schedule!r}; use cosine or step")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"`lr` must be > 0, got {self.lr}")
