"""The maths of face verification: pairs of embeddings, one distance each, "same" below a threshold.

Pure numpy, the arithmetic of facenet's ``lfw.evaluate`` (``calculate_roc``, ``calculate_val``):

* ``kfold_accuracy``: for each fold, the threshold with the best accuracy on the other folds'
  pairs (the first of equals, on a grid), and the accuracy it gives on the fold's own pairs;
* ``kfold_val_far``: VAL (true accept rate) at a target FAR (false accept rate), the threshold
  read off the other folds by linear interpolation of their FAR over the grid (0 where their FAR
  never reaches the target, as facenet does);
* ``roc``, ``auc``, ``eer`` over all pairs.

A pair is accepted ("same") when its distance is strictly below the threshold. A pair whose face
was not found has no distance: ``worst_case`` makes it an error at every threshold (a matched
pair never accepted, a mismatched one always), so failures count against the figures rather than
dropping out of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# facenet's grids for squared distances of unit vectors (0 to 4).
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared Euclidean distance (facenet's ``distance_metric=0``)."""
    return np.square(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).sum(axis=1)


def worst_case(dist, same, failed) -> np.ndarray:
    """Distances with each failed pair set to be wrong at every threshold: +inf for a matched pair,
    -inf for a mismatched one."""
    dist, same, failed = np.asarray(dist, dtype=np.float64), np.asarray(same, bool), np.asarray(failed, bool)
    return np.where(failed, np.where(same, np.inf, -np.inf), dist)


def rates(dist, same, threshold: float) -> tuple[float, float, float]:
    """(true accept rate, false accept rate, accuracy) at one threshold."""
    dist, same = np.asarray(dist, dtype=np.float64), np.asarray(same, bool)
    accept = dist < threshold
    tp, fp = np.sum(accept & same), np.sum(accept & ~same)
    n_same, n_diff = same.sum(), (~same).sum()
    tar = float(tp / n_same) if n_same else 0.0
    far = float(fp / n_diff) if n_diff else 0.0
    return tar, far, float(np.mean(accept == same)) if len(same) else float("nan")


def best_threshold(dist, same, thresholds=ACCURACY_THRESHOLDS) -> float:
    """The grid threshold with the highest accuracy (the first of equals)."""
    accuracies = [rates(dist, same, t)[2] for t in thresholds]
    return float(thresholds[int(np.argmax(accuracies))])


@dataclass(frozen=True)
class FoldAccuracy:
    accuracy: np.ndarray
    """Per fold: the accuracy on its pairs at the threshold chosen on the other folds."""
    threshold: np.ndarray
    """Per fold: that threshold."""


def kfold_accuracy(dist, same, folds, thresholds=ACCURACY_THRESHOLDS) -> FoldAccuracy:
    """Leave-one-fold-out accuracy: the threshold chosen on the other folds, scored on this one."""
    dist, same, folds = np.asarray(dist, dtype=np.float64), np.asarray(same, bool), np.asarray(folds)
    acc, thr = [], []
    for fold in np.unique(folds):
        test = folds == fold
        t = best_threshold(dist[~test], same[~test], thresholds)
        acc.append(rates(dist[test], same[test], t)[2])
        thr.append(t)
    return FoldAccuracy(np.array(acc), np.array(thr))


def val_threshold(dist, same, far_target: float, thresholds=VAL_THRESHOLDS) -> float:
    """The threshold at which the FAR on these pairs is ``far_target``, interpolated linearly between
    grid points; 0 when the FAR never reaches it (facenet's ``calculate_val``)."""
    fars = np.array([rates(dist, same, t)[1] for t in thresholds])
    if fars.max() < far_target:
        return 0.0
    # FAR rises with the threshold; interpolate on the strictly rising part (first grid point of each FAR).
    values, first = np.unique(fars, return_index=True)
    return float(np.interp(far_target, values, thresholds[first]))


@dataclass(frozen=True)
class FoldVal:
    val: np.ndarray
    """Per fold: the true accept rate at the threshold chosen on the other folds."""
    far: np.ndarray
    """Per fold: the false accept rate there."""
    threshold: np.ndarray


def kfold_val_far(dist, same, folds, far_target: float = 1e-3, thresholds=VAL_THRESHOLDS) -> FoldVal:
    dist, same, folds = np.asarray(dist, dtype=np.float64), np.asarray(same, bool), np.asarray(folds)
    val, far, thr = [], [], []
    for fold in np.unique(folds):
        test = folds == fold
        t = val_threshold(dist[~test], same[~test], far_target, thresholds)
        tar, fa, _ = rates(dist[test], same[test], t)
        val.append(tar)
        far.append(fa)
        thr.append(t)
    return FoldVal(np.array(val), np.array(far), np.array(thr))


def roc(dist, same, thresholds=ACCURACY_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rates, true accept rates) over the threshold grid, over all pairs."""
    pairs = [rates(dist, same, t)[:2] for t in thresholds]
    tar, far = (np.array(v) for v in zip(*pairs))
    return far, tar


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule, the curve closed at (0, 0) and (1, 1)."""
    order = np.lexsort((tar, far))
    x = np.concatenate([[0.0], np.asarray(far)[order], [1.0]])
    y = np.concatenate([[0.0], np.asarray(tar)[order], [1.0]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def eer(far: np.ndarray, tar: np.ndarray) -> float:
    """Equal error rate: the FAR where FAR = 1 - TAR, on the piecewise-linear ROC."""
    order = np.lexsort((tar, far))
    x = np.concatenate([[0.0], np.asarray(far)[order], [1.0]])
    y = np.concatenate([[0.0], np.asarray(tar)[order], [1.0]])
    gap = 1.0 - x - y  # falls from 1 to -1 along the curve; its zero is the EER
    k = int(np.flatnonzero(gap <= 0)[0])
    if gap[k] == 0 or k == 0:
        return float(x[k])
    w = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(x[k - 1] + w * (x[k] - x[k - 1]))
