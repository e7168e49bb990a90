"""Names with escape sequences or newlines (files, labels, reasons) are printed escaped in tables and
messages, so they cannot rewrite the terminal or forge rows; JSON output stays exact."""

import json

import numpy as np
from PIL import Image

from dnc.clients.classify_cli import table
from dnc.clients.cli import main
from dnc.clients.client import Prediction, Ranked
from dnc.clients.printable import shown

EVIL = "a\x1b[2Jb\nFORGED ROW\u2028c"


def test_shown_escapes_controls_and_keeps_letters():
    assert shown(EVIL) == "a\\x1b[2Jb\\nFORGED ROW\\u2028c"
    assert shown("Äpfel 靴 T-shirt-top") == "Äpfel 靴 T-shirt-top"
    assert shown(3) == "3"


def test_the_classify_table_escapes_sources_labels_and_exemplars():
    p = Prediction(source=f"/x/{EVIL}.png", set_id="s", margin=0.1,
                   top=[Ranked(rank=1, class_id=0, label=EVIL, score=0.9, subcentroid=0, exemplar_id=3,
                               exemplar=EVIL)])
    text = table([p])
    assert "\x1b" not in text and "\u2028" not in text and "\nFORGED" not in text
    assert text.count("\n") == 3  # head, rule, one row, summary: no forged rows


def test_segment_prints_escaped_names_of_real_files(seg_export, tmp_path, capsys):
    pics = tmp_path / "in"
    pics.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(pics / "fine\x1b[31m\nFORGED.png")
    (pics / "bad\x1b[2J\n.png").write_bytes(b"not a png")
    assert main(["segment", str(pics), "--in-process", str(seg_export[2]), "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\nFORGED" not in out
    assert "fine\\x1b[31m\\nFORGED" in out and "bad\\x1b[2J\\n.png" in err
    main(["segment", str(pics), "--in-process", str(seg_export[2]), "--out", str(tmp_path / "out2"), "--json"])
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["source"].endswith("fine\x1b[31m\nFORGED.png")  # JSON carries the exact name
