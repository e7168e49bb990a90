"""The README's segmentation figure from a `make demo` run: picture, overlay and labels, before and after
the segmenter's class list was swapped to the fine classes (nearest-neighbour enlarged, labelled).

    python benchmarks/figures/demo_segment_figure.py --demo runs/demo --scenes 0,3 --out docs/img/demo-segment.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

SCALE, PAD = 3, 18


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="runs/demo")
    ap.add_argument("--scenes", default="0,3", help="indices of the demo's test scenes")
    ap.add_argument("--out", default="docs/img/demo-segment.png")
    a = ap.parse_args()
    demo = Path(a.demo)
    rows = []
    for i in map(int, a.scenes.split(",")):
        name = f"{i:06d}"
        tiles = [("picture", Image.open(demo / "data/scenes-fine/images/test" / f"{name}.png").convert("RGB"))]
        for when in ("coarse", "fine"):
            seg = demo / "segmented" / when
            tiles += [(f"{when} list: overlay", Image.open(seg / f"{name}.overlay.png").convert("RGB")),
                      (f"{when} list: labels", Image.open(seg / f"{name}.labels.png").convert("RGB"))]
        rows.append(tiles)
    w, h = rows[0][0][1].size
    sheet = Image.new("RGB", (len(rows[0]) * (w * SCALE + 6), len(rows) * (h * SCALE + PAD + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, tiles in enumerate(rows):
        for c, (title, im) in enumerate(tiles):
            x, y = c * (w * SCALE + 6), r * (h * SCALE + PAD + 6)
            draw.text((x + 2, y + 2), title, fill="black")
            sheet.paste(im.resize((w * SCALE, h * SCALE), Image.NEAREST), (x, y + PAD))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
