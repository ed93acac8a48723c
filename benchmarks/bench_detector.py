"""Detector throughput: images/s of ``detector.cascade`` on the first N WIDER val images (CPU).

    python -m benchmarks.bench_detector --images ../shared/data/wider/WIDER_val/images \\
        --weights original:weights/original [--num 40] [--min-face 20] [--threads 2] \\
        [--facenet build/facenet-pytorch]

Bad input (no images under ``--images``, missing weights) prints one line and exits with code 2.

With ``--facenet PATH`` (a folder holding the ``facenet_pytorch`` package, e.g. the unzipped
facenet-pytorch 2.6.0 wheel; never part of this repository) the same images are also run through
facenet-pytorch's cascade, ``facenet_pytorch/models/utils/detect_face.py::detect_face``, on the
same machine, alternating the two detectors image by image so that background load hits both
alike. What is compared, honestly:

* facenet-pytorch's ``detect_face`` is loaded from its file, so its package ``__init__`` (which
  imports ``requests`` for InceptionResnetV1) is not needed. Its nets are this project's
  ``core.nets`` modules with the same original weights, wrapped to return what facenet's
  return (softmax probabilities; same layers, same arithmetic).
* facenet-pytorch imports torchvision for ``batched_nms``. When a working torchvision is
  importable it is used; otherwise (the CPU torch here has no matching torchvision build: the
  PyPI wheel links CUDA libraries) ``batched_nms`` is replaced by an exact equivalent built on
  ``core.geometry.nms`` (torchvision's areas have no +1, so boxes are shrunk by one pixel, which
  makes the inclusive IoU equal torchvision's), greedy in numpy rather than C++. Its time is
  measured and also reported subtracted, as a bound in facenet-pytorch's favour.

Figures are printed, never asserted.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.cli import parse_config
from core.geometry import nms
from core.imageio import try_read_image_rgb
from core.stage import run_stage
from detector import DetectorConfig, load_detector

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "wider" / "WIDER_val" / "images"


@dataclass(frozen=True)
class BenchConfig:
    images: str = str(DEFAULT_IMAGES)
    """WIDER_val/images (event folders of .jpg); the first --num images by sorted path are used."""
    weights: str = f"original:{REPO_ROOT / 'weights' / 'original'}"
    """shipped | original:PATH | a checkpoint folder (facenet-pytorch runs the same nets)."""
    num: int = 40
    """How many images."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, ...; facenet-pytorch is given the same min
    face, thresholds and pyramid factor)."""
    threads: int | None = None
    """torch threads; none: torch's default."""
    facenet: str | None = None
    """Folder holding facenet_pytorch/ (e.g. the unzipped 2.6.0 wheel) to time it alongside; none: skip."""

    def __post_init__(self):
        if self.num < 1:
            raise ValueError(f"num must be >= 1, got {self.num}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 or none, got {self.threads}")


class _NmsClock:
    seconds = 0.0


def _torchvision_shim(clock: _NmsClock) -> None:
    """Register a minimal ``torchvision`` (``ops.boxes.batched_nms``, ``transforms.functional``)."""

    def batched_nms(boxes, scores, idxs, threshold):
        start = time.perf_counter()
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)
        b = boxes.detach().to("cpu", torch.float64).numpy()
        b = b + (idxs.detach().cpu().numpy().astype(np.float64) * (b.max() + 2))[:, None]
        keep = nms(b - np.array([0.0, 0.0, 1.0, 1.0]), scores.detach().cpu().numpy(), threshold, "union")
        clock.seconds += time.perf_counter() - start
        return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops_boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops_boxes.batched_nms = batched_nms
    ops.boxes, tv.ops, transforms.functional, tv.transforms = ops_boxes, ops, functional, transforms
    functional.to_tensor = lambda pic: torch.as_tensor(np.asarray(pic)).permute(2, 0, 1).float() / 255
    sys.modules.update({
        "torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": ops_boxes,
        "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
    })


def load_facenet_detect_face(root: str, clock: _NmsClock):
    """facenet-pytorch's ``detect_face`` module from ``root/facenet_pytorch``; (module, how) or (None, why)."""
    path = Path(root) / "facenet_pytorch" / "models" / "utils" / "detect_face.py"
    if not path.is_file():
        return None, f"{path} not found"
    how = "torchvision batched_nms"
    try:
        import torchvision.ops.boxes  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure (missing, ABI mismatch, missing CUDA libs) means: shim
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _torchvision_shim(clock)
        how = "torchvision shimmed: batched_nms = core.geometry.nms on boxes shrunk by 1 px (numpy)"
    spec = importlib.util.spec_from_file_location("facenet_detect_face", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        return None, f"cannot import {path}: {err}"
    return module, how


class _FacenetStyle(torch.nn.Module):
    """One of our nets returning what facenet-pytorch's does: (box, prob) or (box, landmarks, prob)."""

    def __init__(self, net: torch.nn.Module, name: str):
        super().__init__()
        self.net, self.name = net, name

    def forward(self, x):
        out = self.net(x)
        prob = torch.softmax(out.logits, dim=1)
        return (out.box, out.landmarks, prob) if self.name == "onet" else (out.box, prob)


def list_images(folder: Path, num: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.jpg"))
    return files[:num]


def main(cfg: BenchConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    paths = list_images(Path(cfg.images), cfg.num)
    if not paths:
        raise FileNotFoundError(f"no .jpg images under {cfg.images}")
    images = [im for im in (try_read_image_rgb(p) for p in paths) if im is not None]
    dcfg = cfg.detector
    ours = load_detector(cfg.weights, dcfg)
    clock = _NmsClock()
    facenet, how = (None, "not requested (--facenet PATH)") if not cfg.facenet else load_facenet_detect_face(cfg.facenet, clock)
    wrapped = {k: _FacenetStyle(v, k) for k, v in ours.nets.items()}

    def run_ours(image):
        return len(ours.detect(image))

    def run_facenet(image):
        with torch.no_grad():
            boxes, _ = facenet.detect_face(image, dcfg.min_face, wrapped["pnet"], wrapped["rnet"], wrapped["onet"],
                                           list(dcfg.thresholds), dcfg.scale_factor, dcfg.device)
        return len(boxes[0])

    run_ours(images[0])  # warm-up (allocator, oneDNN kernels)
    if facenet is not None:
        run_facenet(images[0])
    clock.seconds = 0.0
    t_ours = t_fn = 0.0
    n_ours = n_fn = 0
    for i, image in enumerate(images):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            if which == 0:
                start = time.perf_counter()
                n_ours += run_ours(image)
                t_ours += time.perf_counter() - start
            elif facenet is not None:
                start = time.perf_counter()
                n_fn += run_facenet(image)
                t_fn += time.perf_counter() - start
    n = len(images)
    sizes = np.array([im.shape[0] * im.shape[1] for im in images]) / 1e6
    print(f"{n} WIDER val images from {cfg.images} (mean {sizes.mean():.2f} Mpx), min face {cfg.detector.min_face:g}, "
          f"torch threads {torch.get_num_threads()}, weights {cfg.weights}")
    print(f"ours:           {n / t_ours:6.2f} images/s  ({t_ours / n:.3f} s/image, {n_ours} faces)")
    result = {"images": n, "ours_images_per_s": n / t_ours, "ours_s_per_image": t_ours / n}
    if facenet is not None:
        t_fn_no_nms = t_fn - clock.seconds
        print(f"facenet-pytorch: {n / t_fn:6.2f} images/s  ({t_fn / n:.3f} s/image, {n_fn} faces)   [{how}]")
        print(f"  without its batched_nms time ({clock.seconds / n:.3f} s/image): {n / t_fn_no_nms:6.2f} images/s")
        print(f"speed-up: {t_fn / t_ours:.2f}x  (vs facenet-pytorch without its NMS time: {t_fn_no_nms / t_ours:.2f}x)")
        result.update(facenet_images_per_s=n / t_fn, facenet_no_nms_images_per_s=n / t_fn_no_nms,
                      speedup=t_fn / t_ours, speedup_vs_no_nms=t_fn_no_nms / t_ours)
    else:
        print(f"facenet-pytorch: skipped ({how})")
    return result


def parse_args(argv=None) -> BenchConfig:
    return parse_config(BenchConfig, argv, prog="python -m benchmarks.bench_detector",
                        description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(run_stage(BenchConfig, main, parse=parse_args))
