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

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
