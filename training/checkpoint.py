"""The training checkpoint artefact: the only module that reads and writes it.

One safetensors file holds every tensor (model weights and buffers, including the sub-centroids and
the class memory; optimiser state; RNG states) and, in its metadata, a JSON description (format
version, model config, training config, epoch/step, metric history, torch version). A copy of the
JSON is written beside it for people. Writes are atomic (temporary file, fsync, rename), so a run
stopped mid-save keeps its previous checkpoint. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dnc.core.errors import InputError
from dnc.training.model import ModelConfig, build_model

FORMAT = "dnc-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    train_config: dict = field(default_factory=dict)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken in total
    step_in_epoch: int = 0  # steps already taken in epoch `epoch` (mid-epoch saves)
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. exemplar names after anchoring

    def build_model(self) -> torch.nn.Module:
        """A model (classifier or segmenter) in eval mode holding these weights and centroids."""
        model = build_model(self.model_config)
        model.load_state_dict(self.model_state)
        return model.eval()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into flat tensors and a JSON-able remainder."""
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, val in slots.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                meta["state"][str(pid)][key] = val
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {int(pid): dict(vals) for pid, vals in meta["state"].items()}
    for name, t in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    return {"state": state, "param_groups": meta["param_groups"]}


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    """Atomically write a checkpoint to `path` (.safetensors) and its JSON description beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in ckpt.model_state.items()}
    optim_meta = None
    if ckpt.optimizer_state is not None:
        flat, optim_meta = _flatten_optimizer(ckpt.optimizer_state)
        tensors.update(flat)
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in ckpt.rng.items()})
    meta = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__, "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config, "epoch": ckpt.epoch, "step": ckpt.step,
        "step_in_epoch": ckpt.step_in_epoch, "history": ckpt.history, "optimizer": optim_meta,
        "extra": ckpt.extra,
    }
    text = json.dumps(meta)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"dnc": text})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    tmp = side.with_name(f".{side.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, side)
    return path


def load(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save`. Raises InputError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta_text = (f.metadata() or {}).get("dnc")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise InputError(f"{path} is not a safetensors checkpoint: {e}") from e
    if not meta_text:
        raise InputError(f"{path} has no DNC checkpoint metadata")
    try:
        meta = json.loads(meta_text)
    except ValueError as e:
        raise InputError(f"{path} has unreadable DNC checkpoint metadata ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise InputError(f"{path}: unsupported checkpoint format {meta.get('format')} v{meta.get('version')}")
    group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    optim = None
    if meta.get("optimizer") is not None:
        optim = _unflatten_optimizer({f"optim.{k}": v for k, v in group("optim.").items()}, meta["optimizer"])
    mc = dict(meta["model_config"])
    mc.setdefault("revive", False)  # written before sub-centroids were revived: no such buffers
    mc.setdefault("revive_momentum", mc.get("momentum", 0.999))  # written when one momentum served both
    state = group("model.")
    if mc["revive"] and "head.initialised" in state and "head.ready_margin" not in state:
        # written before the batch-margin gate: a run already clustered stays so, one not yet starts afresh
        state["head.ready_margin"] = torch.tensor(-3.0)
    return Checkpoint(
        model_config=ModelConfig(**mc), model_state=state,
        train_config=meta.get("train_config", {}), epoch=meta["epoch"], step=meta["step"],
        step_in_epoch=meta.get("step_in_epoch", 0), history=meta.get("history", []),
        optimizer_state=optim, rng=group("rng."), extra=meta.get("extra", {}),
    )
