"""How much of an annotated box lies inside its image: the parsers' "mostly outside" rule.

A box whose part inside the image is less than ``MIN_VISIBLE_FRACTION`` of its area does not
describe a face of that image: clipping it to the image would make another box (a 100000 x 100000
box clipped becomes "the whole image is a face"), and crops around it are mostly the zero padding
outside the image (all-black landmark samples). Such boxes are dropped and counted by the parsers;
a box only slightly outside is clipped (WIDER) or kept (landmark lists), as before.
"""

from __future__ import annotations

import numpy as np

MIN_VISIBLE_FRACTION = 0.5


def visible_fraction(boxes, widths, heights) -> np.ndarray:
    """Share of each inclusive ``x1 y1 x2 y2`` box's area inside its ``width`` x ``height`` image
    (pixels 0 .. width - 1); 0 for an empty box. ``widths``/``heights``: one per box; pure."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    widths = np.asarray(widths, dtype=np.float64)
    heights = np.asarray(heights, dtype=np.float64)
    box_w, box_h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    inside_w = np.clip(np.minimum(b[:, 2], widths - 1) - np.maximum(b[:, 0], 0) + 1, 0, None)
    inside_h = np.clip(np.minimum(b[:, 3], heights - 1) - np.maximum(b[:, 1], 0) + 1, 0, None)
    area = box_w * box_h
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((box_w > 0) & (box_h > 0), np.minimum(inside_w * inside_h / area, 1.0), 0.0)
