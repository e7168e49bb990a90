#!/bin/bash
# Every benchmark run of issue 9 (docs/BENCHMARKS.md), one after another on this machine; runs already
# recorded in their results.json are skipped, so the script resumes where a stopped session left it.
# Run alone (each training run uses both cores): nohup benchmarks/issue9_runs.sh > runs/issue9.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Training step time, DNC / softmax, at C = 10 and 1000 (first: it needs the machine to itself).
[ -s runs/bench-step3/results.json ] || $PY benchmarks/step_time.py --out runs/bench-step3/results.json
# Fashion-MNIST twins, 8 epochs, 3 seeds (about 15 min a run at 2 threads).
for s in 0 1 2; do
  $PY benchmarks/fmnist_twins.py --heads dnc,dnc-paper,softmax,k1 --epochs 8 --seed $s --threads 2 --out runs/bench-twins3
done
# Coarse-to-fine, both protocols, 3 seeds (4,000 training images per coarse class; about 6 min a run).
for s in 0 1 2; do
  $PY benchmarks/coarse_to_fine.py --epochs 8 --per-class 4000 --seed $s --out runs/bench-c2f3
done
# One DNC run at the 16-epoch schedule of the issue-2 benchmark.
$PY benchmarks/fmnist_twins.py --heads dnc --epochs 16 --seed 0 --threads 2 --out runs/bench-twins3
# Sub-category discovery on the coarse models of the coarse-to-fine runs, with and without the new
# initialisation (one picture of anchored exemplars per model).
for s in 0 1 2; do
  $PY benchmarks/subcategory_discovery.py --coarse runs/bench-c2f3/data/coarse --out runs/bench-discovery3 \
    --model dnc-s$s=runs/bench-c2f3/s$s/dnc/checkpoint.safetensors \
    --model dnc-paper-s$s=runs/bench-c2f3/s$s/dnc-paper/checkpoint.safetensors
done
# Exemplar anchoring of the 8-epoch DNC twins: top-1 with every sub-centroid replaced by a real image.
for s in 0 1 2; do
  ck=runs/bench-twins3/dnc/e8/s$s
  if [ ! -s $ck/anchored.json ]; then
    .venv/bin/dnc anchor --checkpoint $ck/checkpoint.safetensors --data fashion-mnist --out $ck/anchored.safetensors
    .venv/bin/dnc eval --checkpoint $ck/anchored.safetensors --data fashion-mnist --json > $ck/anchored.json
  fi
done
