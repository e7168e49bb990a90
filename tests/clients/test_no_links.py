"""Outputs are never written through a link (issue 23, item 6): symlinks planted at every predictable name in
--out (the final names, the .partial names of an older dnc, a stale temporary's name) pointing to a file
outside --out; `dnc segment --in-process` on pictures and on a video leaves that file as it was, and the
outputs are regular files inside --out. Also: a stopped job's temporaries are removed by the next run, and
a temporary renamed under the writer is refused, not put in place."""

import json
import os
from pathlib import Path

import pytest

from dnc.clients.cli import main
from dnc.core import safe_files, video
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
SECRET = b"not yours\n"
IMAGE_KINDS = ("labels.png", "overlay.png", "evidence.json")
VIDEO_KINDS = ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json")


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(SECRET)
    return victim


def _plant(out: Path, names: list[str], victim: Path) -> list[Path]:
    out.mkdir(exist_ok=True)
    links = [out / n for n in names]
    for link in links:
        link.symlink_to(victim)
    return links


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid  # (not running: reused only after the kernel wraps round)


def _regular_inside(out: Path, finals: list[Path]) -> None:
    for p in finals:
        assert not p.is_symlink() and p.is_file(), p
        assert p.resolve().parent == out.resolve()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())  # no temporary left


def test_pictures_never_written_through_planted_links(seg_export, tmp_path, caplog):
    pictures = sorted((seg_export[0] / "images" / "test").glob("*.png"))[:2]
    assert len(pictures) == 2
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, p in enumerate(pictures):
        (folder / f"pic{i}.png").write_bytes(p.read_bytes())
    victim, out = _victim(tmp_path), tmp_path / "out"
    names = [f"pic{i}.{k}" for i in range(2) for k in IMAGE_KINDS]
    _plant(out, names + [f".{n}.tmp{os.getpid()}" for n in names] + [f".{n}.tmp{os.getpid() + 1}" for n in names],
           victim)
    stale = out / f".pic0.labels.png.{_dead_pid()}-abc{safe_files.TAG}"
    stale.symlink_to(victim)
    assert main(["segment", str(folder), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]) == 0
    assert victim.read_bytes() == SECRET
    for stray in [out / f".{n}.tmp{os.getpid()}" for n in names] + [out / f".{n}.tmp{os.getpid() + 1}" for n in names]:
        stray.unlink()  # (an older dnc's names: never opened now, left as they are)
    _regular_inside(out, [out / n for n in names])
    assert json.loads((out / "pic0.evidence.json").read_text())["source"].endswith("pic0.png")
    assert "replacing the symbolic link" in caplog.text


def test_a_video_never_written_through_planted_links(seg_export, tmp_path, fmnist_ready):
    clips = tmp_path / "clips"
    write_clips(clips, 1, "fine", height=48, width=64, frames=6, fps=10, seed=3)
    victim, out = _victim(tmp_path), tmp_path / "out"
    finals = [f"clip000.{k}" for k in VIDEO_KINDS]
    _plant(out, finals + [f".{n}.partial" for n in finals], victim)
    stale = out / f".clip000.masks.mkv.{_dead_pid()}-xyz{safe_files.TAG}"
    stale.symlink_to(victim)
    args = ["segment", str(clips / "videos"), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 0  # four links at the final names do not count as done: written, links replaced
    assert victim.read_bytes() == SECRET
    _regular_inside(out, [out / n for n in finals])
    assert len(list(video.masks(out / "clip000.masks.mkv"))) == 6
    assert (out / "clip000.evidence.jsonl").read_text().count("\n") == 6
    shown = (out / "clip000.overlay.mp4").read_bytes()  # written through the descriptor, still faststart
    assert shown.find(b"moov") < shown.find(b"mdat") and len(list(video.frames(out / "clip000.overlay.mp4"))) == 6
    assert main(args) == 0 and json.loads((out / "clip000.summary.json").read_text())["frames"] == 6  # skipped


def test_links_at_final_names_are_not_a_finished_video(tmp_path):
    from dnc.clients.video_outputs import Outputs

    victim, out = _victim(tmp_path), tmp_path / "out"
    _plant(out, [f"v.{k}" for k in VIDEO_KINDS], victim)
    assert not Outputs(out, "v").done()


def test_temporaries_are_exclusive_unpredictable_and_replace_links(tmp_path):
    victim, out = _victim(tmp_path), tmp_path / "out"
    (link,) = _plant(out, ["x.json"], victim)
    a, b = safe_files.Temp(link), safe_files.Temp(link)
    assert a.path != b.path and a.path.parent == out and a.path.name.startswith(".x.json.")
    assert a.path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with a.open("wb") as f:
        f.write(b"mine")
    a.commit()
    b.discard()
    assert victim.read_bytes() == SECRET and not link.is_symlink() and link.read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == ["x.json"]


def test_a_temporary_replaced_under_the_writer_is_refused(tmp_path):
    victim, out = _victim(tmp_path), tmp_path / "out"
    out.mkdir()
    t = safe_files.Temp(out / "y.json")
    with open(t.target, "wb") as f:  # a library opening by name writes the file created, whatever the name says
        t.path.unlink()
        t.path.symlink_to(victim)
        f.write(b"mine")
    with pytest.raises(safe_files.OutputError, match="renamed or replaced"):
        t.commit()
    assert victim.read_bytes() == SECRET and not (out / "y.json").exists()


def test_stale_temporaries_of_stopped_processes_only_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".a.png.{_dead_pid()}-q1{safe_files.TAG}"
    live = out / f".a.png.{os.getppid()}-q2{safe_files.TAG}"
    other = out / ".a.png.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"")
    assert safe_files.remove_stale(out) == [dead]
    assert live.exists() and other.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
