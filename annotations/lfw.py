"""LFW's protocol files: the folds of people and the verification pairs (View 1 and View 2).

* ``people.txt`` (View 2): the number of folds, then per fold its count of people and one
  ``name  number_of_images`` line each; ``peopleDevTrain.txt`` / ``peopleDevTest.txt`` (View 1):
  a count, then those lines (one fold). ``parse_people`` reads both.
* ``pairs.txt`` (View 2): ``folds  n``, then per fold ``n`` matched pairs ``name  i  j`` and ``n``
  mismatched pairs ``name1  i  name2  j``; ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: ``n``,
  then one such fold. ``parse_pairs`` reads both.

The pairs are ``annotations.pair.Pair`` records, as a pairs CSV's are (one scoring stage,
``evaluation.pairs``, serves both; ``python -m annotations.pairs_csv`` converts a pairs file to
CSV). Image ``i`` of a person is ``<name>/<name>_<i as 4 digits>.jpg`` (``image_path``). Malformed
lines, a person named twice and a pair listed twice are ``AnnotationError`` (``path:line:``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from annotations.errors import AnnotationError, check_unique, numbered_lines
from annotations.pair import Pair  # the one pair record: a pairs CSV gives it too


def image_path(name: str, index: int) -> str:
    """The path of a person's ``index``-th image (1-based) relative to the images folder."""
    return f"{name}/{name}_{index:04d}.jpg"


@dataclass(frozen=True)
class Person:
    name: str
    images: int
    fold: int
    """0-based fold (View 1 files: 0)."""
    line: int


def _ints(path, line: int, tokens: list[str], what: str) -> list[int]:
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        raise AnnotationError(path, line, f"expected {what} (integers), got {' '.join(tokens)!r}") from None
    if any(v < 1 for v in values):
        raise AnnotationError(path, line, f"expected {what} of at least 1, got {' '.join(tokens)!r}")
    return values


def _content(path) -> list[tuple[int, list[str]]]:
    return [(n, text.split()) for n, text in numbered_lines(path) if text]


def parse_people(path: str | os.PathLike) -> list[Person]:
    """The people of a ``people*.txt`` file, with their folds, in file order."""
    path = Path(path)
    rows = _content(path)
    if not rows:
        raise AnnotationError(path, None, "empty; expected LFW's people list")
    folded = len(rows) > 1 and len(rows[1][1]) == 1  # people.txt: a fold's count follows the fold count
    first_line, header = rows[0]
    (count,) = _ints(path, first_line, header, "the number of folds" if folded else "the number of people")
    people, at = [], 1
    for fold in range(count if folded else 1):
        if folded:
            if at >= len(rows):
                raise AnnotationError(path, first_line, f"declares {count} folds but the file ends after {fold}")
            line, tokens = rows[at]
            (size,) = _ints(path, line, tokens, "the fold's number of people")
            at += 1
        else:
            size, line = count, first_line
        if at + size > len(rows):
            raise AnnotationError(path, line, f"declares {size} people but the file ends after {len(rows) - at}")
        for line_no, tokens in rows[at : at + size]:
            if len(tokens) != 2:
                raise AnnotationError(path, line_no, f"expected 'name  number_of_images', got {' '.join(tokens)!r}")
            people.append(Person(tokens[0], _ints(path, line_no, tokens[1:], "a number of images")[0], fold, line_no))
        at += size
    if at < len(rows):
        raise AnnotationError(path, rows[at][0], "more lines than the counts above declare")
    check_unique(path, ((p.name, p.line) for p in people), "person")
    return people


def parse_pairs(path: str | os.PathLike) -> list[Pair]:
    """The pairs of a ``pairs*.txt`` file, fold by fold, matched pairs first, in file order."""
    path = Path(path)
    rows = _content(path)
    if not rows:
        raise AnnotationError(path, None, "empty; expected LFW's pairs list")
    first_line, header = rows[0]
    if len(header) not in (1, 2):
        raise AnnotationError(path, first_line, f"expected 'folds  pairs_per_kind' or 'pairs_per_kind', got {header}")
    folds, per_kind = _ints(path, first_line, header, "the header's counts") if len(header) == 2 else \
        (1, _ints(path, first_line, header, "the number of pairs")[0])
    expected = folds * 2 * per_kind
    if len(rows) - 1 != expected:
        raise AnnotationError(path, first_line, f"declares {folds} fold(s) of {per_kind} matched and {per_kind} "
                                                f"mismatched pairs ({expected} lines) but {len(rows) - 1} follow")
    pairs = []
    for k, (line, tokens) in enumerate(rows[1:]):
        fold, same = k // (2 * per_kind), k % (2 * per_kind) < per_kind
        if same and len(tokens) == 3:
            i, j = _ints(path, line, tokens[1:], "image numbers")
            pairs.append(Pair(fold, image_path(tokens[0], i), image_path(tokens[0], j), True, line))
        elif not same and len(tokens) == 4:
            i, j = _ints(path, line, [tokens[1], tokens[3]], "image numbers")
            pairs.append(Pair(fold, image_path(tokens[0], i), image_path(tokens[2], j), False, line))
        else:
            want = "'name  i  j' (a matched pair)" if same else "'name1  i  name2  j' (a mismatched pair)"
            raise AnnotationError(path, line, f"expected {want} in fold {fold + 1}, got {' '.join(tokens)!r}")
    check_unique(path, ((f"{p.first} {p.second}", p.line) for p in pairs), "pair")
    return pairs


def fold_people(people: list[Person], fold: int) -> set[str]:
    """The names in ``fold`` (0-based); a fold the file does not have is a ValueError."""
    folds = sorted({p.fold for p in people})
    if fold not in folds:
        raise ValueError(f"fold {fold + 1} is not in the people list (it has folds 1 to {len(folds)})")
    return {p.name for p in people if p.fold == fold}
