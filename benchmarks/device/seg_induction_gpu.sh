#!/usr/bin/env bash
# The induction runs of benchmarks/accuracy/seg_benchmarks.py trained on a lent GPU; their checkpoints come back
# (optimiser state dropped, under $OUT) for export, `dnc centroids` and `dnc eval-onnx` on this machine:
#     benchmarks/device/seg_induction_gpu.sh          (on the device, carry .dev)
#     then: tar/copy $OUT/*.safetensors to runs/bench-seg-gpu/induction/HEAD/sS/checkpoint.safetensors and
#     .venv/bin/python benchmarks/accuracy/seg_benchmarks.py induction --out runs/bench-seg-gpu --classifiers .dev/ckpt
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/seg-gpu-out}; B=runs/bench-seg-gpu
mkdir -p "$OUT" "$B"
python3 benchmarks/device/pack_seg.py unpack
t0=$(date +%s)
timeout "${LIMIT:-270}" python3 benchmarks/accuracy/seg_benchmarks.py induction --out "$B" --jobs 6 --train-only \
    --classifiers .dev/ckpt > "$OUT/induction.log" 2>&1; rc=$?
echo "exit $rc after $(( $(date +%s) - t0 )) s"; tail -12 "$OUT/induction.log"
cp "$B/results.json" "$OUT/"
python3 benchmarks/device/pack_seg.py bring-back "$B" "$OUT"
ls -la "$OUT"; exit $rc
