"""Progress bars: shown on a terminal, absent from logs, and `dnc write-folder`'s counts what it writes."""

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np

from dnc.core.progress import bar
from dnc.training.folders import chosen_indices

ROOT = Path(__file__).parents[2]


def _terminal():
    """(reader fd, writer file) of a real pseudo-terminal, 120 columns wide (a new one is 0 x 0, which
    tqdm draws as nothing)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return master, os.fdopen(slave, "w")


def _read_all(fd: int) -> str:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the writer side is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_a_bar_shows_on_a_terminal_only(tmp_path):
    master, term = _terminal()
    for _ in bar(range(5), desc="on a terminal", file=term):
        pass
    for _ in bar(range(5), desc="hidden rank", file=term, show=False):
        pass
    term.close()
    shown = _read_all(master)
    os.close(master)
    assert "on a terminal" in shown and "5/5" in shown and "hidden rank" not in shown
    with open(tmp_path / "log", "w") as log:  # a file, as when output is redirected: no bar at all
        for _ in bar(range(5), desc="into a log", file=log):
            pass
    assert (tmp_path / "log").read_text() == ""


def test_no_module_of_training_or_export_makes_its_own_bar():
    raw = [str(p.relative_to(ROOT)) for d in ("training", "export") for p in (ROOT / d).glob("*.py")
           if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert raw == [], f"{raw} make tqdm bars directly; use training.progress.bar (no bars in logs)"


def test_chosen_indices_are_the_first_of_each_class():
    labels = np.array([2, 0, 0, 1, 2, 0, 2, 1, 0])
    assert chosen_indices(labels, 3, 2) == [0, 1, 2, 3, 4, 7]
    assert chosen_indices(labels, 3, 0) == list(range(9))


def _write_folder(out: Path, stderr) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnc.clients.cli", "write-folder", "--out", str(out),
                           "--per-class", "3", "--test-per-class", "2"], stdout=subprocess.PIPE, stderr=stderr,
                          text=True, cwd=ROOT, timeout=120)


def test_write_folder_bar_counts_what_it_writes_and_stays_out_of_logs(tmp_path, fmnist_ready):
    master, term = _terminal()
    res = _write_folder(tmp_path / "tty", term)
    term.close()
    shown = _read_all(master)
    os.close(master)
    assert res.returncode == 0, shown[-2000:]
    totals = set(re.findall(r"write \S+: .*?\d+/(\d+)", shown))  # the bars' totals, e.g. "0/30"
    assert totals == {"30", "20"}, shown[-2000:]  # 3 and 2 images of each of the 10 classes, not 60000 and 10000
    assert sum(1 for _ in (tmp_path / "tty" / "train").rglob("*.png")) == 30
    with open(tmp_path / "log", "w") as log:
        assert _write_folder(tmp_path / "logged", log).returncode == 0
    text = (tmp_path / "log").read_text()
    assert "\r" not in text and "it/s" not in text and "img/s" not in text
    assert "wrote 30 images in 10 classes" in text  # the log keeps its messages
