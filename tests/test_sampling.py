"""Crop sampling obeys the paper's IoU rules; landmark augmentation keeps points on the face."""

import numpy as np
import pytest

from core.geometry import calibrate, iou, iou_matrix, normalize_landmarks, regression_targets
from prepare.landmark_aug import FLIP_ORDER, LandmarkAugConfig, flip_landmarks, landmark_samples
from prepare.sampling import SamplingConfig, sample_image_crops, squares

CFG = SamplingConfig()
FACES = np.array([[100, 80, 159, 149], [300, 200, 339, 249], [20, 20, 27, 29]], dtype=float)  # last: tiny


@pytest.fixture
def crops():
    rng = np.random.default_rng([0, 7])
    return sample_image_crops(rng, 400, 300, FACES, FACES, 12, CFG)


def test_negatives_overlap_no_face(crops):
    assert len(crops.negatives) >= CFG.negatives_per_image // 2
    assert iou_matrix(crops.negatives, FACES).max() < CFG.neg_iou


def test_near_face_negatives_exist(crops):
    # Some negatives must touch a face, or the net never sees "almost a face" as negative.
    touching = iou_matrix(crops.negatives, FACES[:2]).max(axis=1) > 0
    assert touching.any()


def test_positives_and_parts_meet_their_iou_rule(crops):
    assert len(crops.positives) > 0 and len(crops.parts) > 0
    for boxes, faces, lo, hi in ((crops.positives, crops.positive_faces, CFG.pos_iou, 1.0),
                                 (crops.parts, crops.part_faces, CFG.part_iou, CFG.pos_iou)):
        overlap = np.array([iou(f, b[None])[0] for b, f in zip(boxes, faces)])
        assert (overlap >= lo).all() and (overlap < hi + 1e-12).all()


def test_crops_are_integer_squares_inside_the_image(crops):
    for boxes in (crops.negatives, crops.positives, crops.parts):
        assert boxes.dtype == np.int64
        assert (boxes[:, 2] - boxes[:, 0] == boxes[:, 3] - boxes[:, 1]).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 399).all() and (boxes[:, 3] <= 299).all()
        assert (boxes[:, 2] - boxes[:, 0] + 1 >= 12).all()


def test_small_faces_give_no_positives(crops):
    assert not (crops.positive_faces == FACES[2]).all(axis=1).any()
    assert not (crops.part_faces == FACES[2]).all(axis=1).any()


def test_regression_targets_move_crop_onto_face(crops):
    targets = regression_targets(crops.positives, crops.positive_faces)
    np.testing.assert_allclose(calibrate(crops.positives, targets), crops.positive_faces, atol=1e-9)
    assert np.abs(targets).max() < 1.0


def test_same_seed_same_crops():
    a = sample_image_crops(np.random.default_rng([3, 1]), 400, 300, FACES, FACES, 12, CFG)
    b = sample_image_crops(np.random.default_rng([3, 1]), 400, 300, FACES, FACES, 12, CFG)
    c = sample_image_crops(np.random.default_rng([3, 2]), 400, 300, FACES, FACES, 12, CFG)
    assert np.array_equal(a.negatives, b.negatives) and np.array_equal(a.positives, b.positives)
    assert not np.array_equal(a.negatives, c.negatives)


def test_dropped_faces_still_block_negatives():
    # A face excluded from training (e.g. invalid) must not turn up inside a negative.
    hidden = np.array([[0, 0, 199, 149]], dtype=float)  # covers the top-left quarter
    crops = sample_image_crops(np.random.default_rng(1), 400, 300, np.zeros((0, 4)), hidden, 12, CFG)
    assert iou_matrix(crops.negatives, hidden).max() < CFG.neg_iou


def test_squares_are_inclusive():
    assert squares([5], [7], [12]).tolist() == [[5, 7, 16, 18]]


# -- landmarks --------------------------------------------------------------------------------
POINTS = np.array([[30.0, 35.0], [50.0, 34.0], [40.0, 45.0], [33.0, 55.0], [48.0, 56.0]])


def test_flip_swaps_left_and_right_points():
    crop = np.array([20, 20, 59, 59])
    flipped = flip_landmarks(POINTS, crop)
    # Left eye (30, 35) mirrors to x = 20 + 59 - 30 = 49 and becomes the *right* eye.
    assert flipped[1].tolist() == [49.0, 35.0]
    assert flipped[0].tolist() == [29.0, 34.0]  # right eye (50, 34) -> left eye at x = 29
    assert flipped[2].tolist() == [39.0, 45.0]  # nose stays the nose
    assert flipped[3].tolist() == [31.0, 56.0] and flipped[4].tolist() == [46.0, 55.0]
    np.testing.assert_array_equal(flip_landmarks(flipped, crop), POINTS)
    assert FLIP_ORDER.tolist() == [1, 0, 2, 4, 3]


def test_flip_matches_mirrored_pixels():
    image = np.zeros((80, 80, 3), np.uint8)
    x, y = POINTS[0].astype(int)
    image[y, x] = 255  # mark the left eye
    crop = np.array([20, 20, 59, 59])
    patch = image[20:60, 20:60][:, ::-1]
    flipped = flip_landmarks(POINTS, crop)
    ys, xs = np.nonzero(patch[:, :, 0])
    assert (xs[0] + 20, ys[0] + 20) == tuple(flipped[1].astype(int))  # now the right eye


def test_landmark_samples_plain_crop_is_exact():
    image = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    face = np.array([25.0, 25.0, 64.0, 64.0])
    cfg = LandmarkAugConfig(samples_per_face=0)
    (patch, values), = landmark_samples(np.random.default_rng(0), image, face, POINTS, 40, cfg)
    np.testing.assert_array_equal(patch, image[25:65, 25:65])  # 40 px: no resize, no warp
    np.testing.assert_allclose(values, normalize_landmarks(POINTS, face)[0], rtol=1e-6)


def test_landmark_samples_stay_normalised_and_deterministic():
    image = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    face = np.array([25.0, 25.0, 64.0, 64.0])
    a = landmark_samples(np.random.default_rng(5), image, face, POINTS, 12, LandmarkAugConfig())
    b = landmark_samples(np.random.default_rng(5), image, face, POINTS, 12, LandmarkAugConfig())
    assert len(a) > 3
    for (pa, va), (pb, vb) in zip(a, b):
        assert pa.shape == (12, 12, 3) and pa.dtype == np.uint8
        assert (va >= 0).all() and (va <= 1).all()
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(va, vb)
