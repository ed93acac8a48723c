"""LFW verification: ``make eval-lfw [EMBEDDER=...] [FOLD=k]`` (facenet's ``validate_on_lfw.py``).

    python -m evaluation.lfw --images lfw/ --pairs pairs.txt --out build/eval-lfw [--embedder shipped] [--fold 10]

The pairs' images are detected and aligned with the same settings as ``make recog-data`` (one face
per image, the largest and most central; ``--aligned`` is a resumable crops folder, shared with the
build when the images are the same), embedded (with the mirror image added unless ``--no-flip``),
and each pair's squared distance scored with LFW's 10-fold protocol: for each fold, the threshold
with the best accuracy on the other nine folds' pairs, the accuracy on this fold's; VAL at
FAR = ``--far`` the same way (``core.verification``); AUC and EER over all pairs. With
``--fold k`` only fold k's pairs are scored (for a model trained without fold k's people): they are
split into ten sub-folds of equal matched and mismatched pairs, and the protocol runs over those,
so no threshold is chosen on a person the model saw. View 1's pairs files (one fold) are scored the
same way.

A pair with an image where no face was found (or that cannot be read) counts as an error at every
threshold: in the accuracy, VAL and FAR, the ROC and AUC (``core.verification.worst_case``); how
many is reported. A pairs file naming an image that is not in ``--images`` is one line, or with
``--allow-missing`` such pairs count as errors too.

The people the embedder trained on are read from its weights file (the training record stored in
it, ``recognition.embedder.FaceEmbedder.record``), and pairs of any of them are refused. A file without a
record (a plain state dict, from outside or from before records were stored inside) is refused too,
unless ``--unknown-embedder``, which scores it and labels the results "embedder of unknown training
data" (``results.json``'s ``embedder_training`` and the printed line). Otherwise the printed line
and ``results.json``'s ``category`` give LFW's protocol category from the record
(``lfw_category``): "unrestricted, no outside data", or "unrestricted, labeled outside data:
<roots>" for a build with outside identities (``make recog-data IDENTITIES="lfw other"``).

Writes ``results.json`` (last: the make target), ``pairs.csv`` (fold, the two image paths, same or
not, distance; empty where a face is missing) and ``roc.png``. This module is LFW's front: it
parses the pairs file, chooses the fold and checks the people; the alignment, the embedding, the
scoring and the outputs are ``evaluation.pairs``'s (``make eval-pairs`` scores any pairs CSV), so
``python -m annotations.pairs_csv --lfw pairs.txt`` and eval-pairs give the same figures.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotations.lfw import parse_pairs
from annotations.pair import Pair
from core.stage import stage_cli
from evaluation.pairs import UNKNOWN_TRAINING, PairScoring, ScoredPairs, check_inputs_apart, score_pairs
from evaluation.pairs import score, training_summary  # noqa: F401  (imported from here by evaluation.ident and tests)
from recognition.embedder import FaceEmbedder, load_embedder

PROG = "python -m evaluation.lfw"
SUBFOLDS = 10


@dataclass(frozen=True)
class LfwEvalConfig(PairScoring):
    images: str
    """LFW's images folder: <name>/<name>_NNNN.jpg (lfw.tgz's layout, any size)."""
    pairs: str
    """LFW's pairs.txt (or a View 1 pairsDevTest.txt / pairsDevTrain.txt)."""
    fold: int | None = None
    """Score only this fold's pairs (1-based), for a model trained without its people; None: all."""
    unknown_embedder: bool = False
    """Score an embedder whose file carries no training record (so nothing says whose faces it learnt),
    labelling its results "embedder of unknown training data"; without it such a file is refused."""

    def __post_init__(self):
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold is 1-based, got {self.fold}")
        super().__post_init__()


def select_pairs(pairs: list[Pair], fold: int | None, path) -> list[Pair]:
    if fold is None:
        return pairs
    chosen = [p for p in pairs if p.fold == fold - 1]
    if not chosen:
        raise ValueError(f"{path} has no fold {fold} (it has {max(p.fold for p in pairs) + 1})")
    return chosen


def subfolds(same: np.ndarray, n: int = SUBFOLDS) -> np.ndarray:
    """Sub-fold of each pair of one fold: the k-th matched and k-th mismatched pair go to sub-fold
    k mod n, so each sub-fold holds equal shares of both."""
    out = np.zeros(len(same), dtype=np.int64)
    for kind in (True, False):
        idx = np.flatnonzero(same == kind)
        out[idx] = np.arange(len(idx)) % n
    return out


def check_unseen(embedder, pairs: list[Pair], cfg: LfwEvalConfig) -> None:
    """Refuse to score pairs of people the embedder was trained on, as the training record stored in
    its weights file names them (``people``; ``embedder`` is a ``FaceEmbedder`` or a weights spec); a
    record from before it named them says only which View 2 fold its build left out, and then only
    that fold may be scored. A file without a record is refused unless ``cfg.unknown_embedder``."""
    if not isinstance(embedder, FaceEmbedder):
        embedder = load_embedder(str(embedder))
    weights, trained = embedder.path, embedder.record
    if trained is None:
        if cfg.unknown_embedder:
            return
        raise ValueError(f"{weights} carries no training record, so nothing says whether it learnt these pairs' "
                         f"people (none is stored in the file; an embedder.json beside it is not read); score it "
                         f"anyway with --unknown-embedder (make: LFW_FLAGS=--unknown-embedder), the results labelled "
                         f"'{UNKNOWN_TRAINING}'")
    left_out = trained.get("lfw_fold_left_out")
    hint = f": score it with FOLD={left_out} (--fold {left_out})" if left_out is not None else ""
    if trained.get("people") is not None:
        seen = sorted({Path(i).parent.name for p in pairs for i in (p.first, p.second)} & set(trained["people"]))
        if seen:
            raise ValueError(f"{weights} was trained on {len(seen)} of these pairs' people ({', '.join(seen[:3])}"
                             f"{', ...' if len(seen) > 3 else ''}; its training record){hint}; their figures would be "
                             f"measured on faces it learnt")
        return
    if len({p.fold for p in pairs}) == 1 and cfg.fold is None:
        return
    if left_out is not None and cfg.fold != left_out:
        raise ValueError(f"{weights} was trained on the people of every LFW fold but fold {left_out} (its training "
                         f"record){hint}; other folds' figures would be measured on people it saw")


NO_OUTSIDE_DATA = "unrestricted, no outside data"
OUTSIDE_DATA = "unrestricted, labeled outside data"


def lfw_category(record: dict | None) -> str:
    """LFW's protocol category of an embedder's figures (Huang and Learned-Miller's 2014 update of
    the LFW protocols): trained with identity labels, so "unrestricted"; with the identities of
    another set (its build's ``outside_roots``, named in brackets), "labeled outside data"."""
    if record is None:
        return UNKNOWN_TRAINING
    roots = (record.get("build") or {}).get("outside_roots")
    return f"{OUTSIDE_DATA}: {', '.join(roots)}" if roots else NO_OUTSIDE_DATA


def main(cfg: LfwEvalConfig) -> dict:
    check_inputs_apart(cfg)
    pairs = select_pairs(parse_pairs(cfg.pairs), cfg.fold, cfg.pairs)
    same = np.array([p.same for p in pairs])
    one_fold = len({p.fold for p in pairs}) == 1  # --fold, or View 1's files
    chosen = ScoredPairs(pairs, subfolds(same) if one_fold else np.array([p.fold for p in pairs]),
                         f"{SUBFOLDS} sub-folds of the one fold scored" if one_fold else "the pairs file's folds",
                         f"LFW{f' fold {cfg.fold}' if cfg.fold else ''}", cfg.fold, lfw_category)
    return score_pairs(cfg, chosen, PROG, vet=lambda embedder: check_unseen(embedder, pairs, cfg))


cli = stage_cli(LfwEvalConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
