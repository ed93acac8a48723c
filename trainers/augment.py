"""Training-time augmentation of decoded batches (``lmdb_builders.reader.records_to_batch`` dicts).

Used by ``trainers.train`` on every training batch (not on validation). Only horizontal mirroring
is done here, because its effect on the targets is exact:

* box offsets ``(dx1, dy1, dx2, dy2)`` (``prepare.boxes.regression_targets``) of a mirrored crop
  are ``(-dx2, dy1, -dx1, dy2)``: the face's left edge ``x2 - gx2`` pixels from the crop's left
  is its old right edge, and both are divided by the same crop width;
* landmark samples are left alone: their normalised x, ``(px - x1 + 1) / w``, mirrors to
  ``1 + 1 / w - x``, and ``w`` (the crop's width before resizing) is not stored. They were
  already mirrored, exactly, when generated (``prepare.landmark_aug``).
"""

from __future__ import annotations

import numpy as np
import torch

from lmdb_builders.schema import Kind


def flip_box_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Regression offsets (N, 4) of horizontally mirrored crops; NaN (no target) stays NaN."""
    return offsets[:, [2, 1, 0, 3]] * offsets.new_tensor([-1.0, 1.0, -1.0, 1.0])


def flip_mask(kinds: torch.Tensor, rng: np.random.Generator, probability: float = 0.5) -> torch.Tensor:
    """Which samples to mirror: each non-landmark sample with ``probability``."""
    draw = torch.from_numpy(rng.random(len(kinds)) < probability)
    return draw & (kinds != Kind.LANDMARK)


def hflip_batch(batch: dict, mask: torch.Tensor) -> dict:
    """A copy of ``batch`` with the samples in ``mask`` mirrored (images (B, S, S, 3), box targets)."""
    if not bool(mask.any()):
        return batch
    out = dict(batch)
    image, box = batch["image"].clone(), batch["box"].clone()
    image[mask] = image[mask].flip(2)  # NHWC: dim 2 is the width
    box[mask] = flip_box_offsets(box[mask])
    out["image"], out["box"] = image, box
    return out
