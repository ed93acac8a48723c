"""Box geometry shared by sample generation, hard-example mining, evaluation and the cascade detector.

Pure numpy functions, no I/O. Every function here exists once in the project.

Conventions (the original MTCNN's, so that the original weights and ours decode alike):

* A box is ``[x1, y1, x2, y2]`` in *inclusive* pixel coordinates: a crop that starts at
  pixel column ``x`` and is ``s`` pixels wide is ``[x, y, x + s - 1, y + s - 1]`` and its width
  is ``x2 - x1 + 1``. A WIDER ``x y w h`` annotation is ``[x, y, x + w - 1, y + h - 1]``.
* Regression targets are the four corner offsets divided by the crop's width/height:
  ``(gt_x1 - x1) / w, (gt_y1 - y1) / h, (gt_x2 - x2) / w, (gt_y2 - y2) / h``;
  ``calibrate`` is its exact inverse (the original ``bbreg``).
* Landmarks are 10 values ``x1..x5, y1..y5`` (left eye, right eye, nose, left mouth corner,
  right mouth corner), normalised as ``(px - (x1 - 1)) / w``, which is what the original
  O-Net's decoding ``w * p + x1 - 1`` inverts.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 5
# Boxes per block of ``nms_fast``'s IoU matrices (and the size below which it defers to ``nms``).
NMS_CHUNK = 64


def as_boxes(boxes) -> np.ndarray:
    """Return ``boxes`` as a float64 array of shape (N, 4) (a single box becomes N = 1)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ValueError(f"expected boxes of shape (N, 4), got {arr.shape}")
    return arr[:, :4]


def xywh_to_xyxy(xywh) -> np.ndarray:
    """WIDER ``x y w h`` to inclusive ``x1 y1 x2 y2``."""
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2] - 1, b[:, 1] + b[:, 3] - 1], axis=1)


def box_sizes(boxes) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive widths and heights of (N, 4) boxes."""
    b = as_boxes(boxes)
    return b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1


def iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every box of ``boxes_a`` with every box of ``boxes_b``: (N, M)."""
    a, b = as_boxes(boxes_a), as_boxes(boxes_b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    wa, ha = box_sizes(a)
    wb, hb = box_sizes(b)
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = (wa * ha)[:, None] + (wb * hb)[None, :] - inter
    return inter / union


def iou(box, boxes) -> np.ndarray:
    """IoU of one box with each of ``boxes``: shape (M,)."""
    return iou_matrix(box, boxes)[0]


def regression_targets(crops, gt) -> np.ndarray:
    """Offsets that move each crop box onto its ground-truth box, normalised by the crop size."""
    c, g = as_boxes(crops), as_boxes(gt)
    w, h = box_sizes(c)
    scale = np.stack([w, h, w, h], axis=1)
    return (g - c) / scale


def calibrate(boxes, offsets) -> np.ndarray:
    """Apply regression offsets to boxes (the inverse of ``regression_targets``)."""
    b = as_boxes(boxes)
    w, h = box_sizes(b)
    return b + np.asarray(offsets, dtype=np.float64).reshape(-1, 4) * np.stack([w, h, w, h], axis=1)


def normalize_landmarks(points, crops) -> np.ndarray:
    """Pixel landmarks (N, 5, 2) to the 10 values per crop (x1..x5, y1..y5) the nets regress."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, NUM_LANDMARKS, 2)
    c = as_boxes(crops)
    w, h = box_sizes(c)
    xs = (p[:, :, 0] - (c[:, 0:1] - 1)) / w[:, None]
    ys = (p[:, :, 1] - (c[:, 1:2] - 1)) / h[:, None]
    return np.concatenate([xs, ys], axis=1)


def denormalize_landmarks(values, boxes) -> np.ndarray:
    """The 10 regressed values per box back to pixel landmarks of shape (N, 5, 2)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, 2 * NUM_LANDMARKS)
    b = as_boxes(boxes)
    w, h = box_sizes(b)
    xs = v[:, :NUM_LANDMARKS] * w[:, None] + b[:, 0:1] - 1
    ys = v[:, NUM_LANDMARKS:] * h[:, None] + b[:, 1:2] - 1
    return np.stack([xs, ys], axis=2)


def square(boxes) -> np.ndarray:
    """Grow each box to a square around its centre, side ``max(x2 - x1, y2 - y1)`` (original ``rerec``)."""
    b = as_boxes(boxes).copy()
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def nms(boxes, scores, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    ``mode="union"`` suppresses boxes whose IoU with a kept box exceeds ``threshold``;
    ``mode="min"`` divides the intersection by the smaller area instead (the original's 'Min').
    Ties in score keep the lower index first, so the result is deterministic.
    """
    b = as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    if mode not in ("union", "min"):
        raise ValueError(f"unknown NMS mode {mode!r}")
    w, h = box_sizes(b)
    area = w * h
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + 1
        iy = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + 1
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def crop_with_padding(image: np.ndarray, box) -> np.ndarray:
    """Cut the integer box ``[x1, y1, x2, y2]`` (inclusive) out of an HxWxC image.

    Parts of the box outside the image are filled with zeros, so a box at the border keeps its
    shape and the face stays where the regression targets say it is.
    """
    x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(box, dtype=np.float64)[:4])
    height, width = image.shape[:2]
    out = np.zeros((y2 - y1 + 1, x2 - x1 + 1) + image.shape[2:], dtype=image.dtype)
    sx1, sy1 = max(x1, 0), max(y1, 0)
    sx2, sy2 = min(x2, width - 1), min(y2, height - 1)
    if sx1 <= sx2 and sy1 <= sy2:
        out[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[sy1 : sy2 + 1, sx1 : sx2 + 1]
    return out


def nms_fast(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """``nms``, same result (same IoU arithmetic, same order, same ties), but fast for
    thousands of boxes that mostly do not touch each other, as P-Net's proposals are.

    ``nms`` compares every kept box with all remaining ones, one numpy round per kept box:
    after the per-scale NMS almost every box is kept by the 0.7 NMS across scales, so that costs
    ~N**2 / 2 IoUs and N numpy rounds (0.1 s for 3000 boxes). Here ``iou_matrix`` is taken
    only between boxes whose x ranges can overlap (boxes sorted by x1, in chunks, each against the
    boxes starting before the chunk's right edge), the pairs above ``threshold`` become a sparse
    neighbour list, and the greedy pass walks the boxes best score first, striking out the
    neighbours of each box it keeps. 'min' mode (only O-Net's final NMS, on few boxes) goes to
    ``nms``.
    """
    if mode != "union" or len(boxes) < NMS_CHUNK:
        return nms(boxes, scores, threshold, mode)
    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    n = len(b)
    by_x = np.argsort(b[:, 0], kind="stable")
    xs = b[by_x]
    heads, tails = [], []
    for start in range(0, n, NMS_CHUNK):
        stop = min(start + NMS_CHUNK, n)
        # Inclusive widths: boxes intersect while x1 of the later one < x2 of the earlier one + 1.
        reach = int(np.searchsorted(xs[:, 0], xs[start:stop, 2].max() + 1, side="right"))
        over = iou_matrix(xs[start:stop], xs[start:reach]) > threshold
        i, j = np.nonzero(over)
        j += start
        i += start
        later = j > i  # each unordered pair once (the diagonal is the box itself)
        heads.append(by_x[i[later]])
        tails.append(by_x[j[later]])
    head, tail = np.concatenate(heads), np.concatenate(tails)
    src = np.concatenate([head, tail])
    dst = np.concatenate([tail, head])
    ordered = np.argsort(src, kind="stable")
    neighbours = dst[ordered]
    bounds = np.searchsorted(src[ordered], np.arange(n + 1)).tolist()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            suppressed[neighbours[lo:hi]] = True
    return np.asarray(keep, dtype=np.int64)
