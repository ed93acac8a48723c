"""Cutting sample images out of a photo: one function for random-crop generation and mining."""

from __future__ import annotations

import cv2
import numpy as np

from prepare.boxes import crop_with_padding


def resize_square(patch: np.ndarray, size: int) -> np.ndarray:
    """Resize an image patch to ``size`` x ``size``: area averaging when shrinking (as the
    detector's pyramid does), bilinear when enlarging."""
    if patch.shape[0] == size and patch.shape[1] == size:
        return np.ascontiguousarray(patch)
    shrinking = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def cut_and_resize(image: np.ndarray, boxes, size: int) -> np.ndarray:
    """Crops of inclusive integer ``boxes`` (zero-padded at the border), each resized to ``size``.

    Returns uint8 (N, size, size, 3).
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        out[i] = resize_square(crop_with_padding(image, box), size)
    return out
