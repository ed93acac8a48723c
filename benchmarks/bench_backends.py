"""Detector images/s by backend (torch, onnxruntime) and thread count, and ``detect_batch`` vs a loop.

    python -m benchmarks.bench_backends [--images ../shared/data/wider/WIDER_val/images] [--limit 40]
        [--weights shipped] [--onnx build/export] [--threads 1 2] [--batch-images 8]

The first ``--limit`` images under ``--images`` (sorted, recursively) are read into memory and
run, on the CPU, through the torch nets of ``--weights`` and through the same nets exported to
ONNX (``--onnx FOLDER``, or exported to a temporary folder first), at each thread count (torch's
``set_num_threads`` for the cascade's tensor work and the torch nets, onnxruntime's intra-op
threads for its nets): once as a loop of ``detect``, once as ``detect_batch`` over groups of
``--batch-images``. One warm-up image per detector is not timed. Then the onnx detections are
compared with the torch ones (faces matched by IoU >= 0.5): how many images have the same number
of faces and the largest box-coordinate difference. Figures are printed, never asserted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.geometry import iou_matrix
from core.imageio import try_read_image_rgb
from core.stage import run_stage
from detector.align import list_images
from detector.cascade import Detections, DetectorConfig, load_detector
from detector.export import ExportConfig, main as export_main

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "wider" / "WIDER_val" / "images"
MATCH_IOU = 0.5


@dataclass(frozen=True)
class BenchBackendsConfig:
    images: str = str(DEFAULT_IMAGES)
    """Folder of images, searched recursively."""
    limit: int = 40
    """How many images (the first, sorted by path)."""
    weights: str = "shipped"
    """The torch weights: shipped | original:PATH | a checkpoint folder."""
    onnx: str | None = None
    """An export folder of those weights (make export); None: export them to a temporary folder."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device for the torch backend, ...)."""
    threads: tuple[int, ...] = (1, 2)
    """Thread counts to measure."""
    batch_images: int = 8
    """Images per detect_batch call."""

    def __post_init__(self):
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"--threads must be one or more counts >= 1, got {' '.join(map(str, self.threads))}")


def images_per_second(run, images: list[np.ndarray]) -> tuple[float, list[Detections]]:
    start = time.perf_counter()
    found = run(images)
    return len(images) / (time.perf_counter() - start), found


def compare(reference: list[Detections], other: list[Detections]) -> dict:
    """Same face count per image, and the largest box-coordinate difference of IoU-matched faces."""
    same, worst, unmatched = 0, 0.0, 0
    for want, got in zip(reference, other):
        same += len(want) == len(got)
        if not len(want) or not len(got):
            unmatched += len(want) + len(got)
            continue
        overlap = iou_matrix(want.boxes, got.boxes)
        best = overlap.argmax(axis=1)
        matched = overlap[np.arange(len(want)), best] >= MATCH_IOU
        unmatched += int((~matched).sum()) + len(got) - len(set(best[matched].tolist()))
        if matched.any():
            worst = max(worst, float(np.abs(want.boxes[matched] - got.boxes[best[matched]]).max()))
    return {"same_count": same, "max_box_diff": worst, "unmatched": unmatched}


def main(cfg: BenchBackendsConfig) -> dict:
    paths = list_images(Path(cfg.images))[: cfg.limit]
    images = [im for im in (try_read_image_rgb(Path(cfg.images) / p) for p in paths) if im is not None]
    if not images:
        raise FileNotFoundError(f"no readable images under {cfg.images}")
    dcfg = cfg.detector
    with tempfile.TemporaryDirectory() as tmp:
        onnx = cfg.onnx
        if onnx is None:
            onnx = str(Path(tmp) / "export")
            if export_main(ExportConfig(out=onnx, weights=cfg.weights)) != 0:
                raise FileNotFoundError(f"cannot export {cfg.weights}")
        rows, found = [], {}
        for threads in cfg.threads:
            torch.set_num_threads(threads)
            for backend, weights in (("torch", cfg.weights), ("onnx", onnx)):
                detector = load_detector(weights, dcfg, backend=backend, threads=threads)
                detector.detect(images[0])  # warm-up
                loop, found[backend] = images_per_second(lambda ims: [detector.detect(im) for im in ims], images)
                batch, _ = images_per_second(
                    lambda ims: [d for i in range(0, len(ims), cfg.batch_images)
                                 for d in detector.detect_batch(ims[i : i + cfg.batch_images])], images)
                rows.append({"backend": backend, "threads": threads, "loop": loop, "batch": batch})
    sizes = np.array([im.shape[0] * im.shape[1] for im in images]) / 1e6
    print(f"{len(images)} images from {cfg.images} (mean {sizes.mean():.2f} Mpx), min face {cfg.detector.min_face:g}, "
          f"weights {cfg.weights}, CPU")
    print(f"{'backend':8} {'threads':>7} {'detect img/s':>13} {'detect_batch img/s':>19} {'speed-up':>9}")
    for r in rows:
        print(f"{r['backend']:8} {r['threads']:>7} {r['loop']:>13.2f} {r['batch']:>19.2f} {r['batch'] / r['loop']:>8.2f}x")
    parity = compare(found["torch"], found["onnx"])
    print(f"onnx vs torch: {parity['same_count']}/{len(images)} images with the same number of faces, "
          f"{parity['unmatched']} faces without an IoU >= {MATCH_IOU} partner, "
          f"max box difference of matched faces {parity['max_box_diff']:.2e} px")
    return {"rows": rows, "parity": parity, "images": len(images)}


if __name__ == "__main__":
    sys.exit(run_stage(BenchBackendsConfig, main))
