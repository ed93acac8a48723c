"""A hand-built WIDER FACE ground truth that the evaluation tests share (written as the official .mat files)."""

import numpy as np

from annotations.wider_mat import GtImage, write_ground_truth as write_gt_files
from evaluation.wider_eval import SETTINGS

# Two events; image "a" has three faces: 0 and 1 count in every setting, 2 counts in none
# (e.g. too small); image "b" has one face, counted in hard only; image "c" has no face.
FACES_A = np.array([[10, 10, 40, 50], [100, 20, 30, 30], [200, 200, 12, 12]], dtype=float)
FACES_B = np.array([[50, 60, 20, 25]], dtype=float)
GT = [
    ("0--Parade", [("0_a", FACES_A, {"easy": [1, 2], "medium": [1, 2], "hard": [1, 2]}),
                   ("0_c", np.zeros((0, 4)), {"easy": [], "medium": [], "hard": []})]),
    ("1--Handshaking", [("1_b", FACES_B, {"easy": [], "medium": [], "hard": [1]})]),
]


def write_ground_truth(folder, gt=GT):
    """The official structure (``annotations.wider_mat``) from the 1-based lists above."""
    images = [GtImage(event, name, boxes, {s: np.asarray(k[s], dtype=np.int64) - 1 for s in SETTINGS})
              for event, imgs in gt for name, boxes, k in imgs]
    return write_gt_files(folder, images)
