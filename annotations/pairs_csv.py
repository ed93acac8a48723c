"""Any verification benchmark as one CSV of pairs, and LFW's pairs files converted to it.

    python -m annotations.pairs_csv --lfw pairs.txt --out pairs.csv    # also View 1's pairsDevTest.txt
    python -m annotations.pairs_csv --lfw pairsDevTrain.txt pairsDevTest.txt --out view1.csv    # View 1 joined

The CSV (``make eval-pairs PAIRS_CSV=...``) has a header naming its columns, in any order:

* ``first``, ``second``: the two images, as paths relative to the images root (``--images``),
  ``/``-separated; never absolute, never leaving the root through ``..``;
* ``same``: ``1`` for a matched pair (one person), ``0`` for a mismatched one; ``true`` / ``false``
  (any case) are read as 1 / 0, as a spreadsheet or pandas writes a boolean column;
* ``fold`` (optional): the pair's fold, a 1-based integer, on every row or on none. Given, the
  protocol is k-fold over these folds (at least two, each with a matched and a mismatched pair);
  left out, ``evaluation.pairs`` makes ten with a seed.

Blank lines are skipped; fields are stripped of surrounding spaces; CSV quoting is read as usual
(a path with a comma in quotes). A pair listed twice, in either order, is refused naming both
lines, as is a pair of an image with itself: either would weigh in the figures as no benchmark
means it to. Every refusal is one ``AnnotationError`` line, ``path:line: ...``.

``annotations.pair.Pair`` is the record read, as ``annotations.lfw.parse_pairs`` gives it, so
one scoring stage serves LFW and any CSV. The converter writes LFW's folds as the fold column when
the file has several (View 2's ``pairs.txt``), and no fold column for a one-fold View 1 file.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from annotations.errors import AnnotationError, numbered_lines
from annotations.lfw import parse_pairs
from annotations.pair import Pair
from core.atomic import atomic_write_text
from core.outputs import real_path
from core.stage import stage_cli

COLUMNS = ("first", "second", "same")
FOLD_COLUMN = "fold"
SAME_VALUES = {"1": True, "0": False, "true": True, "false": False}


def _fields(path, line: int, text: str) -> list[str]:
    try:
        return [f.strip() for f in next(csv.reader([text], strict=True))]
    except csv.Error as err:
        raise AnnotationError(path, line, f"not a CSV row ({err})") from None


def _image(path, line: int, column: str, value: str) -> str:
    if not value:
        raise AnnotationError(path, line, f"empty {column} image path")
    if value.startswith("/") or "\\" in value:
        raise AnnotationError(path, line, f"{column} image {value!r} is not a /-separated path relative to the "
                                          f"images root")
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise AnnotationError(path, line, f"{column} image {value!r} leaves the images root")
    if normal == ".":
        raise AnnotationError(path, line, f"{column} image {value!r} is the images root, not an image")
    return normal


def _header(path, rows) -> tuple[int, list[str]]:
    if not rows:
        raise AnnotationError(path, None, f"empty; expected a header {','.join(COLUMNS)}[,{FOLD_COLUMN}] and pairs")
    line, names = rows[0]
    names = [n.lower() for n in names]
    unknown = [n for n in names if n not in (*COLUMNS, FOLD_COLUMN)]
    twice = sorted({n for n in names if names.count(n) > 1})
    missing = [c for c in COLUMNS if c not in names]
    if unknown or twice or missing:
        what = (f"unknown column {unknown[0]!r}" if unknown else f"column {twice[0]!r} twice" if twice
                else f"no column {missing[0]!r}")
        raise AnnotationError(path, line, f"{what} in the header {','.join(names)!r}; expected the columns "
                                          f"{','.join(COLUMNS)} and optionally {FOLD_COLUMN}")
    return line, names


def check_new_pair(path, line: int, first: str, second: str, seen: dict) -> None:
    """Refuse a pair of an image with itself, and a pair ``seen`` before in either order (in this
    file or, when several are joined, an earlier one): either would weigh in the figures as no
    benchmark means it to. ``seen`` maps each pair met to its file, line and order; this one is added."""
    if first == second:
        raise AnnotationError(path, line, f"pairs the image {first} with itself")
    key = frozenset((first, second))
    if key in seen:
        where, earlier, order = seen[key]
        place = f"line {earlier}" if str(where) == str(path) else f"{where}:{earlier}"
        raise AnnotationError(path, line, f"the pair {first}, {second} is listed twice (first at {place}"
                                          f"{'' if order == (first, second) else ', in the other order'}); "
                                          f"remove one of the two lines")
    seen[key] = path, line, (first, second)


def read_pairs_csv(path: str | os.PathLike) -> list[Pair]:
    """The pairs of a pairs CSV, in file order (module docstring); AnnotationError on a bad row."""
    path = Path(path)
    rows = [(n, _fields(path, n, text)) for n, text in numbered_lines(path) if text]
    header_line, names = _header(path, rows)
    if len(rows) == 1:
        raise AnnotationError(path, header_line, "a header and no pairs")
    has_fold = FOLD_COLUMN in names
    pairs, seen = [], {}
    for line, values in rows[1:]:
        if len(values) != len(names):
            raise AnnotationError(path, line, f"{len(values)} fields where the header names {len(names)} "
                                              f"({','.join(names)})")
        row = dict(zip(names, values))
        first, second = (_image(path, line, c, row[c]) for c in ("first", "second"))
        same = SAME_VALUES.get(row["same"].lower())
        if same is None:
            raise AnnotationError(path, line, f"same is {row['same']!r}; expected 1 (matched) or 0 (mismatched)")
        fold = _fold(path, line, row[FOLD_COLUMN]) if has_fold else None
        check_new_pair(path, line, first, second, seen)
        pairs.append(Pair(fold, first, second, same, line))
    if has_fold:
        check_folds(path, pairs)
    return pairs


def _fold(path, line: int, value: str) -> int:
    if not value:
        raise AnnotationError(path, line, "no fold; the fold column must be given on every row or left out")
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise AnnotationError(path, line, f"fold is {value!r}; expected a 1-based integer")
    return int(value) - 1


def check_folds(path, pairs: list[Pair]) -> None:
    """Refuse folds the k-fold protocol cannot use: fewer than two, or one without a matched or
    without a mismatched pair (naming the fold's first line)."""
    folds = sorted({p.fold for p in pairs})
    if len(folds) < 2:
        raise AnnotationError(path, pairs[0].line, f"every pair is in fold {folds[0] + 1}; the protocol needs at "
                                                   f"least two folds (or leave the fold column out: ten are made)")
    for fold in folds:
        members = [p for p in pairs if p.fold == fold]
        kinds = {p.same for p in members}
        if len(kinds) < 2:
            lacking = "mismatched" if True in kinds else "matched"
            raise AnnotationError(path, members[0].line, f"fold {fold + 1} has no {lacking} pair (its first pair is "
                                                         f"here); each fold needs both to be scored")


def pairs_csv_text(pairs: list[Pair]) -> str:
    """The pairs as a pairs CSV: with a fold column (1-based) when they span several folds."""
    folded = len({p.fold for p in pairs}) > 1
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, FOLD_COLUMN] if folded else COLUMNS)
    for p in pairs:
        w.writerow([p.first, p.second, int(p.same), *([p.fold + 1] if folded else [])])
    return buf.getvalue()


@dataclass(frozen=True)
class PairsCsvConfig:
    lfw: tuple[str, ...]
    """LFW pairs files: View 2's pairs.txt (ten folds, alone), or View 1's one-fold pairsDevTrain.txt and/or
    pairsDevTest.txt, joined in the order given."""
    out: str
    """The pairs CSV to write (first,second,same[,fold]; paths relative to LFW's images folder)."""

    def __post_init__(self):
        if isinstance(self.lfw, str):  # one file named in Python, as a CLI of one file gives it
            object.__setattr__(self, "lfw", (self.lfw,))
        if not self.lfw:
            raise ValueError("--lfw names no pairs file")


def join_pairs(paths) -> list[Pair]:
    """The pairs of LFW pairs files, in order. Only one-fold files (View 1's) are joined: several
    folds would each need renumbering across files. A pair given twice, in two files or in either
    order, is an ``AnnotationError`` naming both places (``check_new_pair``)."""
    joined, seen = [], {}
    for path in paths:
        pairs = parse_pairs(path)
        if len(paths) > 1 and len({p.fold for p in pairs}) > 1:
            raise AnnotationError(path, pairs[0].line, f"holds {len({p.fold for p in pairs})} folds (View 2's "
                                                       f"pairs.txt; its first pair is here); only one-fold files "
                                                       f"(View 1's) are joined: convert it alone")
        for pair in pairs:  # refused now as read_pairs_csv would refuse the CSV written
            check_new_pair(path, pair.line, pair.first, pair.second, seen)
        joined += pairs
    return joined


def main(cfg: PairsCsvConfig) -> list[Pair]:
    for path in cfg.lfw:
        if real_path(cfg.out) == real_path(path):
            raise ValueError(f"--out {cfg.out} is the pairs file {path} of --lfw: it would be replaced; write the CSV "
                             f"elsewhere")
    pairs = join_pairs(cfg.lfw)
    atomic_write_text(cfg.out, pairs_csv_text(pairs))
    folds = len({p.fold for p in pairs})
    print(f"{' + '.join(cfg.lfw)}: {len(pairs)} pairs ({sum(p.same for p in pairs)} matched), "
          f"{f'{folds} folds' if folds > 1 else 'no fold column (one fold)'} -> {cfg.out}")
    return pairs


cli = stage_cli(PairsCsvConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
