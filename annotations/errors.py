"""The one error type for annotation files that cannot be read as what they claim to be.

Raised by the parsers in ``annotations.wider`` and ``annotations.landmarks``. Its message starts
with ``path:line:`` (the convention of compilers and linters), so an editor or a terminal can jump
straight to the offending line and a user never has to read a traceback to find it.

``numbered_lines`` is the one line reader the parsers share, so that every parser counts lines
(and reports undecodable bytes) the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


class AnnotationError(ValueError):
    """A malformed annotation file: ``str(err)`` is ``"{path}:{line}: {message}"``.

    ``line`` is 1-based, or None when the problem is the file as a whole (a missing list, two
    lists that disagree about which images they describe); then ``str(err)`` is
    ``"{path}: {message}"``.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        # The three values go to ValueError too, so the error pickles (multiprocessing workers
        # re-raise it in the parent) and ``err.args`` stays meaningful.
        super().__init__(str(path), line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Stream ``(1-based line number, stripped text)``; undecodable bytes, and a path that is missing,
    a folder or unreadable, become an AnnotationError."""
    # Bytes decoded line by line (not a text-mode file, which decodes ahead in 8 KiB chunks), so
    # that a bad byte is reported on its own line.
    try:
        handle = open(Path(path), "rb")
    except FileNotFoundError:
        raise AnnotationError(path, None, "no such file") from None
    except IsADirectoryError:
        raise AnnotationError(path, None, "is a folder; expected an annotation file") from None
    except OSError as err:
        raise AnnotationError(path, None, f"cannot read ({err.strerror or err})") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a BOM written by some Windows editors is not part of the first field
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise AnnotationError(path, line_no, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
            yield line_no, text.strip()


def check_unique(path: str | os.PathLike, keyed_lines, what: str) -> None:
    """Refuse a list naming one item twice: ``keyed_lines`` is ``(key, line)`` pairs in file order;
    the second occurrence is an AnnotationError at its line that names the first."""
    first: dict = {}
    for key, line in keyed_lines:
        if key in first:
            raise AnnotationError(path, line, f"{what} {key} is listed twice (first at line {first[key]}); "
                                              f"remove one of the two lines")
        first[key] = line
