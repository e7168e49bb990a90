#!/usr/bin/env bash
# issue 11: DNC segmenters with --anneal (the default), seeds 1 and 2, then the parametric twin seed 0, on the CPU
cd "$(dirname "$0")/.."
while pgrep -f "out runs/bench-seg-anneal/dnc/s0" > /dev/null; do sleep 10; done
run() { # name seed head init
  [ -s runs/bench-seg-anneal/$1/log.json ] && python3 -c "import json,sys; sys.exit(len(json.load(open('runs/bench-seg-anneal/$1/log.json')))<10)" && return
  .venv/bin/python -m dnc.clients.cli train --data runs/bench-seg-gpu/scenes-fine --out runs/bench-seg-anneal/$1 --seed $2 \
    --head $3 --epochs 10 --batch-size 16 --optimizer adamw --lr 0.002 --weight-decay 0.0001 --warmup-epochs 0.3 \
    --workers 0 --init runs/bench-twins3/$4/e8/s$2/checkpoint.safetensors > runs/bench-seg-anneal/${1//\//-}.log 2>&1
}
run dnc/s1 1 dnc dnc
run dnc/s2 2 dnc dnc
run softmax/s0 0 softmax softmax
