"""WIDER FACE ``wider_face_*_bbx_gt.txt`` files: the parser into pandas tables, and the writer.

A library module (no command of its own): sample generation, ``annotations.stats`` and the
evaluation read WIDER annotations through ``parse_wider``, which reads the text file and, when
given the images folder, the image headers. The demo builder writes its splits with
``write_wider_txt``; ``parse_wider`` reads back exactly the boxes and attributes it wrote.

The format, one record per image::

    0--Parade/0_Parade_marchingband_1_849.jpg      image path, relative to WIDER_*/images
    2                                              face count N
    449 330 122 149 0 0 0 0 0 0                    N lines: x1 y1 w h blur expression
    361 98 263 339 0 0 0 0 0 0                              illumination invalid occlusion pose

An image with N = 0 is followed by one placeholder line of ten zeros in the official files; files
written by other tools often leave it out, and both are accepted.

Boxes are kept in WIDER's ``x1 y1 w h`` (integers); ``core.geometry.xywh_to_xyxy`` turns them into
the inclusive ``[x1, y1, x2, y2]`` the rest of the pipeline uses. Each box that is not kept gets
exactly one drop reason, tested in this order:

* ``degenerate``: ``w <= 0`` or ``h <= 0`` (they occur in the official files);
* ``invalid``: WIDER's own ``invalid`` flag is 1;
* ``outside_image``: the box does not overlap the image at all (known only with ``images_dir``);
* ``mostly_outside_image``: less than half of the box lies inside the image
  (``annotations.visibility``): clipping it would make another box, not the face.

A box partly outside its image, with at least half of it inside, is clipped to the image and kept
(``WiderAnnotations.clipped`` counts them). ``all_boxes`` keeps every parsed box with its reason, because sample generation must
not cut a "negative" out of a region that holds a face, annotated-but-dropped or not.
"""

from __future__ import annotations

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

WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
BOX_COLUMNS = ("x1", "y1", "w", "h")
BOX_LINE_FIELDS = len(BOX_COLUMNS) + len(WIDER_ATTRIBUTES)
DROP_REASONS = ("degenerate", "invalid", "outside_image", "mostly_outside_image")

# What an image line must end with. WIDER ships only .jpg, but a user's own set in this layout
# may hold other formats; the point is to tell a path from a misplaced count or box line.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
EXAMPLE_PATH = "0--Parade/0_Parade_marchingband_1_849.jpg"

# No box coordinate, size or attribute of a real image reaches this (WIDER's largest images are a few
# thousand pixels); beyond it a value is a broken line, and 1e30 would overflow the int64 table.
MAX_BOX_VALUE = 1_000_000
_INVALID_FIELD = 4 + WIDER_ATTRIBUTES.index("invalid")
# What the official files write after an image with no faces.
ZERO_FACES_LINE = " ".join(["0"] * BOX_LINE_FIELDS)


@dataclass(frozen=True, eq=False)
class WiderAnnotations:
    """One parsed ``bbx_gt`` file.

    ``faces``: one row per kept face: ``image``, ``image_index``, ``x1 y1 w h``, the six attributes.
    ``all_boxes``: every parsed box (kept, clipped or dropped), same columns plus ``drop_reason``
    ("" when kept); kept rows hold the same (clipped) coordinates as ``faces``.
    ``images``: one row per image in file order: ``image``, ``image_index``, ``num_faces`` (kept),
    ``width``, ``height`` (-1 when unknown), ``exists``.
    ``dropped``: reason -> count, every reason of ``DROP_REASONS`` present.
    ``clipped``: kept boxes that were cut down to their image.
    """

    faces: pd.DataFrame
    all_boxes: pd.DataFrame
    images: pd.DataFrame
    dropped: dict[str, int]
    clipped: int
    source: str
    images_dir: Path | None = None


@dataclass(frozen=True)
class WiderText:
    """What a ``bbx_gt`` file's text alone says, before any image is looked at: every box line as
    written, none dropped or clipped (``parse_wider`` does that against the images)."""

    image_paths: list[str]
    box_values: np.ndarray  # int64 (num_boxes, 10): x1 y1 w h + attributes, file order
    box_image_index: np.ndarray  # int64 (num_boxes,)


def parse_wider(txt_path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> WiderAnnotations:
    """Parse a WIDER ``bbx_gt`` file; with ``images_dir`` also read image sizes and clip boxes.

    Raises ``AnnotationError`` (``"path:line: message"``) for malformed input.
    """
    txt_path = Path(txt_path)
    parsed = parse_wider_text(txt_path)
    num_images = len(parsed.image_paths)
    if images_dir is None:
        widths = np.full(num_images, -1, dtype=np.int64)
        heights = np.full(num_images, -1, dtype=np.int64)
        exists = np.ones(num_images, dtype=bool)
    else:
        images_dir = Path(images_dir)
        widths, heights, exists = read_image_sizes(images_dir, parsed.image_paths)
    boxes, drop_reason, clipped = assign_drop_reasons(
        parsed.box_values, widths[parsed.box_image_index], heights[parsed.box_image_index]
    )

    image_names = np.asarray(parsed.image_paths, dtype=object)
    columns = {
        "image": image_names[parsed.box_image_index] if num_images else np.zeros(0, dtype=object),
        "image_index": parsed.box_image_index,
    }
    for column, name in enumerate(BOX_COLUMNS + WIDER_ATTRIBUTES):
        columns[name] = boxes[:, column]
    all_boxes = pd.DataFrame(columns)
    all_boxes["drop_reason"] = drop_reason
    kept = drop_reason == ""
    faces = all_boxes.loc[kept].drop(columns="drop_reason").reset_index(drop=True)

    images = pd.DataFrame(
        {
            "image": image_names,
            "image_index": np.arange(num_images, dtype=np.int64),
            "num_faces": np.bincount(parsed.box_image_index[kept], minlength=num_images).astype(np.int64),
            "width": widths,
            "height": heights,
            "exists": exists,
        }
    )
    dropped = {reason: int(np.count_nonzero(drop_reason == reason)) for reason in DROP_REASONS}
    return WiderAnnotations(
        faces=faces,
        all_boxes=all_boxes,
        images=images,
        dropped=dropped,
        clipped=int(clipped),
        source=str(txt_path),
        images_dir=None if images_dir is None else Path(images_dir),
    )


def format_wider_txt(images) -> str:
    """The ``bbx_gt`` text of ``(image path, boxes)`` records, in their order; pure.

    ``boxes``: (N, 10) integers ``x1 y1 w h`` then ``WIDER_ATTRIBUTES``, or (N, 4) ``x1 y1 w h``
    with every attribute 0. An image with no boxes gets the official line of zeros.
    """
    lines = []
    for image, boxes in images:
        rows = np.asarray(boxes, dtype=np.int64)
        rows = rows.reshape(len(rows), -1) if rows.size else np.zeros((0, BOX_LINE_FIELDS), dtype=np.int64)
        if rows.shape[1] == len(BOX_COLUMNS):
            rows = np.concatenate([rows, np.zeros((len(rows), len(WIDER_ATTRIBUTES)), dtype=np.int64)], axis=1)
        if rows.shape[1] != BOX_LINE_FIELDS:
            raise ValueError(f"{image}: boxes must have 4 or {BOX_LINE_FIELDS} columns, got {rows.shape[1]}")
        lines += [image, str(len(rows))]
        lines += [" ".join(map(str, row)) for row in rows.tolist()] or [ZERO_FACES_LINE]
    return "".join(line + "\n" for line in lines)


def write_wider_txt(path: str | os.PathLike, images) -> Path:
    """Write ``format_wider_txt(images)`` to ``path`` atomically; returns the path."""
    atomic_write_text(path, format_wider_txt(images))
    return Path(path)


def assign_drop_reasons(box_values, image_widths, image_heights) -> tuple[np.ndarray, np.ndarray, int]:
    """Decide each box's fate; pure.

    ``box_values``: (N, 10) ints as in the file; ``image_widths``/``image_heights``: (N,) size of
    each box's image, -1 when unknown (then nothing is clipped or dropped as outside).
    Returns the boxes with kept ones clipped to their image, the drop reason per box ("" when
    kept, object array) and the number of clipped boxes.
    """
    boxes = np.array(box_values, dtype=np.int64).reshape(-1, BOX_LINE_FIELDS)
    width_img = np.asarray(image_widths, dtype=np.int64)
    height_img = np.asarray(image_heights, dtype=np.int64)
    x1, y1, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x2, y2 = x1 + w - 1, y1 + h - 1  # inclusive, see core.geometry
    size_known = (width_img > 0) & (height_img > 0)

    degenerate = (w <= 0) | (h <= 0)
    invalid = ~degenerate & (boxes[:, _INVALID_FIELD] == 1)
    candidate = ~degenerate & ~invalid
    outside = candidate & size_known & ((x1 >= width_img) | (y1 >= height_img) | (x2 < 0) | (y2 < 0))
    visible = visible_fraction(np.stack([x1, y1, x2, y2], axis=1), width_img, height_img)
    mostly_outside = candidate & size_known & ~outside & (visible < MIN_VISIBLE_FRACTION)
    kept = candidate & ~outside & ~mostly_outside
    needs_clip = kept & size_known & ((x1 < 0) | (y1 < 0) | (x2 > width_img - 1) | (y2 > height_img - 1))

    if needs_clip.any():
        cx1 = np.maximum(x1, 0)
        cy1 = np.maximum(y1, 0)
        cx2 = np.minimum(x2, width_img - 1)
        cy2 = np.minimum(y2, height_img - 1)
        clipped_xywh = np.stack([cx1, cy1, cx2 - cx1 + 1, cy2 - cy1 + 1], axis=1)
        boxes[needs_clip, :4] = clipped_xywh[needs_clip]

    drop_reason = np.full(len(boxes), "", dtype=object)
    drop_reason[degenerate] = "degenerate"
    drop_reason[invalid] = "invalid"
    drop_reason[outside] = "outside_image"
    drop_reason[mostly_outside] = "mostly_outside_image"
    return boxes, drop_reason, int(np.count_nonzero(needs_clip))


def read_image_sizes(images_dir: Path, image_paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width, height and readability of each image, from its header only (no pixel decoding).

    A missing or unreadable image gets width = height = -1 and exists = False; its boxes stay,
    and the stage that loads pixels skips and reports it.
    """
    count = len(image_paths)
    widths = np.full(count, -1, dtype=np.int64)
    heights = np.full(count, -1, dtype=np.int64)
    exists = np.zeros(count, dtype=bool)
    for index, relative in enumerate(image_paths):
        size = image_size(images_dir / relative)
        if size is not None:
            widths[index], heights[index] = size
            exists[index] = True
    return widths, heights, exists


def parse_wider_text(txt_path: Path) -> WiderText:
    """Parse a WIDER ``bbx_gt`` file's text, streamed once into flat columns (never a DataFrame row
    by row). Raises ``AnnotationError`` (``"path:line: message"``) for malformed input."""
    image_paths: list[str] = []
    path_lines: list[int] = []
    flat_values: list[int] = []
    box_image_index: list[int] = []
    lines = numbered_lines(txt_path)
    pushed_back: tuple[int, str] | None = None

    while True:
        if pushed_back is not None:
            (line_no, text), pushed_back = pushed_back, None
        else:
            line_no, text = next(lines, (None, ""))
        if line_no is None:
            break
        if not text:  # blank lines between records (and at the end) carry nothing
            continue
        _check_image_path(txt_path, line_no, text)
        image_index = len(image_paths)
        image_paths.append(text)
        path_lines.append(line_no)

        count_line, count_text = next(lines, (None, ""))
        if count_line is None:
            raise AnnotationError(txt_path, line_no, f"file ends after image path {text!r}; expected its face count")
        count = _parse_count(txt_path, count_line, count_text)

        if count == 0:
            # The official placeholder line of zeros; if absent, the line is the next image's path.
            next_line, next_text = next(lines, (None, ""))
            if next_line is not None and not _is_zero_placeholder(txt_path, next_line, next_text):
                pushed_back = (next_line, next_text)
            continue

        for done in range(count):
            box_line, box_text = next(lines, (None, ""))
            if box_line is None:
                raise AnnotationError(
                    txt_path,
                    count_line,
                    f"{text} declares {count} faces but the file ends after {done} box line(s)",
                )
            flat_values.extend(_parse_box_line(txt_path, box_line, box_text))
            box_image_index.append(image_index)

    # Compared as normalised paths: ./0--Parade/x.jpg, 0--Parade//x.jpg and 0--Parade\x.jpg are one image.
    check_unique(txt_path, zip(map(normalised_image_path, image_paths), path_lines), "image")
    return WiderText(
        image_paths=image_paths,
        box_values=np.asarray(flat_values, dtype=np.int64).reshape(-1, BOX_LINE_FIELDS),
        box_image_index=np.asarray(box_image_index, dtype=np.int64),
    )


def normalised_image_path(text: str) -> str:
    """One spelling per image: forward slashes, no ``.`` or empty components (``./a//b.jpg`` -> ``a/b.jpg``)."""
    return posixpath.normpath(text.replace("\\", "/"))


def _check_image_path(txt_path: Path, line_no: int, text: str) -> None:
    if Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return
    hint = ""
    tokens = text.split()
    if all(_is_number(token) for token in tokens):
        # The usual cause: the previous image's count is smaller than its number of box lines.
        hint = " (a count or box line here usually means the previous image's face count is too small)"
    raise AnnotationError(txt_path, line_no, f"expected an image path like {EXAMPLE_PATH!r}, got {text!r}{hint}")


def _parse_count(txt_path: Path, line_no: int, text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise AnnotationError(txt_path, line_no, f"expected the image's face count (an integer), got {text!r}") from None
    if count < 0:
        raise AnnotationError(txt_path, line_no, f"face count must not be negative, got {count}")
    return count


def _parse_box_line(txt_path: Path, line_no: int, text: str) -> list[int]:
    fields = text.split()
    if len(fields) != BOX_LINE_FIELDS:
        raise AnnotationError(
            txt_path,
            line_no,
            f"box line has {len(fields)} fields, expected {BOX_LINE_FIELDS} "
            f"(x1 y1 w h {' '.join(WIDER_ATTRIBUTES)}): {text!r}",
        )
    try:
        values = [int(field) for field in fields]
    except ValueError:
        pass
    else:
        return _check_magnitudes(txt_path, line_no, values, fields, text)
    # Slow path, taken only for lines that are not plain integers: accept "12.0" as written by
    # some converters, and name the first field that is not a whole number.
    values = []
    names = BOX_COLUMNS + WIDER_ATTRIBUTES
    for name, field in zip(names, fields):
        try:
            number = float(field)
        except ValueError:
            number = float("nan")
        if not np.isfinite(number) or number != int(number):
            raise AnnotationError(txt_path, line_no, f"field {name} is not an integer: {field!r} in {text!r}")
        values.append(int(number))
    return _check_magnitudes(txt_path, line_no, values, fields, text)


def _check_magnitudes(txt_path: Path, line_no: int, values: list[int], fields, text: str) -> list[int]:
    """Refuse a value no image can hold (``1e30`` would overflow the int64 box table)."""
    if -MAX_BOX_VALUE <= min(values) and max(values) <= MAX_BOX_VALUE:
        return values
    for name, field, value in zip(BOX_COLUMNS + WIDER_ATTRIBUTES, fields, values):
        if abs(value) > MAX_BOX_VALUE:
            raise AnnotationError(txt_path, line_no, f"field {name} is {field}, beyond any image "
                                                     f"(|value| <= {MAX_BOX_VALUE:,}): {text!r}")
    return values


def _is_zero_placeholder(txt_path: Path, line_no: int, text: str) -> bool:
    """True for the line of ten zeros after a 0 count; a non-zero box line there is an error."""
    fields = text.split()
    if len(fields) != BOX_LINE_FIELDS or not all(_is_number(field) for field in fields):
        return False
    if any(float(field) != 0 for field in fields):
        raise AnnotationError(
            txt_path, line_no, f"the face count above is 0 but a box line follows: {text!r} (is the count wrong?)"
        )
    return True


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
