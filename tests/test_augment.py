"""Training-batch augmentation: mirroring (exact box targets, landmark samples untouched) and
photometric changes (exact pixel arithmetic, targets untouched)."""

import numpy as np
import torch

from lmdb_builders.reader import records_to_batch
from lmdb_builders.schema import Kind
from lmdb_builders.synthetic import synthetic_records
from core.geometry import regression_targets
from trainers.augment import (GREY_WEIGHTS, PhotometricParams, blur_images, flip_box_offsets, flip_mask,
                              gaussian_kernels, hflip_batch, photometric_batch, photometric_params)


def mirror_about_crop(face, crop):
    """The face box after mirroring the image about the crop's vertical centre line (inclusive pixels)."""
    x1, x2 = crop[0], crop[2]
    return np.array([x1 + x2 - face[2], face[1], x1 + x2 - face[0], face[3]], dtype=np.float64)


def test_flipped_offsets_equal_the_targets_of_the_mirrored_face():
    crop = np.array([10.0, 20.0, 33.0, 43.0])  # 24 x 24
    face = np.array([12.0, 18.0, 27.0, 40.0])  # off-centre: 2 columns from the crop's left, 6 from its right
    offsets = regression_targets(crop, face)
    np.testing.assert_allclose(offsets, [[2 / 24, -2 / 24, -6 / 24, -3 / 24]])
    # Mirrored about the crop's centre line, the face spans columns 16..31: 6 from the left, 2 from the right.
    mirrored = mirror_about_crop(face, crop)
    np.testing.assert_allclose(mirrored, [16, 18, 31, 40])
    expected = regression_targets(crop, mirrored)
    np.testing.assert_allclose(expected, [[6 / 24, -2 / 24, -2 / 24, -3 / 24]])
    np.testing.assert_allclose(flip_box_offsets(torch.from_numpy(offsets)).numpy(), expected)


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


def params(n, brightness=1.0, contrast=1.0, saturation=1.0, blur_sigma=0.0):
    full = lambda v: np.full(n, v, dtype=np.float64)  # noqa: E731
    return PhotometricParams(full(brightness), full(contrast), full(saturation), full(blur_sigma))


def one_image_batch(pixels):
    image = torch.tensor(pixels, dtype=torch.uint8).view(1, 1, len(pixels), 3)
    return {"image": image, "box": torch.zeros(1, 4), "kind": torch.tensor([int(Kind.POSITIVE)])}


def test_identity_photometric_change_returns_the_same_pixels_and_targets():
    batch = make_batch()
    out = photometric_batch(batch, params(len(batch["kind"])))
    assert torch.equal(out["image"], batch["image"])
    for key in ("box", "landmarks", "kind", "label"):
        assert out[key] is batch[key]


def test_brightness_contrast_and_saturation_by_hand():
    # two grey pixels (grey level = the value) and one red pixel, in one 1 x 3 image
    batch = one_image_batch([[100, 100, 100], [200, 200, 200], [90, 0, 0]])
    grey_red = 90 * GREY_WEIGHTS[0]  # 26.91
    mean_grey = (100 + 200 + grey_red) / 3
    got = photometric_batch(batch, params(1, brightness=0.5))["image"][0, 0].tolist()
    assert got == [[50, 50, 50], [100, 100, 100], [45, 0, 0]]
    got = photometric_batch(batch, params(1, contrast=2.0))["image"][0, 0].tolist()
    expect = lambda v: int(np.clip(round(mean_grey + 2 * (v - mean_grey)), 0, 255))  # noqa: E731
    assert got == [[expect(100)] * 3, [expect(200)] * 3, [expect(90), expect(0), expect(0)]]
    got = photometric_batch(batch, params(1, saturation=0.0))["image"][0, 0].tolist()
    assert got == [[100] * 3, [200] * 3, [round(grey_red)] * 3]  # greyscale
    # values past 255 are clipped, not wrapped
    assert photometric_batch(batch, params(1, brightness=2.0))["image"][0, 0, 1].tolist() == [255, 255, 255]


def test_gaussian_kernels_are_normalised_and_sigma_zero_is_the_identity():
    taps = gaussian_kernels(np.array([0.0, 1.0]))
    assert taps.shape == (2, 7)  # radius ceil(3 * 1.0)
    torch.testing.assert_close(taps.sum(1), torch.ones(2))
    assert taps[0].tolist() == [0, 0, 0, 1, 0, 0, 0]
    x = np.arange(-3, 4)
    torch.testing.assert_close(taps[1], torch.from_numpy(np.exp(-x**2 / 2) / np.exp(-x**2 / 2).sum()).float())


def test_blur_keeps_flat_images_and_spreads_an_impulse_by_the_kernel():
    flat = torch.full((2, 9, 9, 3), 77.0)
    torch.testing.assert_close(blur_images(flat, np.array([1.0, 0.5])), flat)
    impulse = torch.zeros(2, 9, 9, 3)
    impulse[:, 4, 4, 1] = 1.0
    out = blur_images(impulse, np.array([1.0, 0.0]))
    taps = gaussian_kernels(np.array([1.0]))[0]
    torch.testing.assert_close(out[0, :, :, 1][1:8, 1:8], torch.outer(taps, taps))  # separable 2-D Gaussian
    assert torch.equal(out[1], impulse[1])  # sigma 0: untouched
    assert out[0, :, :, [0, 2]].abs().max() == 0  # channels do not mix


def test_photometric_params_are_seeded_and_within_their_ranges():
    a, b = photometric_params(2000, np.random.default_rng(5)), photometric_params(2000, np.random.default_rng(5))
    for field in ("brightness", "contrast", "saturation", "blur_sigma"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert 0.7 <= a.brightness.min() and a.brightness.max() <= 1.3
    assert 0.7 <= a.contrast.min() and a.contrast.max() <= 1.3
    grey = a.saturation == 0
    assert 0.05 < grey.mean() < 0.15 and (a.saturation[~grey] >= 0.6).all() and (a.saturation <= 1.4).all()
    blurred = a.blur_sigma > 0
    assert 0.15 < blurred.mean() < 0.25 and (a.blur_sigma[blurred] >= 0.5).all() and (a.blur_sigma <= 1.5).all()
