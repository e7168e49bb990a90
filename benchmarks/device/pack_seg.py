"""What the GPU runs of benchmarks/accuracy/seg_benchmarks.py carry to the device and bring back (issue 11).

    pack             (here) Fashion-MNIST re-compressed with xz and the six classifiers' encoders into .dev/
                     (git-ignored, carried by the device tool, 64 MiB at most)
    unpack           (on the device) Fashion-MNIST from .dev/ to where training.data reads it
    bring-back B O   (on the device) each induction checkpoint under B, without optimiser state, as
                     O/HEAD-sS.safetensors (at most 8 files come back from a call)

A segmenter's `--init` reads only the classifier's encoder, so the packed copies drop the optimiser state
and the head (sub-centroids and class memory); what --init loads from them is bit-identical to the originals.

    .venv/bin/python benchmarks/device/pack_seg.py pack      # then benchmarks/device/seg_gpu.sh on the device
"""

from __future__ import annotations

import argparse
import gzip
import lzma
from pathlib import Path

from dnc.training import checkpoint as ckpt_io
from dnc.training.data import FASHION_MNIST_DIR

DEV = Path(".dev")


def slim(src: Path, dst: Path, drop_head: bool) -> None:
    """Copy a checkpoint without its optimiser state (and without its head when `drop_head`)."""
    c = ckpt_io.load(src)
    c.optimizer_state = None
    if drop_head:
        c.model_state = {k: v for k, v in c.model_state.items() if not k.startswith("head.")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    ckpt_io.save(c, dst)


def pack(classifiers: Path = Path("runs/bench-twins3"), dev: Path = DEV, fmnist: Path = FASHION_MNIST_DIR) -> None:
    (dev / "fmnist").mkdir(parents=True, exist_ok=True)
    for f in sorted(fmnist.glob("*.gz")):
        (dev / "fmnist" / f.name.replace(".gz", ".xz")).write_bytes(lzma.compress(gzip.decompress(f.read_bytes()),
                                                                                 preset=9))
    for kind in ("dnc", "softmax"):
        for seed in (0, 1, 2):
            rel = Path(kind) / "e8" / f"s{seed}" / "checkpoint.safetensors"
            slim(classifiers / rel, dev / "ckpt" / rel, drop_head=True)
    total = sum(p.stat().st_size for p in dev.rglob("*") if p.is_file())
    print(f"{dev}: {total / 2**20:.1f} MiB")


def unpack(dev: Path = DEV, fmnist: Path = FASHION_MNIST_DIR) -> None:
    fmnist.mkdir(parents=True, exist_ok=True)
    for f in (dev / "fmnist").glob("*.xz"):
        dst = fmnist / f.name.replace(".xz", ".gz")
        if not dst.is_file():
            dst.write_bytes(gzip.compress(lzma.decompress(f.read_bytes()), 1))


def bring_back(bench: Path, out: Path) -> None:
    for ck in sorted(bench.glob("induction/*/s*/checkpoint.safetensors")):
        dst = out / f"{ck.parent.parent.name}-{ck.parent.name}.safetensors"
        slim(ck, dst, drop_head=False)
        dst.with_suffix(".json").unlink(missing_ok=True)  # the metadata is inside; files back are counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["pack", "unpack", "bring-back"])
    ap.add_argument("paths", nargs="*", help="bring-back: the benchmark folder and the folder to write to")
    ap.add_argument("--dev", type=Path, default=DEV, help="the folder carried to the device")
    ap.add_argument("--classifiers", type=Path, default=Path("runs/bench-twins3"),
                    help="pack: where fmnist_twins.py keeps its runs")
    ap.add_argument("--fmnist", type=Path, default=FASHION_MNIST_DIR,
                    help="Fashion-MNIST's .gz files: read by pack, written by unpack")
    a = ap.parse_args()
    if a.what == "bring-back":
        if len(a.paths) != 2:
            ap.error("bring-back takes the benchmark folder and the folder to write to")
        bring_back(Path(a.paths[0]), Path(a.paths[1]))
    else:
        pack(a.classifiers, a.dev, a.fmnist) if a.what == "pack" else unpack(a.dev, a.fmnist)


if __name__ == "__main__":
    main()
