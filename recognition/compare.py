"""The distance matrix of the faces in a few images: ``make compare IMAGES="a.jpg b.jpg ..."`` (facenet's ``compare.py``).

    python -m recognition.compare --images a.jpg b.jpg c.jpg [--threshold T] [--embedder shipped] [--weights shipped]

Each image's one face (the largest and most central) is detected and aligned as ``make recog-data``
aligns (``--align``, ``--image-size``), embedded with its mirror image added, and the squared
distances of every two faces printed as a table (0 to 4), after the threshold below which two faces
are one person and where it came from (``recognition.threshold``): ``--threshold`` (make
``THRESHOLD=``), else the embedder's calibration (``make calibrate``: the threshold at a target FAR
on a named pairs file, with the FAR and TAR it gave there), else 1.35 with a warning that nothing
calibrated it. An image without a face, or unreadable, is named in one line and left out of the
table; a threshold outside (0, 4) is one line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from core.imageio import ImageReadError, read_image_rgb
from core.stage import run_stage
from core.verification import squared_distances
from detector.align import ALIGN_MODES, AlignConfig, align_image
from detector.cascade import DetectorConfig, load_detector
from recognition.embedder import embed, load_embedder
from recognition.threshold import check_threshold, threshold_lines


@dataclass(frozen=True)
class CompareConfig:
    images: tuple[str, ...]
    """Two or more image files."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    weights: str = "shipped"
    """The detector: shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings."""
    align: str = field(default="similarity", metadata={"choices": ALIGN_MODES})
    """similarity or margin, as the embedder's training build."""
    image_size: int = 64
    """Side of the aligned crops, as the embedder's training build."""
    flip: bool = True
    """Add the mirror image's embedding."""
    threshold: float | None = None
    """Squared distance below which two faces are one person, in (0, 4), printed with the table. None:
    the embedder's calibrated threshold (make calibrate), else 1.35 with a warning."""

    def __post_init__(self):
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")


def distance_matrix(vectors: np.ndarray) -> np.ndarray:
    n = len(vectors)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return squared_distances(vectors[i.ravel()], vectors[j.ravel()]).reshape(n, n)


def format_matrix(names: list[str], matrix: np.ndarray) -> str:
    width = max(8, *(len(n) for n in names))
    lines = [" " * width + "".join(f"{k:>8}" for k in range(len(names)))]
    lines += [f"{f'{k}: {n}':<{width}}"[:width] + "".join(f"{v:8.4f}" for v in row)
              for k, (n, row) in enumerate(zip(names, matrix))]
    return "\n".join(lines)


def main(cfg: CompareConfig) -> np.ndarray:
    if len(cfg.images) < 2:
        raise ValueError("give two or more images")
    embedder = load_embedder(cfg.embedder)
    threshold_line, *warnings = threshold_lines(cfg.threshold, embedder.record)[2]
    print(threshold_line)
    for warning in warnings:
        print(warning, file=sys.stderr)
    detector = load_detector(cfg.weights, cfg.detector)
    align_cfg = AlignConfig(images=".", out=".", largest=True, align=cfg.align, image_size=cfg.image_size)
    names, crops = [], []
    for path in cfg.images:
        try:
            image = read_image_rgb(path)
        except ImageReadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        found = align_image(image, detector.detect(image), align_cfg)
        if not found:
            print(f"skipped: {path}: no face found", file=sys.stderr)
            continue
        names.append(path)
        crops.append(next(iter(found.values())))
    if len(crops) < 2:
        raise ValueError(f"faces found in {len(crops)} of the {len(cfg.images)} images; need two to compare")
    matrix = distance_matrix(embed(embedder, crops, flip=cfg.flip))
    print(format_matrix(names, matrix))
    return matrix


if __name__ == "__main__":
    sys.exit(run_stage(CompareConfig, main))
