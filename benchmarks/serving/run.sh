#!/bin/bash
# The served stack: throughput and latency through Triton against in-process onnxruntime, swaps under load,
# a segmenter beside a classifier, reliability (kill -9, bad requests) and crash recovery (docs/BENCHMARKS.md,
# "Serving throughput and latency", "Reliability and crash recovery"). Most entries want `make demo` first.
#     benchmarks/serving/run.sh                # lists the entries
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/serving

triton() { # classifier throughput, latency and swaps under load, python runtime vs in-process (issue 4)
  .venv/bin/dnc write-folder --out runs/bench-serving/coarse --labels coarse --per-class 200 --test-per-class 0
  .venv/bin/dnc centroids --embed runs/bench-export/embed.onnx --data runs/bench-serving/coarse/train --K 4 \
    --out runs/bench-serving/set-coarse
  $PY $B/triton_serving.py --export runs/bench-export --centroids runs/bench-serving/set-coarse \
    --images runs/bench-serving/coarse/train
}

seg() { # a segmenter served beside a classifier by one tritonserver, against in-process (issue 12; after make demo)
  $PY $B/seg_serving.py --classifier runs/demo/export --segmenter runs/demo/seg-export \
    --other-set runs/demo/seg-fine-set --out runs/bench-seg-serving
}

large_k() { # served latency at batch 64 of the K=4, K=64 and K=all fine lists of a coarse-trained model (issue 25; after accuracy/run.sh c2f-sets)
  R=runs/bench-c2f3/s0/dnc
  $PY $B/large_k_latency.py --export $R/export --set $R/fine-set-K4 --set $R/fine-set-K64 --set $R/fine-set-Kall \
    --images runs/bench-c2f3/data/fine/test --out runs/bench-large-k-latency
}

reliability() { # 100 swaps under load, 3 kill -9 recoveries, 1,000 bad requests (issue 10; after make demo)
  # defaults: --export runs/demo/export --centroids runs/demo/fine-set --swaps 100 --steady-seconds 20
  #           --threads-per-protocol 2 --kills 3 --bad 1000
  $PY $B/reliability.py --out runs/bench-reliability/results.json
}

crash_recovery() { # 100 crash requests in a row against `dnc serve` (issue 23); EXPORT=... a classifier export
  $PY $B/crash_recovery.py --export "${EXPORT:-runs/demo/export}" --crashes 100 --out runs/bench-crash-recovery
}

fleet() { # 3 replicas behind the load balancer: its cost, 20 fleet swaps under load, kill -9 every 30 s for 5 min (issue 26; after make demo)
  $PY $B/fleet.py --export runs/demo/export --centroids runs/demo/fine-set --images runs/demo/data/fine/test \
    --replicas 3 --swaps 10 --kill-every 30 --kill-minutes 5 --out runs/bench-fleet/results.json
}

ratio() { # issue 27: served / in-process for float32, uint8 pixels and encoded files, interleaved rounds, requests of 64 and 16 (after make demo)
  $PY $B/served_ratio.py --request-batch 64 --out runs/bench-served-ratio/b64.json
  $PY $B/served_ratio.py --request-batch 16 --out runs/bench-served-ratio/b16.json
}

cost() { # issue 27: a served classifier's images/s and p99 as the class list (10-1,000 x K 4, 64) and the batch grow (after make demo)
  $PY $B/cls_cost_curves.py --out runs/bench-cost/cls.json --plot runs/bench-cost/cls.png
}

client_defaults() { # issue 27: `dnc classify` with no flag against every --batch-size (after make demo)
  $PY $B/client_defaults.py --out runs/bench-client-defaults/results.json
}

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
