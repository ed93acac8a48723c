"""The project's one image reader (and its writer), used by every stage.

Orientation rule: an image is always taken in its *stored* pixel orientation; an EXIF orientation
tag is ignored. WIDER FACE's boxes and the landmark lists' points are measured on the stored
pixels, so training crops, mining, evaluation and detection must all see those pixels; a photo
tagged as rotated is therefore detected (and its boxes reported) as stored, as the evaluator and
the annotation parsers see it. Rotate such a photo upright before detection if that is wanted.

A file that is missing, empty, not an image, or cut short is refused with its reason
(``ImageReadError``) rather than decoded: OpenCV fills the missing part of a truncated JPEG or PNG
with grey and reports success, which would turn faces into flat grey "positives".
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

_JPEG_START = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


class ImageReadError(OSError):
    """An image that cannot be used; ``str()`` is ``path: reason``."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def truncation_reason(data: bytes) -> str | None:
    """Why an encoded JPEG or PNG is incomplete, or None.

    JPEG: the last end-of-image marker must come after the last start-of-scan marker (an embedded
    EXIF thumbnail has its own pair before the main scan; data appended after the end marker is
    allowed). PNG: the IEND chunk must be present. Other formats are left to the decoder.
    """
    if data.startswith(_JPEG_START):
        if data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS) or _JPEG_SOS not in data:
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif data.startswith(_PNG_SIGNATURE):
        if _PNG_END not in data[-4096:]:
            return "truncated PNG (no IEND chunk)"
    return None


def read_image_rgb(path) -> np.ndarray:
    """An image file as contiguous (H, W, 3) uint8 RGB in stored orientation, or ``ImageReadError``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(path, "empty file")
    reason = truncation_reason(data)
    if reason:
        raise ImageReadError(path, reason)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageReadError(path, "not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def try_read_image_rgb(path) -> np.ndarray | None:
    """``read_image_rgb``, or None when the image cannot be used."""
    try:
        return read_image_rgb(path)
    except ImageReadError:
        return None


def image_size(path) -> tuple[int, int] | None:
    """(width, height) of an image in stored orientation from its header only, or None when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def to_rgb_uint8(image) -> np.ndarray:
    """An image as contiguous (H, W, 3) uint8 RGB: grey (H, W) / (H, W, 1) is repeated, RGBA loses alpha.

    Non-uint8 input is taken to be on the 0..255 scale, rounded and clipped.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


IMAGE_TYPES = ("uint8 (0-255), uint16 (0-65535, scaled by 1/257), other integers within 0-255, or floats "
               "within [0, 1] (scaled by 255) or [0, 255] (a maximum above 1)")


def convert_rgb_uint8(image) -> np.ndarray:
    """An image given as an array, as contiguous (H, W, 3) uint8 RGB, refusing what has no one meaning.

    Shapes: (H, W) and (H, W, 1) grey (repeated), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped).
    Values: uint8 as they are; uint16 scaled by 1/257 (65535 -> 255) and rounded; any other integer
    type whose values lie within 0-255 as they are; floats with a maximum of at most 1 scaled by 255
    (the [0, 1] convention), else taken as 0-255, rounded. Everything else is a ``ValueError`` saying
    what is expected: bool (a mask), complex or object arrays, integers outside 0-255, negative,
    NaN or infinite floats, floats above 255, other shapes. (A float image on the 0-255 scale that
    is nearly black, every value <= 1, is read as a [0, 1] image.)
    """
    arr = np.asarray(image)
    what = f"{arr.dtype} {arr.shape}"
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # the alpha channel says nothing about the scale
    if arr.dtype == np.uint8:
        return to_rgb_uint8(arr)
    if arr.dtype == np.uint16:
        return to_rgb_uint8(np.rint(arr / 257.0))
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"expected an image of {IMAGE_TYPES}; got {what}")
    if arr.size == 0:
        return to_rgb_uint8(arr.astype(np.uint8))
    low, high = arr.min(), arr.max()
    if np.issubdtype(arr.dtype, np.integer):
        if low < 0 or high > 255:
            raise ValueError(f"expected an image of {IMAGE_TYPES}; got {what} with values {low} to {high}")
        return to_rgb_uint8(arr.astype(np.uint8))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"expected an image of {IMAGE_TYPES}; got {what} with NaN or infinite values")
    if low < 0 or high > 255:
        raise ValueError(f"expected an image of {IMAGE_TYPES}; got {what} with values {low:g} to {high:g}")
    return to_rgb_uint8(arr.astype(np.float64) * 255.0 if high <= 1 else arr)


def encode_image(image_rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    """RGB uint8 image -> encoded bytes (``.jpg`` or ``.png``), for ``core.atomic.atomic_write_bytes``."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(to_rgb_uint8(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {ext}")
    return buf.tobytes()
