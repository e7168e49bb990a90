#!/usr/bin/env bash
# The induction runs of benchmarks/seg_benchmarks.py trained on a lent GPU; their checkpoints come back
# (optimiser state dropped, under $OUT) for export, `dnc centroids` and `dnc eval-onnx` on this machine:
#     benchmarks/device/seg_induction_gpu.sh          (on the device, carry .dev)
#     then: tar/copy $OUT/*.safetensors to runs/bench-seg-gpu/induction/HEAD/sS/checkpoint.safetensors and
#     .venv/bin/python benchmarks/seg_benchmarks.py induction --out runs/bench-seg-gpu --classifiers .dev/ckpt
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/seg-gpu-out}; B=runs/bench-seg-gpu
mkdir -p "$OUT" "$B"
python3 - <<'PY'
import gzip, lzma, pathlib
from training.data import FASHION_MNIST_DIR as d
d.mkdir(parents=True, exist_ok=True)
for f in pathlib.Path(".dev/fmnist").glob("*.xz"):
    if not (d / f.name.replace(".xz", ".gz")).is_file():
        (d / f.name.replace(".xz", ".gz")).write_bytes(gzip.compress(lzma.decompress(f.read_bytes()), 1))
PY
t0=$(date +%s)
timeout "${LIMIT:-270}" python3 benchmarks/seg_benchmarks.py induction --out "$B" --jobs 6 --train-only \
    --classifiers .dev/ckpt > "$OUT/induction.log" 2>&1; rc=$?
echo "exit $rc after $(( $(date +%s) - t0 )) s"; tail -12 "$OUT/induction.log"
cp "$B/results.json" "$OUT/"
python3 - "$B" "$OUT" <<'PY'
import sys
from pathlib import Path
from training import checkpoint as ckpt_io
for ck in sorted(Path(sys.argv[1]).glob("induction/*/s*/checkpoint.safetensors")):
    c = ckpt_io.load(ck)
    c.optimizer_state = None
    dst = Path(sys.argv[2]) / f"{ck.parent.parent.name}-{ck.parent.name}.safetensors"
    ckpt_io.save(c, dst)
    dst.with_suffix(".json").unlink(missing_ok=True)  # at most 8 files come back; the metadata is inside
PY
ls -la "$OUT"; exit $rc
