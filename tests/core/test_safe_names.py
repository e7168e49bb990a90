"""One name per class whoever wrote it: image folders, scenes and clips name Fashion-MNIST's classes alike."""

from dnc.core.class_names import safe_name
from dnc.core.images import scan_image_folder
from dnc.core.seg_folder import read_classes
from dnc.training import scenes
from dnc.training.data import FASHION_MNIST_CLASSES, load_dataset
from dnc.training.folders import FASHION_MNIST_COARSE, write_image_folder


def test_safe_name():
    assert safe_name("T-shirt/top") == "T-shirt-top" and safe_name("a\\b ") == "a-b"
    assert safe_name("Ankle boot") == "Ankle boot" and safe_name(" / ") == "-" and safe_name("  ") == "_"


def test_folders_scenes_and_clips_name_the_classes_alike(tmp_path, fmnist_ready):
    write_image_folder(load_dataset("fashion-mnist", "test"), tmp_path / "folder", per_class=1)
    from_folder, _, _ = scan_image_folder(tmp_path / "folder")
    scenes.write_scenes(tmp_path / "scenes", "fine", size=16, train=1, test=1)
    scenes.write_clips(tmp_path / "clips", 1, "fine", height=16, width=16, frames=1)
    for root in ("scenes", "clips"):
        names = read_classes(tmp_path / root).names
        assert names[0] == "background" and sorted(names[1:]) == from_folder
        assert "T-shirt-top" in names and "T-shirt/top" not in names
    assert read_classes(tmp_path / "scenes").names[1:] == FASHION_MNIST_CLASSES  # what training on the files says
    assert load_dataset("fashion-mnist", "test").class_names == [safe_name(n) for n in FASHION_MNIST_CLASSES]
    coarse = scenes.write_scenes(tmp_path / "coarse", "coarse", size=16, train=1, test=1)
    assert coarse.names[1:] == list(FASHION_MNIST_COARSE)


def test_models_named_before_the_safe_names_still_check_against_their_data(fmnist_ready):
    """A checkpoint from before "T-shirt/top" became "T-shirt-top" evaluates, anchors and resumes on the same
    data; a class that really differs is still refused, named."""
    import pytest

    from dnc.training.loop import check_data
    from dnc.training.model import ModelConfig

    data = load_dataset("fashion-mnist", "test", in_chans=1, image_size=28)
    old = ["T-shirt/top", *FASHION_MNIST_CLASSES[1:]]
    check_data(ModelConfig(num_classes=10, in_chans=1, image_size=28, class_names=old), data)
    other = [*FASHION_MNIST_CLASSES[:3], "Jumper", *FASHION_MNIST_CLASSES[4:]]
    with pytest.raises(ValueError, match="class 3 of fashion-mnist is 'Dress' but the model's is 'Jumper'"):
        check_data(ModelConfig(num_classes=10, in_chans=1, image_size=28, class_names=other), data)
