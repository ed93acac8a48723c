"""``Detector.detect_batch``: several images, R-Net and O-Net crops in shared batches (CPU, no network)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from detector.cascade import Detector, DetectorConfig, batch_slices, load_detector


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    from skimage.data import astronaut

    face = astronaut()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    # different sizes, a crop, a grey image, one too small for the pyramid, one without faces
    return [face, face[30:330, 90:400], noise, face[::2, ::2, 1], np.zeros((8, 8, 3), np.uint8), face[::-1]]


def test_batch_slices_by_hand():
    assert batch_slices([10], 4) == [[(0, 0, 4)], [(0, 4, 8)], [(0, 8, 10)]]
    assert batch_slices([3, 0, 5], 4) == [[(0, 0, 3), (2, 0, 1)], [(2, 1, 5)]]
    assert batch_slices([4, 4], 4) == [[(0, 0, 4)], [(1, 0, 4)]]
    assert batch_slices([0, 0], 4) == []
    assert batch_slices([1, 1, 1], 8) == [[(0, 0, 1), (1, 0, 1), (2, 0, 1)]]


def check_equal(found, wanted):
    # Equal up to float32 rounding, not bit for bit: which kernel a CPU runs for a convolution
    # depends on the batch and on the CPU, and a crop shares its batch with other images' crops.
    assert len(found) == len(wanted)
    for got, want in zip(found, wanted):
        assert len(got) == len(want)
        np.testing.assert_allclose(got.boxes, want.boxes, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.landmarks, want.landmarks, rtol=0, atol=1e-4)


def test_detect_batch_equals_detect_per_image(images):
    # One forward pass per stage for each image and for the batch, so that no crop's score sits
    # in a last batch of 1-3 crops, where it can round further from the same crop in a shared one.
    detector = load_detector("shipped", DetectorConfig(thresholds=(0.5, 0.5, 0.5), batch_size=100_000))
    wanted = [detector.detect(image) for image in images]
    assert sum(len(w) > 0 for w in wanted) >= 3 and len(wanted[4]) == 0  # faces in several images
    check_equal(detector.detect_batch(images), wanted)
    check_equal(detector.detect_batch(images[:1]), wanted[:1])
    assert detector.detect_batch([]) == []


def test_detect_batch_shares_small_batches(images):
    # Batches of 7 crops that span images; compared with detect at the same batch size.
    detector = load_detector("shipped", DetectorConfig(thresholds=(0.5, 0.5, 0.5), batch_size=7))
    wanted = [detector.detect(image) for image in images]
    found = detector.detect_batch(images)
    for got, want in zip(found, wanted):
        assert len(got) == len(want)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.landmarks, want.landmarks, atol=1e-3)


def test_detect_batch_with_a_shorter_cascade(images):
    from core.nets import build_net

    torch.manual_seed(0)
    cfg = DetectorConfig(thresholds=(0.0, 0.0, 0.0), batch_size=100_000)
    pnet_rnet = Detector({"pnet": build_net("pnet"), "rnet": build_net("rnet")}, cfg)
    check_equal(pnet_rnet.detect_batch(images[2:5]), [pnet_rnet.detect(image) for image in images[2:5]])
    pnet_only = Detector({"pnet": pnet_rnet.nets["pnet"]}, replace(cfg, batch_size=None))
    check_equal(pnet_only.detect_batch(images[2:4]), [pnet_only.detect(image) for image in images[2:4]])
