"""The training loop: one readable function, fit for long runs and for torchrun, for both tasks.

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
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from training import checkpoint as ckpt_io
from training import distributed, progress
from training.batches import augment, epoch_batches, iterate, normalise
from training.class_names import safe_name
from training.config import TrainConfig
from training.data import ImageData, load_dataset
from training.head import DNCHead, normalise_ks
from training.liveness import summarise, win_counts
from training.model import Classifier, ModelConfig, build_model
from training.report import topk_correct, write_log
from training.seg_task import SegmentationTask

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
        raise ValueError(f"--device {name}: no CUDA GPU is available here")
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
    from dataclasses import replace
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
        raise ValueError(f"checkpoint was written by {n} process(es); resume with the same number "
                         f"(this run has {distributed.world_size()})")
    aug_gen.set_state(rng[f"aug.{distributed.rank()}"])


def check_data(model_cfg: ModelConfig, data: ImageData) -> None:
    """Refuse a data set whose classes or image format differ from the model's, naming the mismatch."""
    if data.num_classes != model_cfg.num_classes:
        raise ValueError(f"{data.name} has {data.num_classes} classes but the model has {model_cfg.num_classes}")
    if (data.in_chans, data.image_size) != (model_cfg.in_chans, model_cfg.image_size):
        raise ValueError(f"{data.name} images are {data.in_chans}x{data.image_size}px but the model takes "
                         f"{model_cfg.in_chans}x{model_cfg.image_size}px")
    # compared in their folder-safe form: checkpoints from before Fashion-MNIST's "T-shirt/top" became
    # "T-shirt-top" (class_names.safe_name) still evaluate, anchor and resume on the same data
    if model_cfg.class_names and [safe_name(n) for n in data.class_names] != [safe_name(n) for n in
                                                                             model_cfg.class_names]:
        bad = next(i for i, (a, b) in enumerate(zip(data.class_names, model_cfg.class_names, strict=True))
                   if safe_name(a) != safe_name(b))
        raise ValueError(f"class {bad} of {data.name} is {data.class_names[bad]!r} but the model's is "
                         f"{model_cfg.class_names[bad]!r}")


class ClassificationTask:
    """What the training loop needs to train a classifier: data, one step, evaluation, log columns."""

    name = "classification"
    train_metric = "train_top1"

    def load(self, spec: str, split: str, model_cfg: ModelConfig, limit: int) -> ImageData:
        return subset(load_dataset(spec, split, model_cfg.in_chans, model_cfg.image_size), limit)

    def prepare(self, x, y, gen, model_cfg):
        return normalise(augment(x, gen), model_cfg.mean, model_cfg.std), y

    def step(self, encoder, head, opt, x, y, ids, amp, model, step, seed):
        """Returns (loss, correct samples, samples)."""
        loss, logits = train_step(encoder, head, opt, x, y, ids, amp, update=model.head.update,
                                  loss_fn=model.head.loss)
        return loss, int((logits.argmax(1) == y).sum()), len(y)

    def evaluate(self, model, data, device, batch_size=512, workers=0, desc="eval") -> dict:
        return evaluate(model, data, device, batch_size, workers, desc)

    def row(self, ev: dict) -> dict:
        return {"test_top1": ev["top1"], "test_top5": ev["top5"], "test_loss": ev["loss"]}

    def summary(self, row: dict) -> str:
        return f"test top-1 {row['test_top1']:.2f} top-5 {row['test_top5']:.2f}"

    def epoch_end(self, model, data, device, out, epoch) -> None:
        """Nothing beyond the log for classifiers."""


def task_for(model_cfg: ModelConfig):
    """The task object of a model config."""
    return SegmentationTask() if model_cfg.task == "segmentation" else ClassificationTask()


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
    out = Path(cfg.out)
    try:
        resume = ckpt_io.load(cfg.resume) if cfg.resume else None
        if resume is not None and (resume.optimizer_state is None or "torch" not in resume.rng):
            raise ValueError(f"{cfg.resume} is not a resumable training checkpoint (an anchored or exported "
                             "model keeps no optimiser state); train a new run from it instead")
        model_cfg = _reconcile(model_cfg, resume)
        if resume is not None:
            for name in RUN_DEFINING:  # compared as JSON values (a tuple equals its saved list)
                mine = json.loads(json.dumps(getattr(cfg, name)))
                if name in resume.train_config and mine != resume.train_config[name]:
                    raise ValueError(f"{name} mismatch on resume: checkpoint has {resume.train_config[name]}, "
                                     f"requested {getattr(cfg, name)}")
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
        epoch, step, skip, history = 0, 0, 0, []
        partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}  # of an unfinished epoch
        if resume is not None:
            model.load_state_dict(resume.model_state)
            opt.load_state_dict(resume.optimizer_state)
            _restore_rng(resume.rng, aug_gen)
            epoch, step, skip, history = resume.epoch, resume.step, resume.step_in_epoch, resume.history
            partial.update(resume.extra.get("partial_epoch", {}))
            log.info("resumed %s at epoch %d, step %d", cfg.resume, epoch, step)
        # BN buffers of the encoder are broadcast from rank 0 by DDP; the head's buffers are
        # identical on every rank by construction (gathered updates), so they are not.
        encoder, head = _ddp(model.encoder, device), _ddp(model.head, device)

        n_batches = len(epoch_batches(len(train_set), cfg.batch_size, cfg.seed, 0, True,
                                      distributed.rank(), distributed.world_size()))
        if n_batches == 0:
            raise ValueError(f"batch size {cfg.batch_size} x {distributed.world_size()} ranks exceeds the "
                             f"{len(train_set)} training samples")
        if skip >= n_batches:
            raise ValueError(f"checkpoint is {skip} steps into an epoch of {n_batches}: resume with the "
                             "checkpoint's batch size and data")
        total = cfg.epochs * n_batches
        warmup = int(cfg.warmup_epochs * n_batches)
        if isinstance(model.head, DNCHead):
            model.head.schedule(init_step=warmup)  # sub-centroids from data once the warm-up is over
        ckpt_path = out / "checkpoint.safetensors"
        step_losses: list[float] = []
        amp = device.type == "cuda"

        def save(ep: int, st: int, in_epoch: int, part: dict | None = None):
            distributed.broadcast_buffers(model.encoder)
            rng = _rng_state(aug_gen, device)  # a collective: every rank takes part
            if distributed.is_main():
                extra = {"partial_epoch": part} if part else {}
                ckpt_io.save(ckpt_io.Checkpoint(model_cfg, model.state_dict(), asdict(cfg), ep, st, in_epoch,
                                                history, opt.state_dict(), rng, extra), ckpt_path)
            if distributed.is_active():
                torch.distributed.barrier()

        log.info("training %s %s head on %s: %d samples, %d classes, %d steps/epoch, device %s", task.name,
                 model_cfg.head, cfg.data, len(train_set), model_cfg.num_classes, n_batches, device)
        stop = False
        while epoch < cfg.epochs and not stop:
            model.train()
            t0 = time.time() - partial["seconds"]
            batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch, True,
                                    distributed.rank(), distributed.world_size())[skip:]
            bar = progress.bar(iterate(train_set, batches, cfg.workers), total=n_batches, initial=skip,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", show=distributed.is_main())
            loss_sum, correct, seen = partial["loss_sum"], partial["correct"], partial["seen"]
            for i, (x, y, ids) in enumerate(bar, start=skip):
                lr = lr_at(step, total, warmup, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                if isinstance(model.head, DNCHead):
                    model.head.set_pace(min(1.0, lr / cfg.lr))
                x, y = task.prepare(x.to(device), y.to(device), aug_gen, model_cfg)
                x = x.contiguous(memory_format=torch.channels_last)
                loss, n_correct, n_seen = task.step(encoder, head, opt, x, y, ids.to(device), amp, model, step,
                                                    cfg.seed)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr")
                step += 1
                step_losses.append(loss.item())
                loss_sum += loss.item() * n_seen
                correct += n_correct
                seen += n_seen
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{100 * correct / max(1, seen):.1f}", lr=f"{lr:.3g}")
                stop = bool(cfg.max_steps and step >= cfg.max_steps)
                if i + 1 < n_batches and (stop or (cfg.save_every and step % cfg.save_every == 0)):
                    part = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "seconds": time.time() - t0}
                    save(epoch, step, i + 1, part)
                if stop:
                    break
            bar.close()
            if i + 1 < n_batches:  # stopped mid-epoch: saved above, no epoch row yet
                break
            # Only rank 0 writes the history, from its own running sums (its shard's train metrics).
            skip, partial = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            distributed.broadcast_buffers(model.encoder)  # every rank evaluates and saves one model
            ev = task.evaluate(model, test_set, device, cfg.eval_batch_size, cfg.workers, desc="test")
            row = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss": loss_sum / max(1, seen),
                   task.train_metric: 100 * correct / max(1, seen), **task.row(ev),
                   "seconds": round(time.time() - t0, 1)}
            row.update(_subcentroid_row(ev, model.head))
            history.append(row)
            log.info("epoch %d: train loss %.4f | %s (%.0fs)", epoch + 1, row["train_loss"], task.summary(row),
                     row["seconds"])
            task.epoch_end(model, test_set, device, out, epoch + 1)
            epoch += 1
            save(epoch, step, 0)
            if distributed.is_main():
                write_log(history, out)
        return {"history": history, "step_losses": step_losses, "checkpoint": str(ckpt_path), "model": model,
                "finished": epoch >= cfg.epochs, "step": step}
    finally:
        if started_ddp:
            distributed.teardown()


def _init_backbone(model: torch.nn.Module, path: str) -> None:
    """Start a segmenter's backbone from a classifier checkpoint, logging what did and did not load."""
    from training.segmenter import Segmenter, init_from_classifier

    if not isinstance(model, Segmenter):
        raise ValueError("--init starts a segmenter from a classifier checkpoint; this run trains a classifier")
    source = ckpt_io.load(path)
    if source.model_config.task != "classification":
        raise ValueError(f"--init {path} is a {source.model_config.task} checkpoint; give a classifier's")
    src = source.model_config
    if src.arch != model.cfg.arch or src.width != model.cfg.width:
        raise ValueError(f"--init {path} is a {src.arch} of width {src.width}; this segmenter is a {model.cfg.arch} "
                         f"of width {model.cfg.width}")
    if src.small_stem != model.cfg.small_stem:
        stems = ["3x3" if c.small_stem else "7x7" for c in (src, model.cfg)]
        raise ValueError(f"--init {path} was trained on {src.image_size} px images ({stems[0]} stem) but this "
                         f"segmenter takes {model.cfg.image_size} px ones ({stems[1]} stem): give --image-size on "
                         "the same side of 64")
    rep = init_from_classifier(model, source.model_state)
    log.info("--init %s: loaded %d backbone tensors (%s adapted from 1 to %d channels); not loaded from the "
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
            raise ValueError("a model config is needed when not resuming")
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
                raise ValueError(f"{label} mismatch on resume: checkpoint has {getattr(theirs, name)}, "
                                 f"requested {getattr(model_cfg, name)}")
    return resume.model_config
