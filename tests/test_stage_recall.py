"""Per-stage recall (evaluation.stage_recall): the matching arithmetic, the counting, the stage."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.geometry import xywh_to_xyxy
from detector import Detections
from evaluation import stage_recall
from evaluation.stage_recall import RecallCounts, StageRecallConfig, count_image, format_table, recalled_faces
from wider_gt import GT, write_ground_truth
from child_env import REPO, child_env

FACE = np.array([[0.0, 0.0, 10.0, 10.0]])  # x y w h: official [0, 0, 10, 10], 11 x 11 with the +1 widths


def test_a_box_recalls_a_face_at_official_iou_one_half():
    # Box rows 0..3.5 (inclusive) are submitted with h = 4.5: official [0, 0, 10, 4.5], 11 x 5.5, IoU
    # 60.5 / 121 = 0.5 exactly, a hit. Inclusive-box IoU would say 10 * 4.5 / 100 = 0.45, a miss.
    assert recalled_faces(FACE, [[0, 0, 9, 3.5]]).tolist() == [True]
    # Rows 0..3: 11 x 5 = 55 / 121 = 0.45.
    assert recalled_faces(FACE, [[0, 0, 9, 3]]).tolist() == [False]
    # The face's own box as the detector writes it (x2 = x + w - 1): IoU 1.
    assert recalled_faces(FACE, xywh_to_xyxy(FACE)).tolist() == [True]


def test_each_face_needs_its_own_overlap_and_empty_inputs_recall_nothing():
    faces = np.array([[0, 0, 10, 10], [100, 100, 20, 20], [300, 0, 8, 8]], dtype=float)
    boxes = xywh_to_xyxy(faces[[1]])  # one box on the second face only
    assert recalled_faces(faces, boxes).tolist() == [False, True, False]
    assert recalled_faces(faces, np.zeros((0, 4))).tolist() == [False, False, False]
    assert recalled_faces(np.zeros((0, 4)), boxes).shape == (0,)


def test_counts_per_setting_and_per_height_bin():
    # Heights 25, 40, 200, 10: bins 20-32, 32-64, 128+ and none (below 20).
    heights = np.array([25.0, 40.0, 200.0, 10.0])
    hits = np.array([True, False, True, True])
    keep = {"easy": np.array([2]), "medium": np.array([1, 2]), "hard": np.array([0, 1, 2, 3])}
    counts = RecallCounts()
    count_image(counts, hits, keep, heights)
    count_image(counts, hits, keep, heights)  # a second image adds up
    assert counts.faces == {"easy": 2, "medium": 4, "hard": 8, "20-32": 2, "32-64": 2, "64-128": 0, "128+": 2}
    assert counts.recall() == {"easy": 1.0, "medium": 0.5, "hard": 0.75, "20-32": 1.0, "32-64": 0.0,
                               "64-128": None, "128+": 1.0}


class _FakeDetector:
    """P-Net finds every face of an image, R-Net only those wider than 35 px. Images are told
    apart by their widths (one per image), which map to their faces."""

    stages = ("pnet", "rnet")

    def __init__(self, faces_by_width):
        self.faces_by_width = faces_by_width

    def detect_stages(self, image, stages):
        assert tuple(stages) == self.stages
        faces = self.faces_by_width[image.shape[1]]
        boxes = xywh_to_xyxy(faces) if len(faces) else np.zeros((0, 4))
        wide = boxes[faces[:, 2] > 35] if len(faces) else boxes
        return {name: Detections(b, np.ones(len(b)), np.full((len(b), 5, 2), np.nan))
                for name, b in (("pnet", boxes), ("rnet", wide))}


@pytest.fixture
def val_set(tmp_path):
    gt = write_ground_truth(tmp_path / "gt")
    images, faces_by_width = tmp_path / "images", {}
    for k, (event, imgs) in enumerate(GT):
        (images / event).mkdir(parents=True)
        for j, (name, faces, _) in enumerate(imgs):
            width = 320 + 10 * (2 * k + j)
            cv2.imwrite(str(images / event / f"{name}.jpg"), np.full((300, width, 3), 128, np.uint8))
            faces_by_width[width] = faces
    return gt, images, faces_by_width


def test_stage_writes_each_stages_recall(val_set, tmp_path, monkeypatch, capsys):
    gt, images, faces_by_width = val_set
    monkeypatch.setattr(stage_recall, "load_detector", lambda *a, **k: _FakeDetector(faces_by_width))
    monkeypatch.setattr(stage_recall, "weights_digests", lambda weights: {"pnet.pt": "x"})
    cfg = StageRecallConfig(images=str(images), gt=str(gt), weights="w", out=str(tmp_path / "out"), progress=False)
    results = stage_recall.main(cfg)
    # Counted faces (wider_gt.GT): easy and medium a0 (40 x 50) and a1 (30 x 30); hard
    # those and b (20 x 25). Heights 50, 30, 25. R-Net keeps only a0 (wider than 35 px).
    assert results["faces"] == {"easy": 2, "medium": 2, "hard": 3, "20-32": 2, "32-64": 1, "64-128": 0, "128+": 0}
    assert results["recall"]["pnet"] == {"easy": 1.0, "medium": 1.0, "hard": 1.0, "20-32": 1.0, "32-64": 1.0,
                                         "64-128": None, "128+": None}
    assert results["recall"]["rnet"] == {"easy": 0.5, "medium": 0.5, "hard": 1 / 3, "20-32": 0.0, "32-64": 1.0,
                                         "64-128": None, "128+": None}
    assert results["images_evaluated"] == 3
    assert json.loads((tmp_path / "out" / "results.json").read_text())["recall"] == results["recall"]
    printed = capsys.readouterr().out
    assert format_table(results) in printed
    assert printed.splitlines()[3].split() == ["rnet", "0.500", "0.500", "0.333", "0.000", "1.000", "-", "-"]


def test_real_nets_run_through_the_stage(val_set, tmp_path):
    import torch

    from core.nets import build_net

    gt, images, _ = val_set
    torch.manual_seed(0)
    weights = tmp_path / "w"
    weights.mkdir()
    for net in ("pnet", "rnet"):
        torch.save(build_net(net).state_dict(), weights / f"{net}.pt")
    results = stage_recall.main(StageRecallConfig(images=str(images), gt=str(gt), weights=str(weights),
                                                  out=str(tmp_path / "out"), progress=False))
    assert list(results["recall"]) == ["pnet", "rnet"] and results["images_evaluated"] == 3
    assert set(results["weights_sha256"]) == {"pnet.pt", "rnet.pt"}


def test_cli_bad_input_prints_one_line_and_exits_2(val_set, tmp_path):
    gt, images, _ = val_set
    base = [sys.executable, "-m", "evaluation.stage_recall", "--out", str(tmp_path / "out")]
    for args, says in ((["--images", str(images), "--gt", str(tmp_path / "nowhere"), "--weights", "shipped"],
                        "wider_face_val.mat"),
                       (["--images", str(tmp_path), "--gt", str(gt), "--weights", "shipped"],
                        "none of the ground-truth images"),
                       (["--images", str(images), "--gt", str(gt), "--weights", str(tmp_path / "no-weights")],
                        "no-weights")):
        proc = subprocess.run(base + args, cwd=REPO, capture_output=True, text=True, timeout=120, env=child_env())
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("python -m evaluation.stage_recall: error: ") and says in lines[0], \
            proc.stderr
    assert not (tmp_path / "out").exists()
