"""`dnc segment` on images as a resumable job (clients/image_job.py), in-process with a real export: each
answer written as it arrives (a run killed midway keeps the pictures it finished), a rerun skips the
pictures done with the same source and class list, redoes the others, and --overwrite redoes all."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dnc.clients.cli import main
from dnc.clients.image_job import output_names

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _pictures(folder: Path, n: int, size: int = 96) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    files = []
    for i in range(n):
        files.append(folder / f"p{i:03d}.png")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(files[-1])
    return files


def _done(out: Path) -> set[str]:
    return {p.name.removesuffix(".evidence.json") for p in out.glob("*.evidence.json")}


def test_output_names_are_stable_and_distinct():
    names = output_names([Path("a/x.png"), Path("b/x.png"), Path("c/y.jpg"), Path("d/x.jpg")])
    assert names == {"a/x.png": "x", "b/x.png": "x-2", "c/y.jpg": "y", "d/x.jpg": "x-3"}


def test_a_killed_run_keeps_what_it_wrote_and_the_rerun_does_the_rest(tmp_path, seg_export, capsys):
    files = _pictures(tmp_path / "in", 60, size=160)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dnc.clients.cli", "segment", str(tmp_path / "in"), "--out", str(out),
           "--in-process", str(seg_export[2]), "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while len(_done(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # as a crash or a lost machine would stop it
    finally:
        proc.wait(30)
        err = proc.stderr.read().decode()
        proc.stderr.close()
    kept = _done(out)
    assert 2 <= len(kept) < len(files), err[-2000:]  # written while running, not at the end
    for name in kept:  # each finished picture whole: its three files, its evidence its own
        assert (out / f"{name}.labels.png").is_file() and (out / f"{name}.overlay.png").is_file()
        assert json.loads((out / f"{name}.evidence.json").read_text())["source"] == str(tmp_path / "in" / f"{name}.png")
    before = {n: (out / f"{n}.labels.png").stat().st_mtime_ns for n in kept}
    assert main(["segment", str(tmp_path / "in"), "--out", str(out), "--in-process", str(seg_export[2]),
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert (f"dnc segment: {len(files) - len(kept)} written, {len(kept)} skipped as done (same source and class "
            "list") in err and f"0 failed of {len(files)} picture(s)" in err
    assert _done(out) == {f.stem for f in files}
    assert all((out / f"{n}.labels.png").stat().st_mtime_ns == t for n, t in before.items())  # not redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the killed run's temporaries removed


def test_rerun_skips_done_pictures_redoes_changed_ones_and_overwrite_redoes_all(tmp_path, seg_export,
                                                                                other_seg_set, capsys):
    files = _pictures(tmp_path / "in", 3)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    run = ["segment", str(tmp_path / "in"), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(run) == 1  # the broken picture failed, the others written
    err = capsys.readouterr().err
    assert f"dnc segment: failed {broken}: " in err
    assert f"dnc segment: 3 written, 0 skipped as done, 1 failed of 4 picture(s); outputs in {out}" in err
    stamp = {f.stem: (out / f"{f.stem}.overlay.png").stat().st_mtime_ns for f in files}

    assert main([*run, "--json"]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""  # nothing segmented again
    assert "dnc segment: 0 written, 3 skipped as done (same source and class list" in cap.err
    assert "--overwrite redoes them), 1 failed of 4 picture(s)" in cap.err
    assert {f.stem: (out / f"{f.stem}.overlay.png").stat().st_mtime_ns for f in files} == stamp

    # another picture of the same name: redone, not skipped
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "p000.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(other)
    assert main(["segment", str(other), "--out", str(out), "--in-process", str(seg_export[2])]) == 0
    assert "1 written, 0 skipped as done, 0 failed" in capsys.readouterr().err
    assert json.loads((out / "p000.evidence.json").read_text())["source"] == str(other)

    # another class list: every picture redone; then done with it
    listed = [*run, "--centroids", str(other_seg_set)]
    assert main(listed) == 1
    assert "3 written, 0 skipped as done, 1 failed" in capsys.readouterr().err
    set_ids = {json.loads((out / f"{f.stem}.evidence.json").read_text())["set_id"] for f in files}
    assert main(listed) == 1
    assert "0 written, 3 skipped as done" in capsys.readouterr().err

    # a missing file or a damaged evidence: that picture redone
    (out / "p001.overlay.png").unlink()
    (out / "p002.evidence.json").write_text("{not json")
    assert main(listed) == 1
    assert "2 written, 1 skipped as done (same source" in (err := capsys.readouterr().err) and "1 failed of 4" in err
    assert set_ids == {json.loads((out / f"{f.stem}.evidence.json").read_text())["set_id"] for f in files}

    assert main([*listed, "--overwrite", "--json"]) == 1
    cap = capsys.readouterr()
    assert "3 written, 0 skipped as done, 1 failed" in cap.err and len(cap.out.splitlines()) == 3

    # an output replaced by a link (even to a matching evidence): not done, redone, the link replaced
    copy = tmp_path / "copy.json"
    copy.write_bytes((out / "p000.evidence.json").read_bytes())
    (out / "p000.evidence.json").unlink()
    (out / "p000.evidence.json").symlink_to(copy)
    assert main(listed) == 1
    assert "1 written, 2 skipped as done" in capsys.readouterr().err
    assert not (out / "p000.evidence.json").is_symlink() and copy.read_bytes() != b""
