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

# ---- dispatch (the same in every group's run.sh): no argument lists the entries; `all` runs them in order
entries() { grep -E '^[a-z0-9_]+\(\) \{ #' "$SELF" | sed -E 's/^([a-z0-9_]+)\(\) \{ # ?/\1\t/' |
  awk -F'\t' '{ n = $1; gsub("_", "-", n); printf "  %s\t%s\n", n, $2 }'; }
if [ $# -eq 0 ]; then echo "usage: $0 ENTRY... | all"; entries; exit 0; fi
if [ "$1" = all ]; then set -- $(entries | cut -f1); fi
for e in "$@"; do  # every name checked before anything runs
  if ! entries | cut -f1 | tr -d ' ' | grep -qx -- "$e"; then echo "unknown entry $e"; entries; exit 2; fi
done
for e in "$@"; do echo "== $0 $e"; "${e//-/_}"; done
