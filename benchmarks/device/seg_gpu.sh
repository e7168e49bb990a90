#!/usr/bin/env bash
# Issue 11's segmentation benchmarks (benchmarks/accuracy/seg_benchmarks.py all) on a lent GPU machine, within one
# device call: unpack .dev/ (benchmarks/device/pack_seg.py pack), write the scenes while a tiny smoke run checks
# the CUDA path end to end (train, export, centroids, eval-onnx), then every run at once on the one GPU.
# Results come back under $OUT: results.json (copied as runs finish), logs, per-run curves and montages.
#     run: benchmarks/device/seg_gpu.sh   (carry .dev; $OUT set by the device tool; LIMIT seconds for the runs)
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/seg-gpu-out}; B=${BENCH:-runs/bench-seg-gpu}; LIMIT=${LIMIT:-420}
mkdir -p "$OUT" "$B"
nvidia-smi -L; python3 -c "import torch, numpy, onnxruntime; print(torch.__version__, numpy.__version__, onnxruntime.__version__, torch.cuda.get_device_name())"
python3 benchmarks/device/pack_seg.py unpack
for l in fine coarse; do
  [ -f "$B/scenes-$l/classes.json" ] || python3 -m dnc.clients.cli write-scenes --out "$B/scenes-$l" --labels $l \
      --train "${TRAIN:-5000}" --test "${TEST:-1000}" > "$OUT/scenes-$l.log" 2>&1 &
done
t0=$(date +%s)
python3 benchmarks/accuracy/seg_benchmarks.py induction --seeds 0 --out /tmp/seg-smoke --train 32 --test 16 --epochs 1 \
    --jobs 2 --classifiers .dev/ckpt > "$OUT/smoke.log" 2>&1 || { tail -40 "$OUT/smoke.log"; exit 1; }
echo "smoke passed in $(( $(date +%s) - t0 )) s"; tail -6 "$OUT/smoke.log"
wait
echo "scenes written after $(( $(date +%s) - t0 )) s"
( while sleep 10; do cp "$B/results.json" "$OUT/" 2>/dev/null; done ) & copier=$!
timeout "$LIMIT" python3 benchmarks/accuracy/seg_benchmarks.py all --out "$B" --jobs "${JOBS:-15}" --epochs "${EPOCHS:-10}" \
    --classifiers .dev/ckpt > "$OUT/bench.log" 2>&1; rc=$?
kill $copier; cp "$B/results.json" "$OUT/" 2>/dev/null
echo "benchmark exit $rc after $(( $(date +%s) - t0 )) s"; tail -40 "$OUT/bench.log"
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.data' --exclude='scenes-*' --exclude='montages' "$B"
nvidia-smi --query-gpu=name,memory.used --format=csv
exit $rc
