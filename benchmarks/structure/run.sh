#!/bin/bash
# Structure: figures of the library code from the source alone (imports inside functions and whether each is
# of a heavy dependency, functions over 80 lines, task string comparisons, raise ValueError, longest modules,
# the path of a checkpoint through `dnc export`) and the layer checks (docs/BENCHMARKS.md, "Structure").
#     benchmarks/structure/run.sh              # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/structure

figures() { # counts over the library code (issue 24)
  $PY $B/structure_figures.py
}

layers() { # imports via dnc., layer order, import circles (tests/test_structure.py)
  .venv/bin/pytest -q tests/test_structure.py
}

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
