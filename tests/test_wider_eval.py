"""The official WIDER FACE protocol on hand-built cases (synthetic .mat ground truth in tmp_path)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from annotations.wider_mat import MAT_HEADER
from evaluation.wider_eval import (
    SETTINGS,
    WiderEvalConfig,
    evaluate,
    load_ground_truth,
    main as wider_main,
    normalize_scores,
    parse_args,
    prediction_complete,
    prediction_path,
    read_prediction,
    voc_ap,
    write_predictions,
)
from core.geometry import xywh_to_xyxy
from detector import DetectorConfig
from wider_gt import FACES_A, FACES_B, GT, write_ground_truth
from child_env import REPO, child_env


@pytest.fixture
def gt_dir(tmp_path):
    return write_ground_truth(tmp_path / "gt")


def predict(pred_dir, dets: dict):
    """dets: image rel path -> list of (x y w h box, score); every GT image gets a file."""
    for event, imgs in GT:
        for name, _, _ in imgs:
            rel = f"{event}/{name}.jpg"
            rows = dets.get(rel, [])
            xyxy = xywh_to_xyxy([r[0] for r in rows]) if rows else np.zeros((0, 4))
            write_predictions(pred_dir, rel, xyxy, [r[1] for r in rows])
    return pred_dir


def aps(pred_dir, gt_dir):
    return {s: r[0] for s, r in evaluate(pred_dir, gt_dir).items()}


def test_ground_truth_reading(gt_dir):
    gt = load_ground_truth(gt_dir)
    assert [g.key for g in gt] == [("0--Parade", "0_a"), ("0--Parade", "0_c"), ("1--Handshaking", "1_b")]
    np.testing.assert_array_equal(gt[0].boxes, FACES_A)
    assert gt[0].keep["easy"].tolist() == [0, 1]  # 1-based in the file
    assert gt[1].boxes.shape == (0, 4) and gt[2].keep["easy"].tolist() == []


def test_written_ground_truth_carries_no_timestamp(tmp_path):
    # scipy stamps the creation time into the MAT header; two writes must still be byte-identical.
    first, second = write_ground_truth(tmp_path / "a"), write_ground_truth(tmp_path / "b")
    for name in ("wider_face_val.mat", "wider_easy_val.mat"):
        data = (first / name).read_bytes()
        assert data[:116] == MAT_HEADER and b"Created on" not in data
        assert data == (second / name).read_bytes()


@pytest.mark.slow
def test_real_ground_truth_reads(shared_data):
    folder = shared_data / "wider" / "eval_tools" / "ground_truth"
    if not (folder / "wider_face_val.mat").is_file():
        pytest.skip(f"WIDER evaluation ground truth not found in {folder}")
    gt = load_ground_truth(folder)
    assert len(gt) == 201
    assert sum(len(g.boxes) for g in gt) == 2761


def test_prediction_files_round_trip_with_inclusive_widths(tmp_path):
    path = write_predictions(tmp_path, "0--Parade/0_a.jpg", [[10, 10, 49, 59]], [0.75])
    assert path == prediction_path(tmp_path, "0--Parade", "0_a")
    assert path.read_text().splitlines() == ["0_a", "1", "10.00 10.00 40.00 50.00 0.75000000"]
    np.testing.assert_allclose(read_prediction(path), [[10, 10, 40, 50, 0.75]])
    assert prediction_complete(path)
    path.write_text("0_a\n2\n1 2 3 4 0.5\n")  # cut short: incomplete, redone on resume
    assert not prediction_complete(path)
    empty = write_predictions(tmp_path, "0--Parade/0_c.jpg", np.zeros((0, 4)), [])
    assert read_prediction(empty).shape == (0, 5)


def test_perfect_detections_give_ap_1(tmp_path, gt_dir):
    pred = predict(tmp_path / "p", {
        "0--Parade/0_a.jpg": [(FACES_A[0], 0.9), (FACES_A[1], 0.8)],
        "1--Handshaking/1_b.jpg": [(FACES_B[0], 0.85)],
    })
    assert aps(pred, gt_dir) == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0})


def test_no_detections_give_ap_0(tmp_path, gt_dir):
    assert aps(predict(tmp_path / "p", {}), gt_dir) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


def test_detection_on_an_ignored_face_counts_neither_way(tmp_path, gt_dir):
    base = {"0--Parade/0_a.jpg": [(FACES_A[0], 0.9), (FACES_A[1], 0.8)]}
    without = aps(predict(tmp_path / "without", base), gt_dir)
    # Face 2 of image a counts in no setting; its detection has the best score of all. As a false
    # positive it would give AP 2/3 (precision 1/2 at recall 1/2, 2/3 at recall 1); ignored: 1.
    with_ignored = {"0--Parade/0_a.jpg": [(FACES_A[2], 0.95)] + base["0--Parade/0_a.jpg"]}
    with_it = aps(predict(tmp_path / "with", with_ignored), gt_dir)
    assert with_it["easy"] == pytest.approx(without["easy"]) == pytest.approx(1.0)
    assert with_it == pytest.approx(without)
    # Image b's face counts in hard only: in easy its detection is ignored too.
    b_only = aps(predict(tmp_path / "b", {"1--Handshaking/1_b.jpg": [(FACES_B[0], 0.9)]}), gt_dir)
    assert b_only["easy"] == 0.0 and b_only["hard"] == pytest.approx(1 / 3)  # recall 1 of 3 at precision 1


def test_false_positive_above_the_true_ones_lowers_ap_by_a_third(tmp_path, gt_dir):
    far_away = np.array([300, 300, 20, 20], dtype=float)
    pred = predict(tmp_path / "p", {"0--Parade/0_a.jpg": [(far_away, 0.95), (FACES_A[0], 0.9), (FACES_A[1], 0.8)]})
    # Normalised scores 1, 2/3, 0. Thresholds above 2/3: 1 proposal, 0 recalled (precision 0);
    # down to 0: 2 proposals, 1 face (P 1/2, R 1/2); at 0: 3 proposals, 2 faces (P 2/3, R 1).
    # Envelope: 2/3 for every recall -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3 (vs 1 without the FP).
    assert aps(pred, gt_dir)["easy"] == pytest.approx(2 / 3)


def test_duplicate_detection_is_a_false_positive(tmp_path, gt_dir):
    pred = predict(tmp_path / "p", {"0--Parade/0_a.jpg": [(FACES_A[0], 0.9), (FACES_A[0] + 1, 0.85), (FACES_A[1], 0.8)]})
    # Normalised 1, 0.5, 0: P 1 at R 1/2, then P 2/3 at R 1 -> AP = 1/2 + 1/2 * 2/3.
    assert aps(pred, gt_dir)["easy"] == pytest.approx(0.5 + 1 / 3)


def test_iou_threshold_uses_the_official_plus_one_boxes(tmp_path, gt_dir):
    # A 40x50 face at (10, 10) and a detection shifted 14 px: official IoU on [x, x + w] with +1
    # widths is (27 * 51) / (2 * 41 * 51 - 27 * 51) = 27 / 55 < 0.5; shifted 13 px: 28 / 54 > 0.5.
    face = FACES_A[0]
    for shift, hit in ((14, False), (13, True)):
        pred = predict(tmp_path / str(shift), {"0--Parade/0_a.jpg": [(face + [shift, 0, 0, 0], 0.9)]})
        _, precision, recall = evaluate(pred, gt_dir)["easy"]
        assert bool(recall[-1] == 0.5) == hit


def test_normalize_scores_official_bounds():
    preds = [np.array([[0, 0, 1, 1, 0.8], [0, 0, 1, 1, 0.9]]), np.zeros((0, 5)), np.array([[0, 0, 1, 1, 0.7]])]
    out = normalize_scores(preds)
    np.testing.assert_allclose(out[0][:, 4], [0.5, 1.0])
    np.testing.assert_allclose(out[2][:, 4], [0.0])
    # The official min starts at 1: scores above 1 are normalised from 1, not from their minimum.
    np.testing.assert_allclose(normalize_scores([np.array([[0, 0, 1, 1, 2.0], [0, 0, 1, 1, 3.0]])])[0][:, 4], [0.5, 1])


def test_voc_ap_hand_computed():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert voc_ap(np.array([0.0, 0.5]), np.array([np.nan, 1.0])) == pytest.approx(0.5)


def test_missing_prediction_file_is_an_error_unless_images_are_named(tmp_path, gt_dir):
    pred = tmp_path / "p"
    write_predictions(pred, "0--Parade/0_a.jpg", xywh_to_xyxy(FACES_A[:2]), [0.9, 0.8])
    with pytest.raises(FileNotFoundError, match="2 of 3"):
        evaluate(pred, gt_dir)
    res = evaluate(pred, gt_dir, images=[("0--Parade", "0_a")])
    assert res["easy"][0] == pytest.approx(1.0) and res["hard"][0] == pytest.approx(1.0)


def test_stage_entry_resumes_and_prints_the_summary_last(tmp_path, gt_dir, capsys):
    import cv2
    import torch

    from core.nets import build_net

    torch.manual_seed(0)
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save(build_net("pnet").state_dict(), weights / "pnet.pt")
    images = tmp_path / "images"
    for event, imgs in GT[:1]:  # image b is absent: evaluated over the two present
        (images / event).mkdir(parents=True)
        for name, _, _ in imgs:
            cv2.imwrite(str(images / event / f"{name}.jpg"), np.full((64, 80, 3), 128, np.uint8))
    cfg = WiderEvalConfig(images=str(images), gt=str(gt_dir), pred=str(tmp_path / "pred"), weights=str(weights))
    summary = wider_main(cfg)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == " ".join(f"{s} {summary['ap'][s]:.3f}" for s in SETTINGS)
    assert summary["images_evaluated"] == 2 and summary["images_detected_this_run"] == 2
    assert (tmp_path / "pred" / "pr_curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "pred" / "results.json").read_text())["images_evaluated"] == 2
    again = wider_main(cfg)  # everything on disk: nothing detected again
    assert again["images_detected_this_run"] == 0 and again["ap"] == summary["ap"]
    with pytest.raises(ValueError, match="--overwrite"):  # other settings over the same predictions
        wider_main(replace(cfg, detector=DetectorConfig(min_face=30.0)))
    with pytest.raises(ValueError, match="--overwrite"):  # any setting that changes the detections counts
        wider_main(replace(cfg, detector=DetectorConfig(nms_thresholds=(0.7, 0.7, 0.5))))
    # A folder from before every detector setting was recorded (weights, backend, min_face and
    # thresholds only) was made with the defaults of the rest: its predictions are kept.
    settings_path = tmp_path / "pred" / "settings.json"
    settings = json.loads(settings_path.read_text())
    old = {k: settings[k] for k in ("weights", "backend", "min_face", "thresholds", "weights_sha256")}
    settings_path.write_text(json.dumps(old))
    assert wider_main(cfg)["images_detected_this_run"] == 0


def test_defaults_are_the_detectors_and_the_cli_offers_every_detector_setting():
    assert WiderEvalConfig(images="i", gt="g", pred="p", weights="w").detector == DetectorConfig()
    argv = ["--images", "i", "--gt", "g", "--pred", "p", "--weights", "shipped", "--min-face", "12",
            "--thresholds", "0.5", "0.6", "0.9", "--nms-thresholds", "0.5", "0.6", "0.7", "--onet-nms-mode", "union",
            "--device", "cuda:1", "--limit", "3", "--overwrite"]
    detector = DetectorConfig(min_face=12.0, thresholds=(0.5, 0.6, 0.9), nms_thresholds=(0.5, 0.6, 0.7),
                              onet_nms_mode="union", device="cuda:1")
    assert parse_args(argv) == WiderEvalConfig(images="i", gt="g", pred="p", weights="shipped", detector=detector,
                                               limit=3, overwrite=True)
    assert parse_args(argv[:8]) == WiderEvalConfig(images="i", gt="g", pred="p", weights="shipped")
    with pytest.raises(SystemExit):  # DetectorConfig refuses it: a usage error
        parse_args(argv[:8] + ["--thresholds", "0.5", "1.5", "0.7"])


def test_cli_bad_input_prints_one_line_and_exits_2(tmp_path, gt_dir):
    import subprocess
    import sys

    base = [sys.executable, "-m", "evaluation.wider_eval", "--pred", str(tmp_path / "pred"), "--weights", "shipped"]
    for args, says in ((["--images", str(tmp_path), "--gt", str(tmp_path / "nowhere")], "wider_face_val.mat"),
                       (["--images", str(tmp_path), "--gt", str(gt_dir)], "none of the ground-truth images")):
        proc = subprocess.run(base + args, cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=child_env())
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("python -m evaluation.wider_eval: error: ") and says in lines[0], \
            proc.stderr
