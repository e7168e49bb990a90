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


def pack(classifiers: Path = Path("runs/bench-twins3")) -> None:
    (DEV / "fmnist").mkdir(parents=True, exist_ok=True)
    for f in sorted(FASHION_MNIST_DIR.glob("*.gz")):
        (DEV / "fmnist" / f.name.replace(".gz", ".xz")).write_bytes(lzma.compress(gzip.decompress(f.read_bytes()),
                                                                                 preset=9))
    for kind in ("dnc", "softmax"):
        for seed in (0, 1, 2):
            rel = Path(kind) / "e8" / f"s{seed}" / "checkpoint.safetensors"
            slim(classifiers / rel, DEV / "ckpt" / rel, drop_head=True)
    total = sum(p.stat().st_size for p in DEV.rglob("*") if p.is_file())
    print(f"{DEV}: {total / 2**20:.1f} MiB")


def unpack() -> None:
    FASHION_MNIST_DIR.mkdir(parents=True, exist_ok=True)
    for f in (DEV / "fmnist").glob("*.xz"):
        dst = FASHION_MNIST_DIR / f.name.replace(".xz", ".gz")
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
    a = ap.parse_args()
    if a.what == "bring-back":
        if len(a.paths) != 2:
            ap.error("bring-back takes the benchmark folder and the folder to write to")
        bring_back(Path(a.paths[0]), Path(a.paths[1]))
    else:
        pack() if a.what == "pack" else unpack()


if __name__ == "__main__":
    main()
