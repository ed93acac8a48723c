"""ROC maths by hand, and make roc's module end to end on the tiny fixture."""

import csv
import json

import numpy as np
import pytest
import torch

from detector import DetectorConfig
from evaluation.roc import RocConfig, auc, landmark_nme, main, parse_args, rates_at, roc_curve
from prepare.generate import main as generate, tiny_config
from core.nets import build_net
from child_env import REPO, child_env


def test_roc_curve_by_hand():
    fpr, tpr, thr = roc_curve([0.9, 0.8, 0.8, 0.3, 0.1], [1, 1, 0, 1, 0])
    # thresholds 0.9 | 0.8 (one face and one non-face tie) | 0.3 | 0.1
    assert thr[1:].tolist() == [0.9, 0.8, 0.3, 0.1]
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    assert auc(fpr, tpr) == pytest.approx(0.5 * (1 / 3 + 2 / 3) / 2 + 0.5 * 1 + 0 * 0)  # = 0.25 + 0.5


def test_perfect_and_inverted_scores():
    f, t, _ = roc_curve([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert auc(f, t) == 1.0
    f, t, _ = roc_curve([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])
    assert auc(f, t) == 0.0


def test_rates_at_threshold():
    assert rates_at([0.9, 0.6, 0.5, 0.7, 0.1], [1, 1, 1, 0, 0], 0.6) == (2 / 3, 0.5)


def test_landmark_nme_by_hand():
    target = np.array([[0.3, 0.7, 0.5, 0.35, 0.65, 0.4, 0.4, 0.6, 0.8, 0.8]])  # eyes 0.4 apart
    pred = target.copy()
    pred[0, 0] += 0.04  # left eye x off by 0.04 = 0.1 inter-ocular; mean over 5 points
    assert landmark_nme(pred, target) == pytest.approx(0.1 / 5)


def test_make_roc_end_to_end(tiny_wider, tmp_path):
    val = tmp_path / "val"
    generate(tiny_config(tiny_wider.val_txt, tiny_wider.val_images, tiny_wider.landmarks_txt, val,
                         net_sizes=(12, 24, 48), workers=1, landmark_holdout=0.5, landmark_part="holdout"))
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    for name in ("pnet", "rnet", "onet"):
        torch.save(build_net(name).state_dict(), weights / f"{name}.pt")
    summaries = main(RocConfig(val_data=str(val), weights=str(weights), out=str(tmp_path / "roc")))
    assert [s["stage"] for s in summaries] == ["pnet", "rnet", "onet"]
    for s in summaries:
        assert 0 <= s["auc"] <= 1 and s["faces"] > 0 and s["non_faces"] > 0
        assert s["landmark_nme"] is not None and s["landmark_nme"] > 0
    assert json.loads((tmp_path / "roc" / "summary.json").read_text()) == summaries
    rows = list(csv.DictReader((tmp_path / "roc" / "roc.csv").open()))
    assert {r["stage"] for r in rows} == {"pnet", "rnet", "onet"}
    assert (tmp_path / "roc" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    # The same weights named as the detector names them (original:PATH) give the same figures.
    again = main(RocConfig(val_data=str(val), weights=f"original:{weights}", out=str(tmp_path / "roc2")))
    assert again == summaries


def test_defaults_are_the_detectors_and_the_cli_keeps_its_flags():
    # The nested DetectorConfig, not copies of its fields.
    assert RocConfig(val_data="v", weights="w", out="o").detector == DetectorConfig()
    argv = ["--val-data", "v", "--weights", "w", "--out", "o"]
    assert parse_args(argv) == RocConfig(val_data="v", weights="w", out="o")
    assert parse_args(argv + ["--thresholds", "0.1", "0.2", "0.3", "--device", "cuda", "--batch-size", "64"]) == \
        RocConfig(val_data="v", weights="w", out="o",
                  detector=DetectorConfig(thresholds=(0.1, 0.2, 0.3), device="cuda", batch_size=64))
    with pytest.raises(SystemExit) as bad:  # a usage error, exit 2
        parse_args(argv + ["--thresholds", "0.1", "0.2", "1.3"])
    assert bad.value.code == 2


def test_cli_bad_input_prints_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "evaluation.roc", "--val-data", str(tmp_path / "nowhere"),
                           "--weights", "shipped", "--out", str(tmp_path / "roc")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("python -m evaluation.roc: error: ") and "nowhere" in proc.stderr
    assert not (tmp_path / "roc").exists()
