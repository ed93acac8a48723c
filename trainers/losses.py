"""The MTCNN multi-task loss with per-sample masks and online hard example mining (pure functions).

Which sample carries which target is decided once, in ``lmdb_builders.schema``, and arrives in a
batch as ``label`` (1 face, 0 non-face, -1 not used for classification), ``has_box`` and
``has_landmarks``; absent targets are NaN in ``box`` / ``landmarks``. Here:

* classification: cross-entropy on the raw two-class logits of the samples with label >= 0
  (negatives and positives); with OHEM only the ``ceil(ohem_keep * n)`` largest of those ``n``
  losses are averaged, so only they get a gradient;
* box regression: MSE over the 4 offsets of the samples with ``has_box`` (positives, part faces);
* landmark regression: MSE over the 10 values of the samples with ``has_landmarks`` (or, given a
  ``Wing``, the Wing loss of Feng et al., CVPR 2018); 0 when the net has no landmark head.

Samples are selected by index before any arithmetic, so a NaN target never enters a sum (NaN * 0
is NaN, and its gradient too). Each term is a mean over the samples that carry it; a term with no
such sample is an exact 0 that is connected to nothing (its gradient reaches no parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from core.nets import NetOutput


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms in the total loss (the paper's alpha_det, alpha_box, alpha_landmark)."""

    det: float = 1.0
    box: float = 0.5
    landmark: float = 0.5


# The paper's figures: 1 / 0.5 / 0.5 for P-Net and R-Net, 1 / 0.5 / 1 for O-Net. They weigh Caffe's
# Euclidean loss (half the sum over the values), these terms are means over the 4 box and 10
# landmark values: the paper's balance is 1 / 1 / 2.5 and 1 / 1 / 5 here (the Makefile trains R-Net and O-Net so).
DEFAULT_LOSS_WEIGHTS = {
    "pnet": LossWeights(1.0, 0.5, 0.5),
    "rnet": LossWeights(1.0, 0.5, 0.5),
    "onet": LossWeights(1.0, 0.5, 1.0),
}

DEFAULT_OHEM_KEEP = 0.7


@dataclass(frozen=True)
class Wing:
    """The Wing loss's two widths, as fractions of the crop's side (landmark targets are normalised to it).

    Below ``width`` the loss is logarithmic, so small and medium errors keep a gradient that MSE's
    vanishes on; beyond it, linear, so a few mislabelled points do not dominate.
    """

    width: float = 0.15
    epsilon: float = 0.03

    def __post_init__(self):
        if not (self.width > 0 and self.epsilon > 0):
            raise ValueError(f"Wing width and epsilon must be > 0, got {self.width} and {self.epsilon}")


def wing_loss(error: torch.Tensor, wing: Wing) -> torch.Tensor:
    """Elementwise ``w ln(1 + |x| / eps)`` for ``|x| < w``, else ``|x| - C``, C making it continuous at w."""
    w, eps = wing.width, wing.epsilon
    a = error.abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


class LossTerms(NamedTuple):
    total: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    landmark: torch.Tensor
    kept: int
    """Classification samples that contributed to ``cls`` (after OHEM)."""


class SampleLosses(NamedTuple):
    """Per-sample losses of the samples that carry each target (1-D, possibly empty)."""

    cls: torch.Tensor  # cross-entropy, one per sample with label >= 0
    box: torch.Tensor  # mean squared error over the 4 offsets, one per sample with a box
    landmark: torch.Tensor | None  # over the 10 values, one per landmark sample; None without a head


def flatten_output(output: NetOutput) -> NetOutput:
    """P-Net's (N, C, 1, 1) maps for 12x12 input to (N, C); (N, C) outputs pass unchanged."""

    def flat(t):
        if t is None or t.dim() == 2:
            return t
        if t.dim() != 4 or t.shape[2:] != (1, 1):
            raise ValueError(f"expected (N, C) or (N, C, 1, 1) outputs, got {tuple(t.shape)}")
        return t.flatten(1)

    return NetOutput(flat(output.logits), flat(output.box), flat(output.landmarks))


def ohem_count(n: int, keep: float | None) -> int:
    """How many of ``n`` classification losses OHEM keeps: ``ceil(keep * n)``; all when keep is None."""
    if keep is None or n == 0:
        return n
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"ohem_keep must be in (0, 1] or None, got {keep}")
    return min(n, math.ceil(round(keep * n, 6)))  # round: 0.7 * 10 must not become 7.000000001


def _zero(like: torch.Tensor) -> torch.Tensor:
    """An exact, differentiable 0 that is connected to no parameter."""
    return torch.zeros((), dtype=torch.float32, device=like.device, requires_grad=True)


def sample_losses(output: NetOutput, batch: dict, wing: Wing | None = None) -> SampleLosses:
    """Per-sample loss values for the samples that carry each target, computed in float32; the
    landmark one is the mean squared error, or the mean Wing loss given ``wing``."""
    out = flatten_output(output)
    device = out.logits.device
    label = batch["label"].to(device, non_blocking=True)
    cls_idx = torch.nonzero(label >= 0).squeeze(1)
    cls = F.cross_entropy(out.logits[cls_idx].float(), label[cls_idx], reduction="none")

    box_idx = torch.nonzero(batch["has_box"].to(device, non_blocking=True)).squeeze(1)
    box_target = batch["box"].to(device, non_blocking=True)[box_idx]
    box = (out.box[box_idx].float() - box_target).pow(2).mean(1)

    landmark = None
    if out.landmarks is not None:
        lm_idx = torch.nonzero(batch["has_landmarks"].to(device, non_blocking=True)).squeeze(1)
        lm_target = batch["landmarks"].to(device, non_blocking=True)[lm_idx]
        error = out.landmarks[lm_idx].float() - lm_target
        landmark = (error.pow(2) if wing is None else wing_loss(error, wing)).mean(1)
    return SampleLosses(cls, box, landmark)


def multitask_loss(output: NetOutput, batch: dict, weights: LossWeights,
                   ohem_keep: float | None = DEFAULT_OHEM_KEEP, wing: Wing | None = None) -> LossTerms:
    """The weighted sum of the three masked terms, with OHEM on classification (see module doc)."""
    per = sample_losses(output, batch, wing)
    kept = ohem_count(len(per.cls), ohem_keep)
    if kept == 0:
        cls = _zero(per.cls)
    elif kept == len(per.cls):
        cls = per.cls.mean()
    else:
        cls = torch.topk(per.cls, kept, sorted=False).values.mean()
    box = per.box.mean() if len(per.box) else _zero(per.box)
    if per.landmark is not None and len(per.landmark):
        landmark = per.landmark.mean()
    else:
        landmark = _zero(per.box)
    total = weights.det * cls + weights.box * box + weights.landmark * landmark
    return LossTerms(total, cls, box, landmark, kept)
