"""Training-time augmentation of decoded batches (``lmdb_builders.reader.records_to_batch`` dicts).

Used by ``trainers.engine`` on every training batch (not on validation). Two kinds of change are
made, both with an exact (or no) effect on the targets:

Horizontal mirroring (``hflip_batch``):

* box offsets ``(dx1, dy1, dx2, dy2)`` (``core.geometry.regression_targets``) of a mirrored crop
  are ``(-dx2, dy1, -dx1, dy2)``: the face's left edge ``x2 - gx2`` pixels from the crop's left
  is its old right edge, and both are divided by the same crop width;
* landmark samples are left alone: their normalised x, ``(px - x1 + 1) / w``, mirrors to
  ``1 + 1 / w - x``, and ``w`` (the crop's width before resizing) is not stored. They were
  already mirrored, exactly, when generated (``prepare.landmark_aug``).

Photometric changes (``photometric_batch``): Gaussian blur, then saturation, contrast and
brightness, per sample, on every kind. They move no pixel, so no target changes. Meant for the
later stages, which see few distinct faces; off by default (``--photometric``), see
docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmdb_builders.schema import Kind


def flip_box_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Regression offsets (N, 4) of horizontally mirrored crops; NaN (no target) stays NaN."""
    return offsets[:, [2, 1, 0, 3]] * offsets.new_tensor([-1.0, 1.0, -1.0, 1.0])


def flip_mask(kinds: torch.Tensor, rng: np.random.Generator, probability: float = 0.5) -> torch.Tensor:
    """Which samples to mirror: each non-landmark sample with ``probability``."""
    draw = torch.from_numpy(rng.random(len(kinds)) < probability).to(kinds.device)
    return draw & (kinds != Kind.LANDMARK)


def hflip_batch(batch: dict, mask: torch.Tensor) -> dict:
    """A copy of ``batch`` with the samples in ``mask`` mirrored (images (B, S, S, 3), box targets),
    on the batch's device. Selected with ``torch.where``, not boolean indexing or ``mask.any()``,
    which would make a GPU stop for the mask's count at every step."""
    mask = mask.to(batch["image"].device)
    out = dict(batch)
    image, box = batch["image"], batch["box"]
    out["image"] = torch.where(mask.view(-1, 1, 1, 1), image.flip(2), image)  # NHWC: dim 2 is the width
    out["box"] = torch.where(mask.view(-1, 1), flip_box_offsets(box), box)
    return out


@dataclass(frozen=True)
class PhotometricParams:
    """Per-sample draws of ``photometric_params`` (each an array of length N)."""

    brightness: np.ndarray  # multiplies every channel
    contrast: np.ndarray  # scales the distance to the sample's mean grey level
    saturation: np.ndarray  # scales the distance to the pixel's grey level (0: greyscale)
    blur_sigma: np.ndarray  # Gaussian blur sigma in pixels; 0: no blur


BRIGHTNESS, CONTRAST, SATURATION = 0.3, 0.3, 0.4  # factors drawn uniformly in 1 +- these
GREYSCALE_PROBABILITY = 0.1
BLUR_PROBABILITY, BLUR_SIGMA = 0.2, (0.5, 1.5)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY


def photometric_params(n: int, rng: np.random.Generator) -> PhotometricParams:
    """Draw the photometric change of ``n`` samples."""
    brightness = rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS, n)
    contrast = rng.uniform(1 - CONTRAST, 1 + CONTRAST, n)
    saturation = np.where(rng.random(n) < GREYSCALE_PROBABILITY, 0.0, rng.uniform(1 - SATURATION, 1 + SATURATION, n))
    blur_sigma = np.where(rng.random(n) < BLUR_PROBABILITY, rng.uniform(*BLUR_SIGMA, n), 0.0)
    return PhotometricParams(brightness, contrast, saturation, blur_sigma)


def gaussian_kernels(sigmas: np.ndarray) -> torch.Tensor:
    """(N, 2 * radius + 1) normalised 1-D Gaussian taps; sigma 0 gives the identity kernel."""
    radius = max(1, int(np.ceil(3 * float(np.max(sigmas, initial=0.0)))))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    safe = np.where(sigmas > 0, sigmas, 1.0)[:, None]
    taps = np.exp(-0.5 * (x[None, :] / safe) ** 2)
    taps[sigmas <= 0] = (x == 0).astype(np.float64)
    return torch.from_numpy(taps / taps.sum(1, keepdims=True)).float()


def blur_images(images: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of float NHWC images, each with its own sigma (edges replicated)."""
    n, h, w, c = images.shape
    taps = gaussian_kernels(sigmas).to(images.device)
    k = taps.shape[1]
    x = images.permute(3, 0, 1, 2).reshape(1, c * n, h, w)  # one group per (channel, sample)
    weight = taps.repeat(c, 1)
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="replicate"), weight.view(c * n, 1, 1, k), groups=c * n)
    x = F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="replicate"), weight.view(c * n, 1, k, 1), groups=c * n)
    return x.view(c, n, h, w).permute(1, 2, 3, 0)


def photometric_batch(batch: dict, params: PhotometricParams) -> dict:
    """A copy of ``batch`` whose uint8 images (B, S, S, 3) went through ``params``, on the batch's
    device; targets untouched."""
    image = batch["image"].float()
    blurred = params.blur_sigma > 0
    if blurred.any():
        idx = torch.from_numpy(np.flatnonzero(blurred)).to(image.device)
        image[idx] = blur_images(image[idx], params.blur_sigma[blurred])

    def per_sample(values):
        return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(image.device).view(-1, 1, 1, 1)

    grey = (image * image.new_tensor(GREY_WEIGHTS)).sum(3, keepdim=True)
    image = grey + per_sample(params.saturation) * (image - grey)
    mean_grey = grey.mean((1, 2, 3), keepdim=True)
    image = mean_grey + per_sample(params.contrast) * (image - mean_grey)
    image = image * per_sample(params.brightness)
    out = dict(batch)
    out["image"] = image.round_().clamp_(0, 255).to(torch.uint8)
    return out
