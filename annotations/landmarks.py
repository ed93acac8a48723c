"""5-point facial landmark lists: parsers into one pandas table, the CNN_FacePoint writer, and the
held-out part of a list.

A library module (no command of its own): landmark sample generation, ``annotations.stats`` and
the landmark evaluation read landmark lists through ``load_landmarks``; the demo builder writes
its list with ``write_facepoint`` (``parse_facepoint`` reads back what it wrote, to 2 decimals).

Two formats are read:

* CNN_FacePoint's ``trainImageList.txt`` (``parse_facepoint``), one face per line, the box in
  the order ``x1 x2 y1 y2`` (sic) and Windows paths::

      lfw_5590\\Aaron_Eckhart_0001.jpg 27.20 51.84 29.76 54.40 34.32 34.80 47.28 36.24 ...

* CelebA's ``list_bbox_celeba.txt`` + ``list_landmarks_celeba.txt`` (``parse_celeba``), each a
  count line, a header line and one line per image, joined on the image id.

Both become ``LandmarkAnnotations.faces`` with columns ``image`` (forward slashes, relative to
``images_root``), ``image_index`` (position of the record in the list, dropped ones counted),
``x1 y1 x2 y2`` (float face box) and ``LANDMARK_COLUMNS`` (float pixels). Faces whose annotation
cannot be right are dropped and counted, each under one reason, tested in this order:

* ``degenerate``: ``x2 <= x1`` or ``y2 <= y1``;
* ``landmarks_outside_box``: a point lies farther outside the box than half the box's width
  (for x) or height (for y); real landmarks sit inside or near the box, so such a line is broken;
* ``points_not_distinct``: two of the five points closer than ``MIN_POINT_GAP`` of the box's
  side (all five the same, say): the face is not annotated;
* ``eyes_below_mouth``: an eye not above both mouth corners (image y grows downward).

A list where most faces (of those with a proper box) fail these three checks is not a 5-point list
in this layout but data that parses and means something else: it is refused (``AnnotationError``),
naming the likely layout (``x1..x5 y1..y5``, ``(y, x) pairs``, the same point five times) when
reading the values so makes most faces pass. On the shared ``trainImageList.txt`` (7,650 faces)
the checks drop none.

The parsers read no image. ``faces_inside_images`` adds the check that needs the images' sizes
(their headers only): a face whose box lies mostly outside its image (``mostly_outside_image``,
``annotations.visibility``) would give crops of the zero padding around the image, all black.
Sample generation applies it after the held-out split, so that the split stays a function of the
list alone.

``landmark_holdout_mask`` picks the faces every training build leaves out, for evaluation.
"""

from __future__ import annotations

import math
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from annotations.errors import AnnotationError, check_unique, numbered_lines
from annotations.visibility import MIN_VISIBLE_FRACTION, visible_fraction
from core.atomic import atomic_write_text
from core.imageio import image_size

LANDMARK_COLUMNS = ("lex", "ley", "rex", "rey", "nx", "ny", "lmx", "lmy", "rmx", "rmy")
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
DROP_REASONS = ("degenerate", "landmarks_outside_box", "points_not_distinct", "eyes_below_mouth")
# The reasons that say the points are not a face's five landmarks (``degenerate`` is the box's).
POINT_REASONS = DROP_REASONS[1:]
# Two landmarks closer than this fraction of the box's larger side are one point annotated twice
# (the shared list's closest pair is 5% of its box).
MIN_POINT_GAP = 0.01
# Other layouts of the ten numbers, tried when most faces fail: which value goes to which column.
OTHER_LAYOUTS = {
    "x1..x5 y1..y5 (all five x, then all five y)": (0, 5, 1, 6, 2, 7, 3, 8, 4, 9),
    "(y, x) pairs": (1, 0, 3, 2, 5, 4, 7, 6, 9, 8),
}
OUTSIDE_IMAGE = "mostly_outside_image"  # the drop reason of faces_inside_images

# How far outside its box a landmark may lie, as a fraction of the box's width / height.
MAX_OUTSIDE_FRACTION = 0.5

DEFAULT_HOLDOUT_FRACTION = 0.05
# Seeds the held-out draw; fixed (not the build's seed) so that every build holds out the same faces.
HOLDOUT_SEED = 0x4E1D

FACEPOINT_FIELDS = ("path", "x1", "x2", "y1", "y2") + LANDMARK_COLUMNS
CELEBA_BBOX_NAME = "list_bbox_celeba.txt"
CELEBA_LANDMARKS_NAME = "list_landmarks_celeba.txt"
CELEBA_BBOX_HEADER = ("image_id", "x_1", "y_1", "width", "height")
CELEBA_LANDMARKS_HEADER = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class LandmarkAnnotations:
    """A parsed landmark list: ``faces`` (kept faces), ``dropped`` (reason -> count, every reason of
    ``DROP_REASONS`` present), ``source`` (the file(s) read) and ``images_root`` (the folder the
    ``image`` column is relative to)."""

    faces: pd.DataFrame
    dropped: dict[str, int]
    source: str
    images_root: Path


def load_landmarks(path: str | os.PathLike) -> LandmarkAnnotations:
    """A ``.txt`` file is a CNN_FacePoint list; a folder holding CelebA's two lists is CelebA."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        return parse_facepoint(path)
    if path.is_dir():
        bbox, landmarks = path / CELEBA_BBOX_NAME, path / CELEBA_LANDMARKS_NAME
        if bbox.is_file() and landmarks.is_file():
            return parse_celeba(bbox, landmarks)
        raise AnnotationError(
            path,
            None,
            f"a landmark folder must hold CelebA's {CELEBA_BBOX_NAME} and {CELEBA_LANDMARKS_NAME}; "
            "for a CNN_FacePoint list pass the .txt file itself",
        )
    if not path.exists():
        raise AnnotationError(path, None, "no such landmark list or folder")
    raise AnnotationError(
        path,
        None,
        "not a landmark list: expected a CNN_FacePoint .txt file (like trainImageList.txt) "
        f"or a folder with CelebA's {CELEBA_BBOX_NAME} and {CELEBA_LANDMARKS_NAME}",
    )


def parse_facepoint(txt_path: str | os.PathLike) -> LandmarkAnnotations:
    """Parse a CNN_FacePoint list (``path x1 x2 y1 y2`` then five ``x y`` points per line)."""
    txt_path = Path(txt_path)
    images: list[str] = []
    lines: list[int] = []
    values: list[float] = []
    for line_no, text in numbered_lines(txt_path):
        if not text:
            continue
        fields = text.split()
        if len(fields) != len(FACEPOINT_FIELDS):
            raise AnnotationError(
                txt_path,
                line_no,
                f"expected {len(FACEPOINT_FIELDS)} fields ({' '.join(FACEPOINT_FIELDS)}), "
                f"got {len(fields)}: {text!r}",
            )
        images.append(fields[0].replace("\\", "/"))
        lines.append(line_no)
        values.extend(_parse_floats(txt_path, line_no, fields[1:], FACEPOINT_FIELDS[1:], text))
    # Compared as normalised paths: lfw_5590\\a.jpg, ./lfw_5590/a.jpg and lfw_5590//a.jpg are one image.
    check_unique(txt_path, zip(map(posixpath.normpath, images), lines), "image")
    table = np.asarray(values, dtype=np.float64).reshape(-1, len(FACEPOINT_FIELDS) - 1)
    # File order x1 x2 y1 y2 -> x1 y1 x2 y2.
    boxes = table[:, [0, 2, 1, 3]]
    return _build(images, boxes, table[:, 4:], source=str(txt_path), images_root=txt_path.parent, path=txt_path,
                  lines=lines)


def parse_celeba(bbox_txt: str | os.PathLike, landmarks_txt: str | os.PathLike) -> LandmarkAnnotations:
    """Join CelebA's box list and landmark list on the image id (order of the box list).

    Images are looked up in ``img_celeba/`` beside the lists, else ``../Img/img_celeba/`` (the
    official ``Anno/`` + ``Img/`` layout), else beside the lists.
    """
    bbox_txt, landmarks_txt = Path(bbox_txt), Path(landmarks_txt)
    bbox_ids, bbox_lines, bbox_values = _read_celeba_list(bbox_txt, CELEBA_BBOX_HEADER[1:])
    lm_ids, lm_lines, lm_values = _read_celeba_list(landmarks_txt, CELEBA_LANDMARKS_HEADER)

    check_unique(landmarks_txt, zip(lm_ids, lm_lines), "image")
    check_unique(bbox_txt, zip(bbox_ids, bbox_lines), "image")
    lm_row = {image_id: row for row, image_id in enumerate(lm_ids)}
    seen = set(bbox_ids)
    order = []
    for row, image_id in enumerate(bbox_ids):
        if image_id not in lm_row:
            raise AnnotationError(bbox_txt, bbox_lines[row], f"image {image_id} has no line in {landmarks_txt}")
        order.append(lm_row[image_id])
    if len(lm_ids) != len(bbox_ids):
        extra = next(row for row, image_id in enumerate(lm_ids) if image_id not in seen)
        raise AnnotationError(
            landmarks_txt, lm_lines[extra], f"image {lm_ids[extra]} has no line in {bbox_txt}"
        )

    x, y, width, height = bbox_values.T
    # CelebA's width/height count pixels, so the inclusive right edge is x + width - 1.
    boxes = np.stack([x, y, x + width - 1, y + height - 1], axis=1)
    points = lm_values[np.asarray(order, dtype=np.int64)] if order else lm_values
    return _build(
        bbox_ids,
        boxes,
        points,
        source=f"{bbox_txt} + {landmarks_txt}",
        images_root=celeba_images_root(bbox_txt.parent),
        path=landmarks_txt,
        lines=[lm_lines[row] for row in order],
    )


def landmark_holdout_mask(num_faces: int, fraction: float = DEFAULT_HOLDOUT_FRACTION) -> np.ndarray:
    """Which faces of a landmark list are held out (bool (num_faces,)): fixed by list position,
    independent of any seed, so that every training build excludes exactly the faces the
    evaluation uses."""
    return np.random.default_rng(HOLDOUT_SEED).random(num_faces) < fraction


def format_facepoint_line(image: str, box_xyxy, points) -> str:
    """One CNN_FacePoint line: ``image x1 x2 y1 y2`` (note the box order) then the five ``x y``
    points, each to 2 decimals; ``image`` is written as given (the lists use backslashes)."""
    x1, y1, x2, y2 = box_xyxy
    values = [x1, x2, y1, y2] + [float(v) for point in np.asarray(points).reshape(5, 2) for v in point]
    return image + " " + " ".join(f"{v:.2f}" for v in values)


def format_facepoint(faces) -> str:
    """The text of a CNN_FacePoint list of ``(image, box x1 y1 x2 y2, (5, 2) points)`` faces; pure."""
    return "".join(format_facepoint_line(image, box, points) + "\n" for image, box, points in faces)


def write_facepoint(path: str | os.PathLike, faces) -> Path:
    """Write ``format_facepoint(faces)`` to ``path`` atomically; returns the path."""
    atomic_write_text(path, format_facepoint(faces))
    return Path(path)


def faces_inside_images(faces: pd.DataFrame, images_root) -> np.ndarray:
    """Which faces (rows of a ``LandmarkAnnotations.faces`` table) have at least
    ``MIN_VISIBLE_FRACTION`` of their box inside their image, as a bool mask. Image sizes come from
    the headers; a face whose image cannot be read is kept (the stage that reads the pixels skips
    and reports the image)."""
    if faces.empty:
        return np.zeros(0, dtype=bool)
    root = Path(images_root)
    sizes = {image: image_size(root / image) or (-1, -1) for image in faces["image"].unique()}
    widths = np.array([sizes[image][0] for image in faces["image"]], dtype=np.float64)
    heights = np.array([sizes[image][1] for image in faces["image"]], dtype=np.float64)
    visible = visible_fraction(faces[list(BOX_COLUMNS)].to_numpy(dtype=np.float64), widths, heights)
    return (widths <= 0) | (visible >= MIN_VISIBLE_FRACTION)


def landmark_images_root(path: str | os.PathLike) -> Path | None:
    """The folder that ``load_landmarks(path)`` reads the images from (its ``images_root``), found
    without reading the lists (for the stages' check that outputs lie apart from their inputs);
    None for a path that is neither a file nor a folder."""
    path = Path(path)
    if path.is_dir():
        return celeba_images_root(path)
    return path.parent if path.is_file() else None


def celeba_images_root(lists_dir: Path) -> Path:
    for candidate in (lists_dir / "img_celeba", lists_dir.parent / "Img" / "img_celeba"):
        if candidate.is_dir():
            return candidate
    return lists_dir


def landmark_drop_reasons(boxes, points) -> np.ndarray:
    """Drop reason per face ("" when kept) for (N, 4) ``x1 y1 x2 y2`` boxes and (N, 10) points; pure."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(points, dtype=np.float64).reshape(-1, len(LANDMARK_COLUMNS))
    width, height = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    degenerate = (width <= 0) | (height <= 0)
    xs, ys = p[:, 0::2], p[:, 1::2]
    margin_x = (MAX_OUTSIDE_FRACTION * width)[:, None]
    margin_y = (MAX_OUTSIDE_FRACTION * height)[:, None]
    far_outside = (
        (xs < b[:, 0:1] - margin_x)
        | (xs > b[:, 2:3] + margin_x)
        | (ys < b[:, 1:2] - margin_y)
        | (ys > b[:, 3:4] + margin_y)
    ).any(axis=1)
    pairs = np.triu_indices(5, 1)
    points5 = p.reshape(-1, 5, 2)
    gaps = np.linalg.norm(points5[:, pairs[0]] - points5[:, pairs[1]], axis=2).min(axis=1) if len(p) else np.zeros(0)
    not_distinct = ~(gaps >= MIN_POINT_GAP * np.maximum(width, height))
    eyes_low = ~(np.maximum(ys[:, 0], ys[:, 1]) < np.minimum(ys[:, 3], ys[:, 4]))
    reasons = np.full(len(b), "", dtype=object)
    reasons[eyes_low] = "eyes_below_mouth"
    reasons[not_distinct] = "points_not_distinct"
    reasons[far_outside] = "landmarks_outside_box"
    reasons[degenerate] = "degenerate"
    return reasons


def check_layout(boxes, points, reasons, path, lines=None) -> None:
    """Refuse a list where most faces with a proper box fail the point checks (``POINT_REASONS``),
    naming the layout that would make most of them pass, if one does."""
    proper = reasons != "degenerate"
    failed = np.isin(reasons, POINT_REASONS)
    if not proper.any() or 2 * np.count_nonzero(failed) <= np.count_nonzero(proper):
        return
    counts = {r: int(np.count_nonzero(reasons == r)) for r in POINT_REASONS if (reasons == r).any()}
    first = int(np.flatnonzero(failed)[0])
    summary = f"{int(failed.sum())} of {int(proper.sum())} faces ({', '.join(f'{n} {r}' for r, n in counts.items())})"
    p = np.asarray(points, dtype=np.float64).reshape(-1, len(LANDMARK_COLUMNS))
    likely = None
    for name, order in OTHER_LAYOUTS.items():
        again = landmark_drop_reasons(boxes, p[:, list(order)])
        if 2 * np.count_nonzero(np.isin(again, POINT_REASONS)) < np.count_nonzero(proper):
            likely = f"read as {name} they pass, so that is likely its layout: convert it to x y pairs"
            break
    if likely is None and counts.get("points_not_distinct", 0) * 2 > proper.sum():
        likely = "most faces give one point five times: the list holds no landmarks"
    raise AnnotationError(path, None if lines is None else lines[first],
                          f"{summary} fail the 5-point checks, this line's first: the values do not read as five x y "
                          "points (left eye, right eye, nose, left and right mouth corner); "
                          + (likely or "check the list's format"))


def _build(images, boxes, points, source: str, images_root: Path, path=None, lines=None) -> LandmarkAnnotations:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    points = np.asarray(points, dtype=np.float64).reshape(-1, len(LANDMARK_COLUMNS))
    reasons = landmark_drop_reasons(boxes, points)
    check_layout(boxes, points, reasons, path or source, lines)
    kept = reasons == ""
    columns = {
        "image": np.asarray(images, dtype=object)[kept] if len(images) else np.zeros(0, dtype=object),
        "image_index": np.flatnonzero(kept).astype(np.int64),
    }
    for column, name in enumerate(BOX_COLUMNS):
        columns[name] = boxes[kept, column]
    for column, name in enumerate(LANDMARK_COLUMNS):
        columns[name] = points[kept, column]
    dropped = {reason: int(np.count_nonzero(reasons == reason)) for reason in DROP_REASONS}
    return LandmarkAnnotations(
        faces=pd.DataFrame(columns), dropped=dropped, source=source, images_root=Path(images_root)
    )


def _read_celeba_list(path: Path, value_names: tuple[str, ...]) -> tuple[list[str], list[int], np.ndarray]:
    """Image ids, their line numbers and the (N, len(value_names)) values of a CelebA list."""
    lines = numbered_lines(path)
    count_line, count_text = next(lines, (None, ""))
    if count_line is None or not count_text:
        raise AnnotationError(path, 1, "expected the number of images on the first line, found an empty line")
    try:
        declared = int(count_text)
    except ValueError:
        raise AnnotationError(path, 1, f"expected the number of images on the first line, got {count_text!r}") from None
    header_line, header_text = next(lines, (None, ""))
    header = tuple(header_text.split())
    # CelebA's landmark header names only the values; accept an image_id column name either way.
    if header[:1] == ("image_id",):
        header = header[1:]
    if header_line is None or len(header) != len(value_names):
        raise AnnotationError(
            path, 2, f"expected the header line {' '.join(value_names)!r}, got {header_text!r}"
        )
    ids: list[str] = []
    line_numbers: list[int] = []
    values: list[float] = []
    fields_expected = 1 + len(value_names)
    for line_no, text in lines:
        if not text:
            continue
        fields = text.split()
        if len(fields) != fields_expected:
            raise AnnotationError(
                path,
                line_no,
                f"expected {fields_expected} fields (image_id {' '.join(value_names)}), got {len(fields)}: {text!r}",
            )
        ids.append(fields[0])
        line_numbers.append(line_no)
        values.extend(_parse_floats(path, line_no, fields[1:], value_names, text))
    if declared != len(ids):
        raise AnnotationError(path, 1, f"the first line declares {declared} images but the list has {len(ids)}")
    return ids, line_numbers, np.asarray(values, dtype=np.float64).reshape(-1, len(value_names))


def _parse_floats(path: Path, line_no: int, fields, names, text: str) -> list[float]:
    try:
        numbers = [float(field) for field in fields]
    except ValueError:
        numbers = None
    if numbers is not None and all(map(math.isfinite, numbers)):
        return numbers
    for name, field in zip(names, fields):
        try:
            ok = math.isfinite(float(field))
        except ValueError:
            ok = False
        if not ok:
            raise AnnotationError(path, line_no, f"field {name} is not a finite number: {field!r} in {text!r}")
    raise AssertionError("unreachable: a field failed to parse but none was found")
