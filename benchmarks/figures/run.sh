#!/bin/bash
# Figures for the README and docs/ drawn from runs (no measurement of their own).
#     benchmarks/figures/run.sh                # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/figures

demo_segment() { # the README's segmentation figure from a `make demo` run (docs/img/demo-segment.png)
  $PY $B/demo_segment_figure.py --demo runs/demo --scenes 0,3 --out docs/img/demo-segment.png
}

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
