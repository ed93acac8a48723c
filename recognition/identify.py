"""Name every face in photos against a gallery: ``make identify IMAGES=<files or a folder>``.

    python -m recognition.identify --images group.jpg more/ --gallery build/gallery --out build/identify
        [--threshold T] [--embedder shipped] [--weights shipped] [--min-face M]

Every face of each image (not only the largest) is detected, aligned as the gallery was enrolled
(``--align``, ``--image-size``: the embedder's training build), embedded with its mirror image
added, all of an image's faces in one batch, and searched in the gallery (exact,
``Gallery.best_identities``): the nearest person, its squared distance, and the runner-up (the
nearest *other* person). A face whose nearest person is at ``--threshold`` or farther is
``unknown``. The threshold is ``--threshold`` (make ``THRESHOLD=``), else the embedder's calibrated
one (``make calibrate``: chosen at a target FAR on a named pairs file, stored in the weights file),
else ``recognition.threshold.UNCALIBRATED_THRESHOLD`` (1.35) with a warning naming ``make
calibrate`` (``recognition.threshold``); which one, and whence, is printed.

Writes, per image, ``OUT/<stem>.json`` (each face's box, score, landmarks, identity, distance,
best match and runner-up) and ``OUT/<stem>.jpg`` (the photo with boxes and names), and
``OUT/identify.csv`` with one row per face of every image (one row with empty face fields for an
image without a face). An image without a face is counted, an unreadable one is counted and
named in one line and has no output. A run resumes: an image whose ``<stem>.jpg`` and then
``<stem>.json`` an earlier run wrote, for the same image bytes (SHA-256), gallery file, embedder,
threshold and detector settings (the JSON's ``run``), the JSON naming the JPEG's SHA-256, is
answered from them rather than detected again. A gallery of another embedder, detector or
alignment, an empty gallery and a threshold outside (0, 4) are one line and exit code 2; ``OUT`` must be apart
from the images, the gallery and the weights, and names taken by files this stage did not write are
refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.imageio import ImageReadError, read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, file_sha256, weights_folder
from core.stage import stage_cli
from detector.align import IMAGE_SUFFIXES, AlignConfig, align_image, list_images
from detector.cascade import Detections, load_detector
from recognition.embedder import embed, load_embedder
from recognition.inputs import FaceCrops
from recognition.threshold import check_threshold, threshold_lines
from recognition.enroll import embedder_input
from recognition.gallery import (Gallery, GalleryError, detector_fingerprint, embedder_fingerprint,
                                 fingerprint_problem, gallery_path, load_gallery)

PROG = "python -m recognition.identify"
STAGE = "recognition.identify"
UNKNOWN = "unknown"
CSV_NAME = "identify.csv"
CSV_COLUMNS = ("image", "face", "x1", "y1", "x2", "y2", "score", "identity", "distance", "best", "best_source",
               "runner_up", "runner_up_distance")
# The annotated JPEG's comment segment: how a rerun tells its own <stem>.jpg from a photo of that name.
JPEG_MARK = b"written by recognition.identify"
_COM = b"\xff\xd8\xff\xfe" + (len(JPEG_MARK) + 2).to_bytes(2, "big") + JPEG_MARK


@dataclass(frozen=True)
class IdentifyConfig:
    images: tuple[str, ...]
    """Image files, or folders searched recursively (.jpg .jpeg .png .bmp)."""
    gallery: str
    """The gallery: gallery.npz, or the folder holding it (make enroll)."""
    out: str
    """Output folder: <stem>.json and <stem>.jpg per image, identify.csv."""
    threshold: float | None = None
    """Squared distance at or above which a face is unknown, in (0, 4). None: the embedder's calibrated
    threshold (make calibrate), else 1.35 with a warning."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt: the gallery's."""
    crops: FaceCrops = field(default_factory=FaceCrops)
    """The detector and the alignment of the crops (--weights, --min-face, ..., --align, --image-size, --margin)."""
    flip: bool = True
    """Add the mirror image's embedding: as the gallery was enrolled."""
    batch_images: int = 8
    """Images per detect_batch call."""
    threads: int | None = None
    """CPU threads of torch; None: one per core."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.threshold is not None:
            check_threshold(self.threshold, "--threshold")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 or none, got {self.threads}")
        if self.batch_images < 1 or self.crops.image_size < 1 or self.crops.margin < 0:
            raise ValueError("--batch-images and --image-size must be >= 1, --margin >= 0")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(".", self.out, largest=False, progress=False)


def list_inputs(entries) -> list[Path]:
    """The images named: each file as given, each folder's images (recursively, sorted)."""
    found = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            found += [path / s for s in list_images(path)]
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"--images {entry} does not exist")
    if not found:
        raise FileNotFoundError(f"--images {' '.join(map(str, entries))} holds no image ({' '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems and stems[path.stem] != path:
            raise ValueError(f"{stems[path.stem]} and {path} would share the outputs {path.stem}.json and "
                             f"{path.stem}.jpg; rename one or identify them into two folders")
        stems[path.stem] = path
    return list(dict.fromkeys(found))


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is this stage's: a JPEG carrying ``JPEG_MARK``, a JSON naming the stage, its CSV."""
    try:
        if path.suffix == ".jpg":
            with open(path, "rb") as f:
                return f.read(len(_COM)) == _COM
        if path.suffix == ".csv":
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\n") == ",".join(CSV_COLUMNS)
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("stage") == STAGE


def name_faces(gallery: Gallery, vectors: np.ndarray, threshold: float) -> list[dict]:
    """Each vector's best person (``unknown`` at ``threshold`` or farther), distance and runner-up."""
    found = gallery.best_identities(vectors, k=2)
    named = []
    for idx, dist, who in zip(found.indices, found.distances, found.identities):
        second = idx[1] >= 0
        named.append({"identity": str(who[0]) if dist[0] < threshold else UNKNOWN, "distance": round(float(dist[0]), 6),
                      "best": str(who[0]), "best_source": str(gallery.sources[idx[0]]),
                      "runner_up": str(who[1]) if second else None,
                      "runner_up_distance": round(float(dist[1]), 6) if second else None})
    return named


def face_records(dets: Detections, faces: list[int], names: list[dict]) -> list[dict]:
    out = []
    for k, named in zip(faces, names):
        marks = dets.landmarks[k]
        out.append({"face": k, "box": [round(float(v), 2) for v in dets.boxes[k]], "score": round(float(dets.scores[k]), 6),
                    "landmarks": None if np.isnan(marks).any() else [[round(float(x), 2), round(float(y), 2)]
                                                                       for x, y in marks], **named})
    return out


def draw_names(image_rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A BGR copy of the image with each face's box and name (green: known, red: unknown)."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    thick = max(1, round(max(canvas.shape[:2]) / 500))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        colour = (0, 0, 255) if face["identity"] == UNKNOWN else (0, 200, 0)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(canvas, f"{face['identity']} {face['distance']:.2f}", (x1, max(y1 - 3 * thick, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick, cv2.LINE_AA)
    return canvas


def csv_rows(image: str, faces: list[dict]) -> list[dict]:
    if not faces:
        return [{"image": image, **{c: "" for c in CSV_COLUMNS[1:]}}]
    return [{"image": image, "face": f["face"], **dict(zip(CSV_COLUMNS[2:6], f["box"])), "score": f["score"],
             **{c: "" if f[c] is None else f[c] for c in CSV_COLUMNS[7:]}} for f in faces]


def run_settings(cfg: IdentifyConfig, gallery_file: Path, embedder, threshold: float) -> dict:
    """What decides an image's answer besides its bytes: an earlier run's <stem>.json with these
    (and the image's SHA-256) is reused rather than redone."""
    return {"gallery_sha256": file_sha256(gallery_file), "embedder_sha256": embedder_fingerprint(embedder)["sha256"],
            "threshold": threshold, "flip": cfg.flip, "crops": asdict(cfg.crops)}


def earlier_answer(out: Path, image_path: Path, image_sha256: str, settings: dict) -> list[dict] | None:
    """The faces an earlier run of the same settings wrote for this image, else None. Each output is
    written atomically, the JPEG first and then the JSON naming its SHA-256, so a JSON whose JPEG
    is missing or another run's is not an answer."""
    json_path, jpg_path = out / f"{image_path.stem}.json", out / f"{image_path.stem}.jpg"
    try:
        doc = json.loads(json_path.read_text())
        if not isinstance(doc, dict) or doc.get("stage") != STAGE or doc.get("image") != str(image_path) \
                or doc.get("image_sha256") != image_sha256 or doc.get("run") != settings:
            return None
        return doc.get("faces") if doc.get("jpg_sha256") == file_sha256(jpg_path) else None
    except (OSError, ValueError):
        return None


def main(cfg: IdentifyConfig) -> dict:
    """Identify the faces of ``cfg.images``; returns the summary. FileNotFoundError, ValueError
    (GalleryError, OutputError), FolderLockedError on bad input."""
    images = list_inputs(cfg.images)
    path = gallery_path(cfg.gallery)
    out = Path(cfg.out)
    check_output_apart(out, {"--images": list(cfg.images), "--gallery": path, "--weights": weights_folder(cfg.crops.weights),
                             "--embedder": embedder_input(cfg.embedder)})
    check_names_free(out, [CSV_NAME, *(n for p in images for n in (f"{p.stem}.json", f"{p.stem}.jpg"))], STAGE,
                     is_own_output, avoid=images)
    gallery = load_gallery(path)
    if not len(gallery):
        raise GalleryError(f"gallery {path} holds no face: enroll some (make enroll GALLERY=<root>/<identity>/<image>)")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    embedder = load_embedder(cfg.embedder, cfg.crops.detector.device)
    detector = load_detector(cfg.crops.weights, cfg.crops.detector)
    align_cfg = cfg.align_config()
    problem = fingerprint_problem(gallery.meta, embedder_fingerprint(embedder),
                                  detector_fingerprint(cfg.crops.weights, align_cfg, cfg.flip))
    if problem:
        raise GalleryError(f"gallery {path} {problem}; identify with the gallery's (--embedder, --weights, --align, "
                           f"--image-size as enrolled) or enroll it again with these")
    threshold, source, lines = threshold_lines(cfg.threshold, embedder.record)
    settings = json.loads(json.dumps(run_settings(cfg, path, embedder, threshold)))  # as a JSON file reads back
    print(f"{lines[0]}; gallery {path}: {len(gallery)} faces of {len(gallery.people)} people", *lines[1:], sep="\n",
          file=sys.stderr)
    counts: Counter = Counter()
    answers: dict[Path, list[dict]] = {}  # each image read, its faces
    with folder_lock(out, PROG):
        bar = tqdm(total=len(images), unit="img", disable=not cfg.progress, file=sys.stderr)
        for start in range(0, len(images), cfg.batch_images):
            batch, pictures, digests = [], [], {}
            for image_path in images[start : start + cfg.batch_images]:
                try:
                    digests[image_path] = file_sha256(image_path)
                except OSError as err:
                    counts["unreadable"] += 1
                    tqdm.write(f"unreadable: {image_path}: {err.strerror or err}", file=sys.stderr)
                    continue
                found = earlier_answer(out, image_path, digests[image_path], settings)
                if found is not None:
                    counts["reused"] += 1
                    answers[image_path] = found
                    continue
                try:
                    pictures.append(read_image_rgb(image_path))
                    batch.append(image_path)
                except ImageReadError as err:
                    counts["unreadable"] += 1
                    tqdm.write(f"unreadable: {err}", file=sys.stderr)
            for image_path, picture, dets in zip(batch, pictures, detector.detect_batch(pictures)):
                crops = align_image(picture, dets, align_cfg)
                faces = sorted(crops)
                names = name_faces(gallery, embed(embedder, [crops[k] for k in faces], flip=cfg.flip),
                                   threshold) if faces else []
                found = face_records(dets, faces, names)
                ok, jpg = cv2.imencode(".jpg", draw_names(picture, found))
                annotated = _COM + jpg.tobytes()[2:]
                atomic_write_bytes(out / f"{image_path.stem}.jpg", annotated)
                atomic_write_json(out / f"{image_path.stem}.json", {
                    "stage": STAGE, "image": str(image_path), "image_sha256": digests[image_path],
                    "jpg_sha256": hashlib.sha256(annotated).hexdigest(), "threshold": threshold, "run": settings,
                    "faces": found})
                answers[image_path] = found
            bar.update(len(images[start : start + cfg.batch_images]))
        bar.close()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for p in images if p in answers for row in csv_rows(str(p), answers[p]))
        atomic_write_text(out / CSV_NAME, buf.getvalue())
    every_face = [f for found in answers.values() for f in found]
    summary = {"images": len(images), "read": len(answers), "unreadable": counts["unreadable"],
               "without_face": sum(not found for found in answers.values()), "faces": len(every_face),
               "unknown": sum(f["identity"] == UNKNOWN for f in every_face), "reused": counts["reused"],
               "threshold": threshold, "threshold_source": source}
    reused = f", {summary['reused']} answered by an earlier run" if summary["reused"] else ""
    print(f"{summary['faces']} faces in {summary['read']} of {len(images)} images ({summary['unknown']} unknown, "
          f"{summary['without_face']} images without a face, {summary['unreadable']} unreadable{reused}) -> "
          f"{out / CSV_NAME}")
    return summary


cli = stage_cli(IdentifyConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
