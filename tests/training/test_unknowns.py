"""`dnc write-unknowns`: pictures from real data no Fashion-MNIST model saw, deterministic by seed, with
train and test splits that share no digit scan and no photograph half."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from dnc.clients.cli import main
from dnc.training.unknowns import DIGITS_TRAIN, digits, write_unknowns


def _digests(folder):
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())]


def test_pictures_are_deterministic_sized_and_split(tmp_path):
    a = write_unknowns(tmp_path / "a", count=30, size=28, seed=3)
    assert a == {"digits": 30, "photos": 30, "noise": 30}
    write_unknowns(tmp_path / "b", count=30, size=28, seed=3)
    write_unknowns(tmp_path / "c", count=30, size=28, seed=4)
    for kind in a:
        assert _digests(tmp_path / "a" / kind) == _digests(tmp_path / "b" / kind)  # same seed, same bytes
        assert _digests(tmp_path / "a" / kind) != _digests(tmp_path / "c" / kind)
        im = np.asarray(Image.open(tmp_path / "a" / kind / "000000.png"))
        assert im.shape == (28, 28) and im.dtype == np.uint8 and im.max() > im.min()
    rgb = write_unknowns(tmp_path / "rgb", kinds=("photos",), count=2, size=40, channels=3)
    assert rgb == {"photos": 2}
    assert np.asarray(Image.open(tmp_path / "rgb" / "photos" / "000001.png")).shape == (40, 40, 3)


def test_digit_splits_are_disjoint_real_scans():
    train, test = digits("train"), digits("test")
    assert len(train) == DIGITS_TRAIN and len(test) == 1797 - DIGITS_TRAIN and train.max() == 255
    assert not {t.tobytes() for t in train} & {t.tobytes() for t in test} - {np.zeros((8, 8), np.uint8).tobytes()}


def test_bad_requests_are_refused_naming_the_flag(tmp_path, capsys):
    assert main(["write-unknowns", "--out", str(tmp_path / "x"), "--kinds", "digits,cats"]) == 2
    assert "cats" in capsys.readouterr().err
    with pytest.raises(ValueError, match="count"):
        write_unknowns(tmp_path / "y", count=0)


def test_a_link_planted_at_an_output_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    (tmp_path / "out" / "noise").mkdir(parents=True)
    (tmp_path / "out" / "noise" / "000000.png").symlink_to(victim)
    write_unknowns(tmp_path / "out", kinds=("noise",), count=1)
    assert victim.read_bytes() == b"keep"
    written = tmp_path / "out" / "noise" / "000000.png"
    assert not written.is_symlink() and Image.open(written).size == (28, 28)
