"""Hand-computed checks of every function of core/geometry.py (inclusive pixel convention)."""

import numpy as np
import pytest

from core.geometry import (
    as_boxes,
    box_sizes,
    calibrate,
    crop_with_padding,
    denormalize_landmarks,
    iou,
    iou_matrix,
    nms,
    normalize_landmarks,
    regression_targets,
    square,
    xywh_to_xyxy,
)


def test_as_boxes_shapes():
    assert as_boxes([1, 2, 3, 4]).shape == (1, 4)
    assert as_boxes([[1, 2, 3, 4, 0.9]]).tolist() == [[1, 2, 3, 4]]  # extra columns (scores) dropped
    assert as_boxes(np.zeros((0, 4))).shape == (0, 4)
    assert as_boxes([[1, 2, 3, 4]]).dtype == np.float64
    with pytest.raises(ValueError):
        as_boxes([1, 2, 3])


def test_xywh_to_xyxy_and_sizes_are_inclusive():
    # A 5x8 box at (10, 20) covers columns 10..14 and rows 20..27.
    assert xywh_to_xyxy([10, 20, 5, 8]).tolist() == [[10, 20, 14, 27]]
    w, h = box_sizes([[10, 20, 14, 27], [0, 0, 0, 0]])
    assert w.tolist() == [5, 1] and h.tolist() == [8, 1]


def test_iou_hand_computed():
    # Two 10x10 boxes overlapping in a 5x5 corner: 25 / (100 + 100 - 25).
    assert iou([0, 0, 9, 9], [[5, 5, 14, 14]])[0] == pytest.approx(25 / 175)
    # Sharing one column (x = 9): 10 px of intersection, 190 of union.
    assert iou([0, 0, 9, 9], [[9, 0, 18, 9]])[0] == pytest.approx(10 / 190)
    # Adjacent, not overlapping; identical; contained 4x4 in 10x10.
    assert iou([0, 0, 9, 9], [[10, 0, 19, 9], [0, 0, 9, 9], [2, 2, 5, 5]]).tolist() == pytest.approx([0, 1, 16 / 100])


def test_iou_matrix_shape_and_symmetry():
    a = np.array([[0, 0, 9, 9], [5, 5, 14, 14]], dtype=float)
    b = np.array([[5, 5, 14, 14], [100, 100, 110, 110], [0, 0, 9, 9]], dtype=float)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, [[25 / 175, 0, 1], [1, 0, 25 / 175]])
    np.testing.assert_array_equal(m, iou_matrix(b, a).T)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_regression_targets_hand_computed_and_calibrate_inverts_them():
    crop = [10, 10, 19, 19]  # 10 x 10
    gt = [12, 11, 21, 18]
    t = regression_targets(crop, gt)
    np.testing.assert_allclose(t, [[0.2, 0.1, 0.2, -0.1]])
    np.testing.assert_allclose(calibrate(crop, t), [gt])
    # Offsets scale with the inclusive width: a 20 x 40 box moved by (0.1, 0.1, -0.1, 0.05).
    np.testing.assert_allclose(calibrate([0, 0, 19, 39], [0.1, 0.1, -0.1, 0.05]), [[2, 4, 17, 41]])


def test_regression_round_trip_many():
    rng = np.random.default_rng(0)
    crops = np.c_[rng.integers(0, 100, (20, 2)), np.zeros((20, 2))]
    crops[:, 2:] = crops[:, :2] + rng.integers(11, 60, (20, 1))
    gts = crops + rng.uniform(-5, 5, (20, 4))
    np.testing.assert_allclose(calibrate(crops, regression_targets(crops, gts)), gts)


POINTS = np.array([[[15, 25], [25, 25], [20, 30], [16, 35], [24, 35]]], dtype=float)


def test_normalize_landmarks_hand_computed():
    # Crop [10, 20, 29, 39] is 20 x 20; px -> (px - (x1 - 1)) / w, i.e. (15 - 9) / 20 = 0.3.
    values = normalize_landmarks(POINTS, [10, 20, 29, 39])
    expected = [0.3, 0.8, 0.55, 0.35, 0.75, 0.3, 0.3, 0.55, 0.8, 0.8]  # x1..x5, then y1..y5
    assert values.shape == (1, 10)
    assert values[0].tolist() == pytest.approx(expected)


def test_landmarks_round_trip():
    box = [10, 20, 29, 39]
    np.testing.assert_allclose(denormalize_landmarks(normalize_landmarks(POINTS, box), box), POINTS)
    # The original O-Net decoding w * p + x1 - 1 on a hand example: 20 * 0.5 + 10 - 1 = 19.
    back = denormalize_landmarks(np.full(10, 0.5), box)
    assert back.shape == (1, 5, 2)
    assert back[0, 0].tolist() == [19, 29]


def test_square_on_a_10x20_box():
    # rerec: side = max(x2 - x1, y2 - y1) = 19, centred: x1 = 0 + 4.5 - 9.5 = -5.
    assert square([0, 0, 9, 19]).tolist() == [[-5, 0, 14, 19]]
    assert square([0, 0, 19, 9]).tolist() == [[0, -5, 19, 14]]
    b = np.array([[3.0, 4.0, 13.0, 14.0]])
    np.testing.assert_array_equal(square(b), b)  # already square: unchanged
    assert b.tolist() == [[3, 4, 13, 14]]  # input not modified


def test_nms_union_three_boxes():
    boxes = [[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29]]
    # IoU(0, 1) = 81 / 119 = 0.68: suppressed at 0.5, kept at 0.7.
    assert nms(boxes, [0.9, 0.8, 0.7], 0.5).tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], 0.7).tolist() == [0, 1, 2]
    # Best score first, whatever the input order.
    assert nms(boxes, [0.7, 0.8, 0.9], 0.5).tolist() == [2, 1]


def test_nms_min_mode_suppresses_contained_boxes():
    boxes = [[0, 0, 9, 9], [2, 2, 5, 5], [20, 20, 29, 29]]  # box 1 inside box 0: IoU 0.16, min-ratio 1
    assert nms(boxes, [0.9, 0.8, 0.7], 0.5, "union").tolist() == [0, 1, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], 0.5, "min").tolist() == [0, 2]
    # A contained box with the higher score suppresses its container in min mode.
    assert nms(boxes, [0.8, 0.9, 0.7], 0.5, "min").tolist() == [1, 2]


def test_nms_ties_and_edge_cases():
    same = [[0, 0, 9, 9], [0, 0, 9, 9]]
    assert nms(same, [0.5, 0.5], 0.5).tolist() == [0]  # equal scores: lower index first
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []
    with pytest.raises(ValueError):
        nms(same, [0.5, 0.5], 0.5, "max")


def test_crop_with_padding_at_a_corner():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = crop_with_padding(image, [-2, -1, 1, 2])  # 4 x 4 box over the top-left corner
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert (out[0] == 0).all() and (out[:, :2] == 0).all()  # row y = -1, columns x = -2, -1
    np.testing.assert_array_equal(out[1:, 2:], image[0:3, 0:2])


def test_crop_with_padding_inside_outside_and_rounding():
    image = np.arange(6 * 6, dtype=np.uint8).reshape(6, 6)
    np.testing.assert_array_equal(crop_with_padding(image, [1, 2, 3, 4]), image[2:5, 1:4])
    np.testing.assert_array_equal(crop_with_padding(image, [0.4, 0.6, 2.4, 2.6]), image[1:4, 0:3])  # rounded
    far = crop_with_padding(image, [10, 10, 12, 11])
    assert far.shape == (2, 3) and (far == 0).all()
    bottom_right = crop_with_padding(image, [4, 4, 7, 7])
    np.testing.assert_array_equal(bottom_right[:2, :2], image[4:, 4:])
    assert (bottom_right[2:] == 0).all() and (bottom_right[:, 2:] == 0).all()
