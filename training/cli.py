"""`dnc train`, `dnc eval` and `dnc anchor`: thin command-line wrappers over the training library."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields, replace
from pathlib import Path

from dnc.core import tasks
from dnc.core.errors import InputError
from dnc.core.seg_folder import MEAN, STD, is_seg_folder, pixel_of, read_classes, split_files
from dnc.training.config import SEGMENTATION_ANNEAL, SEGMENTATION_K, SEGMENTATION_READY_MARGIN, ModelConfig, TrainConfig
from dnc.training.unknowns import write_unknowns

# The commands import the modules that need torch (checkpoint, data, loop, anchor, folders, scenes) when they
# run: `dnc` builds its parser, and runs its client commands, without torch.


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None


def _k_value(text: str) -> int | list[int]:
    """--K 4 (all classes) or --K 4,4,2,... (one per class)."""
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--K must be an integer or a comma list of integers, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--K must be >= 1, got {text}")
    return vals[0] if len(vals) == 1 else vals


_M = ModelConfig(num_classes=2)
# (flag, type, default, help) of the model flags; the ModelConfig field is the flag's name.
MODEL_FLAGS = [
    ("--K", _k_value, _M.k, "sub-centroids per class (one, or a comma list)"),
    ("--arch", str, _M.arch, "resnet10, resnet18, resnet34 or resnet50"),
    ("--width", int, _M.width, "backbone base width (64 is the standard ResNet)"),
    ("--embed-dim", int, _M.embed_dim, "embedding width D"),
    ("--temperature", float, _M.temperature, "logits = cosine / temperature"),
    ("--centroid-momentum", float, _M.momentum, "momentum mu of random sub-centroids (of all with --no-revive)"),
    ("--epsilon", float, _M.epsilon, "Sinkhorn entropic regularisation"),
    ("--sinkhorn-iters", int, _M.sinkhorn_iters, "Sinkhorn iterations"),
    ("--memory-size", int, _M.memory_size, "memory slots per class"),
    ("--memory-cap", int, _M.memory_cap, "max samples per class entering the memory per step"),
    ("--revive-every", int, _M.revive_every, "with --revive: updates between checks for dead sub-centroids"),
    ("--revive-momentum", float, _M.revive_momentum, "with --revive: momentum of sub-centroids clustered from data"),
    ("--assign-weight", float, _M.assign_weight, "experimental: weight of the sub-centroid assignment loss"),
    ("--ready-margin", float, "0.2; segmenters 0.05", "with --revive: smoothed batch margin (own minus best "
     "other class) at which sub-centroids are first clustered from memory"),
    ("--decoder-dim", int, _M.decoder_dim, "segmentation: channels of the light decoder"),
    ("--pixel-samples", int, _M.pixel_samples, "segmentation: pixels per class and step (seeded) that update "
     "the sub-centroids"),
    ("--image-size", int, 32, "input size for image folders (segmentation folders: their first image's)"),
    ("--channels", int, 3, "input channels for image folders (1 or 3)"),
]
# (flag, type, help) of TrainConfig fields; the field is the flag's name.
TRAIN_FLAGS = [
    ("--epochs", int, "epochs in the whole run"),
    ("--batch-size", int, "per process"),
    ("--lr", float, "peak learning rate"),
    ("--weight-decay", float, "on weights, not on BatchNorm or biases"),
    ("--warmup-epochs", float, "linear warm-up length"),
    ("--gamma", float, "step schedule: lr factor at each milestone"),
    ("--seed", int, "model init, batch order and augmentation"),
    ("--device", str, "auto, cpu, cuda or cuda:N"),
    ("--workers", int, "image decoding processes (image folders)"),
    ("--save-every", int, "also checkpoint every N steps (0: end of each epoch)"),
    ("--max-steps", int, "stop after N steps in total (0: no limit)"),
    ("--train-limit", int, "use only the first N training samples (0: all); image folders are in class "
     "order, so cap them with `dnc write-folder --per-class` instead"),
    ("--test-limit", int, "use only the first N test samples (0: all)"),
]
# Flag destination -> ModelConfig field, where they differ.
_FIELD = {"K": "k", "centroid_momentum": "momentum", "channels": "in_chans"}


def _model_overrides(a: argparse.Namespace) -> dict:
    """Model flags the user gave, as ModelConfig fields."""
    given = {f[0].lstrip("-").replace("-", "_"): None for f in MODEL_FLAGS}
    given["head"] = None
    given["revive"] = None
    given["anneal"] = None
    out = {}
    for dest in given:
        val = getattr(a, dest)
        if val is not None:
            out[_FIELD.get(dest, dest)] = val
    return out


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags whose None means "the checkpoint's or the model's own"."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_eval(sub)
    _add_anchor(sub)
    _add_write_folder(sub)
    _add_write_unknowns(sub)
    _add_write_scenes(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = TrainConfig()
    p = sub.add_parser("train", help="train a DNC (or softmax twin) image classifier or segmenter",
                       formatter_class=_Help)
    p.add_argument("--data", default=None, help="'fashion-mnist', or a path: IDX files, a CIFAR-10/100 python "
                   "folder, an image folder, or a segmentation folder (trains a segmenter; see write-scenes) "
                   f"(default {t.data})")
    p.add_argument("--out", default=None, help=f"run folder: checkpoint, log.csv/json, curves.png (default {t.out}; "
                   "on --resume, the checkpoint's)")
    _add_model_options(p.add_argument_group("model (on --resume, the checkpoint's; a flag given that differs is "
                                            "refused)"))
    _add_run_options(p.add_argument_group("optimisation and run (on --resume, the checkpoint's unless given)"), t)
    p.set_defaults(func=cmd_train)


def _add_model_options(g: argparse._ArgumentGroup) -> None:
    """`dnc train`'s model options: each defaults to None, "the model's own or the checkpoint's"."""
    m = _M
    for flag, kind, default, text in MODEL_FLAGS:
        g.add_argument(flag, type=kind, default=None, help=f"{text} (default {default})")
    g.add_argument("--head", choices=["dnc", "softmax"], default=None, help=f"head type (default {m.head})")
    g.add_argument("--revive", action=argparse.BooleanOptionalAction, default=None,
                   help="cluster each class's memory into its sub-centroids after the warm-up and re-cluster "
                        f"classes whose sub-centroids stop winning (default {m.revive}; --no-revive is the paper's "
                        "random initialisation; see docs/BENCHMARKS.md)")
    g.add_argument("--anneal", action=argparse.BooleanOptionalAction, default=None,
                   help="sub-centroids move at the learning rate's pace (momentum 1 - (1 - mu) * lr / peak) and "
                        "none is re-seeded once the rate is under a quarter of its peak (default: segmenters "
                        "on, classifiers off)")


def _add_run_options(g: argparse._ArgumentGroup, t: TrainConfig) -> None:
    """`dnc train`'s optimisation and run options (defaults: `t`'s, or the checkpoint's on --resume)."""
    for flag, kind, text in TRAIN_FLAGS:
        dest = flag.lstrip("-").replace("-", "_")
        g.add_argument(flag, type=kind, default=None, help=f"{text} (default {getattr(t, dest)})")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help=f"(default {t.optimizer})")
    g.add_argument("--schedule", choices=["cosine", "step"], default=None, help=f"(default {t.schedule})")
    g.add_argument("--milestones", type=_floats, default=None,
                   help="step schedule: comma list of fractions of the run where lr is multiplied by --gamma "
                        f"(default {','.join(map(str, t.milestones))})")
    g.add_argument("--resume", default="", help="checkpoint to continue from (same run folder is typical)")
    g.add_argument("--init", default=None, help="segmentation: start the backbone from this classifier "
                   "checkpoint (DNC or softmax; arch and width follow it; a grey stem is spread over RGB)")
    g.add_argument("--anchor", action="store_true", help="after training, anchor sub-centroids to real "
                   "samples and evaluate the anchored model too")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 of a checkpoint on a data set")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def _add_anchor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anchor", help="replace sub-centroids by their nearest real training samples")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="fashion-mnist", help="the training set the ids refer to")
    p.add_argument("--out", required=True, help="anchored checkpoint to write (.safetensors)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_anchor)


def _add_write_folder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("write-folder", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="write an in-memory data set (Fashion-MNIST, IDX, CIFAR) as train/ and test/ image folders")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", required=True, help="folder to create (holds train/ and test/)")
    p.add_argument("--labels", choices=["fine", "coarse"], default="fine",
                   help="fine: the data set's classes; coarse: Fashion-MNIST's 5 coarse classes")
    p.add_argument("--per-class", type=int, default=0, help="at most N training images per class (0: all)")
    p.add_argument("--test-per-class", type=int, default=None, help="at most N test images per class "
                   "(default: as --per-class)")
    p.set_defaults(func=cmd_write_folder)


def _add_write_unknowns(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("write-unknowns", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="write pictures no Fashion-MNIST model has seen, from real data (scikit-learn's digits, "
                       "crops of scikit-image's photographs) and noise: open-set unknowns, or a new class to add")
    p.add_argument("--out", required=True, help="folder to create (one subfolder per kind)")
    p.add_argument("--kinds", default="digits,photos,noise", help="comma-separated: digits, photos, noise")
    p.add_argument("--count", type=int, default=100, help="pictures of each kind")
    p.add_argument("--size", type=int, default=28, help="picture side in pixels")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1)
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="train and test pictures never share a digit scan or a photograph's half")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_write_unknowns)


def _add_write_scenes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("write-scenes", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="write FashionScenes: a segmentation set of real Fashion-MNIST items on real backgrounds")
    p.add_argument("--out", required=True, help="segmentation folder to create (images/, masks/, classes.json)")
    p.add_argument("--labels", choices=["fine", "coarse"], default="fine",
                   help="fine: 10 item classes; coarse: Fashion-MNIST's 5 coarse classes (plus background)")
    p.add_argument("--size", type=int, default=64, help="scene side in pixels")
    p.add_argument("--train", type=int, default=10000, help="training scenes")
    p.add_argument("--test", type=int, default=1000, help="test scenes")
    p.add_argument("--seed", type=int, default=0, help="scene i of a split depends on (seed, split, i) only")
    p.add_argument("--video", type=int, default=0, metavar="N", help="write N clips instead (videos/*.mp4 with "
                   "their lossless masks/*.masks.mkv): test items moving over real backgrounds")
    p.add_argument("--video-size", default="256x256", metavar="WxH", help="with --video: clip width x height")
    p.add_argument("--frames", type=int, default=48, help="with --video: frames per clip")
    p.add_argument("--fps", type=int, default=12, help="with --video: frame rate")
    p.set_defaults(func=cmd_write_scenes)


def cmd_train(a: argparse.Namespace) -> int:
    from dnc.training import checkpoint as ckpt_io
    from dnc.training.data import load_dataset
    from dnc.training.loop import train

    given = _model_overrides(a)
    if given.get("in_chans", 3) not in (1, 3):
        raise InputError(f"`channels` must be 1 or 3, got {given['in_chans']}")
    train_given = {f.name: getattr(a, f.name) for f in fields(TrainConfig)
                   if f.name != "resume" and getattr(a, f.name, None) is not None}
    if a.resume:
        # The checkpoint's configs, with the flags given on top: train() refuses any that would
        # change the run (model shape, batch, schedule, data) and names it.
        ck = ckpt_io.load(a.resume)
        known = {f.name for f in fields(TrainConfig)}
        # max_steps and save_every belong to one invocation, not to the run.
        saved = {k: v for k, v in ck.train_config.items() if k in known and k not in ("max_steps", "save_every")}
        tcfg = TrainConfig(**{**saved, **train_given, "resume": a.resume})
        mcfg = replace(ck.model_config, **given)
    else:
        tcfg = TrainConfig(**train_given)
        if is_seg_folder(tcfg.data):
            mcfg = _segmenter_config(tcfg, given)
        else:
            if tcfg.init:
                raise InputError(f"`init` starts a {tasks.SEGMENTATION.noun} from a {tasks.CLASSIFICATION.noun}; "
                                 "`data` is not a segmentation folder")
            probe = load_dataset(tcfg.data, "train", given.get("in_chans", 3), given.get("image_size", 32))
            fixed = {k: v for k, v in given.items() if k not in ("in_chans", "image_size")}
            mcfg = ModelConfig(num_classes=probe.num_classes, in_chans=probe.in_chans, image_size=probe.image_size,
                               mean=probe.mean, std=probe.std, class_names=probe.class_names, **fixed)
    result = train(tcfg, mcfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports and anchors
        return 0
    if not result["finished"]:
        print(f"stopped at step {result['step']} (--max-steps); continue with --resume {result['checkpoint']}")
        return 0
    last = result["history"][-1]
    if "test_miou" in last:
        print(f"test mIoU {last['test_miou']:.2f}%  pixel accuracy {last['test_pixel_acc']:.2f}%  "
              f"-> {result['checkpoint']}")
    else:
        print(f"test top-1 {last['test_top1']:.2f}%  top-5 {last['test_top5']:.2f}%  -> {result['checkpoint']}")
    if a.anchor:
        _anchor(result["checkpoint"], tcfg.data, Path(tcfg.out) / "anchored.safetensors", batch_size=512,
                device_name=tcfg.device)
    return 0


def _segmenter_config(tcfg: TrainConfig, given: dict) -> ModelConfig:
    """The model config of a new segmenter on the segmentation folder tcfg.data: its classes; RGB at the
    size of its first training image unless --image-size says otherwise; K = SEGMENTATION_K unless --K;
    with --init, the classifier's backbone shape and its normalisation (spread over R, G, B)."""
    from PIL import Image

    from dnc.training import checkpoint as ckpt_io

    classes = read_classes(tcfg.data)
    size = given.pop("image_size", None)
    if size is None:
        with Image.open(split_files(tcfg.data, "train")[0][0]) as im:
            size = min(im.size)
    in_chans = given.pop("in_chans", 3)
    mean, std = (MEAN, STD) if in_chans == 3 else ([0.5], [0.5])
    if tcfg.init:
        src = ckpt_io.load(tcfg.init).model_config
        for name in ("arch", "width"):
            if name in given and given[name] != getattr(src, name):
                raise InputError(f"`{name}` {given[name]} differs from the `init` classifier's {getattr(src, name)}")
            given[name] = getattr(src, name)
        mean, std = [src.mean[0]] * in_chans, [src.std[0]] * in_chans  # grey classifiers: one value
        if src.in_chans == in_chans:
            mean, std = list(src.mean), list(src.std)
    given.setdefault("k", SEGMENTATION_K)
    given.setdefault("ready_margin", SEGMENTATION_READY_MARGIN)
    given.setdefault("anneal", SEGMENTATION_ANNEAL)
    return ModelConfig(num_classes=len(classes.names), task=tasks.SEGMENTATION.name, in_chans=in_chans, image_size=size,
                       mean=mean, std=std, class_names=classes.names, ignore_index=classes.ignore_index, **given)


def cmd_eval(a: argparse.Namespace) -> int:
    from dnc.training import checkpoint as ckpt_io
    from dnc.training.loop import check_data, resolve_device, task_for

    ck = ckpt_io.load(a.checkpoint)
    mc = ck.model_config
    task = task_for(mc)
    data = task.load(a.data, a.split, mc, 0)
    check_data(mc, data)
    device = resolve_device(a.device)
    res = task.evaluate(ck.build_model().to(device), data, device, a.batch_size)
    res.update(checkpoint=a.checkpoint, data=a.data, split=a.split, head=mc.head, task=mc.task)
    if a.json:
        print(json.dumps(res))
    elif tasks.task(mc.task).dense:
        ious = ", ".join(f"{n} {'-' if v is None else f'{v:.1f}'}"
                         for n, v in zip(mc.class_names, res["iou_per_class"], strict=True))
        print(f"{a.checkpoint} on {a.data}/{a.split}: mIoU {res['miou']:.2f}%  pixel accuracy {res['pixel_acc']:.2f}%  "
              f"({len(data)} images)\nIoU per class: {ious}" + _live_text(res, mc.class_names))
    else:
        print(f"{a.checkpoint} on {a.data}/{a.split}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
              f"({res['n']} images)" + _live_text(res, mc.class_names))
    return 0


def _live_text(res: dict, names: list[str]) -> str:
    """The live-sub-centroid measure as text lines (empty for a softmax head)."""
    if res.get("live_mean") is None:
        return ""
    names = names or [str(c) for c in range(len(res["live_per_class"]))]
    cos = res["centroid_cos"]
    lines = [f"\nlive sub-centroids per class (nearest for >= 5% of the class's images): mean "
             f"{res['live_mean']:.2f}, fewest {res['live_min']}; mean pairwise cosine within a class "
             + ("n/a (K=1)" if cos is None else f"{cos:.3f}")]
    for name, live, k, c in zip(names, res["live_per_class"], res["k_per_class"], res["centroid_cos_per_class"],
                                strict=True):
        lines.append(f"  {name:<16} {'-' if live is None else live}/{k} live" + ("" if c is None else f", cos {c:.3f}"))
    return "\n".join(lines)


def _anchor(checkpoint: str, data_spec: str, out: Path, batch_size: int, device_name: str) -> dict:
    from dnc.training import checkpoint as ckpt_io
    from dnc.training.anchor import anchor_model
    from dnc.training.loop import check_data, resolve_device, task_for

    ck = ckpt_io.load(checkpoint)
    mc = ck.model_config
    device = resolve_device(device_name)
    task = task_for(mc)
    train_set, test_set = task.load(data_spec, "train", mc, 0), task.load(data_spec, "test", mc, 0)
    check_data(mc, train_set)
    check_data(mc, test_set)
    model = ck.build_model().to(device)
    dense = tasks.task(mc.task).dense
    metric = tasks.task(mc.task).metric
    before = task.evaluate(model, test_set, device, batch_size)
    info = anchor_model(model, train_set, device, batch_size)
    after = task.evaluate(model, test_set, device, batch_size)

    def name(i: int) -> str | None:  # a segmenter's ids are pixel ids
        return None if i < 0 else train_set.name_of(pixel_of(i, mc.image_size)[0] if dense else i)

    names = [[name(i) for i in row] for row in info["exemplars"]]
    extra = dict(ck.extra, anchored=True, exemplar_names=names, anchor_data=data_spec,
                 **{f"unanchored_{metric}": before[metric], f"anchored_{metric}": after[metric]})
    ckpt_io.save(ckpt_io.Checkpoint(mc, model.state_dict(), train_config=ck.train_config, epoch=ck.epoch,
                                    step=ck.step, history=ck.history, extra=extra), out)
    label = "mIoU" if metric == "miou" else "top-1"
    print(f"unanchored {label} {before[metric]:.2f}%  anchored {label} {after[metric]:.2f}%  "
          f"(delta {after[metric] - before[metric]:+.2f}; mean centroid-exemplar cosine "
          f"{info['mean_similarity']:.3f})  -> {out}")
    return {"unanchored": before, "anchored": after, **info}


def cmd_anchor(a: argparse.Namespace) -> int:
    _anchor(a.checkpoint, a.data, Path(a.out), batch_size=a.batch_size, device_name=a.device)
    return 0


def cmd_write_folder(a: argparse.Namespace) -> int:
    from dnc.training.folders import write_dataset_folders

    res = write_dataset_folders(a.data, Path(a.out), labels=a.labels, per_class=a.per_class,
                                test_per_class=a.test_per_class)
    for split, counts in res.items():
        print(f"{Path(a.out) / split}: {sum(counts.values())} images in {len(counts)} classes "
              f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def cmd_write_unknowns(a: argparse.Namespace) -> int:
    made = write_unknowns(a.out, tuple(k.strip() for k in a.kinds.split(",") if k.strip()), count=a.count,
                          size=a.size, channels=a.channels, split=a.split, seed=a.seed)
    print(f"{a.out}: {', '.join(f'{k}/ {n}' for k, n in made.items())} pictures of {a.size}x{a.size} "
          f"({a.split} split, seed {a.seed})")
    return 0


def cmd_write_scenes(a: argparse.Namespace) -> int:
    from dnc.training.scenes import write_clips, write_scenes

    if a.video:
        try:
            width, height = (int(v) for v in a.video_size.lower().split("x"))
        except ValueError:
            raise InputError(f"`video_size` {a.video_size!r}: give WIDTHxHEIGHT, e.g. 640x480") from None
        classes = write_clips(a.out, a.video, labels=a.labels, height=height, width=width, frames=a.frames,
                              fps=a.fps, seed=a.seed)
        print(f"{a.out}: {a.video} clips of {a.frames} frames, {width}x{height} at {a.fps} fps, "
              f"{len(classes.names)} classes ({', '.join(classes.names)}); videos/ and masks/")
        return 0
    classes = write_scenes(a.out, labels=a.labels, size=a.size, train=a.train, test=a.test, seed=a.seed)
    print(f"{a.out}: {a.train} training and {a.test} test scenes of {a.size}x{a.size} px, "
          f"{len(classes.names)} classes ({', '.join(classes.names)})")
    return 0
