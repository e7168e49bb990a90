#!/bin/bash
# Memory: resident memory (PSS) of a served segmenter per class count, after warm-up, at the peak of one
# 2048 x 2048 request, after it, after 100 varied requests and under ordinary load (docs/BENCHMARKS.md,
# "Memory"). EXPORT=... a segmenter export (default runs/bench-memory/seg-export).
#     benchmarks/memory/run.sh                 # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/memory
E=${EXPORT:-runs/bench-memory/seg-export}

as_is() { # run 1: dnc serve as it is (issue 23, item 5)
  $PY $B/server_memory.py --export "$E" --out runs/bench-memory/full
}

mmap() { # runs 2 and 3: MALLOC_MMAP_THRESHOLD_=1048576 in tritonserver's environment
  $PY $B/server_memory.py --export "$E" --out runs/bench-memory/full3 --mmap-threshold 1048576
}

load16() { # ordinary load: 16 clients x 4 requests of one 640 x 480 picture, after the other stages
  $PY $B/server_memory.py --export "$E" --classes 60 --requests 10 --load-clients 16 --mmap-threshold 1048576 \
    --out runs/bench-memory/load16
}
seg_cost() { # issue 27: the demo segmenter's frames/s, latency and peak memory, 256x256 to 1080p x 6, 60, 254 classes (after make demo)
  $PY $B/seg_cost_curves.py --export runs/demo/seg-export --out runs/bench-cost/seg
}
# before: a copy of commit 668590f with the script and serving/resident.py added, run from that copy:
#   .venv/bin/python benchmarks/memory/server_memory.py --export EXPORT --classes 10,60 --requests 10 --out OUT

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
