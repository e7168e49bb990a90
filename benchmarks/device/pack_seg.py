"""Pack what the GPU run of benchmarks/seg_benchmarks.py needs into .dev/ (git-ignored, carried by the
device tool, 64 MiB at most): Fashion-MNIST re-compressed with xz, and the six classifiers' encoders.

A segmenter's `--init` reads only the classifier's encoder, so the copies drop the optimiser state and the
head (sub-centroids and class memory); what --init loads from them is bit-identical to the originals.

    .venv/bin/python benchmarks/device/pack_seg.py      # then benchmarks/device/seg_gpu.sh on the device
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

from training import checkpoint as ckpt_io
from training.data import FASHION_MNIST_DIR


def main(dest: Path = Path(".dev"), classifiers: Path = Path("runs/bench-twins3")) -> None:
    (dest / "fmnist").mkdir(parents=True, exist_ok=True)
    for f in sorted(FASHION_MNIST_DIR.glob("*.gz")):
        (dest / "fmnist" / f.name.replace(".gz", ".xz")).write_bytes(lzma.compress(gzip.decompress(f.read_bytes()),
                                                                                  preset=9))
    for kind in ("dnc", "softmax"):
        for seed in (0, 1, 2):
            c = ckpt_io.load(classifiers / kind / "e8" / f"s{seed}" / "checkpoint.safetensors")
            c.optimizer_state = None
            c.model_state = {k: v for k, v in c.model_state.items() if not k.startswith("head.")}
            out = dest / "ckpt" / kind / "e8" / f"s{seed}"
            out.mkdir(parents=True, exist_ok=True)
            ckpt_io.save(c, out / "checkpoint.safetensors")
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
