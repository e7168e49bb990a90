"""Training segmenters end to end on generated scenes: a short run learns (beats predicting the
background everywhere), resume continues the same run exactly, --init loads a classifier's backbone,
and the command line refuses what does not fit."""

import pytest
import torch

from dnc.training import checkpoint as ckpt_io
from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig
from dnc.training.scenes import write_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, fmnist_ready):
    root = tmp_path_factory.mktemp("scenes") / "coarse"
    write_scenes(root, "coarse", size=32, train=64, test=16, seed=0)
    return root


@pytest.fixture(scope="module")
def more_scenes(tmp_path_factory, fmnist_ready):
    root = tmp_path_factory.mktemp("scenes") / "coarse-more"
    write_scenes(root, "coarse", size=32, train=512, test=48, seed=1)
    return root


def _cfgs(scenes, out, **kw):
    t = TrainConfig(data=str(scenes), out=str(out), epochs=2, batch_size=16, lr=0.05, workers=0,
                    warmup_epochs=0.5, **kw)
    m = ModelConfig(num_classes=6, task="segmentation", in_chans=3, image_size=32, width=4, embed_dim=8, decoder_dim=8,
                    k=3, memory_size=16, memory_cap=4, revive_every=2, mean=[0.5] * 3, std=[0.5] * 3,
                    class_names=["background", "tops", "trouser", "dress", "footwear", "bag"])
    return t, m


@pytest.mark.slow
def test_resume_gives_the_same_next_steps(scenes, tmp_path, monkeypatch):
    # waive the readiness gate so the 8 steps cross the clustering from memory and the dead checks
    monkeypatch.setattr("dnc.training.head.READY_MARGIN", -2.0)
    monkeypatch.setattr("dnc.training.head.READY_SHARE", 0.0)
    t, m = _cfgs(scenes, tmp_path / "full")
    full = train(t, m)
    assert len(full["step_losses"]) == 8
    for stop in (3, 4):
        t, m = _cfgs(scenes, tmp_path / f"part{stop}", max_steps=stop)
        assert train(t, m)["step_losses"] == pytest.approx(full["step_losses"][:stop], abs=0)
        t, _ = _cfgs(scenes, tmp_path / f"part{stop}", resume=str(tmp_path / f"part{stop}" / "checkpoint.safetensors"))
        rest = train(t, None)
        assert rest["step_losses"] == pytest.approx(full["step_losses"][stop:], abs=1e-6), stop
        for got, want in zip(rest["history"], full["history"], strict=True):
            for key in want:
                if key != "seconds":
                    assert got[key] == pytest.approx(want[key], abs=1e-6), (stop, key)
    ck = ckpt_io.load(tmp_path / "full" / "checkpoint.safetensors")
    assert ck.model_config.task == "segmentation" and bool(ck.model_state["head.initialised"].any())
    # pixel ids in the memory decode to pixels of training scenes: image < 64, inside 32 x 32
    ids = ck.model_state["head.memory.ids"]
    ids = ids[ids >= 0]
    assert ids.numel() > 0 and int(ids.max()) < 64 * 32 * 32
    row = ck.history[-1]
    assert {"test_miou", "test_pixel_acc", "test_iou", "train_pixel_acc", "test_live", "live_per_class"} <= set(row)
    assert len(row["test_iou"]) == 6
    for f in ("log.csv", "curves.png", "montages/epoch-001.png", "montages/epoch-002.png"):
        assert (tmp_path / "full" / f).stat().st_size > 0


def _background_only_miou(data) -> float:
    """mIoU of the trivial answer, background everywhere, on a split (classes present in its masks)."""
    from dnc.training.seg_task import confusion_metrics

    c = data.num_classes
    truth = data.masks.long().flatten()
    truth = truth[truth != data.ignore_index]
    return confusion_metrics(torch.bincount(truth * c, minlength=c * c).view(c, c))["miou"]


@pytest.mark.slow
def test_short_run_from_a_classifier_learns_to_segment(more_scenes, dnc_checkpoint, tmp_path):
    """Two CPU minutes (512 steps of 8 scenes of 32 px), started from the small Fashion-MNIST DNC classifier of
    the test fixtures: the segmenter beats background-everywhere on held-out scenes. Segmentation leaves
    its plateau slowly on these scenes (the parametric twin measured the same here: 14.1 against 15.2), so
    the margin asked is small but beyond what predicting the background alone can reach."""
    from dnc.clients.cli import main
    from dnc.training.seg_task import SegmentationTask

    out = tmp_path / "run"
    scenes = more_scenes
    assert main(["train", "--data", str(scenes), "--out", str(out), "--init", str(dnc_checkpoint), "--epochs", "8",
                 "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0.0001",
                 "--warmup-epochs", "0.5", "--workers", "0", "--K", "3"]) == 0
    ck = ckpt_io.load(out / "checkpoint.safetensors")
    assert ck.model_config.width == 8 and ck.model_config.in_chans == 3 and ck.train_config["init"]
    assert ck.model_config.k == 3 and ck.model_config.ready_margin == 0.05  # the segmenters' gate by default
    assert ck.model_config.anneal  # segmenters' sub-centroids slow down with the learning rate by default
    test = SegmentationTask().load(str(scenes), "test", ck.model_config, 0)
    trivial = _background_only_miou(test)
    got = ck.history[-1]["test_miou"]
    print(f"mIoU {got:.1f} vs background everywhere {trivial:.1f}")
    assert got > trivial + 2.5, (got, trivial)
    assert max(v for v in ck.history[-1]["test_iou"][1:] if v is not None) > 10  # an item class is found


def test_init_loads_the_classifier_backbone_and_refuses_what_does_not_fit(scenes, dnc_checkpoint, tmp_path, capsys):
    from dnc.clients.cli import main

    out = tmp_path / "one-step"
    # one step at a negligible learning rate and no weight decay: the backbone is still the classifier's
    assert main(["train", "--data", str(scenes), "--out", str(out), "--init", str(dnc_checkpoint), "--epochs", "1",
                 "--batch-size", "8", "--lr", "1e-12", "--weight-decay", "0", "--max-steps", "1",
                 "--workers", "0"]) == 0
    seg = ckpt_io.load(out / "checkpoint.safetensors").model_state
    clf = ckpt_io.load(dnc_checkpoint).model_state
    for name, value in clf.items():
        if name.startswith("encoder.backbone.") and name.endswith("conv1.weight"):
            torch.testing.assert_close(seg[name], value, atol=1e-6, rtol=0)
    torch.testing.assert_close(seg["encoder.backbone.stem.0.weight"],
                               clf["encoder.backbone.stem.0.weight"].repeat(1, 3, 1, 1) / 3, atol=1e-6, rtol=0)
    capsys.readouterr()
    cases = [
        (["--data", "fashion-mnist", "--init", str(dnc_checkpoint)], "--data is not a segmentation folder"),
        (["--data", str(scenes), "--init", str(out / "checkpoint.safetensors")], "is a segmentation checkpoint"),
        (["--data", str(scenes), "--init", str(dnc_checkpoint), "--width", "16"], "--width 16 differs"),
        (["--data", str(scenes), "--init", str(dnc_checkpoint), "--image-size", "96"], "the same side of 64"),
        (["--data", str(scenes), "--assign-weight", "0.1"], "segmenters train with cross-entropy alone"),
    ]
    for args, message in cases:
        assert main(["train", "--out", str(tmp_path / "x"), "--max-steps", "1", "--workers", "0", *args]) == 2, args
        assert message in capsys.readouterr().err, args
