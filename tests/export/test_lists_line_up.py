"""A class list built from `dnc write-folder` output and one built from `dnc write-scenes` output name the same
class the same ("T-shirt-top"), so lists made from either can be compared and swapped line for line."""

import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F

pytestmark = pytest.mark.slow


def test_folder_and_scene_lists_share_their_class_names(exported, fm_folder, seg_export, tmp_path):
    out, _ = exported
    scenes, _, seg_out, _ = seg_export  # written by training.scenes.write_scenes, as `dnc write-scenes` does
    assert main(["centroids", "--embed", str(out / F.EMBED_FILE), "--data", str(fm_folder), "--out",
                 str(tmp_path / "folder-set"), "--K", "1"]) == 0
    assert main(["centroids", "--embed", str(seg_out / F.EMBED_FILE), "--data", str(scenes), "--out",
                 str(tmp_path / "scene-set"), "--K", "1"]) == 0
    from_folder = centroid_set.load(tmp_path / "folder-set").class_names
    from_scenes = centroid_set.load(tmp_path / "scene-set").class_names
    assert "T-shirt-top" in from_folder and "T-shirt-top" in from_scenes
    assert sorted(from_scenes[1:]) == sorted(from_folder) and from_scenes[0] == "background"
