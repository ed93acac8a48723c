"""Detect faces in one image: ``make detect IMG=photo.jpg [WEIGHTS=...] [BACKEND=torch|onnx] [DETECT_OUT=folder]``.

    python -m detector.detect --image photo.jpg --weights original:weights/original --out out/
        [--min-face M] [--thresholds P R O] [--device cpu] [--backend torch|onnx] [--threads N]

(the cascade's settings, ``--min-face``, ``--thresholds``, ``--device`` and the rest, are a nested
``DetectorConfig``; ``--help`` lists them). ``--backend onnx`` runs the files of ``make export`` (``--weights`` is that folder) in
onnxruntime.

Writes ``OUT/<stem>.json`` = ``{"faces": [{"box": [x1, y1, x2, y2], "score": s,
"landmarks": [[x, y] x 5]}]}`` (0-based inclusive pixel coordinates; landmarks are null when the
cascade ended before a net with a landmark head) and ``OUT/<stem>.jpg``, the image with boxes,
scores and landmark dots; both atomically (temporary file + ``os.replace``). An output folder that
is, holds or lies inside the image or the weights is refused, and so is an output name taken by a
file this stage did not write (its JSON has only ``faces``, its JPEG a comment naming the stage;
a rerun replaces them).
A missing or unreadable image, missing weights or an unknown backend prints one line and exits
with code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from core.atomic import atomic_write_bytes
from core.cli import parse_config
from core.imageio import ImageReadError, encode_image, read_image_rgb
from core.outputs import check_names_free, check_output_apart, weights_folder
from core.stage import error_line, run_stage
from detector.cascade import Detections, DetectorConfig, check_pyramid, load_detector

EXIT_BAD_INPUT = 2
PROG = "python -m detector.detect"


@dataclass(frozen=True)
class DetectConfig:
    image: str
    """The photo (JPEG, PNG, ...), read in its stored orientation."""
    weights: str
    """shipped | original:PATH | a checkpoint folder with pnet.pt ...; with --backend onnx, a folder
    written by make export."""
    out: str
    """Output folder for <stem>.json and <stem>.jpg."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device for the torch backend, ...)."""
    backend: str = "torch"
    """torch (the PyTorch nets of --weights) or onnx (onnxruntime on an export folder, make export)."""
    threads: int | None = None
    """CPU threads: torch's (the cascade's own tensor work, and the torch nets) and onnxruntime's
    intra-op threads per net. None: the libraries' defaults (one per core)."""

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 or none, got {self.threads}")


STAGE = "detector.detect"
# The annotated JPEG's comment segment (after the start-of-image marker): how a rerun knows the
# <stem>.jpg it would replace is this stage's own, not a photo of the same name.
JPEG_MARK = b"written by detector.detect"
_COM = b"\xff\xd8\xff\xfe" + (len(JPEG_MARK) + 2).to_bytes(2, "big") + JPEG_MARK


def mark_jpeg(jpg: bytes) -> bytes:
    """``jpg`` with ``JPEG_MARK`` as a comment segment right after its start-of-image marker."""
    return _COM + jpg[2:]


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is an output of this stage: a JPEG carrying ``JPEG_MARK``, or a JSON file
    holding exactly ``{"faces": [{"box", "score", "landmarks"}, ...]}``."""
    try:
        if path.suffix == ".jpg":
            with open(path, "rb") as f:
                return f.read(len(_COM)) == _COM
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and list(doc) == ["faces"] and isinstance(doc["faces"], list)
            and all(isinstance(f, dict) and set(f) == {"box", "score", "landmarks"} for f in doc["faces"]))


def check_outputs(cfg: DetectConfig) -> None:
    """Refuse an output folder that is, holds or lies inside the image or the weights, and outputs
    that would take the name of a file this stage did not write (``holiday.png`` beside a
    ``holiday.jpg`` that is not an annotated image)."""
    check_output_apart(cfg.out, {"--image": cfg.image, "--weights": weights_folder(cfg.weights)})
    stem = Path(cfg.image).stem
    check_names_free(cfg.out, [f"{stem}.json", f"{stem}.jpg"], STAGE, is_own_output, avoid=[cfg.image])


def detections_to_json(dets: Detections) -> dict:
    faces = []
    for box, score, marks in zip(dets.boxes, dets.scores, dets.landmarks):
        faces.append({
            "box": [round(float(v), 2) for v in box],
            "score": round(float(score), 6),
            "landmarks": None if np.isnan(marks).any() else [[round(float(x), 2), round(float(y), 2)] for x, y in marks],
        })
    return {"faces": faces}


def draw_detections(image_rgb: np.ndarray, dets: Detections) -> np.ndarray:
    """A BGR copy of the image with each face's box, score and landmark dots drawn on it."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    thick = max(1, round(max(canvas.shape[:2]) / 500))
    for box, score, marks in zip(dets.boxes, dets.scores, dets.landmarks):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thick)
        cv2.putText(canvas, f"{score:.3f}", (x1, max(y1 - 3 * thick, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 0), thick, cv2.LINE_AA)
        if not np.isnan(marks).any():
            for x, y in marks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * thick, (0, 0, 255), -1)
    return canvas


def main(cfg: DetectConfig) -> int:
    try:
        image = read_image_rgb(cfg.image)
    except ImageReadError as err:
        print(error_line(PROG, f"cannot read image {err.path}: {err.reason}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        detector = load_detector(cfg.weights, cfg.detector, cfg.backend, cfg.threads)
        check_outputs(cfg)  # (OutputError is a ValueError)
        check_pyramid(*image.shape[:2], cfg.detector.min_face)  # a --min-face too small for this image's size
    except (FileNotFoundError, ValueError) as err:
        print(error_line(PROG, err), file=sys.stderr)
        return EXIT_BAD_INPUT
    dets = detector.detect(image)
    out = Path(cfg.out)
    stem = Path(cfg.image).stem
    text = (json.dumps(detections_to_json(dets), indent=1) + "\n").encode()
    atomic_write_bytes(out / f"{stem}.json", text)
    ok, jpg = cv2.imencode(".jpg", draw_detections(image, dets))
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    atomic_write_bytes(out / f"{stem}.jpg", mark_jpeg(jpg.tobytes()))
    print(f"{len(dets)} face(s) -> {out / (stem + '.json')}, {out / (stem + '.jpg')}")
    return 0


def parse_args(argv=None) -> DetectConfig:
    return parse_config(DetectConfig, argv, prog="python -m detector.detect", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(run_stage(DetectConfig, main, parse=parse_args))
