"""The one verification-pair record: LFW's pairs files (``annotations.lfw``) and a pairs CSV
(``annotations.pairs_csv``) both read into it, so that one scoring stage (``evaluation.pairs``)
serves every benchmark. A module of its own so that a reader of one format does not carry the
other into its importers' code (and make's prerequisites)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    fold: int | None
    """0-based fold; None where the pairs file gives none (a CSV without a fold column)."""
    first: str
    """Image path of the first face, relative to the images folder."""
    second: str
    same: bool
    line: int
    """The pair's line in its file (1-based), for messages."""
