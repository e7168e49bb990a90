#!/bin/bash
# Training speed and export latency: training step time of the DNC head over its softmax twin, onnxruntime
# latency of the exported graphs, what a DNC head costs a segmenter (docs/BENCHMARKS.md, "Training speed",
# "Export and latency"). Each entry wants the machine to itself.
#     benchmarks/speed/run.sh                  # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/speed

step_time() { # training step time, DNC / softmax, at C = 10 and 1000 (issue 2)
  $PY $B/step_time.py --out runs/bench-step/results.json
}

step_time_data() { # the same with sub-centroids from data, the product's default (issue 9; first in accuracy's seeds)
  $PY $B/step_time.py --out runs/bench-step3/results.json
}

onnx_latency() { # onnxruntime latency, DNC merged graph / the same backbone with a linear head (issue 3; after accuracy's twins16)
  $PY $B/onnx_latency.py --checkpoint runs/bench-fmnist/dnc/checkpoint.safetensors
}

seg_timing() { # what a DNC head costs a segmenter: training step and onnxruntime latency, runs 1 and 2 (issue 11)
  $PY $B/seg_timing.py --out runs/bench-seg-timing/results.json
  $PY $B/seg_timing.py --rounds 13 --latency-rounds 15 --out runs/bench-seg-timing/results-2.json
}

seg_large_k() { # the served segmentation head with fine lists of many sub-centroids (issue 25; after accuracy's seg-open-world)
  local R=runs/bench-seg-open3/s0/induction-dnc
  $PY $B/seg_large_k.py --export $R/export --set $R/fine-K10 --set $R/fine-K64 --set $R/fine-K255 --set $R/fine-Kauto \
    --images runs/bench-seg-open3/data/scenes-fine/images/test --out runs/bench-seg-large-k.json
}

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
