"""Cut the detected faces out of a folder of images: ``make align IMAGES=folder ALIGN_OUT=folder``.

    python -m detector.align --images photos/ --out aligned/ [--weights shipped] [--largest]
        [--align margin|similarity] [--backend torch|onnx] [--min-face M] [--thresholds P R O]

Every image under ``--images`` (recursively; .jpg .jpeg .png .bmp, read in stored orientation) goes
through the cascade, in batches (``Detector.detect_batch``). Each face, or with ``--largest`` only
the one facenet's ``align_dataset_mtcnn.py`` keeps (largest box area minus twice the squared
distance of its centre from the image centre), is written as ``OUT/<folder>/<stem>_<k>.png``,
``k`` its rank among the image's detections (best score first):

* ``margin`` (default, facenet's recipe): the box grown by ``margin / 2`` pixels on each side,
  clipped to the image, cut at whole pixels (``floor``, as the cascade cuts its crops) and resized
  to ``image_size`` square;
* ``similarity``: the 5 landmarks mapped onto the 112x112 ArcFace template by the least-squares
  similarity (rotation, uniform scale, translation; never a reflection; Umeyama 1991) and the image
  warped with it (``cv2.warpAffine``, bilinear, black outside the image).

``OUT/index.csv`` has one row per face (source image relative to ``--images``, rank, box
``x1 y1 x2 y2`` (0-based, inclusive), score, the 10 landmark coordinates, crop path relative to
``OUT``) and one row with empty fields for an image without a face. Unreadable images are
counted by reason and not listed. The index is rewritten atomically every few seconds and at the
end, and it is the record of what is done: a rerun skips every image whose rows are in it and
whose crops exist, and redoes the rest (deleting first the crops the index lists for them).
``OUT/settings.json`` records the settings; a rerun with other settings is refused unless
``--overwrite``, which redoes every image. Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.cli import parse_config
from core.imageio import ImageReadError, encode_image, read_image_rgb
from detector.cascade import Detections, DetectorConfig, load_detector

EXIT_BAD_INPUT = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
INDEX_NAME = "index.csv"
SETTINGS_NAME = "settings.json"
SUMMARY_NAME = "summary.json"  # written last: the make target of a finished run
ALIGN_MODES = ("margin", "similarity")
# The standard 112x112 ArcFace (insightface) positions of the 5 landmarks, x y: left eye, right
# eye, nose, left and right mouth corner.
ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
])
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
INDEX_COLUMNS = ("source", "face", "x1", "y1", "x2", "y2", "score",
                 *(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"), "crop")
# Seconds between rewrites of the index while running (what an interrupted run keeps).
FLUSH_SECONDS = 10.0


@dataclass(frozen=True)
class AlignConfig:
    images: str
    """Folder of images, searched recursively (.jpg .jpeg .png .bmp)."""
    out: str
    """Output folder: the crops (same sub-folders as the images), index.csv, settings.json."""
    weights: str = "shipped"
    """shipped | original:PATH | a checkpoint folder; with --backend onnx, a folder written by make export."""
    backend: str = "torch"
    """torch or onnx (onnxruntime on an export folder)."""
    threads: int | None = None
    """CPU threads: torch's (the cascade's own tensor work, and the torch nets) and onnxruntime's
    intra-op threads per net. None: the libraries' defaults (one per core)."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device for the torch backend, ...)."""
    largest: bool = False
    """Only one face per image: the largest, most central (facenet's choice)."""
    align: str = field(default="margin", metadata={"choices": ALIGN_MODES})
    """margin: the box plus a margin, resized to image_size; similarity: 5-point warp onto the
    ArcFace template, scaled to image_size (needs O-Net's landmarks)."""
    margin: int = 32
    """margin mode: pixels added around the box in total, half on each side (facenet's 32)."""
    image_size: int | None = None
    """Side of the square crops; None: 160 in margin mode (facenet's), 112 in similarity mode
    (ArcFace's; another size scales the template with it)."""
    batch_images: int = 8
    """Images per detect_batch call (their R-Net and O-Net crops share batches)."""
    overwrite: bool = False
    """Redo every image, also when OUT holds a run with other settings."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {self.align!r}")
        if self.margin < 0 or (self.image_size is not None and self.image_size < 1) or self.batch_images < 1:
            raise ValueError("margin must be >= 0, image_size and batch_images >= 1")

    @property
    def crop_size(self) -> int:
        """``image_size``, or the mode's default side."""
        return self.image_size or (ARCFACE_SIZE if self.align == "similarity" else 160)

    def settings(self) -> dict:
        """What decides the crops (a rerun with other values is refused without --overwrite)."""
        keep = ("weights", "backend", "largest", "align", "margin")
        return {**{k: v for k, v in asdict(self).items() if k in keep}, "image_size": self.crop_size,
                **self.detector.result_settings()}


# -- the maths -------------------------------------------------------------------------------------


def similarity_transform(src, dst) -> np.ndarray:
    """The 2x3 matrix ``[s R | t]`` minimising ``sum |s R src_i + t - dst_i|^2`` over rotations R
    (never a reflection), scales s > 0 and translations t: Umeyama (1991), in 2-D."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_src, dst - mu_dst
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / a.var(axis=0).sum()
    return np.concatenate([scale * rotation, (mu_dst - scale * rotation @ mu_src)[:, None]], axis=1)


def margin_box(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The integer inclusive box that ``margin`` mode cuts: ``box`` grown by ``margin / 2`` on each
    side, at ``floor`` of its corners, clipped to the image (at least one pixel)."""
    x1, y1, x2, y2 = np.floor(np.asarray(box, dtype=np.float64)[:4] + np.array([-1, -1, 1, 1]) * margin / 2)
    x1, y1 = min(max(int(x1), 0), width - 1), min(max(int(y1), 0), height - 1)
    return x1, y1, min(max(int(x2), x1), width - 1), min(max(int(y2), y1), height - 1)


def largest_central(boxes, width: int, height: int) -> int:
    """Index of facenet's one face per image: the largest ``(x2 - x1) * (y2 - y1)`` minus twice the
    squared distance of the box centre from the image centre (``align_dataset_mtcnn.py``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    dx = (b[:, 0] + b[:, 2]) / 2 - (width - 1) / 2
    dy = (b[:, 1] + b[:, 3]) / 2 - (height - 1) / 2
    return int(np.argmax(area - 2.0 * (dx**2 + dy**2)))


def margin_crop(image: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """``margin`` mode's crop of one face, resized to ``size`` square (area averaging when
    shrinking, which does not alias; bilinear when enlarging)."""
    x1, y1, x2, y2 = margin_box(box, margin, image.shape[1], image.shape[0])
    crop = image[y1 : y2 + 1, x1 : x2 + 1]
    shrink = crop.shape[0] >= size and crop.shape[1] >= size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def similarity_crop(image: np.ndarray, landmarks, size: int = ARCFACE_SIZE) -> np.ndarray:
    """``similarity`` mode's ``size`` square crop: the landmarks (5, 2) warped onto ``ARCFACE_TEMPLATE``
    scaled by ``size / 112`` (the template's pixel centres scale about the corner, as a resize does)."""
    template = ARCFACE_TEMPLATE if size == ARCFACE_SIZE else (ARCFACE_TEMPLATE + 0.5) * (size / ARCFACE_SIZE) - 0.5
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -- the folder ------------------------------------------------------------------------------------


def list_images(folder: Path, exclude: Path | None = None) -> list[str]:
    """Paths (posix, relative to ``folder``) of its images, sorted; nothing under ``exclude``."""
    found = []
    for path in folder.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if exclude is not None and path.resolve().is_relative_to(exclude.resolve()):
                continue
            found.append(path.relative_to(folder).as_posix())
    return sorted(found)


def crop_name(source: str, face: int) -> str:
    path = Path(source)
    return (path.parent / f"{path.stem}_{face}.png").as_posix()


def check_crop_names(sources: list[str]) -> None:
    seen: dict[str, str] = {}
    for source in sources:
        key = crop_name(source, 0)
        if key in seen:
            raise ValueError(f"{seen[key]} and {source} would share crop names ({key}); rename one")
        seen[key] = source


def read_index(path: Path) -> dict[str, list[dict]]:
    """The rows of an index, per source image (empty when there is none)."""
    if not path.is_file():
        return {}
    rows: dict[str, list[dict]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["source"], []).append(row)
    return rows


def write_index(path: Path, rows: dict[str, list[dict]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for source in sorted(rows):
        writer.writerows(rows[source])
    atomic_write_text(path, buf.getvalue())


def face_rows(source: str, dets: Detections, faces: list[int]) -> list[dict]:
    """Index rows of the chosen faces of one image (one empty row when there is none)."""
    if not faces:
        return [{"source": source, **{c: "" for c in INDEX_COLUMNS[1:]}}]
    rows = []
    for k in faces:
        marks = dets.landmarks[k].reshape(-1)
        values = ["" if np.isnan(v) else f"{v:.2f}" for v in marks]
        rows.append({"source": source, "face": k, **dict(zip(INDEX_COLUMNS[2:6], (f"{v:.2f}" for v in dets.boxes[k]))),
                     "score": f"{dets.scores[k]:.6f}", **dict(zip(INDEX_COLUMNS[7:17], values)),
                     "crop": crop_name(source, k)})
    return rows


def is_done(rows: list[dict] | None, out: Path) -> bool:
    return bool(rows) and all(not r["crop"] or (out / r["crop"]).is_file() for r in rows)


def align_image(image: np.ndarray, dets: Detections, cfg: AlignConfig) -> dict[int, np.ndarray]:
    """The crops of one image's chosen faces, by rank."""
    if not len(dets):
        return {}
    height, width = image.shape[:2]
    faces = [largest_central(dets.boxes, width, height)] if cfg.largest else range(len(dets))
    if cfg.align == "similarity":
        return {k: similarity_crop(image, dets.landmarks[k], cfg.crop_size) for k in faces}
    return {k: margin_crop(image, dets.boxes[k], cfg.margin, cfg.crop_size) for k in faces}


def main(cfg: AlignConfig, sources: list[str] | None = None) -> dict:
    """Align every image of ``cfg.images``, or only ``sources`` (paths relative to it, which must
    exist; the index keeps the other images' rows), and write ``summary.json`` last; returns the
    summary. FileNotFoundError / ValueError on bad input."""
    images, out = Path(cfg.images), Path(cfg.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    settings_path, index_path = out / SETTINGS_NAME, out / INDEX_NAME
    if settings_path.is_file() and not cfg.overwrite:
        # Runs from before every detector setting was recorded used the defaults of those not recorded.
        earlier = {**DetectorConfig().result_settings(), **json.loads(settings_path.read_text())}
        if earlier != cfg.settings():
            raise ValueError(f"{out} holds crops made with other settings ({earlier}); pass --overwrite or "
                             f"another folder")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    detector = load_detector(cfg.weights, cfg.detector, cfg.backend, cfg.threads)
    if cfg.align == "similarity" and "onet" not in detector.stages:
        raise ValueError(f"similarity alignment needs O-Net's landmarks; {cfg.weights} has no onet")
    everything = sources is None
    sources = list_images(images, exclude=out) if everything else sorted(set(sources))
    missing = [s for s in sources if not (images / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{images / missing[0]} does not exist ({len(missing)} of the {len(sources)} "
                                f"images asked for are missing)")
    check_crop_names(sources)
    earlier_rows = read_index(index_path)
    asked = set(sources)
    kept = {} if cfg.overwrite or everything else {s: r for s, r in earlier_rows.items() if s not in asked}
    rows = {**kept, **({} if cfg.overwrite else {s: earlier_rows[s] for s in sources if is_done(earlier_rows.get(s), out)})}
    todo = [s for s in sources if s not in rows]
    atomic_write_json(settings_path, cfg.settings())
    unreadable: Counter = Counter()
    last_flush = time.monotonic()
    bar = tqdm(total=len(todo), unit="img", disable=not cfg.progress, file=sys.stderr)
    for start in range(0, len(todo), cfg.batch_images):
        batch, pictures = [], []
        for source in todo[start : start + cfg.batch_images]:
            for row in earlier_rows.get(source, []):  # redone from scratch: no crop of an earlier run stays
                if row["crop"]:
                    (out / row["crop"]).unlink(missing_ok=True)
            try:
                pictures.append(read_image_rgb(images / source))
                batch.append(source)
            except ImageReadError as err:
                unreadable[err.reason] += 1
                tqdm.write(f"unreadable: {err}", file=sys.stderr)
        for source, image, dets in zip(batch, pictures, detector.detect_batch(pictures)):
            crops = align_image(image, dets, cfg)
            for k, crop in crops.items():
                atomic_write_bytes(out / crop_name(source, k), encode_image(crop, ".png"))
            rows[source] = face_rows(source, dets, sorted(crops))
        bar.update(len(todo[start : start + cfg.batch_images]))
        if time.monotonic() - last_flush > FLUSH_SECONDS:
            write_index(index_path, rows)
            last_flush = time.monotonic()
    bar.close()
    write_index(index_path, rows)
    rows_asked = {s: r for s, r in rows.items() if s in asked}
    with_face = sum(1 for r in rows_asked.values() if r[0]["crop"])
    summary = {
        "images": len(sources),
        "done_before": len(sources) - len(todo),
        "with_face": with_face,
        "without_face": len(rows_asked) - with_face,
        "crops": sum(1 for r in rows_asked.values() for row in r if row["crop"]),
        "unreadable": dict(unreadable),
    }
    atomic_write_json(out / SUMMARY_NAME, {**summary, "settings": cfg.settings()})
    print(f"{summary['images']} images ({summary['done_before']} done before): {with_face} with a face, "
          f"{summary['without_face']} without, {sum(unreadable.values())} unreadable"
          f"{' (' + ', '.join(f'{n} {r}' for r, n in unreadable.items()) + ')' if unreadable else ''}; "
          f"{summary['crops']} crops -> {out}, index {index_path}")
    return summary


if __name__ == "__main__":
    config = parse_config(AlignConfig, prog="python -m detector.align", description=__doc__.split("\n\n")[0])
    try:
        main(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
