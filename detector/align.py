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
``OUT``, and the source file's SHA-256 and ``device:inode:size:mtime_ns``) and one row with empty
face fields for an image without a face. Unreadable images are counted by reason and not listed;
an image too large for ``--min-face`` (its first pyramid level above the detector's bound) is
skipped and listed in ``summary.json``'s ``too_large`` with the smallest ``--min-face`` it allows.
The index is rewritten atomically every few seconds and at the end, and it is the record of what
is done: a rerun skips every image whose rows are in it, whose crops exist and whose file is the
one the rows were made from (the same stat, or else the same SHA-256: another folder's image of
the same relative name is done again), and redoes the rest (deleting first the crops the index
lists for them). ``OUT/settings.json`` records the settings and the SHA-256 of the detector's
files; a rerun with other settings or other weights files is refused unless ``--overwrite``,
which redoes every image. ``OUT`` must be apart from ``--images`` and the weights (neither
inside the other), and a folder with an index or crops but no ``settings.json`` was not written
here and is refused; so is an index or settings file this stage did not write. Bad input prints
one line and exits with code 2.
"""

from __future__ import annotations

import csv
import io
import json
import re
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
from core.imageio import ImageReadError, encode_image, read_image_rgb
from core.outputs import OutputError, check_output_apart, file_sha256, weights_folder
from core.stage import run_stage
from core.weights import weights_digests
from detector.cascade import Detections, DetectorConfig, PyramidTooLargeError, check_pyramid, load_detector

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
# The columns every index has had; the source file's identity came later (an index without it is
# redone, since its crops cannot be told to come from the files there now).
FACE_COLUMNS = ("source", "face", "x1", "y1", "x2", "y2", "score",
                *(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"), "crop")
SOURCE_COLUMNS = ("source_sha256", "source_stat")
INDEX_COLUMNS = (*FACE_COLUMNS, *SOURCE_COLUMNS)
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
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 or none, got {self.threads}")
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


class AlignFolderError(OutputError):
    """A file in the output folder that this stage did not write (a foreign or damaged index or
    settings file, crops without an index); ``str()`` is one line naming it."""


def _foreign(path: Path, why: str) -> AlignFolderError:
    return AlignFolderError(f"{path}: not written by detector.align ({why}); delete it or use another folder")


def _check_row(path: Path, line: int, row: dict) -> None:
    """A row's source must be a relative path inside the images folder and its crop the name this
    stage gives that face (so that redoing an image deletes nothing but its own crops)."""
    source, face, crop = row.get("source") or "", row.get("face") or "", row.get("crop") or ""
    parts = Path(source).parts
    if not source or Path(source).is_absolute() or ".." in parts:
        raise _foreign(path, f"line {line}: source {source!r} is not a path inside the images folder")
    if (face or crop) and not (face.isdigit() and crop == crop_name(source, int(face))):
        raise _foreign(path, f"line {line}: crop {crop!r} is not the crop name of face {face!r} of {source}")


def read_index(path: Path) -> dict[str, list[dict]]:
    """The rows of an index, per source image (empty when there is none). ``AlignFolderError`` for
    a file that is not such an index (another header, bytes that are not text, a crop path that is
    not the stage's own)."""
    if not path.is_file():
        return {}
    rows: dict[str, list[dict]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in FACE_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise _foreign(path, f"its header lacks {', '.join(missing[:3])}"
                                     f"{f' (+{len(missing) - 3} more)' if len(missing) > 3 else ''}")
            for row in reader:
                _check_row(path, reader.line_num, row)
                rows.setdefault(row["source"], []).append(row)
    except (UnicodeDecodeError, csv.Error) as err:
        raise _foreign(path, f"not a CSV text file: {err}") from None
    return rows


def read_settings(path: Path) -> dict | None:
    """The settings an earlier run recorded (None when there are none); ``AlignFolderError`` for a
    file that is not such a record."""
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _foreign(path, f"not JSON: {err}") from None
    if not isinstance(recorded, dict) or "align" not in recorded:
        what = type(recorded).__name__ if not isinstance(recorded, dict) else "an object without 'align'"
        raise _foreign(path, f"it holds {what}, not this stage's settings")
    return recorded


def source_identity(path: Path) -> tuple[str, str]:
    """``(sha256, "device:inode:size:mtime_ns")`` of an image file: what its rows record."""
    st = path.stat()
    return file_sha256(path), f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def same_source(rows: list[dict], path: Path) -> bool:
    """Whether ``path`` is the file ``rows`` were made from: the same stat (device, inode, size,
    mtime), or else the same SHA-256 (then the rows take the new stat). Rows that record no
    identity (an older index) are not."""
    digest = rows[0].get("source_sha256")
    if not digest:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    stat = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    if rows[0].get("source_stat") == stat:
        return True
    recorded_size = (rows[0].get("source_stat") or "").split(":")[2:3]
    if recorded_size and recorded_size[0] != str(st.st_size):
        return False
    if file_sha256(path) != digest:
        return False
    for row in rows:
        row["source_stat"] = stat
    return True


def detector_digests(cfg: AlignConfig) -> dict[str, str]:
    """sha256 of the files the detector is loaded from: the nets' ``.pt`` files or, for the onnx
    backend, the export's ``mtcnn.json`` (which records each ``.onnx`` file's, checked on loading)."""
    if cfg.backend == "onnx":
        from detector.onnx_backend import MANIFEST_NAME  # imports onnxruntime: only when asked for

        return {MANIFEST_NAME: file_sha256(Path(cfg.weights).expanduser() / MANIFEST_NAME)}
    return weights_digests(cfg.weights)


def check_own_folder(out: Path, sources: list[str]) -> None:
    """A folder without this stage's ``settings.json`` was not written by it: refuse one that holds
    an index, a summary or a file under a crop name that the images would get, rather than take it
    over (replace a user's files, or count another program's index as work done)."""
    if (out / SETTINGS_NAME).is_file() or not out.is_dir():
        return
    for name in (INDEX_NAME, SUMMARY_NAME):
        if (out / name).exists():
            raise AlignFolderError(f"{out / name} exists but {out} has no {SETTINGS_NAME}: it was not written by "
                                   f"detector.align; use another folder")
    for source in sources:
        path = Path(source)
        folder = out / path.parent
        if not folder.is_dir():
            continue
        pattern = re.compile(re.escape(path.stem) + r"_\d+\.png")
        taken = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))
        if taken:
            raise AlignFolderError(f"{taken[0]} exists and was not written by detector.align ({out} has no "
                                   f"{SETTINGS_NAME}): the crop of {source} would replace it; use another folder")


def write_index(path: Path, rows: dict[str, list[dict]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for source in sorted(rows):
        writer.writerows(rows[source])
    atomic_write_text(path, buf.getvalue())


def face_rows(source: str, dets: Detections, faces: list[int], identity: tuple[str, str] = ("", "")) -> list[dict]:
    """Index rows of the chosen faces of one image (one empty row when there is none), each with the
    source file's ``identity`` (``source_identity``)."""
    ident = dict(zip(SOURCE_COLUMNS, identity))
    if not faces:
        return [{"source": source, **{c: "" for c in FACE_COLUMNS[1:]}, **ident}]
    rows = []
    for k in faces:
        marks = dets.landmarks[k].reshape(-1)
        values = ["" if np.isnan(v) else f"{v:.2f}" for v in marks]
        rows.append({"source": source, "face": k, **dict(zip(INDEX_COLUMNS[2:6], (f"{v:.2f}" for v in dets.boxes[k]))),
                     "score": f"{dets.scores[k]:.6f}", **dict(zip(INDEX_COLUMNS[7:17], values)),
                     "crop": crop_name(source, k), **ident})
    return rows


def is_done(rows: list[dict] | None, out: Path, source: Path | None = None) -> bool:
    """Whether an image's rows are complete: crops on disk and, given the ``source`` file, made from it."""
    return (bool(rows) and all(not r["crop"] or (out / r["crop"]).is_file() for r in rows)
            and (source is None or same_source(rows, source)))


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
    check_output_apart(out, {"--images": images, "--weights": weights_folder(cfg.weights)})
    settings_path, index_path = out / SETTINGS_NAME, out / INDEX_NAME
    earlier = read_settings(settings_path)
    earlier_digests = (earlier or {}).pop("weights_sha256", None)
    if earlier is not None and not cfg.overwrite:
        # Runs from before every detector setting was recorded used the defaults of those not recorded.
        earlier = {**DetectorConfig().result_settings(), **earlier}
        if earlier != cfg.settings():
            differ = ", ".join(f"{k} {earlier.get(k)!r} there, {v!r} here" for k, v in cfg.settings().items()
                               if earlier.get(k) != v) or f"it records {sorted(set(earlier) - set(cfg.settings()))}"
            raise ValueError(f"{out} holds crops made with other settings ({differ}); pass --overwrite "
                             f"(make align) or use another folder")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    detector = load_detector(cfg.weights, cfg.detector, cfg.backend, cfg.threads)
    if cfg.align == "similarity" and "onet" not in detector.stages:
        raise ValueError(f"similarity alignment needs O-Net's landmarks; {cfg.weights} has no onet")
    digests = detector_digests(cfg)
    if earlier_digests is not None and earlier_digests != digests and not cfg.overwrite:
        changed = sorted(n for n in set(digests) | set(earlier_digests) if digests.get(n) != earlier_digests.get(n))
        raise ValueError(f"{out} holds crops made with other weights files than {cfg.weights}'s now "
                         f"({', '.join(changed)} differ); pass --overwrite (make align) or use another folder")
    everything = sources is None
    sources = list_images(images, exclude=out) if everything else sorted(set(sources))
    missing = [s for s in sources if not (images / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{images / missing[0]} does not exist ({len(missing)} of the {len(sources)} "
                                f"images asked for are missing)")
    check_crop_names(sources)
    check_own_folder(out, sources)
    earlier_rows = read_index(index_path)
    asked = set(sources)
    kept = {} if cfg.overwrite or everything else {s: r for s, r in earlier_rows.items() if s not in asked}
    rows = {**kept, **({} if cfg.overwrite else {s: earlier_rows[s] for s in sources
                                                   if is_done(earlier_rows.get(s), out, images / s)})}
    todo = [s for s in sources if s not in rows]
    atomic_write_json(settings_path, {**cfg.settings(), "weights_sha256": digests})
    unreadable: Counter = Counter()
    too_large: dict[str, str] = {}
    last_flush = time.monotonic()
    bar = tqdm(total=len(todo), unit="img", disable=not cfg.progress, file=sys.stderr)
    for start in range(0, len(todo), cfg.batch_images):
        batch, pictures = [], []
        for source in todo[start : start + cfg.batch_images]:
            for row in earlier_rows.get(source, []):  # redone from scratch: no crop of an earlier run stays
                if row["crop"]:
                    (out / row["crop"]).unlink(missing_ok=True)
            try:
                picture = read_image_rgb(images / source)
                check_pyramid(*picture.shape[:2], cfg.detector.min_face)
                batch.append((source, source_identity(images / source)))
                pictures.append(picture)
            except ImageReadError as err:
                unreadable[err.reason] += 1
                tqdm.write(f"unreadable: {err}", file=sys.stderr)
            except PyramidTooLargeError as err:  # skipped and listed, like an unreadable image; a rerun retries it
                too_large[source] = str(err)
                tqdm.write(f"too large: {images / source}: {err}", file=sys.stderr)
        for (source, identity), image, dets in zip(batch, pictures, detector.detect_batch(pictures)):
            crops = align_image(image, dets, cfg)
            for k, crop in crops.items():
                atomic_write_bytes(out / crop_name(source, k), encode_image(crop, ".png"))
            rows[source] = face_rows(source, dets, sorted(crops), identity)
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
        "too_large": too_large,
    }
    atomic_write_json(out / SUMMARY_NAME, {**summary, "settings": cfg.settings(), "weights_sha256": digests})
    large_note = (f", {len(too_large)} too large for --min-face {cfg.detector.min_face:g} (listed in {SUMMARY_NAME})"
                  if too_large else "")
    print(f"{summary['images']} images ({summary['done_before']} done before): {with_face} with a face, "
          f"{summary['without_face']} without, {sum(unreadable.values())} unreadable"
          f"{' (' + ', '.join(f'{n} {r}' for r, n in unreadable.items()) + ')' if unreadable else ''}"
          f"{large_note}; "
          f"{summary['crops']} crops -> {out}, index {index_path}")
    return summary


if __name__ == "__main__":
    sys.exit(run_stage(AlignConfig, main))
