#!/usr/bin/env bash
# issue 11: the induction question for a DNC segmenter trained with --anneal (seed 0), on the CPU, after
# benchmarks/seg_anneal_runs.sh: coarse training, then a fine set from the fine masks, then fine mIoU.
cd "$(dirname "$0")/.."
while pgrep -f seg_anneal_runs.sh > /dev/null; do sleep 10; done
B=runs/bench-seg-anneal/induction/dnc/s0
DNC=".venv/bin/python -m dnc.clients.cli"
[ -s $B/log.json ] || $DNC train --data runs/bench-seg-gpu/scenes-coarse --out $B --seed 0 --head dnc --epochs 10 \
  --batch-size 16 --optimizer adamw --lr 0.002 --weight-decay 0.0001 --warmup-epochs 0.3 --workers 0 \
  --init runs/bench-twins3/dnc/e8/s0/checkpoint.safetensors > runs/bench-seg-anneal/induction-dnc-s0.log 2>&1
$DNC export $B/checkpoint.safetensors --out $B/export --no-fp16
$DNC centroids --embed $B/export/embed.onnx --data runs/bench-seg-gpu/scenes-fine --K 10 --out $B/fine-set
$DNC eval-onnx --embed $B/export/embed.onnx --centroids $B/fine-set --data runs/bench-seg-gpu/scenes-fine --json > $B/fine-from-masks.json
