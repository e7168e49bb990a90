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

# ---- dispatch (the same in every group's run.sh): no argument lists the entries; `all` runs them in order
entries() { grep -E '^[a-z0-9_]+\(\) \{ #' "$SELF" | sed -E 's/^([a-z0-9_]+)\(\) \{ # ?/\1\t/' |
  awk -F'\t' '{ n = $1; gsub("_", "-", n); printf "  %s\t%s\n", n, $2 }'; }
if [ $# -eq 0 ]; then echo "usage: $0 ENTRY... | all"; entries; exit 0; fi
if [ "$1" = all ]; then set -- $(entries | cut -f1); fi
for e in "$@"; do  # every name checked before anything runs
  if ! entries | cut -f1 | tr -d ' ' | grep -qx -- "$e"; then echo "unknown entry $e"; entries; exit 2; fi
done
for e in "$@"; do echo "== $0 $e"; "${e//-/_}"; done
