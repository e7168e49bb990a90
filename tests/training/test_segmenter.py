"""The segmenter's parts against independent references: output stride, the classifier backbone it
starts from, upsampling (numpy float64), the head per pixel, pixel sampling, metrics, augmentation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnc.training.model import ModelConfig, build_model
from dnc.training.seg_task import augment_pair, cell_labels, confusion_metrics, predict, sample_per_class
from dnc.training.segmenter import PixelEncoder, cell_pixels, init_from_classifier, nearest_cells, upsample
from tests.training import reference as ref


def _seg_cfg(**kw):
    base = dict(num_classes=5, task="segmentation", in_chans=3, image_size=32, width=8, embed_dim=16, k=[3, 1, 2, 3, 3],
                decoder_dim=16, mean=[0.5] * 3, std=[0.5] * 3)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("small_stem,size,want", [(True, (32, 32), (8, 8)), (True, (37, 21), (10, 6)),
                                                  (False, (64, 64), (8, 8)), (False, (70, 45), (9, 6))])
def test_output_stride(small_stem, size, want):
    enc = PixelEncoder("resnet18", 8, 3, small_stem=small_stem, embed_dim=16, decoder_dim=16).eval()
    assert enc.strides == ([1, 2, 4, 8] if small_stem else [4, 8, 8, 8])
    with torch.no_grad():
        assert enc(torch.randn(2, 3, *size)).shape == (2, 16, *want)


def test_upsample_matches_float64_reference(rng):
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    for size in ((20, 28), (13, 9), (5, 7), (17, 30)):
        got = upsample(torch.from_numpy(x), size).numpy()
        np.testing.assert_allclose(got, ref.bilinear_resize(x, *size), atol=1e-5)


def test_prediction_matches_float64_reference(rng):
    torch.manual_seed(0)
    model = build_model(_seg_cfg()).eval()
    with torch.no_grad():  # random unit sub-centroids; padded slots (K < 3) stay zero
        model.head.centroids.copy_(F.normalize(torch.randn(5, 3, 16), dim=-1) * model.head.k_mask[..., None])
    x = torch.from_numpy(rng.standard_normal((2, 3, 30, 26)).astype(np.float32))
    emb, logits = model(x)
    labels, sub = predict(model, x)
    want = ref.segment(emb.detach().numpy(), model.head.centroids.numpy(), model.head.ks, out_h=30, out_w=26)
    np.testing.assert_allclose(logits.detach().numpy() * model.head.temperature, want["scores"], atol=1e-5)
    assert (labels.numpy() == want["labels"]).mean() > 0.999
    same = labels.numpy() == want["labels"]
    assert np.array_equal(sub.numpy()[same], want["subcentroid"][same])
    assert sub.max() < 3 and np.all(sub.numpy()[labels.numpy() == 1] == 0)  # K=1 class: its only one


def test_classifier_backbone_loads_whole_and_grey_stem_spreads_over_rgb():
    torch.manual_seed(1)
    clf = build_model(ModelConfig(num_classes=10, width=8, embed_dim=16, in_chans=1, image_size=28))
    for p in clf.parameters():
        p.data.normal_()
    seg = build_model(_seg_cfg(mean=[0.3] * 3, std=[0.4] * 3))
    rep = init_from_classifier(seg, clf.state_dict())
    assert rep["adapted"] == ["encoder.backbone.stem.0.weight"]
    assert "encoder.proj.weight" in rep["not_loaded"] and any(k.startswith("head.") for k in rep["not_loaded"])
    assert any(k.startswith("encoder.deep") for k in rep["not_initialised"])
    for name, value in clf.encoder.backbone.state_dict().items():
        if name != "stem.0.weight":
            assert torch.equal(seg.encoder.backbone.state_dict()[name], value), name
    grey = torch.rand(2, 1, 20, 20)
    clf.eval(), seg.eval()
    with torch.no_grad():
        want = clf.encoder.backbone.stem((grey - 0.3) / 0.4)
        got = seg.encoder.backbone.stem((grey.repeat(1, 3, 1, 1) - 0.3) / 0.4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    other = build_model(_seg_cfg(width=16))
    with pytest.raises(ValueError, match=r"stem.0.weight is \(8, 1, 3, 3\) but the segmenter.s is \(16, 3, 3, 3\)"):
        init_from_classifier(other, clf.state_dict())


def test_sample_per_class_is_bounded_uniform_and_seeded():
    labels = torch.cat([torch.full((500,), 0), torch.full((7,), 1), torch.full((100,), 3)])[torch.randperm(607)]
    pick = sample_per_class(labels, 64, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[pick], minlength=4).tolist()
    assert counts == [64, 7, 0, 64] and len(set(pick.tolist())) == len(pick)
    again = sample_per_class(labels, 64, torch.Generator().manual_seed(0))
    other = sample_per_class(labels, 64, torch.Generator().manual_seed(1))
    assert torch.equal(pick, again) and not torch.equal(pick, other)
    hits = torch.zeros(607)
    for s in range(200):
        hits[sample_per_class(labels, 64, torch.Generator().manual_seed(s))] += 1
    rate = hits[labels == 0] / 200  # each of 500 pixels is drawn with probability 64/500 = 0.128
    assert float(rate.min()) > 0.03 and float(rate.max()) < 0.25 and float(rate.std()) < 0.05


def test_a_cell_stands_for_a_pixel_that_maps_back_to_it():
    """Training labels a cell by the pixel cell_pixels picks; the exported head shows a pixel the winner
    of nearest_cells: the two agree at every size, and at an integer stride it is nearest-neighbour
    downsampling (pixel i * s)."""
    for size, cells in (((37, 29), (10, 8)), ((50, 375), (13, 47)), ((64, 64), (16, 16)), ((45, 70), (12, 18))):
        rows, cols = cell_pixels(size, cells)
        back_r, back_c = nearest_cells(size, cells)
        assert torch.equal(back_r[rows], torch.arange(cells[0])) and torch.equal(back_c[cols], torch.arange(cells[1]))
    m = torch.randint(0, 6, (3, 64, 48))
    lab, ys, xs = cell_labels(m, (16, 12))
    want = F.interpolate(m[:, None].float(), size=(16, 12), mode="nearest")[:, 0].long()
    assert torch.equal(lab, want)
    assert torch.equal(m[torch.arange(3)[:, None, None], ys, xs], lab)


def test_confusion_metrics_by_hand():
    # truth rows, predictions columns: class 0 has 3 pixels, 2 right; class 1 has 2, 1 right; class 2 none
    conf = torch.tensor([[2, 1, 0], [1, 1, 0], [0, 0, 0]])
    m = confusion_metrics(conf)
    assert m["iou_per_class"][0] == pytest.approx(100 * 2 / 4) and m["iou_per_class"][1] == pytest.approx(100 / 3)
    assert m["iou_per_class"][2] is None and m["miou"] == pytest.approx((50 + 100 / 3) / 2)
    assert m["pixel_acc"] == pytest.approx(60) and m["pixels"] == 5


def test_augmentation_moves_image_and_mask_together():
    m = torch.randint(0, 10, (8, 24, 24))
    x = torch.stack([m.to(torch.uint8) + 1] * 3, 1)  # every image pixel says its label (+1)
    xa, ma = augment_pair(x, m, torch.Generator().manual_seed(3), ignore=255)
    inside = ma != 255
    assert torch.equal(xa[:, 0][inside].long() - 1, ma[inside])
    assert torch.all(xa[:, 0][~inside] == 0) and (~inside).any()  # padding: black image, ignored label
