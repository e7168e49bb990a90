"""The centroid set artefact: round trip, and the sets a server must refuse, each with its reason."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from dnc.core import centroid_set
from dnc.core.centroid_set import CentroidSet, CentroidSetError, check_pairing
from tests.training.reference import normalise

FP = "sha256:" + "a" * 64


def _set(rng, ks=(3, 1, 2), d=6):
    cents = np.zeros((len(ks), max(ks), d), np.float32)
    for i, k in enumerate(ks):
        cents[i, :k] = normalise(rng.standard_normal((k, d)))
    ids = np.where(np.arange(max(ks))[None] < np.asarray(ks)[:, None], rng.integers(0, 99, cents.shape[:2]), -1)
    names = [[f"img/{c}/{j}.png" for j in range(k)] for c, k in enumerate(ks)]
    return CentroidSet(cents, list(ks), ["cat", "dog", "fox"][: len(ks)], FP, ids, names, {"from": "test"})


def test_round_trip_keeps_everything(rng, tmp_path):
    cs = _set(rng)
    centroid_set.save(cs, tmp_path / "set")
    back = centroid_set.load(tmp_path / "set")
    np.testing.assert_array_equal(back.centroids, cs.centroids)
    assert back.ks == cs.ks and back.class_names == cs.class_names and back.exemplar_names == cs.exemplar_names
    np.testing.assert_array_equal(back.exemplar_ids, cs.exemplar_ids)
    assert back.set_id == cs.set_id and back.anchored
    assert (tmp_path / "set" / "centroids.json").is_file()
    # The id changes with the content: a new class list is a new version.
    cs.centroids[0, 0] = normalise(rng.standard_normal(6))
    assert cs.set_id != back.set_id


def test_wrong_fingerprint_and_width_are_refused(rng):
    cs = _set(rng)
    check_pairing(cs, FP, 6)
    with pytest.raises(CentroidSetError, match="made with embedding model sha256:aaaa"):
        check_pairing(cs, "sha256:" + "d" * 64, 6)
    with pytest.raises(CentroidSetError, match="D=6 but the embedding model outputs D=8"):
        check_pairing(cs, FP, 8)


@pytest.mark.parametrize("damage, message", [
    (lambda cs: cs.centroids.__setitem__((1, 0, 2), np.nan), "non-finite values .* class 1 \\(dog\\)"),
    (lambda cs: cs.centroids.__setitem__((2, 0), cs.centroids[2, 0] * 3), "class 2 \\(fox\\) are not L2-normalised"),
    (lambda cs: cs.centroids.__setitem__((1, 2), 1.0), "padded sub-centroid slots must be zero"),
    (lambda cs: cs.class_names.__setitem__(1, "cat"), "are both .cat."),
    (lambda cs: cs.ks.__setitem__(0, 0), "class 0 \\(cat\\) has K=0"),
    (lambda cs: cs.centroids.__setitem__((0, 1, 0), np.inf), "non-finite values .* class 0"),
])
def test_damaged_sets_are_refused_on_save_and_load(rng, tmp_path, damage, message):
    good = _set(rng)
    centroid_set.save(good, tmp_path / "set")
    damage(good)
    with pytest.raises(CentroidSetError, match=message):
        centroid_set.save(good, tmp_path / "other")
    # A set damaged on disk (written around the validation) is refused when read.
    meta = good.describe()
    save_file({"centroids": good.centroids, "ks": np.asarray(good.ks, np.int32)}, str(tmp_path / "set" /
              "centroids.safetensors"), metadata={"dnc": json.dumps(meta)})
    with pytest.raises(CentroidSetError, match=message):
        centroid_set.load(tmp_path / "set")


def test_bad_exemplars_fingerprint_and_tampering_are_refused(rng, tmp_path):
    cs = _set(rng)
    cs.exemplar_ids = cs.exemplar_ids[:, :2]
    with pytest.raises(CentroidSetError, match="exemplar ids have shape"):
        centroid_set.save(cs, tmp_path / "a")
    cs = _set(rng)
    cs.embed_fingerprint = "whatever"
    with pytest.raises(CentroidSetError, match="is not sha256"):
        centroid_set.save(cs, tmp_path / "a")
    cs = _set(rng)
    centroid_set.save(cs, tmp_path / "b")
    with pytest.raises(CentroidSetError, match="made with embedding model"):
        centroid_set.load(tmp_path / "b", expect_fingerprint="sha256:" + "1" * 64)
    # Rewrite the tensors with other (valid) centroids but the old description: the id gives it away.
    meta = json.loads((tmp_path / "b" / "centroids.json").read_text())
    other = _set(np.random.default_rng(7))
    save_file({"centroids": other.centroids, "ks": np.asarray(other.ks, np.int32)},
              str(tmp_path / "b" / "centroids.safetensors"), metadata={"dnc": json.dumps(meta)})
    with pytest.raises(CentroidSetError, match="does not match its recorded set id"):
        centroid_set.load(tmp_path / "b")


def test_not_a_set(tmp_path):
    with pytest.raises(CentroidSetError, match="no centroid set at"):
        centroid_set.load(tmp_path)
    (tmp_path / "centroids.safetensors").write_bytes(b"garbage")
    with pytest.raises(CentroidSetError, match="not a readable centroid set"):
        centroid_set.load(tmp_path)
