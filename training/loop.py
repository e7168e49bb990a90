"""The training loop: fit for long runs and for torchrun, for both tasks.

train(cfg) builds (or resumes) a model, runs epochs of SGD/AdamW with warm-up and a cosine or step
schedule, updates the DNC centroids after every optimiser step, evaluates each epoch, writes the log,
the plot and an atomic checkpoint, and returns the history. Resume replays the same batch order and
augmentation draws, so it continues the run it interrupted. What differs between classification and
segmentation (data, the step, the metrics) is a task object: ClassificationTask here (top-1/top-5),
SegmentationTask in training/seg_task.py (mIoU).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dnc.core import progress, tasks
from dnc.core.class_names import safe_name
from dnc.core.errors import DivergedError, InputError
from dnc.core.images import DataError
from dnc.training import checkpoint as ckpt_io
from dnc.training import distributed
from dnc.training.batches import augment, epoch_batches, iterate, normalise
from dnc.training.config import TrainConfig
from dnc.training.data import ImageData, load_dataset
from dnc.training.head import DNCHead, normalise_ks
from dnc.training.liveness import summarise, win_counts
from dnc.training.model import Classifier, ModelConfig, build_model
from dnc.training.report import topk_correct, write_log
from dnc.training.seg_task import SegmentationTask
from dnc.training.segmenter import Segmenter, init_from_classifier

log = logging.getLogger(__name__)


# Settings a resumed run must keep: they fix the batch order, the learning-rate schedule (epochs set
# the cosine horizon) and the data, so the resumed run is the run it interrupted.
RUN_DEFINING = ("data", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "schedule",
                "milestones", "gamma", "seed", "train_limit", "init")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"`device` {name}: no CUDA GPU is available here")
    return dev


def lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warm-up then cosine or step decay."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        t = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    drops = sum(step >= m * total for m in cfg.milestones)
    return cfg.lr * cfg.gamma**drops


def subset(data: ImageData, limit: int) -> ImageData:
    """The first `limit` samples (ids stay the original indices' positions in the subset)."""
    if not limit or limit >= len(data):
        return data
    return replace(data, labels=data.labels[:limit],
                   images=None if data.images is None else data.images[:limit], paths=data.paths[:limit])


def build_optimizer(model: Classifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and biases (standard for ResNets).
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def evaluate(model: Classifier, data: ImageData, device: torch.device, batch_size: int = 512,
             workers: int = 0, desc: str = "eval") -> dict:
    """Top-1/top-5 accuracy (%) and mean loss of `model` on `data`, sharded over ranks; for a DNC head
    also the live-sub-centroid measure of training/liveness.py (keys live_mean, live_min, ...)."""
    model.eval()
    head = model.head if isinstance(model.head, DNCHead) else None
    wins = torch.zeros(head.centroids.shape[:2], dtype=torch.long, device=device) if head is not None else None
    batches = epoch_batches(len(data), batch_size, 0, 0, shuffle=False, rank=distributed.rank(),
                            world=distributed.world_size(), drop_last=False)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, loss, n
    bar = progress.bar(iterate(data, batches, workers), total=len(batches), desc=desc, leave=False,
                       show=distributed.is_main())
    for x, y, _ in bar:
        x, y = normalise(x.to(device), model.cfg.mean, model.cfg.std), y.to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            emb, logits = model(x)
        if head is not None:
            wins += win_counts(head.own_class_winners(emb, y), y, *wins.shape)
        t1, t5 = topk_correct(logits.float(), y)
        sums += torch.tensor([t1, t5, F.cross_entropy(logits.float(), y, reduction="sum").item(), len(y)],
                             dtype=torch.float64, device=device)
    if distributed.is_active():
        torch.distributed.all_reduce(sums)
        if wins is not None:
            torch.distributed.all_reduce(wins)
    n = max(1.0, float(sums[3]))
    res = {"top1": 100 * float(sums[0]) / n, "top5": 100 * float(sums[1]) / n, "loss": float(sums[2]) / n,
           "n": int(sums[3])}
    if head is not None:
        res.update(summarise(wins, head.centroids, head.k_mask))
    return res


def train_step(encoder: torch.nn.Module, head: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, ids: torch.Tensor, amp: bool = False, correct: torch.Tensor | None = None,
               update=None, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step and one centroid update. Returns (loss, logits (N, C)).

    x: (N, Cin, H, W) normalised images; y, ids: (N,). `correct` (N,) bool overrides which samples
    count as correctly classified for the centroid update (benchmarks use it to time the worst
    case, every sample updating); by default it is argmax(logits) == y. `update` is the head's
    update method when `head` is a DDP wrapper.
    """
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        emb = encoder(x)  # (N, D)
        logits = head(emb)  # (N, C)
    loss = (loss_fn or head.loss)(emb, logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    (update or head.update)(emb, y, ids, logits.detach().argmax(1) == y if correct is None else correct)
    return loss.detach(), logits.detach()


def _rng_state(aug_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """RNG states to checkpoint: torch (and CUDA) of rank 0, and every rank's augmentation generator.

    The generator states are gathered on the training device (NCCL has no CPU transport)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    states = distributed.all_gather_cat(aug_gen.get_state()[None].to(device))[0]  # (world, S)
    for r, state in enumerate(states):
        rng[f"aug.{r}"] = state.cpu()
    return rng


def _restore_rng(rng: dict[str, torch.Tensor], aug_gen: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    n = sum(k.startswith("aug.") for k in rng)
    if n != distributed.world_size():  # another process count would shard the batches differently
        raise InputError(f"checkpoint was written by {n} process(es); resume with the same number "
                         f"(this run has {distributed.world_size()})")
    aug_gen.set_state(rng[f"aug.{distributed.rank()}"])


def check_data(model_cfg: ModelConfig, data: ImageData) -> None:
    """Refuse a data set whose classes or image format differ from the model's, naming the mismatch."""
    if data.num_classes != model_cfg.num_classes:
        raise DataError(f"{data.name} has {data.num_classes} classes but the model has {model_cfg.num_classes}")
    if (data.in_chans, data.image_size) != (model_cfg.in_chans, model_cfg.image_size):
        raise DataError(f"{data.name} images are {data.in_chans}x{data.image_size}px but the model takes "
                        f"{model_cfg.in_chans}x{model_cfg.image_size}px")
    # compared in their folder-safe form: checkpoints from before Fashion-MNIST's "T-shirt/top" became
    # "T-shirt-top" (class_names.safe_name) still evaluate, anchor and resume on the same data
    if model_cfg.class_names and [safe_name(n) for n in data.class_names] != [safe_name(n) for n in
                                                                             model_cfg.class_names]:
        bad = next(i for i, (a, b) in enumerate(zip(data.class_names, model_cfg.class_names, strict=True))
                   if safe_name(a) != safe_name(b))
        raise DataError(f"class {bad} of {data.name} is {data.class_names[bad]!r} but the model's is "
                        f"{model_cfg.class_names[bad]!r}")


class ClassificationTask:
    """What the training loop needs to train a classifier: data, one step, evaluation, log columns."""

    name = tasks.CLASSIFICATION.name
    train_metric = "train_top1"

    def load(self, spec: str, split: str, model_cfg: ModelConfig, limit: int) -> ImageData:
        return subset(load_dataset(spec, split, model_cfg.in_chans, model_cfg.image_size), limit)

    def prepare(self, x, y, gen, model_cfg):
        return normalise(augment(x, gen), model_cfg.mean, model_cfg.std), y

    def step(self, encoder, head, opt, x, y, ids, amp, model, step, seed):
        """Returns (loss, correct samples, samples)."""
        loss, logits = train_step(encoder, head, opt, x, y=y, ids=ids, amp=amp, update=model.head.update,
                                  loss_fn=model.head.loss)
        return loss, int((logits.argmax(1) == y).sum()), len(y)

    def evaluate(self, model, data, device, batch_size=512, workers=0, desc="eval") -> dict:
        return evaluate(model, data, device, batch_size=batch_size, workers=workers, desc=desc)

    def row(self, ev: dict) -> dict:
        return {"test_top1": ev["top1"], "test_top5": ev["top5"], "test_loss": ev["loss"]}

    def summary(self, row: dict) -> str:
        return f"test top-1 {row['test_top1']:.2f} top-5 {row['test_top5']:.2f}"

    def epoch_end(self, model, data, device, out, epoch) -> None:
        """Nothing beyond the log for classifiers."""


def task_for(model_cfg: ModelConfig):
    """The task object of a model config."""
    return SegmentationTask() if tasks.task(model_cfg.task).dense else ClassificationTask()


def _ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap a module with learnable parameters in DDP (the DNC head has none: nothing to sync)."""
    if not distributed.is_active() or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def train(cfg: TrainConfig, model_cfg: ModelConfig | None = None) -> dict:
    """Train (or resume) a classifier or a segmenter. `model_cfg` may be None when resuming, or be checked against
    the checkpoint's. Returns {"history": per-epoch rows, "step_losses": losses of steps run here,
    "checkpoint": path, "model": the trained model, "finished": all epochs done, "step": steps so far}."""
    device = resolve_device(cfg.device)
    started_ddp = distributed.setup(device)
    if started_ddp and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    try:
        run = _Run.start(cfg, model_cfg, device)
        log.info("training %s %s head on %s: %d samples, %d classes, %d steps/epoch, device %s", run.task.name,
                 run.model_cfg.head, cfg.data, len(run.train_set), run.model_cfg.num_classes, run.n_batches, device)
        while run.epoch < cfg.epochs:
            finished_epoch = run.train_epoch()
            if not finished_epoch:  # stopped mid-epoch (--max-steps): saved, no epoch row yet
                break
            run.end_epoch()
            if cfg.max_steps and run.step >= cfg.max_steps:
                break
        return {"history": run.history, "step_losses": run.step_losses, "checkpoint": str(run.ckpt_path),
                "model": run.model, "finished": run.epoch >= cfg.epochs, "step": run.step}
    finally:
        if started_ddp:
            distributed.teardown()


def _resumed(cfg: TrainConfig) -> ckpt_io.Checkpoint | None:
    """The checkpoint to resume from (None for a new run), refused when it cannot continue this run."""
    if not cfg.resume:
        return None
    resume = ckpt_io.load(cfg.resume)
    if resume.optimizer_state is None or "torch" not in resume.rng:
        raise InputError(f"{cfg.resume} is not a resumable training checkpoint (an anchored or exported "
                         "model keeps no optimiser state); train a new run from it instead")
    for name in RUN_DEFINING:  # compared as JSON values (a tuple equals its saved list)
        mine = json.loads(json.dumps(getattr(cfg, name)))
        if name in resume.train_config and mine != resume.train_config[name]:
            raise InputError(f"{name} mismatch on resume: checkpoint has {resume.train_config[name]}, "
                             f"requested {getattr(cfg, name)}")
    return resume


def _no_partial() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}  # running sums of an unfinished epoch


@dataclass
class _Run:
    """One training run's state between steps: what a checkpoint saves and a resume restores."""

    cfg: TrainConfig
    model_cfg: ModelConfig
    device: torch.device
    task: object  # ClassificationTask or SegmentationTask
    train_set: object
    test_set: object
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    aug_gen: torch.Generator
    encoder: torch.nn.Module  # the model's parts, wrapped for DDP when it runs
    head: torch.nn.Module
    n_batches: int
    epoch: int = 0
    step: int = 0
    skip: int = 0  # steps of the current epoch already run (a resume mid-epoch)
    history: list = field(default_factory=list)
    partial: dict = field(default_factory=_no_partial)
    step_losses: list = field(default_factory=list)
    lr: float = 0.0
    t0: float = 0.0  # when the current epoch started (earlier than now by a resumed epoch's seconds)

    @classmethod
    def start(cls, cfg: TrainConfig, model_cfg: ModelConfig | None, device: torch.device) -> _Run:
        """Data, model and optimiser of a new run, or of the run a checkpoint interrupted."""
        resume = _resumed(cfg)
        model_cfg = _reconcile(model_cfg, resume)
        task = task_for(model_cfg)
        train_set = task.load(cfg.data, "train", model_cfg, cfg.train_limit)
        test_set = task.load(cfg.data, "test", model_cfg, cfg.test_limit)
        if not model_cfg.class_names:
            model_cfg.class_names = list(train_set.class_names)
        check_data(model_cfg, train_set)
        check_data(model_cfg, test_set)

        torch.manual_seed(cfg.seed)
        # channels_last: about 25% faster convolutions on CPU (oneDNN) and on tensor cores.
        model = build_model(model_cfg, seed=cfg.seed)
        if cfg.init and resume is None:
            _init_backbone(model, cfg.init)
        model = model.to(device, memory_format=torch.channels_last)
        opt = build_optimizer(model, cfg)
        aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + distributed.rank())
        n_batches = len(epoch_batches(len(train_set), cfg.batch_size, cfg.seed, 0, shuffle=True,
                                      rank=distributed.rank(), world=distributed.world_size()))
        if n_batches == 0:
            raise InputError(f"batch size {cfg.batch_size} x {distributed.world_size()} ranks exceeds the "
                             f"{len(train_set)} training samples")
        run = cls(cfg=cfg, model_cfg=model_cfg, device=device, task=task, train_set=train_set, test_set=test_set,
                  model=model, opt=opt, aug_gen=aug_gen, encoder=model.encoder, head=model.head, n_batches=n_batches)
        if resume is not None:
            model.load_state_dict(resume.model_state)
            opt.load_state_dict(resume.optimizer_state)
            _restore_rng(resume.rng, aug_gen)
            run.epoch, run.step, run.skip, run.history = resume.epoch, resume.step, resume.step_in_epoch, resume.history
            run.partial.update(resume.extra.get("partial_epoch", {}))
            log.info("resumed %s at epoch %d, step %d", cfg.resume, run.epoch, run.step)
        if run.skip >= n_batches:
            raise InputError(f"checkpoint is {run.skip} steps into an epoch of {n_batches}: resume with the "
                             "checkpoint's batch size and data")
        # BN buffers of the encoder are broadcast from rank 0 by DDP; the head's buffers are
        # identical on every rank by construction (gathered updates), so they are not.
        run.encoder, run.head = _ddp(model.encoder, device), _ddp(model.head, device)
        if isinstance(model.head, DNCHead):
            model.head.schedule(init_step=run.warmup)  # sub-centroids from data once the warm-up is over
        return run

    @property
    def total(self) -> int:
        return self.cfg.epochs * self.n_batches

    @property
    def warmup(self) -> int:
        return int(self.cfg.warmup_epochs * self.n_batches)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.cfg.out) / "checkpoint.safetensors"

    def save(self, in_epoch: int, part: dict | None = None) -> None:
        """An atomic checkpoint of where the run is (every rank takes part: the RNG state is a collective)."""
        distributed.broadcast_buffers(self.model.encoder)
        rng = _rng_state(self.aug_gen, self.device)
        if distributed.is_main():
            extra = {"partial_epoch": part} if part else {}
            ckpt_io.save(ckpt_io.Checkpoint(
                self.model_cfg, self.model.state_dict(), train_config=asdict(self.cfg), epoch=self.epoch,
                step=self.step, step_in_epoch=in_epoch, history=self.history, optimizer_state=self.opt.state_dict(),
                rng=rng, extra=extra), self.ckpt_path)
        if distributed.is_active():
            torch.distributed.barrier()

    def train_epoch(self) -> bool:
        """The rest of the current epoch's steps; False when `max_steps` stopped it before its end."""
        cfg, model = self.cfg, self.model
        model.train()
        self.t0 = time.time() - self.partial["seconds"]
        batches = epoch_batches(len(self.train_set), cfg.batch_size, cfg.seed, self.epoch, shuffle=True,
                                rank=distributed.rank(), world=distributed.world_size())[self.skip:]
        bar = progress.bar(iterate(self.train_set, batches, cfg.workers), total=self.n_batches, initial=self.skip,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", show=distributed.is_main())
        sums = self.partial
        i = self.skip - 1
        for i, (x, y, ids) in enumerate(bar, start=self.skip):
            self.lr = lr_at(self.step, self.total, self.warmup, cfg)
            for g in self.opt.param_groups:
                g["lr"] = self.lr
            if isinstance(model.head, DNCHead):
                model.head.set_pace(min(1.0, self.lr / cfg.lr))
            x, y = self.task.prepare(x.to(self.device), y.to(self.device), self.aug_gen, self.model_cfg)
            x = x.contiguous(memory_format=torch.channels_last)
            loss, n_correct, n_seen = self.task.step(self.encoder, self.head, self.opt, x, y=y, ids=ids.to(self.device),
                                                     amp=self.device.type == "cuda", model=model, step=self.step,
                                                     seed=cfg.seed)
            if not torch.isfinite(loss):
                raise DivergedError(f"loss is {loss.item()} at step {self.step}; lower `lr`")
            self.step += 1
            self.step_losses.append(loss.item())
            sums["loss_sum"] += loss.item() * n_seen
            sums["correct"] += n_correct
            sums["seen"] += n_seen
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{100 * sums['correct'] / max(1, sums['seen']):.1f}",
                            lr=f"{self.lr:.3g}")
            stop = bool(cfg.max_steps and self.step >= cfg.max_steps)
            if i + 1 < self.n_batches and (stop or (cfg.save_every and self.step % cfg.save_every == 0)):
                self.save(i + 1, dict(sums, seconds=time.time() - self.t0))
            if stop:
                break
        bar.close()
        return i + 1 >= self.n_batches

    def end_epoch(self) -> None:
        """Evaluate, record the epoch's row, save and write the log. Only rank 0 writes the history, from its
        own running sums (its shard's train metrics)."""
        sums = self.partial
        self.skip, self.partial = 0, _no_partial()
        distributed.broadcast_buffers(self.model.encoder)  # every rank evaluates and saves one model
        ev = self.task.evaluate(self.model, self.test_set, self.device, batch_size=self.cfg.eval_batch_size,
                                workers=self.cfg.workers, desc="test")
        seen = max(1, sums["seen"])
        row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.lr, "train_loss": sums["loss_sum"] / seen,
               self.task.train_metric: 100 * sums["correct"] / seen, **self.task.row(ev),
               "seconds": round(time.time() - self.t0, 1)}
        row.update(_subcentroid_row(ev, self.model.head))
        self.history.append(row)
        log.info("epoch %d: train loss %.4f | %s (%.0fs)", self.epoch + 1, row["train_loss"], self.task.summary(row),
                 row["seconds"])
        self.task.epoch_end(self.model, self.test_set, self.device, out=Path(self.cfg.out), epoch=self.epoch + 1)
        self.epoch += 1
        self.save(0)
        if distributed.is_main():
            write_log(self.history, Path(self.cfg.out))


def _init_backbone(model: torch.nn.Module, path: str) -> None:
    """Start a segmenter's backbone from a classifier checkpoint, logging what did and did not load."""
    if not isinstance(model, Segmenter):
        raise InputError("`init` starts a segmenter from a classifier checkpoint; this run trains a classifier")
    source = ckpt_io.load(path)
    if tasks.task(source.model_config.task) is not tasks.CLASSIFICATION:
        raise InputError(f"`init` {path} is a {source.model_config.task} checkpoint; give a classifier's")
    src = source.model_config
    if src.arch != model.cfg.arch or src.width != model.cfg.width:
        raise InputError(f"`init` {path} is a {src.arch} of width {src.width}; this segmenter is a {model.cfg.arch} "
                         f"of width {model.cfg.width}")
    if src.small_stem != model.cfg.small_stem:
        stems = ["3x3" if c.small_stem else "7x7" for c in (src, model.cfg)]
        raise InputError(f"`init` {path} was trained on {src.image_size} px images ({stems[0]} stem) but this "
                         f"segmenter takes {model.cfg.image_size} px ones ({stems[1]} stem): give `image_size` on "
                         "the same side of 64")
    rep = init_from_classifier(model, source.model_state)
    log.info("`init` %s: loaded %d backbone tensors (%s adapted from 1 to %d channels); not loaded from the "
             "classifier: %s; left at initial values: %s", path, len(rep["loaded"]),
             ", ".join(rep["adapted"]) or "none", model.cfg.in_chans, _groups(rep["not_loaded"]),
             _groups(rep["not_initialised"]))


def _groups(names: list[str]) -> str:
    """Tensor names summarised by module: the head as one, encoder parts by their first two name parts."""
    parts = [".".join(n.split(".")[:2]) if n.startswith("encoder.") else n.split(".")[0] for n in names]
    return ", ".join(dict.fromkeys(parts)) or "none"


def _subcentroid_row(ev: dict, head: torch.nn.Module) -> dict:
    """The live-sub-centroid columns of a log row (DNC heads only): the measure on the test set and,
    with revival on, how many sub-centroids have been re-seeded so far."""
    if "live_mean" not in ev:
        return {}
    row = {"test_live": ev["live_mean"], "test_live_min": ev["live_min"], "centroid_cos": ev["centroid_cos"],
           "live_per_class": ev["live_per_class"]}
    if getattr(head, "revive", False):
        row["revivals"] = int(head.revivals.sum())
        # whether (and for how many classes) the first clustering from memory has happened, and the
        # smoothed batch margin that gates it (frozen once it has): a gate that never opens shows here
        row["clustered_classes"] = int(head.initialised.sum())
        margin = float(head.ready_margin)
        row["ready_margin"] = margin if margin >= -2 else None  # -3: no batch yet
    return row


def _reconcile(model_cfg: ModelConfig | None, resume: ckpt_io.Checkpoint | None) -> ModelConfig:
    """The model config to use: the given one, or the checkpoint's, refusing mismatches on resume."""
    if resume is None:
        if model_cfg is None:
            raise InputError("a model config (`model_cfg`) is needed when not resuming")
        return model_cfg
    if model_cfg is not None:
        theirs = resume.model_config
        for name in theirs.to_dict():
            if name in ("class_names", "mean", "std"):
                continue
            mine, ck = getattr(model_cfg, name), getattr(theirs, name)
            if name == "k":
                mine, ck = normalise_ks(theirs.num_classes, mine), normalise_ks(theirs.num_classes, ck)
            if mine != ck:
                label = "embedding width" if name == "embed_dim" else name
                raise InputError(f"{label} mismatch on resume: checkpoint has {getattr(theirs, name)}, "
                                 f"requested {getattr(model_cfg, name)}")
    return resume.model_config
