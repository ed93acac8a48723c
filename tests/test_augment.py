"""Horizontal mirroring of training batches: exact box targets, landmark samples untouched."""

import numpy as np
import torch

from lmdb_builders.reader import records_to_batch
from lmdb_builders.schema import Kind
from lmdb_builders.synthetic import synthetic_records
from prepare.boxes import regression_targets
from trainers.augment import flip_box_offsets, flip_mask, hflip_batch


def mirror_about_crop(face, crop):
    """The face box after mirroring the image about the crop's vertical centre line (inclusive pixels)."""
    x1, x2 = crop[0], crop[2]
    return np.array([x1 + x2 - face[2], face[1], x1 + x2 - face[0], face[3]], dtype=np.float64)


def test_flipped_offsets_equal_the_targets_of_the_mirrored_face():
    crop = np.array([10.0, 20.0, 33.0, 43.0])  # 24 x 24
    face = np.array([13.0, 18.0, 30.0, 40.0])
    offsets = regression_targets(crop, face)
    np.testing.assert_allclose(offsets, [[3 / 24, -2 / 24, -3 / 24, -3 / 24]])
    expected = regression_targets(crop, mirror_about_crop(face, crop))
    np.testing.assert_allclose(flip_box_offsets(torch.from_numpy(offsets)).numpy(), expected)
    # Mirroring pixel columns: face columns 13..30 of crop 10..33 sit at 3..20; mirrored, at 3..20 from the right.
    np.testing.assert_allclose(expected, [[3 / 24, -2 / 24, -3 / 24, -3 / 24]])


def test_asymmetric_face_offsets_swap_and_change_sign():
    got = flip_box_offsets(torch.tensor([[0.1, 0.2, -0.3, 0.4]]))
    np.testing.assert_allclose(got.numpy(), [[0.3, 0.2, -0.1, 0.4]], rtol=1e-6)
    nan = flip_box_offsets(torch.full((1, 4), float("nan")))
    assert torch.isnan(nan).all()


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    recs = np.concatenate([synthetic_records(rng, 12, kind, 8) for kind in Kind])
    return records_to_batch(recs)


def test_hflip_batch_mirrors_only_the_masked_samples():
    batch = make_batch()
    mask = torch.zeros(len(batch["kind"]), dtype=torch.bool)
    mask[[0, 9, 17]] = True  # a negative, a positive, a part face
    out = hflip_batch(batch, mask)
    assert torch.equal(out["image"][mask], batch["image"][mask].flip(2))
    assert torch.equal(out["image"][~mask], batch["image"][~mask])
    torch.testing.assert_close(out["box"][mask], flip_box_offsets(batch["box"][mask]), equal_nan=True)
    torch.testing.assert_close(out["box"][~mask], batch["box"][~mask], equal_nan=True)
    assert torch.equal(out["landmarks"].isnan(), batch["landmarks"].isnan())
    # the input batch is not modified, and mirroring twice gives it back
    twice = hflip_batch(out, mask)
    assert torch.equal(twice["image"], batch["image"])
    torch.testing.assert_close(twice["box"], batch["box"], equal_nan=True)


def test_flip_mask_never_touches_landmark_samples_and_is_seeded():
    kinds = make_batch()["kind"]
    a = flip_mask(kinds, np.random.default_rng(3))
    b = flip_mask(kinds, np.random.default_rng(3))
    assert torch.equal(a, b)
    assert not a[kinds == Kind.LANDMARK].any()
    assert a.any() and not a[kinds != Kind.LANDMARK].all()
    assert not flip_mask(kinds, np.random.default_rng(3), probability=0.0).any()
