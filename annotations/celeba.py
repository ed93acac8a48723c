"""CelebA's identity list, ``identity_CelebA.txt``: one ``<image> <identity>`` line per image.

    image identity          <- an optional header (the copies in circulation differ)
    000001.jpg 2880
    000002.jpg 2937

The list names all 202,599 images of CelebA; a folder holding a part of them (a flat folder of
``<image>`` files) is read with it by ``prepare.identity_links``. An image is a plain file name with
an image suffix, an identity a name that can be a folder's (CelebA's are numbers 1 to 10,177).
A line of another shape, an image listed twice or a list without any line is an
``AnnotationError`` naming the file and line.
"""

from __future__ import annotations

import os

from annotations.errors import AnnotationError, check_unique, numbered_lines
from annotations.identities import IMAGE_SUFFIXES

HEADER = ("image", "identity")


def _check_name(path, line: int, name: str, what: str) -> None:
    if name in (".", "..") or "/" in name or "\\" in name:
        raise AnnotationError(path, line, f"{what} {name!r} is not a plain file name (no folders, not . or ..)")


def parse_identity_list(path: str | os.PathLike) -> dict[str, str]:
    """``{image file name: identity}`` of every line, in file order; blank lines are skipped and a
    first line ``image identity`` is a header."""
    found: dict[str, str] = {}
    lines: list[tuple[str, int]] = []
    for line, text in numbered_lines(path):
        tokens = text.split()
        if not tokens or (not lines and tuple(t.lower() for t in tokens) == HEADER):
            continue
        if len(tokens) != 2:
            raise AnnotationError(path, line, f"expected 'image identity' (two fields), got {text!r}")
        image, identity = tokens
        _check_name(path, line, image, "image")
        _check_name(path, line, identity, "identity")
        if not image.lower().endswith(IMAGE_SUFFIXES):
            raise AnnotationError(path, line, f"image {image!r} has no image suffix ({' '.join(IMAGE_SUFFIXES)})")
        lines.append((image, line))
        found[image] = identity
    check_unique(path, lines, "image")
    if not found:
        raise AnnotationError(path, None, "lists no image")
    return found
