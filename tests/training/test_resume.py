"""Checkpoints: atomic self-describing files, and resume that continues the same run exactly."""

import json

import pytest
import torch

from dnc.training import checkpoint as ckpt_io
from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig


def _cfgs(tmp_path, name, revive=False, **kw):
    t = TrainConfig(data="fashion-mnist", out=str(tmp_path / name), epochs=2, batch_size=32, lr=0.05,
                    train_limit=192, test_limit=64, workers=0, warmup_epochs=0.5, **kw)
    # With revive: classes are clustered from memory once it holds 16 samples (about step 5), and
    # checked for dead sub-centroids every 2 steps, so both stops below cross that state.
    m = ModelConfig(num_classes=10, width=8, embed_dim=16, memory_size=16, memory_cap=4, revive=revive,
                    revive_every=2)
    return t, m


@pytest.mark.slow
@pytest.mark.parametrize("revive", [False, True])
def test_resume_gives_the_same_next_steps(tmp_path, fmnist_ready, revive, monkeypatch):
    # 12 steps never separate 10 classes by the readiness margin nor fill 90% of their memories: waive
    # both, so that resume is checked through the clustering from memory and the dead-sub-centroid
    # checks (the gate has its own test).
    monkeypatch.setattr("dnc.training.head.READY_MARGIN", -2.0)
    monkeypatch.setattr("dnc.training.head.READY_SHARE", 0.0)
    # 6 steps per epoch: stop mid-epoch (4) and at an epoch boundary (6), compare continuations.
    t, m = _cfgs(tmp_path, "full", revive)
    full_run = train(t, m)
    full = full_run["step_losses"]
    assert len(full) == 12
    for stop in (4, 6):
        t, m = _cfgs(tmp_path, f"part{stop}", revive, max_steps=stop)
        first = train(t, m)["step_losses"]
        assert first == pytest.approx(full[:stop], abs=0)
        t, _ = _cfgs(tmp_path, f"part{stop}", revive, resume=str(tmp_path / f"part{stop}" / "checkpoint.safetensors"))
        rest = train(t, None)
        assert rest["step_losses"] == pytest.approx(full[stop:], abs=1e-6), stop
        # The per-epoch log of the interrupted run is the uninterrupted run's, row for row.
        assert len(rest["history"]) == len(full_run["history"]) == 2
        for got, want in zip(rest["history"], full_run["history"], strict=True):
            assert got.keys() == want.keys()
            for key in want:
                if key != "seconds":
                    assert got[key] == pytest.approx(want[key], abs=1e-6), (stop, key)
    # The checkpoint describes itself and carries centroids and memory.
    ck = ckpt_io.load(tmp_path / "full" / "checkpoint.safetensors")
    assert ck.epoch == 2 and ck.step == 12 and len(ck.history) == 2
    assert {"head.centroids", "head.memory.feats", "head.memory.ids"} <= set(ck.model_state)
    assert int(ck.model_state["head.memory.count"].sum()) > 0
    side = json.loads((tmp_path / "full" / "checkpoint.json").read_text())
    assert side["model_config"]["embed_dim"] == 16
    for f in ("log.csv", "log.json", "curves.png"):
        assert (tmp_path / "full" / f).stat().st_size > 0
    # The live-sub-centroid measure is logged every epoch.
    header = (tmp_path / "full" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"test_live", "test_live_min", "centroid_cos"} <= set(header)
    assert all(1 <= row["test_live"] <= 4 for row in ck.history)
    if revive:  # the resumed runs above went through the clustering from memory
        assert bool(ck.model_state["head.initialised"].any()) and "revivals" in ck.history[-1]
        assert int(ck.model_state["head.updates"]) == 12


def test_resume_refuses_changed_model_or_run(tmp_path, fmnist_ready):
    t, m = _cfgs(tmp_path, "a", max_steps=1)
    train(t, m)
    t, m = _cfgs(tmp_path, "a", resume=str(tmp_path / "a" / "checkpoint.safetensors"))
    m.embed_dim = 32
    with pytest.raises(ValueError, match="embedding width mismatch on resume: checkpoint has 16, requested 32"):
        train(t, m)
    t, m = _cfgs(tmp_path, "a", resume=str(tmp_path / "a" / "checkpoint.safetensors"))
    t.batch_size = 64
    with pytest.raises(ValueError, match="batch_size mismatch on resume: checkpoint has 32, requested 64"):
        train(t, m)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    cfg = ModelConfig(num_classes=3, width=4, embed_dim=8, k=[1, 2, 3])
    from dnc.training.model import Classifier

    model = Classifier(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 28, 28))[1].sum().backward()
    opt.step()
    ck = ckpt_io.Checkpoint(cfg, model.state_dict(), train_config={"lr": 0.1}, epoch=1, step=5, step_in_epoch=0,
                            history=[{"epoch": 1}], optimizer_state=opt.state_dict(),
                            rng={"torch": torch.get_rng_state()})
    path = ckpt_io.save(ck, tmp_path / "c.safetensors")
    ck = ckpt_io.load(path)
    assert ck.model_config == cfg and ck.step == 5
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model_state[k], v), k
    opt2 = torch.optim.SGD(Classifier(cfg).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ck.optimizer_state)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        ckpt_io.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="not found"):
        ckpt_io.load(tmp_path / "missing.safetensors")
