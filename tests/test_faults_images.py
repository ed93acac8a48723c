"""Images the detector cannot read right (issue #30, rule 8), injected: arrays of other types and
scales, arrays with no one meaning, and a ``min_face`` so small that the pyramid would not fit in
memory.

Types with one meaning (uint16, other integers within 0-255, floats in [0, 1] or [0, 255]) give the
uint8 image's faces; the rest is a ValueError saying what is expected; a too small ``min_face`` is
refused before P-Net runs, naming the smallest value the image allows.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from core.imageio import convert_rgb_uint8, to_rgb_uint8
from detector import DetectorConfig, load_detector
from detector.cascade import MAX_PYRAMID_PIXELS, MIN_FACE_FLOOR, check_pyramid
from child_env import REPO, child_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()  # uint8 (512, 512, 3), one face


@pytest.fixture(scope="module")
def detector():
    return load_detector("shipped", DetectorConfig())


def same(a, b):
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_every_type_with_one_meaning_gives_the_uint8_images_faces(astronaut, detector):
    reference = detector.detect(astronaut)
    assert len(reference) == 1
    for image in (astronaut.astype(np.uint16) * 257, astronaut / 255.0, (astronaut / 255.0).astype(np.float32),
                  astronaut.astype(np.float64), astronaut.astype(np.int64), astronaut.astype(np.float16)):
        same(detector.detect(image), reference)
    # uint16 scales by 1/257 with rounding, floats in [0, 1] by 255: the pixels are the uint8 ones
    almost = astronaut.astype(np.uint16) * 257 + (astronaut < 255).astype(np.uint16) * 128  # rounds down to it
    np.testing.assert_array_equal(convert_rgb_uint8(almost), astronaut)
    np.testing.assert_array_equal(convert_rgb_uint8(astronaut / 255.0), astronaut)
    # uint8 is taken as it is: the default path gives exactly what it gave before
    np.testing.assert_array_equal(convert_rgb_uint8(astronaut), to_rgb_uint8(astronaut))
    assert detector.detect_batch([astronaut / 255.0])[0].boxes.tolist() == reference.boxes.tolist()


@pytest.mark.parametrize("image, said", [
    (np.zeros((40, 40, 3), bool), "got bool (40, 40, 3)"),
    (np.full((40, 40, 3), -0.5), "got float64 (40, 40, 3) with values -0.5 to -0.5"),
    (np.full((40, 40, 3), np.nan, np.float32), "with NaN or infinite values"),
    (np.full((40, 40, 3), 300.0), "with values 300 to 300"),
    (np.full((40, 40), 4096, np.int64), "got int64 (40, 40) with values 4096 to 4096"),
    (np.full((40, 40), -1, np.int8), "got int8 (40, 40) with values -1 to -1"),
    (np.zeros((40, 40, 3), np.complex64), "got complex64"),
    (np.zeros((40, 40, 3), object), "got object"),
])
def test_arrays_without_one_meaning_are_refused_saying_what_is_expected(detector, image, said):
    for call in (detector.detect, lambda im: detector.detect_batch([im])):
        with pytest.raises(ValueError) as err:
            call(image)
        message = str(err.value)
        assert message.startswith("expected an image of uint8 (0-255), uint16 (0-65535") and said in message, message


def test_arrays_of_other_shapes_are_refused(detector):
    for shape in ((40, 40, 2), (40,), (2, 40, 40, 3)):
        with pytest.raises(ValueError, match=r"expected an \(H, W\), \(H, W, 1\), \(H, W, 3\) or \(H, W, 4\) image"):
            detector.detect(np.zeros(shape, np.uint8))


def test_a_min_face_below_the_floor_is_refused_naming_the_option():
    with pytest.raises(ValueError) as err:
        DetectorConfig(min_face=0.5)
    assert str(err.value).startswith(f"min_face (--min-face, MIN_FACE=) must be >= {MIN_FACE_FLOOR:g} pixels, got 0.5")
    DetectorConfig(min_face=MIN_FACE_FLOOR)


def test_a_pyramid_too_large_for_memory_is_refused_before_pnet_runs(detector, monkeypatch):
    fast = load_detector("shipped", DetectorConfig(min_face=MIN_FACE_FLOOR))
    calls = []
    monkeypatch.setattr(fast.nets["pnet"], "forward", lambda *a: calls.append(a))
    image = np.zeros((4000, 4000, 3), np.uint8)
    for call in (fast.detect, lambda im: fast.detect_batch([np.zeros((20, 20, 3), np.uint8), im])):
        with pytest.raises(ValueError) as err:
            call(image)
        assert str(err.value) == (
            "--min-face (MIN_FACE=) 6 would scale this 4000x4000 image's first pyramid level to 8001x8001 (64 Mpx, "
            f"more than the {MAX_PYRAMID_PIXELS / 1e6:.0f} Mpx the detector allows): use --min-face 7.6 or more for "
            "this image")
    assert calls == []
    check_pyramid(4000, 4000, 7.6)  # the value named is enough
    check_pyramid(10_500, 10_500, DetectorConfig().min_face)  # the default takes images of 110 Mpx


def test_the_detect_command_refuses_a_tiny_min_face_in_one_line(astronaut, tmp_path):
    image = tmp_path / "big.png"
    cv2.imwrite(str(image), np.zeros((4000, 4000, 3), np.uint8))
    # 0.5 is refused by the nested DetectorConfig while parsing: a usage error (usage line, then the error)
    for min_face, expected, usage in (
            ("0.5", "python -m detector.detect: error: min_face (--min-face, MIN_FACE=) must be >= 6 pixels, got 0.5",
             True),
            ("6", "python -m detector.detect: error: --min-face (MIN_FACE=) 6 would scale this 4000x4000 image's "
                  "first pyramid level", False)):
        proc = subprocess.run([sys.executable, "-m", "detector.detect", "--image", str(image), "--out",
                               str(tmp_path / "out"), "--weights", "shipped", "--min-face", min_face], cwd=REPO,
                              env=child_env(), capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and lines[-1].startswith(expected), proc.stderr
        assert len(lines) == 1 or usage and lines[0].startswith("usage: "), proc.stderr
