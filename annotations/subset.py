"""A share of a WIDER ``bbx_gt`` file's images, for data-scaling runs (``make ... WIDER_FRACTION=``).

    python -m annotations.subset --wider-txt wider_face_train_bbx_gt.txt --fraction 0.25 --out quarter.txt

The images kept are the first ``round(fraction * N)`` in the order of the SHA-256 of their paths:
a fixed draw that needs no seed, whose smaller shares are subsets of the larger ones (the quarter
is half of the half), and which spreads over WIDER's events as evenly as a random draw. Kept
images keep their file order and every box line as written (dropped boxes and attributes too),
so the builds read them exactly as they read the full file.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotations.wider import parse_wider_text, write_wider_txt
from core.stage import run_stage


@dataclass(frozen=True)
class SubsetConfig:
    wider_txt: Path
    """The ``wider_face_*_bbx_gt.txt`` file to take images from."""
    fraction: float
    """Share of its images to keep, in (0, 1]."""
    out: Path
    """The subset's ``bbx_gt`` file (written atomically)."""

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")


def subset_mask(image_paths, fraction: float) -> np.ndarray:
    """Which of ``image_paths`` the ``fraction`` share keeps (see the module docstring); pure."""
    keys = [hashlib.sha256(path.encode()).digest() for path in image_paths]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    mask = np.zeros(len(keys), dtype=bool)
    mask[order[: round(fraction * len(keys))]] = True
    return mask


def main(cfg: SubsetConfig) -> dict:
    parsed = parse_wider_text(Path(cfg.wider_txt))
    keep = subset_mask(parsed.image_paths, cfg.fraction)
    # Box lines come in file order, so each image's boxes are one run of rows.
    ends = np.cumsum(np.bincount(parsed.box_image_index, minlength=len(keep)))
    boxes = np.split(parsed.box_values, ends[:-1])
    records = [(path, boxes[i]) for i, path in enumerate(parsed.image_paths) if keep[i]]
    write_wider_txt(cfg.out, records)
    summary = {"images": int(keep.sum()), "of": len(keep), "faces": int(sum(len(b) for _, b in records))}
    print(f"{cfg.out}: {summary['images']:,} of {summary['of']:,} images, {summary['faces']:,} box lines")
    return summary


if __name__ == "__main__":
    sys.exit(run_stage(SubsetConfig, main))
