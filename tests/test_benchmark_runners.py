"""Every benchmark group's runner (benchmarks/*/run.sh, with benchmarks/dispatch.sh) lists its entries,
refuses an unknown one before running anything, and every script it names exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = sorted((ROOT / "benchmarks").glob("*/run.sh"))


def test_there_is_one_runner_per_group():
    groups = {p.name for p in (ROOT / "benchmarks").iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert groups - {"device"} <= {r.parent.name for r in RUNNERS}, groups


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda p: p.parent.name)
def test_a_runner_lists_refuses_and_names_real_scripts(runner):
    listed = subprocess.run(["bash", str(runner)], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "usage:" in listed.stdout, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert names, listed.stdout
    bad = subprocess.run(["bash", str(runner), names[0], "no-such-entry"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "unknown entry no-such-entry" in bad.stdout
    assert "== " not in bad.stdout  # nothing ran, not even the valid entry given first
    for script in re.findall(r"\$B/([\w./-]+\.py)", runner.read_text()):
        assert (runner.parent / script).is_file(), f"{runner} names {script}"
