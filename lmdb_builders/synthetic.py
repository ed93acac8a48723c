"""Synthetic LMDB builds: a finished shard folder with a manifest, written with ``ShardWriter``.

Used by the trainer's tests (a tiny set on which the loss can really fall) and by the trainer
benchmark (``make bench``: sets of realistic size). Positives are a bright blob near the centre (box
offsets = its shift), part faces a blob far off centre, landmark samples a blob with five dark dots
whose positions are the targets, negatives noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmdb_builders.manifest import MANIFEST_NAME, fingerprint
from lmdb_builders.schema import Kind, make_records
from lmdb_builders.writer import ShardWriter, WriterConfig

# neg : pos : part : landmark in the synthetic sets (the real builds have roughly this mix).
SYNTHETIC_MIX = {Kind.NEGATIVE: 3, Kind.POSITIVE: 1, Kind.PART: 3, Kind.LANDMARK: 2}
_LANDMARK_BASE = np.array([0.32, 0.68, 0.50, 0.36, 0.64, 0.38, 0.38, 0.55, 0.74, 0.74], dtype=np.float32)


def synthetic_records(rng: np.random.Generator, size: int, kind: Kind, n: int) -> np.ndarray:
    """``n`` schema records of one kind (see the module docstring)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = rng.uniform(0, 90, (n, size, size)).astype(np.float32)
    boxes = landmarks = None
    if kind != Kind.NEGATIVE:
        lim = {Kind.POSITIVE: (0.0, 0.08), Kind.PART: (0.2, 0.3), Kind.LANDMARK: (0.0, 0.08)}[kind]
        mag = rng.uniform(*lim, (n, 2)).astype(np.float32)
        shift = (mag * rng.choice([-1.0, 1.0], (n, 2))).astype(np.float32)
        cx, cy = 0.5 + shift[:, 0, None, None], 0.5 + shift[:, 1, None, None]
        img += 160 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.2**2))
        if kind == Kind.LANDMARK:
            landmarks = (_LANDMARK_BASE + np.repeat(shift, 5, axis=1)).astype(np.float32)
            for j in range(5):
                lx, ly = landmarks[:, j, None, None], landmarks[:, 5 + j, None, None]
                img -= 120 * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * 0.05**2))
        else:
            boxes = np.concatenate([shift, shift], axis=1).astype(np.float32)
    images = np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)
    return make_records(images, kind, boxes, landmarks)


def write_synthetic_build(out_dir, size: int, num_samples: int, seed: int = 0, per_image: int = 500,
                          shard_bytes: int = 1 << 30) -> dict:
    """A finished build folder (shards + manifest) of ``num_samples`` synthetic ``size`` px samples.

    An existing build with the same parameters is reused as it is.
    """
    out_dir = Path(out_dir)
    params = {"synthetic": True, "size": size, "num_samples": num_samples, "seed": seed, "per_image": per_image}
    fp = fingerprint(params)
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("fingerprint") == fp:
        return json.loads(manifest_path.read_text())
    writer = ShardWriter(out_dir, fp, WriterConfig(shard_bytes=shard_bytes))
    total_ratio = sum(SYNTHETIC_MIX.values())
    num_images = max(1, -(-num_samples // per_image))
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        n_here = min(per_image, num_samples - i * per_image)
        counts = {k: n_here * r // total_ratio for k, r in SYNTHETIC_MIX.items()}
        counts[Kind.NEGATIVE] += n_here - sum(counts.values())
        writer.add_image(i, [synthetic_records(rng, size, k, n) for k, n in counts.items() if n])
    return writer.finish(num_images, {"net_size": size, "config": params, "seed": seed})
