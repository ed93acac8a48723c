"""The verification maths (core.verification) and the margin losses, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.verification import (auc, best_threshold, eer, kfold_accuracy, kfold_val_far, rates, roc, val_threshold,
                               worst_case)
from trainers.metric_losses import MarginSoftmax, semihard_negatives, pairwise_sq_distances, triplet_loss

DIST = np.array([0.1, 0.5, 0.3, 0.9])
SAME = np.array([True, True, False, False])
FOLDS = np.array([0, 1, 0, 1])
GRID = np.array([0.0, 0.2, 0.4, 0.6, 1.0])


def test_rates_accept_strictly_below_the_threshold():
    assert rates(DIST, SAME, 0.5) == (0.5, 0.5, 0.5)  # 0.5 itself is not accepted
    assert rates(DIST, SAME, 0.6) == (1.0, 0.5, 0.75)


def test_best_threshold_is_the_first_of_equal_accuracies():
    # accuracies on the grid: 0.5, 0.75, 0.5, 0.75, 0.5
    assert best_threshold(DIST, SAME, GRID) == 0.2


def test_kfold_accuracy_chooses_each_threshold_on_the_other_folds():
    scores = kfold_accuracy(DIST, SAME, FOLDS, GRID)
    # fold 0 is scored at fold 1's best threshold (0.6), fold 1 at fold 0's (0.2)
    assert scores.threshold.tolist() == [0.6, 0.2]
    assert scores.accuracy.tolist() == [0.5, 0.5]


def test_val_threshold_interpolates_the_far_and_is_zero_when_it_never_reaches_the_target():
    # mismatched distances 0.3 and 0.9: FAR on the grid 0, 0, 0.5, 0.5, 1 -> 0.25 lies halfway from 0 to 0.4
    assert val_threshold(DIST, SAME, 0.25, GRID) == pytest.approx(0.2)
    assert val_threshold(np.array([0.1, 5.0]), np.array([True, False]), 0.25, GRID) == 0.0


def test_kfold_val_far():
    d = np.array([0.1, 0.35, 0.15, 0.5, 0.05, 0.45, 0.3, 0.7])
    s = np.array([True, False, True, False, True, False, True, False])
    f = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = kfold_val_far(d, s, f, 0.5, GRID)
    # fold 0 from fold 1's mismatched 0.45, 0.7: FAR 0, 0, 0, 0.5, 1 -> 0.5 at 0.6; fold 0 at 0.6: VAL 1, FAR 1
    # fold 1 from fold 0's mismatched 0.35, 0.5: FAR 0, 0, 0.5, 1, 1 -> 0.5 at 0.4; fold 1 at 0.4: VAL 1, FAR 0
    assert out.threshold.tolist() == pytest.approx([0.6, 0.4])
    assert out.val.tolist() == [1.0, 1.0] and out.far.tolist() == [1.0, 0.0]


def test_auc_and_eer_of_a_three_point_curve():
    far, tar = np.array([0.0, 0.5, 1.0]), np.array([0.5, 1.0, 1.0])
    assert auc(far, tar) == pytest.approx(0.875)  # 0.5 * (0.5 + 1) / 2 + 0.5 * 1
    assert eer(far, tar) == pytest.approx(0.25)  # 1 - x = 0.5 + x on the segment from (0, 0.5) to (0.5, 1)
    assert auc(*roc(np.array([0.1, 0.2]), np.array([True, False]), GRID)) == 1.0


def test_failed_pairs_are_wrong_at_every_threshold():
    d = worst_case([0.1, 0.2, 0.3], [True, False, True], [True, True, False])
    assert d.tolist() == [math.inf, -math.inf, 0.3]
    for t in GRID:
        tar, far, _ = rates(d, np.array([True, False, True]), t)
        assert far == 1.0 and tar <= 0.5


# -- the losses ------------------------------------------------------------------------------------
X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_semihard_negative_is_the_closest_farther_one_else_the_farthest():
    dist = pairwise_sq_distances(X)
    assert dist.tolist() == [[0, 1, 4, 9], [1, 0, 5, 4], [4, 5, 0, 13], [9, 4, 13, 0]]
    neg = semihard_negatives(dist, LABELS)
    # (0, 1): negatives 4 and 9 are both farther than 1 -> 4; (1, 0): 5, 4 -> 4
    # (2, 3): none farther than 13 -> the farthest, 5; (3, 2): -> 9
    assert neg[0, 1] == 4 and neg[1, 0] == 4 and neg[2, 3] == 5 and neg[3, 2] == 9


def test_triplet_loss_value():
    terms = triplet_loss(X, LABELS, margin=0.2)
    # hinges: max(0, 1 - 4 + 0.2) twice, 13 - 5 + 0.2, 13 - 9 + 0.2 -> (8.2 + 4.2) / 4
    assert terms.loss.item() == pytest.approx(3.1)
    assert terms.active.item() == 2 and terms.pairs.item() == 4
    assert triplet_loss(X, LABELS, margin=3.5).loss.item() == pytest.approx((0.5 + 0.5 + 11.5 + 7.5) / 4)
    assert triplet_loss(X, torch.tensor([0, 1, 2, 3])).loss.item() == 0.0  # no matched pair


@pytest.mark.parametrize("kind, expected", [("arcface", 2 * math.cos(0.5)), ("cosface", 2 * (1 - 0.5))])
def test_margin_softmax_logits(kind, expected):
    head = MarginSoftmax(2, 2, kind, margin=0.5, scale=2.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))  # normalised: the two axes
    margin_logits, plain = head.logits(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert margin_logits[0].tolist() == pytest.approx([expected, 0.0], abs=1e-6)
    assert plain[0].tolist() == pytest.approx([2.0, 0.0])


def test_arcface_continues_linearly_past_pi_minus_the_margin():
    head = MarginSoftmax(2, 2, "arcface", margin=0.5, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    margin_logits, _ = head.logits(torch.tensor([[-1.0, 0.0]]), torch.tensor([0]))  # theta = pi
    assert margin_logits[0, 0].item() == pytest.approx(-1.0 - math.sin(0.5) * 0.5, abs=1e-6)
