"""A tiny identity set in LFW's layout, for the recognition half of ``make demo`` and the tests.

    python -m demo.identities --out DIR [--people 12 --images 5 --folds 2 --seed 0]

Writes ``DIR/images/<person>/<person>_NNNN.jpg``, ``DIR/people.txt`` (the people in ``--folds``
folds) and ``DIR/pairs.txt`` (per fold, as many matched as mismatched pairs of its people), all in
LFW's formats. Each "person" is one of the 25x25 LFW faces that ship with scikit-image
(``skimage.data.lfw_subset()``), and every image of a person is that same face, enlarged, moved,
turned a little, relit and noised, on a different background: the set shows every stage running
end to end in seconds; telling its people apart says nothing about recognising real faces.
The same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from annotations.lfw import image_path
from core.atomic import atomic_write_bytes, atomic_write_text
from core.stage import run_stage
from demo.data import _background, _lfw_patches

IMAGE_SIDE = 120


@dataclass(frozen=True)
class DemoIdentitiesConfig:
    out: str
    """Output folder: images/, people.txt, pairs.txt."""
    people: int = 12
    """Number of people (each one of skimage's 100 LFW faces)."""
    images: int = 5
    """Images per person."""
    folds: int = 2
    """Folds of people in people.txt and pairs.txt."""
    seed: int = 0
    """Seeds every draw."""

    def __post_init__(self):
        if not 2 <= self.people <= 100 or self.images < 2 or not 1 <= self.folds <= self.people // 2:
            raise ValueError("need 2-100 people, >= 2 images each, and 1 to people/2 folds")


def person_name(k: int) -> str:
    return f"Demo_Person_{k:02d}"


def _image(face: np.ndarray, rng) -> np.ndarray:
    """One photo of a face: enlarged to 48-60 px, turned up to 8 degrees, relit, on a background."""
    side = int(rng.integers(48, 61))
    grey = cv2.resize((face * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(0.8, 1.1, 3) * np.array([1.0, 0.85, 0.72])
    patch = np.clip(grey[..., None] * tint * rng.uniform(0.85, 1.15), 0, 255)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-8, 8)), 1.0)
    patch = cv2.warpAffine(patch.astype(np.float32), matrix, (side, side), borderMode=cv2.BORDER_REFLECT)
    image = _background(rng, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    x0 = (IMAGE_SIDE - side) // 2 + int(rng.integers(-6, 7))
    y0 = (IMAGE_SIDE - side) // 2 + int(rng.integers(-6, 7))
    image[y0 : y0 + side, x0 : x0 + side] = patch
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def build(cfg: DemoIdentitiesConfig) -> Path:
    out = Path(cfg.out)
    faces, _ = _lfw_patches()
    rng = np.random.default_rng([cfg.seed, 0x1DE])
    chosen = rng.choice(len(faces), cfg.people, replace=False)
    names = [person_name(k) for k in range(cfg.people)]
    for k, face_index in enumerate(chosen):
        person_rng = np.random.default_rng([cfg.seed, k])
        for i in range(1, cfg.images + 1):
            rgb = _image(faces[face_index], person_rng)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            atomic_write_bytes(out / "images" / image_path(names[k], i), data.tobytes())
    folds = [names[f :: cfg.folds] for f in range(cfg.folds)]
    people = [str(cfg.folds)] + [line for fold in folds for line in [str(len(fold))] + [f"{n}\t{cfg.images}" for n in fold]]
    atomic_write_text(out / "people.txt", "\n".join(people) + "\n")
    per_kind = min(len(f) for f in folds) * 2
    lines = [f"{cfg.folds}\t{per_kind}"]
    for f, fold in enumerate(folds):
        pair_rng = np.random.default_rng([cfg.seed, 0x9A1, f])
        matched, mismatched = set(), set()
        while len(matched) < per_kind:
            name = fold[int(pair_rng.integers(len(fold)))]
            i, j = sorted(pair_rng.choice(np.arange(1, cfg.images + 1), 2, replace=False).tolist())
            matched.add(f"{name}\t{i}\t{j}")
        while len(mismatched) < per_kind:
            a, b = pair_rng.choice(len(fold), 2, replace=False)
            i, j = pair_rng.integers(1, cfg.images + 1, 2)
            mismatched.add(f"{fold[a]}\t{i}\t{fold[b]}\t{j}")
        lines += sorted(matched) + sorted(mismatched)
    atomic_write_text(out / "pairs.txt", "\n".join(lines) + "\n")
    return out


def main(config: DemoIdentitiesConfig) -> Path:
    path = build(config)
    print(f"{config.people} people x {config.images} images in {config.folds} folds -> {path}")
    return path


if __name__ == "__main__":
    sys.exit(run_stage(DemoIdentitiesConfig, main))
