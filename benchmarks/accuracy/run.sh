#!/bin/bash
# Accuracy and seeds: test top-1 of the classifier twins, coarse-to-fine swaps, live sub-centroids,
# sub-category discovery, anchoring, segmenters' mIoU (docs/BENCHMARKS.md, "Accuracy and seeds").
#     benchmarks/accuracy/run.sh               # lists the entries
#     benchmarks/accuracy/run.sh seeds         # e.g. every 3-seed run of issue 9
# Runs already recorded in their results.json are skipped, so an entry resumes where a stopped session left it.
# Run alone (each training run uses both cores): nohup benchmarks/accuracy/run.sh seeds > runs/issue9.log 2>&1 &
# The segmenters' GPU runs (seg_benchmarks.py all) are in benchmarks/device/.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
PY=.venv/bin/python
B=benchmarks/accuracy

twins16() { # Fashion-MNIST DNC / softmax / K=1 twins, 16 epochs, seed 0 (issue 2)
  $PY $B/fmnist_twins.py --epochs 16 --out runs/bench-fmnist
}

anchor16() { # exemplar anchoring of the 16-epoch DNC twin (issue 2; after twins16)
  .venv/bin/dnc anchor --checkpoint runs/bench-fmnist/dnc/checkpoint.safetensors --data fashion-mnist \
    --out runs/bench-fmnist/dnc/anchored.safetensors
}

c2f() { # coarse-to-fine swap without retraining, 6 epochs, one seed (issue 3)
  $PY $B/coarse_to_fine.py --epochs 6 --out runs/bench-c2f
}

revival() { # live sub-centroids on short coarse runs, the demo recipe with the default gate (issue 9, session 3)
  [ -d runs/demo/data/coarse ] || .venv/bin/dnc write-folder --out runs/demo/data/coarse --labels coarse \
    --per-class 4000 --test-per-class 0
  $PY $B/subcentroid_revival.py --data coarse --epochs 2 --variants default --threads 2 --out runs/bench-gate
}

modes() { # live sub-centroids on the generated multi-mode set (issue 9)
  $PY $B/subcentroid_revival.py --data modes --epochs 15 --variants base,init-only,revive,k1
}

c2f_sets() { # issue 25: coarse-to-fine with sets of many sub-centroids, DNC runs of the issue-9 protocol, 3 seeds
  for s in 0 1 2; do
    $PY $B/coarse_to_fine.py --epochs 8 --per-class 4000 --seed $s --heads dnc --sets 4,16,64,all,auto,all:0 \
      --out runs/bench-c2f3
  done
  $PY $B/coarse_to_fine.py --report --out runs/bench-c2f3
}

open_set() { # issue 25: few-shot new classes and open-set detection on 8-class models, 3 seeds (after c2f-sets)
  for s in 0 1 2; do
    $PY $B/open_set.py --seed $s --epochs 3 --fine runs/bench-c2f3/data/fine --out runs/bench-open3
  done
  $PY $B/open_set.py --report --out runs/bench-open3
}

c2f_auto() { # issue 25: the --K auto lists remade with each class's K chosen on held-out images (after c2f-sets)
  for s in 0 1 2; do
    $PY $B/coarse_to_fine.py --epochs 8 --per-class 4000 --seed $s --heads dnc --sets auto --redo-sets auto \
      --out runs/bench-c2f3
  done
  $PY $B/coarse_to_fine.py --report --out runs/bench-c2f3
}

condensed() { # issue 25: Hart's condensed nearest neighbour on the seed-0 coarse-to-fine embedding (after c2f-sets)
  $PY $B/condensed_nn.py --embed runs/bench-c2f3/s0/dnc/export/embed.onnx --data runs/bench-c2f3/data/fine --seed 0 \
    --out runs/bench-condensed/s0.json
}

seg_open_world() { # issue 25: segmentation fine lists with many sub-centroids, and unknown items (after c2f-sets, open-set)
  for s in 0 1 2; do
    $PY $B/seg_open_world.py --seed $s
  done
  $PY $B/seg_open_world.py --report
}

seeds() { # every 3-seed run of issue 9, in order (training step time first: it needs the machine to itself)
  # Training step time, DNC / softmax, at C = 10 and 1000 (the speed group's step-time-seeds entry).
  [ -s runs/bench-step3/results.json ] || $PY benchmarks/speed/step_time.py --out runs/bench-step3/results.json
  # Fashion-MNIST twins, 8 epochs, 3 seeds (about 15 min a run at 2 threads).
  for s in 0 1 2; do
    $PY $B/fmnist_twins.py --heads dnc,dnc-paper,softmax,k1 --epochs 8 --seed $s --threads 2 --out runs/bench-twins3
  done
  # Coarse-to-fine, both protocols, 3 seeds (4,000 training images per coarse class; about 6 min a run).
  for s in 0 1 2; do
    $PY $B/coarse_to_fine.py --epochs 8 --per-class 4000 --seed $s --out runs/bench-c2f3
  done
  # One DNC run at the 16-epoch schedule of the issue-2 benchmark.
  $PY $B/fmnist_twins.py --heads dnc --epochs 16 --seed 0 --threads 2 --out runs/bench-twins3
  # Sub-category discovery on the coarse models of the coarse-to-fine runs, with and without the new
  # initialisation (one picture of anchored exemplars per model).
  for s in 0 1 2; do
    $PY $B/subcategory_discovery.py --coarse runs/bench-c2f3/data/coarse --out runs/bench-discovery3 \
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
}

report() { # the 3-seed tables from what `seeds` recorded
  $PY $B/fmnist_twins.py --report --epochs 8 --out runs/bench-twins3
  $PY $B/coarse_to_fine.py --report --out runs/bench-c2f3
}

seg_twins() { # segmenters on FashionScenes on the CPU (issue 11; then transfer, then induction; GPU: benchmarks/device)
  $PY $B/seg_benchmarks.py twins
  $PY $B/seg_benchmarks.py transfer
  $PY $B/seg_benchmarks.py induction
}

# one segmenter with --anneal (the segmenters' default), 10 epochs: NAME SEED HEAD INIT (skipped when its 10 epochs are logged)
seg_anneal_train() {
  local name=$1 seed=$2 head=$3 init=$4
  [ -s runs/bench-seg-anneal/$name/log.json ] && python3 -c "import json,sys; sys.exit(len(json.load(open('runs/bench-seg-anneal/$name/log.json')))<10)" && return
  mkdir -p runs/bench-seg-anneal
  $PY -m dnc.clients.cli train --data runs/bench-seg-gpu/scenes-fine --out runs/bench-seg-anneal/$name --seed $seed \
    --head $head --epochs 10 --batch-size 16 --optimizer adamw --lr 0.002 --weight-decay 0.0001 --warmup-epochs 0.3 \
    --workers 0 --init runs/bench-twins3/$init/e8/s$seed/checkpoint.safetensors > runs/bench-seg-anneal/${name//\//-}.log 2>&1
}

seg_anneal() { # segmenters with --anneal on the CPU: DNC seeds 0-2, the parametric twin seed 0, then DNC induction (issue 11)
  seg_anneal_train dnc/s0 0 dnc dnc
  seg_anneal_train dnc/s1 1 dnc dnc
  seg_anneal_train dnc/s2 2 dnc dnc
  seg_anneal_train softmax/s0 0 softmax softmax
  # the induction question for the DNC segmenter with --anneal (seed 0): coarse training, then a fine set from
  # the fine masks, then fine mIoU
  local I=runs/bench-seg-anneal/induction/dnc/s0
  local DNC="$PY -m dnc.clients.cli"
  [ -s $I/log.json ] || $DNC train --data runs/bench-seg-gpu/scenes-coarse --out $I --seed 0 --head dnc --epochs 10 \
    --batch-size 16 --optimizer adamw --lr 0.002 --weight-decay 0.0001 --warmup-epochs 0.3 --workers 0 \
    --init runs/bench-twins3/dnc/e8/s0/checkpoint.safetensors > runs/bench-seg-anneal/induction-dnc-s0.log 2>&1
  $DNC export $I/checkpoint.safetensors --out $I/export --no-fp16
  $DNC centroids --embed $I/export/embed.onnx --data runs/bench-seg-gpu/scenes-fine --K 10 --out $I/fine-set
  $DNC eval-onnx --embed $I/export/embed.onnx --centroids $I/fine-set --data runs/bench-seg-gpu/scenes-fine --json \
    > $I/fine-from-masks.json
}

seg_drift() { # does the DNC head alone degrade a trained encoder that no longer learns? (issue 11 diagnostic)
  $PY $B/seg_head_drift.py runs/bench-seg-gpu/induction/dnc/s0/checkpoint.safetensors \
    --data runs/bench-seg-gpu/scenes-coarse --steps 150
}

large_k() { # sets with many sub-centroids on the demo's coarse-trained embedding (issue 25; after make demo)
  $PY $B/large_k.py --embed runs/demo/export/embed.onnx --train runs/demo/data/fine/train \
    --test runs/demo/data/fine/test --K 4 16 64 all --out runs/bench-large-k
}

# ---- the entries listed, checked and run (the same for every group)
source benchmarks/dispatch.sh
