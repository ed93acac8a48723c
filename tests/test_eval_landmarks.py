"""Landmark evaluation: matching, NME, CED and failure figures by hand; the stage end to end."""

import json

import cv2
import numpy as np
import pytest
import skimage.data

from evaluation.landmarks import (
    LandmarkEvalConfig,
    ced_curve,
    main,
    match_faces,
    normalized_mean_error,
    summarize,
)


def test_match_faces_is_greedy_by_iou_one_to_one():
    gt = [[0, 0, 9, 9], [20, 0, 29, 9], [100, 100, 109, 109]]
    det = [[0, 0, 9, 9], [1, 0, 10, 9], [20, 0, 29, 9]]
    # gt 0 takes det 0 (IoU 1); det 1 overlaps gt 0 only (90/110) and is left; gt 2 has none
    np.testing.assert_array_equal(match_faces(gt, det, 0.4), [0, 2, -1])
    # a detection is used once: two faces on the same detection, the better one wins
    np.testing.assert_array_equal(match_faces([[1, 0, 10, 9], [0, 0, 9, 9]], [[0, 0, 9, 9]], 0.4), [-1, 0])
    # below the threshold nothing matches (IoU 90/110 = 0.818)
    np.testing.assert_array_equal(match_faces([[1, 0, 10, 9]], [[0, 0, 9, 9]], 0.82), [-1])
    np.testing.assert_array_equal(match_faces(np.zeros((0, 4)), det, 0.4), np.zeros(0))
    np.testing.assert_array_equal(match_faces(gt, np.zeros((0, 4)), 0.4), [-1, -1, -1])


def test_nme_divides_the_mean_point_error_by_the_eye_distance():
    gt = np.array([[0, 0], [10, 0], [5, 5], [2, 10], [8, 10]], dtype=float)
    assert normalized_mean_error(gt + [1, 0], gt)[0] == pytest.approx(0.1)
    # one point off by (3, 4) = 5 px, four exact: mean 1 px over an eye distance of 10
    pred = gt.copy()
    pred[2] += [3, 4]
    assert normalized_mean_error(pred, gt)[0] == pytest.approx(0.1)
    wide = gt * 2
    assert normalized_mean_error(wide + [1, 0], wide)[0] == pytest.approx(0.05)


def test_ced_counts_missed_faces_in_the_total():
    xs, ys = ced_curve([0.04, 0.09, 0.19], total=4, max_error=0.3, points=7)  # x = 0, .05, ..., .3
    np.testing.assert_allclose(xs, [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    np.testing.assert_allclose(ys, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75])


def test_summary_figures():
    s = summarize([0.05, 0.1, 0.2], faces=4, failure_nme=0.1)
    assert s["detected"] == 3 and s["detection_rate"] == 0.75
    assert s["mean_nme"] == pytest.approx(0.35 / 3)
    assert s["median_nme"] == pytest.approx(0.1)
    assert s["failure_rate"] == pytest.approx(1 / 3)  # only 0.2 is over 0.1
    assert s["failure_rate_with_missed"] == pytest.approx(2 / 4)
    empty = summarize([], faces=2, failure_nme=0.1)
    assert empty["mean_nme"] is None and empty["failure_rate_with_missed"] == 1.0


# facenet-pytorch's astronaut face (../shared/data/README.md), 1-based: ours + 1
ASTRONAUT_BOX = np.array([181.05, 62.16, 267.75, 172.05]) - 1
ASTRONAUT_POINTS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]]) - 1


def _facepoint_line(path, box, points):
    x1, y1, x2, y2 = box
    return " ".join([path] + [f"{v:.2f}" for v in (x1, x2, y1, y2, *points.reshape(-1))])


def test_eval_landmarks_end_to_end_with_shipped_weights(tmp_path):
    data = tmp_path / "data"  # the list's images are an input: the output folder lies apart from them
    data.mkdir()
    cv2.imwrite(str(data / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    lines = [_facepoint_line("astronaut.png", ASTRONAUT_BOX, ASTRONAUT_POINTS),
             _facepoint_line("missing.png", ASTRONAUT_BOX, ASTRONAUT_POINTS)]
    (data / "list.txt").write_text("\n".join(lines) + "\n")
    cfg = LandmarkEvalConfig(landmarks=str(data / "list.txt"), weights="shipped", out=str(tmp_path / "out"),
                             part="all", progress=False)
    results = main(cfg)
    assert results["faces"] == 2 and results["detected"] == 1
    assert results["mean_nme"] < 0.15  # about 2.4 px over a 41.8 px eye distance
    assert results["failure_rate_with_missed"] >= 0.5
    assert len(results["unreadable_images"]) == 1 and "missing.png" in results["unreadable_images"][0]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["detected"] == 1
    rows = (tmp_path / "out" / "faces.csv").read_text().splitlines()
    assert rows[0] == "image,detected,iou,score,nme" and len(rows) == 3
    assert (tmp_path / "out" / "ced.png").read_bytes()[:4] == b"\x89PNG"
