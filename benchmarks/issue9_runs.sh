#!/bin/bash
# Every benchmark run of issue 9 (docs/BENCHMARKS.md), one after another on this machine; runs already
# recorded in their results.json are skipped, so the script resumes where a stopped session left it.
# Run alone (each training run uses both cores): nohup benchmarks/issue9_runs.sh > runs/issue9.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
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
