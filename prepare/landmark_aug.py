"""Landmark training samples: crops around a face with its 5 points, augmented.

Each augmentation draws a square crop shifted and scaled around the face box (kept when its IoU
with the box is >= ``min_iou``), optionally rotates the image about the crop centre by a small
angle, and optionally mirrors it horizontally, swapping left and right points. Targets are the
points normalised to the crop (``core.geometry.normalize_landmarks``); crops whose points fall
outside are discarded. Pure functions of a random generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.geometry import box_sizes, iou, normalize_landmarks
from prepare.checks import require, require_fraction
from prepare.crops import resize_square
from prepare.sampling import squares

# Order of the 5 points: left eye, right eye, nose, left mouth corner, right mouth corner.
# A mirror image swaps left and right.
FLIP_ORDER = np.array([1, 0, 2, 4, 3])


def _flag(name: str) -> dict:
    # Command lines that offer these beside the face sampling options prefix them with --landmark-.
    return {"flag": f"--landmark-{name.replace('_', '-')}"}


@dataclass(frozen=True)
class LandmarkAugConfig:
    samples_per_face: int = field(default=10, metadata=_flag("samples_per_face"))
    """Augmented crop attempts per face (each kept only if it passes the IoU and inside checks)."""
    include_plain: bool = field(default=True, metadata=_flag("include_plain"))
    """Also emit the un-augmented square crop around the face."""
    max_shift: float = field(default=0.1, metadata=_flag("max_shift"))
    """Centre shift, as a fraction of the face width/height."""
    min_scale: float = field(default=0.9, metadata=_flag("min_scale"))
    """Smallest crop side relative to the face's longer side."""
    max_scale: float = field(default=1.15, metadata=_flag("max_scale"))
    """Largest crop side relative to the face's longer side."""
    flip_probability: float = field(default=0.5, metadata=_flag("flip_probability"))
    """Chance of mirroring a crop (left and right points swapped)."""
    rotate_probability: float = field(default=0.5, metadata=_flag("rotate_probability"))
    """Chance of rotating a crop about its centre."""
    max_rotation_deg: float = field(default=10.0, metadata=_flag("max_rotation_deg"))
    """Rotation angles are drawn from [-this, this] degrees."""
    min_iou: float = field(default=0.65, metadata=_flag("min_iou"))
    """A crop is kept only if its IoU with the face box is at least this."""

    def __post_init__(self):
        require(self.samples_per_face >= 0, self, "samples_per_face", ">= 0")
        require(self.max_shift >= 0, self, "max_shift", ">= 0")
        require(self.min_scale > 0, self, "min_scale", "> 0")
        require(self.max_scale >= self.min_scale, self, "max_scale", f">= --landmark-min-scale {self.min_scale}")
        require(self.max_rotation_deg >= 0, self, "max_rotation_deg", ">= 0")
        for name in ("flip_probability", "rotate_probability", "min_iou"):
            require_fraction(self, name)


def flip_landmarks(points, crop_box) -> np.ndarray:
    """Mirror (5, 2) points about the vertical centre line of the inclusive ``crop_box`` and swap
    left/right points, matching ``patch[:, ::-1]`` of that crop."""
    p = np.asarray(points, dtype=np.float64).reshape(5, 2).copy()
    p[:, 0] = crop_box[0] + crop_box[2] - p[:, 0]
    return p[FLIP_ORDER]


def rotation_about(center, angle_deg: float) -> np.ndarray:
    """2x3 affine matrix rotating by ``angle_deg`` (counter-clockwise on screen) about ``center``."""
    return cv2.getRotationMatrix2D((float(center[0]), float(center[1])), float(angle_deg), 1.0)


def apply_affine(matrix, points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(image: np.ndarray, crop_box, matrix) -> np.ndarray:
    """The inclusive ``crop_box`` of ``image`` transformed by ``matrix`` (zeros outside the image)."""
    x1, y1, x2, y2 = (int(v) for v in crop_box)
    m = np.array(matrix, dtype=np.float64)
    m[:, 2] -= (x1, y1)  # output pixel (0, 0) is the crop's top-left
    return cv2.warpAffine(image, m, (x2 - x1 + 1, y2 - y1 + 1), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def candidate_crops(rng, face_box, cfg: LandmarkAugConfig) -> np.ndarray:
    """Square crop boxes around the face: the plain one (if asked) then the shifted/scaled ones."""
    fw, fh = (float(v[0]) for v in box_sizes(face_box))
    cx, cy = face_box[0] + fw / 2, face_box[1] + fh / 2
    n = cfg.samples_per_face
    sides = np.round(max(fw, fh) * rng.uniform(cfg.min_scale, cfg.max_scale, size=n))
    cxs = cx + rng.uniform(-cfg.max_shift, cfg.max_shift, size=n) * fw
    cys = cy + rng.uniform(-cfg.max_shift, cfg.max_shift, size=n) * fh
    if cfg.include_plain:
        sides = np.concatenate([[round(max(fw, fh))], sides])
        cxs = np.concatenate([[cx], cxs])
        cys = np.concatenate([[cy], cys])
    sides = np.maximum(sides, 1)
    return squares(np.floor(cxs - sides / 2), np.floor(cys - sides / 2), sides)


def landmark_samples(rng, image: np.ndarray, face_box, points, net_size: int, cfg: LandmarkAugConfig):
    """Augmented (crop uint8 (S, S, 3), 10 normalised landmark values) pairs for one face."""
    face_box = np.asarray(face_box, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    crops = candidate_crops(rng, face_box, cfg)
    overlaps = iou(face_box, crops)
    out = []
    for i, crop_box in enumerate(crops):
        # Draw every random number of an attempt before any check, so that a rejected attempt
        # consumes the same draws as an accepted one.
        rotate = rng.random() < cfg.rotate_probability
        angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
        flip = rng.random() < cfg.flip_probability
        plain = cfg.include_plain and i == 0
        if overlaps[i] < cfg.min_iou:
            continue
        centre = ((crop_box[0] + crop_box[2]) / 2, (crop_box[1] + crop_box[3]) / 2)
        matrix = rotation_about(centre, angle if rotate and not plain else 0.0)
        patch = warp_crop(image, crop_box, matrix)
        pts = apply_affine(matrix, points)
        if flip and not plain:
            patch = patch[:, ::-1]
            pts = flip_landmarks(pts, crop_box)
        values = normalize_landmarks(pts, crop_box)[0]
        if values.min() < 0 or values.max() > 1:
            continue
        out.append((resize_square(patch, net_size), values.astype(np.float32)))
    return out
