"""The embedding losses: FaceNet's triplet loss with online semi-hard negatives, and the margin
softmaxes (ArcFace, CosFace) that current face recognition trains with.

Each is one module, made by ``build_loss(cfg, classes)``: ``loss(embeddings, labels)`` (the net's
features before their normalisation) returns the loss and its step sums, and ``loss.columns(sums)``
/ ``loss.postfix(sums)`` turn an epoch's sums into its own log columns and progress figures
(``ShareLoss``: one column, a share of two sums). A new
loss is one such class and its line in ``LOSS_CLASSES``.

Distances are squared Euclidean distances of unit vectors (``2 - 2 cos``), as in FaceNet.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MARGINS = {"triplet": 0.2, "arcface": 0.5, "cosface": 0.35}
# The log columns some loss fills; the others' are NaN in its rows (log.csv has one header).
LOSS_COLUMNS = ("train_acc", "train_active")


class TripletTerms(NamedTuple):
    loss: torch.Tensor
    """Mean hinge over every (anchor, positive) pair of the batch."""
    active: torch.Tensor
    """How many of those pairs have a positive hinge."""
    pairs: torch.Tensor
    """How many (anchor, positive) pairs there are."""


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(B, B) squared distances, exact zeros on the diagonal and never below 0."""
    sq = (x * x).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    return d * (1 - torch.eye(len(x), dtype=d.dtype, device=d.device))


def semihard_negatives(dist: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For every (anchor a, positive p) pair, the distance d(a, n) of FaceNet's semi-hard negative:
    the closest negative farther from a than p is (d(a, p) < d(a, n)); where there is none, the
    farthest negative. Returns (B, B) (meaningful where a and p share a label)."""
    same = labels[:, None] == labels[None, :]
    neg_d = dist.masked_fill(same, math.inf)  # d(a, n) over negatives only, (B, n)
    pos_d = dist[:, :, None]  # d(a, p) as (B, p, 1)
    farther = neg_d[:, None, :] > pos_d  # (a, p, n)
    closest_farther = neg_d[:, None, :].expand_as(farther).masked_fill(~farther, math.inf).amin(2)
    farthest = dist.masked_fill(same, -math.inf).amax(1)  # (a,)
    return torch.where(torch.isinf(closest_farther), farthest[:, None].expand_as(closest_farther), closest_farther)


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> TripletTerms:
    """``mean over (a, p) of max(0, d(a, p) - d(a, n) + margin)`` with n the semi-hard negative."""
    dist = pairwise_sq_distances(embeddings.float())
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    if not positive.any() or bool((labels[:, None] == labels[None, :]).all()):
        zero = embeddings.sum() * 0.0  # no triplet in the batch: a 0 that backward still reaches
        return TripletTerms(zero, zero.detach(), zero.detach())
    hinge = (dist - semihard_negatives(dist, labels) + margin).clamp_min(0.0)[positive]
    return TripletTerms(hinge.mean(), (hinge > 0).sum().float(), torch.tensor(float(hinge.numel())))


class ShareLoss(nn.Module):
    """An embedder loss whose one log column, ``column``, is the epoch's share ``hits / count`` of
    its two step sums ``sums`` (``short`` on the progress bar)."""

    sums: tuple[str, str]
    column: str
    short: str

    def columns(self, s: dict) -> dict:
        hits, count = self.sums
        return {self.column: s[hits] / max(1.0, s[count])}

    def postfix(self, s: dict) -> dict:
        return {self.short: f"{self.columns(s)[self.column]:.3f}"}


class TripletLoss(ShareLoss):
    """``triplet_loss`` of the unit vectors; its column is the share of (anchor, positive) pairs
    whose hinge is positive (``train_active``)."""

    sums, column, short = ("active", "pairs"), "train_active", "active"

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    @classmethod
    def from_config(cls, cfg, classes: int) -> "TripletLoss":
        return cls(cfg.loss_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = triplet_loss(F.normalize(embeddings.float(), dim=1), labels, self.margin)
        return terms.loss, {"active": terms.active, "pairs": terms.pairs}


class MarginSoftmax(ShareLoss):
    """A cosine classifier over the training identities with an additive margin on the true class:
    ArcFace (Deng et al. 2019) ``s cos(theta + m)``, CosFace (Wang et al. 2018) ``s (cos theta - m)``.
    The class centres are trained with the net and dropped after training; its column is the
    accuracy of the plain cosines (``train_acc``)."""

    sums, column, short = ("correct", "n"), "train_acc", "acc"

    def __init__(self, dim: int, classes: int, kind: str = "arcface", margin: float = 0.5, scale: float = 32.0):
        super().__init__()
        if kind not in ("arcface", "cosface"):
            raise ValueError(f"a margin softmax is arcface or cosface, not {kind!r}")
        self.kind, self.margin, self.scale = kind, margin, scale
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.normal_(self.weight, std=0.01)

    def logits(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(margin logits for the loss, plain scaled cosines for accuracy)."""
        cos = F.linear(F.normalize(features.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        target = cos.gather(1, labels[:, None])
        if self.kind == "cosface":
            shifted = target - self.margin
        else:
            # cos(theta + m) while theta + m < pi; beyond, insightface's linear continuation keeps it falling.
            sin = (1.0 - target * target).clamp_min(1e-12).sqrt()
            shifted = torch.where(target > math.cos(math.pi - self.margin),
                                  target * math.cos(self.margin) - sin * math.sin(self.margin),
                                  target - math.sin(math.pi - self.margin) * self.margin)
        return self.scale * cos.scatter(1, labels[:, None], shifted), self.scale * cos

    @classmethod
    def from_config(cls, cfg, classes: int) -> "MarginSoftmax":
        return cls(cfg.dim, classes, cfg.loss, cfg.loss_margin, cfg.scale)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(cross-entropy with the margin, {correct predictions without it, samples})."""
        margin_logits, plain = self.logits(features, labels)
        return F.cross_entropy(margin_logits, labels), {"correct": (plain.argmax(1) == labels).sum(), "n": len(labels)}


LOSS_CLASSES = {"triplet": TripletLoss, "arcface": MarginSoftmax, "cosface": MarginSoftmax}
LOSSES = tuple(LOSS_CLASSES)


def build_loss(cfg, classes: int) -> nn.Module:
    """The loss ``cfg.loss`` names (an ``EmbedConfig``: its margin, scale and embedding size), over
    ``classes`` training identities (a margin softmax's centres, drawn from torch's generator)."""
    return LOSS_CLASSES[cfg.loss].from_config(cfg, classes)
