"""Cutting sample images out of a photo: one function for random-crop generation and mining."""

from __future__ import annotations

import math

import cv2
import numpy as np

from core.geometry import crop_with_padding


def resize_square(patch: np.ndarray, size: int) -> np.ndarray:
    """Resize an image patch to ``size`` x ``size``: area averaging when shrinking (as the
    detector's pyramid does), bilinear when enlarging."""
    if patch.shape[0] == size and patch.shape[1] == size:
        return np.ascontiguousarray(patch)
    shrinking = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def halve(image: np.ndarray) -> np.ndarray:
    """Exact 2x2 block average (the image is edge-padded to even sides first)."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


class CropSource:
    """An image plus lazily built halvings of it, to cut many resized crops cheaply.

    Area-shrinking a 400 px crop to 12 px reads every source pixel; a crop is instead cut from
    the smallest halving in which it still has at least twice the target size, and area-shrunk
    from there. Block averages of block averages are block averages, so the result equals a
    direct area resize up to the rounding of the crop's edges to that level's pixels (at most a
    quarter of an output pixel).
    """

    def __init__(self, image: np.ndarray):
        self.levels = [image]

    def level(self, k: int) -> np.ndarray:
        while len(self.levels) <= k:
            self.levels.append(halve(self.levels[-1]))
        return self.levels[k]

    def cut(self, box, size: int) -> np.ndarray:
        x1, y1, x2, y2 = (int(v) for v in box)
        side = min(x2 - x1 + 1, y2 - y1 + 1)
        k = max(0, int(math.floor(math.log2(side / (2 * size))))) if side >= 4 * size else 0
        if k == 0:
            return resize_square(crop_with_padding(self.levels[0], box), size)
        f = 1 << k
        # Inclusive box [x1, x2] covers [x1, x2 + 1) in pixels: that span, in level-k pixels.
        scaled = (round(x1 / f), round(y1 / f), round((x2 + 1) / f) - 1, round((y2 + 1) / f) - 1)
        return resize_square(crop_with_padding(self.level(k), scaled), size)


def cut_and_resize(source: CropSource | np.ndarray, boxes, size: int) -> np.ndarray:
    """Crops of inclusive integer ``boxes`` (zero-padded at the border), each resized to ``size``.

    Returns uint8 (N, size, size, 3).
    """
    if not isinstance(source, CropSource):
        source = CropSource(source)
    boxes = np.asarray(boxes).reshape(-1, 4)
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        out[i] = source.cut(box, size)
    return out
