"""Crop sampling rules of the MTCNN paper, as pure functions of a random generator and boxes.

* negatives: random squares whose IoU with every annotated face is < ``neg_iou`` (0.3), both
  anywhere in the image and near each face (so negatives are not only background);
* positives (IoU >= 0.65) and part faces (0.4 <= IoU < 0.65): squares jittered around a face in
  position and size, labelled by their IoU with that face;
* the regression target of a positive/part crop is ``boxes.regression_targets(crop, face)``.

All boxes are inclusive ``[x1, y1, x2, y2]`` (see ``core.geometry``); crops are integer squares
inside the image. Functions return boxes only; cutting pixels is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry import box_sizes, iou, iou_matrix
from prepare.checks import require, require_fraction


@dataclass(frozen=True)
class SamplingConfig:
    negatives_per_image: int = 50
    """Random negatives anywhere in each image (the paper's ~50)."""
    negative_attempts_near_face: int = 5
    """Tries per face for a negative that overlaps the face a little (IoU < neg_iou)."""
    jitter_attempts_per_face: int = 20
    """Tries per face for a positive or part crop; each is kept if its IoU says so."""
    min_face: int = 20
    """Faces whose longer side is below this (pixels) give no positives or parts: too small to learn from."""
    neg_iou: float = 0.3
    """A crop whose IoU with every annotated face is below this is a negative."""
    part_iou: float = 0.4
    """A crop whose IoU with its face is at least this (and below pos_iou) is a part face."""
    pos_iou: float = 0.65
    """A crop whose IoU with its face is at least this is a positive."""
    max_negative_size_fraction: float = 0.5
    """Negative sides are drawn from [net_size, this * min(image width, height))."""

    def __post_init__(self):
        for name in ("negatives_per_image", "negative_attempts_near_face", "jitter_attempts_per_face"):
            require(getattr(self, name) >= 0, self, name, ">= 0")
        require(self.min_face >= 1, self, "min_face", ">= 1 (pixels)")
        for name in ("neg_iou", "part_iou", "pos_iou"):
            require_fraction(self, name)
        require(self.part_iou <= self.pos_iou, self, "part_iou", f"<= --pos-iou {self.pos_iou}")
        require(0 < self.max_negative_size_fraction <= 1, self, "max_negative_size_fraction", "in (0, 1]")


@dataclass(frozen=True)
class FaceCrops:
    """Crops cut for one image: boxes (N, 4) int64 and, for positives/parts, the matching face."""

    negatives: np.ndarray
    positives: np.ndarray
    positive_faces: np.ndarray
    parts: np.ndarray
    part_faces: np.ndarray


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.int64)


def squares(x1, y1, sizes) -> np.ndarray:
    """Integer square boxes with top-left (x1, y1) and side ``sizes``."""
    x1, y1, sizes = (np.asarray(v, dtype=np.int64) for v in (x1, y1, sizes))
    return np.stack([x1, y1, x1 + sizes - 1, y1 + sizes - 1], axis=-1).reshape(-1, 4)


def inside(boxes, width: int, height: int) -> np.ndarray:
    b = np.asarray(boxes).reshape(-1, 4)
    return (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= width - 1) & (b[:, 3] <= height - 1)


def max_iou(boxes, faces) -> np.ndarray:
    """Each box's largest IoU with any face (0 when there are no faces)."""
    if len(faces) == 0:
        return np.zeros(len(boxes))
    return iou_matrix(boxes, faces).max(axis=1)


def sample_background_negatives(rng, width, height, all_faces, n, net_size, cfg: SamplingConfig) -> np.ndarray:
    """Up to ``n`` random squares anywhere in the image with IoU < neg_iou against every face."""
    max_side = int(cfg.max_negative_size_fraction * min(width, height))
    if n <= 0 or max_side <= net_size:
        return _empty_boxes()
    kept = []
    # Draw in rounds of candidates; crowded images may not yield n, which is fine.
    for _ in range(5):
        m = 2 * n
        sizes = rng.integers(net_size, max_side, size=m)
        xs = (rng.random(m) * (width - sizes + 1)).astype(np.int64)
        ys = (rng.random(m) * (height - sizes + 1)).astype(np.int64)
        cand = squares(xs, ys, sizes)
        cand = cand[max_iou(cand, all_faces) < cfg.neg_iou]
        kept.append(cand)
        if sum(len(k) for k in kept) >= n:
            break
    return np.concatenate(kept)[:n]


def sample_near_face_negatives(rng, width, height, face, all_faces, net_size, cfg: SamplingConfig) -> np.ndarray:
    """Squares placed so they overlap ``face`` partly, kept if IoU < neg_iou with every face."""
    attempts = cfg.negative_attempts_near_face
    max_side = int(cfg.max_negative_size_fraction * min(width, height))
    if attempts <= 0 or max_side <= net_size:
        return _empty_boxes()
    fw, fh = (float(v[0]) for v in box_sizes(face))
    sizes = rng.integers(net_size, max_side, size=attempts)
    # Shifts from "ending just left of / above the face" to "starting inside it".
    dx = np.floor(-sizes + rng.random(attempts) * (sizes + fw)).astype(np.int64)
    dy = np.floor(-sizes + rng.random(attempts) * (sizes + fh)).astype(np.int64)
    cand = squares(int(face[0]) + dx, int(face[1]) + dy, sizes)
    cand = cand[inside(cand, width, height)]
    return cand[max_iou(cand, all_faces) < cfg.neg_iou]


def sample_jittered(rng, width, height, face, cfg: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Jittered squares around ``face``; returns (positives, parts) classified by IoU with it."""
    attempts = cfg.jitter_attempts_per_face
    fw, fh = (float(v[0]) for v in box_sizes(face))
    lo = int(np.floor(min(fw, fh) * 0.8))
    hi = int(np.ceil(1.25 * max(fw, fh)))
    sizes = rng.integers(lo, hi, size=attempts, endpoint=True)
    dx = rng.uniform(-0.2, 0.2, size=attempts) * fw
    dy = rng.uniform(-0.2, 0.2, size=attempts) * fh
    cx = face[0] + fw / 2 + dx
    cy = face[1] + fh / 2 + dy
    cand = squares(np.floor(cx - sizes / 2), np.floor(cy - sizes / 2), sizes)
    cand = cand[inside(cand, width, height)]
    overlap = iou(face, cand) if len(cand) else np.zeros(0)
    return cand[overlap >= cfg.pos_iou], cand[(overlap >= cfg.part_iou) & (overlap < cfg.pos_iou)]


def label_detections(rng, boxes, faces, all_faces, max_negatives: int, cfg: SamplingConfig) -> FaceCrops:
    """Hard-example mining: label a stage's detections (integer boxes) by IoU with the faces.

    A detection overlapping no annotated box (dropped ones included) by ``neg_iou`` or more is a
    negative (at most ``max_negatives``, drawn at random, kept in detection order); one whose best
    IoU with a kept face is >= ``pos_iou`` is a positive and between ``part_iou`` and ``pos_iou``
    a part face, each regressing towards that face. The rest are ambiguous and left out.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    negatives = boxes[max_iou(boxes, np.asarray(all_faces, dtype=np.float64).reshape(-1, 4)) < cfg.neg_iou]
    if len(negatives) > max_negatives:
        negatives = negatives[np.sort(rng.choice(len(negatives), size=max_negatives, replace=False))]
    if len(faces) == 0 or len(boxes) == 0:
        empty = np.zeros((0, 4))
        return FaceCrops(negatives, _empty_boxes(), empty, _empty_boxes(), empty)
    overlaps = iou_matrix(boxes, faces)
    best = overlaps.argmax(axis=1)
    best_iou = overlaps[np.arange(len(boxes)), best]
    pos = best_iou >= cfg.pos_iou
    part = (best_iou >= cfg.part_iou) & ~pos
    return FaceCrops(negatives, boxes[pos], faces[best[pos]], boxes[part], faces[best[part]])


def _large_enough(face, cfg: SamplingConfig) -> bool:
    """Whether a face gives positives and part faces: its longer side is at least ``min_face``."""
    fw, fh = box_sizes(face)
    return max(fw[0], fh[0]) >= cfg.min_face


def _jittered_with_faces(rng, width, height, face, cfg: SamplingConfig):
    """``sample_jittered``'s positives and parts of one face, each with the face it regresses to."""
    p, q = sample_jittered(rng, width, height, face, cfg)
    return p, np.repeat(face[None], len(p), axis=0), q, np.repeat(face[None], len(q), axis=0)


def with_jittered_faces(rng, width, height, crops: FaceCrops, faces, cfg: SamplingConfig) -> FaceCrops:
    """``crops`` (a stage's labelled detections) plus the jittered positives and part faces of every
    face at least ``min_face`` large, as P-Net's data has them; the negatives stay the mined ones.

    An earlier stage's detections hold few positives; these add the faces it missed or boxed
    badly, so that the next stage also learns to accept them.
    """
    groups = [(crops.positives, crops.positive_faces, crops.parts, crops.part_faces)]
    groups += [_jittered_with_faces(rng, width, height, face, cfg)
               for face in np.asarray(faces, dtype=np.float64).reshape(-1, 4) if _large_enough(face, cfg)]
    pos, pos_face, part, part_face = (np.concatenate(arrays) for arrays in zip(*groups))
    return FaceCrops(crops.negatives, pos.astype(np.int64), pos_face, part.astype(np.int64), part_face)


def sample_image_crops(rng, width, height, faces, all_faces, net_size, cfg: SamplingConfig) -> FaceCrops:
    """All crops of one image.

    ``faces`` are the kept faces (positives and parts come from those at least ``min_face``
    large); ``all_faces`` are every annotated box, dropped ones included, so that no negative
    contains a face that was merely excluded from training.
    """
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    all_faces = np.asarray(all_faces, dtype=np.float64).reshape(-1, 4)
    negatives = [sample_background_negatives(rng, width, height, all_faces, cfg.negatives_per_image, net_size, cfg)]
    pos, pos_face, part, part_face = [], [], [], []
    for face in faces:
        if not _large_enough(face, cfg):
            continue
        negatives.append(sample_near_face_negatives(rng, width, height, face, all_faces, net_size, cfg))
        p, p_face, q, q_face = _jittered_with_faces(rng, width, height, face, cfg)
        pos.append(p)
        pos_face.append(p_face)
        part.append(q)
        part_face.append(q_face)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, 4), dtype=dtype)

    return FaceCrops(
        negatives=cat(negatives, np.int64),
        positives=cat(pos, np.int64),
        positive_faces=cat(pos_face, np.float64),
        parts=cat(part, np.int64),
        part_faces=cat(part_face, np.float64),
    )
