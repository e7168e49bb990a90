#!/bin/bash
# Video: batch segmentation of videos through Triton against in-process, on generated clips and real footage,
# and a 1080p clip with default flags (docs/BENCHMARKS.md, "Video").
# Real footage: sudo apt-get install -y opencv-doc (vtest.avi, Megamind.avi, tree.avi), once.
#     benchmarks/video/run.sh                  # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/video

jobs() { # video jobs through Triton vs in-process (issue 13; after make demo)
  $PY $B/video_serving.py --segmenter runs/demo/seg-export --other-set runs/demo/seg-fine-set --out runs/bench-video
}

hd1080() { # a 300-frame 1920x1080 clip through `dnc serve` with default flags (issue 23, item 7); EXPORT=... a segmenter export
  $PY $B/video_1080p.py --export "${EXPORT:-runs/demo/seg-export}" --out runs/bench-video-1080p
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
