"""A threshold with a known FAR: ``make calibrate EMBEDDER=... PAIRS=...``.

    python -m evaluation.calibrate --distances <eval>/pairs.csv [more.csv ...] --pairs <pairs file> [...]
        --embedder shipped --out build/calibrate [--far 0.01 | --best-accuracy]
        [--people people.txt] [--leave-out-fold K] [--overwrite-shipped]

Reads the per-pair distances that ``make eval-lfw`` / ``make eval-pairs`` write (``pairs.csv``:
``fold,first,second,same,distance``, the distance empty where a face was not found), pooled over
the files given, and chooses the threshold (a pair is "same" when its squared distance is strictly
below it, as everywhere in the project):

* ``--far F`` (the default, 0.01): the largest threshold whose false accept rate on the mismatched
  pairs is at most F, exactly (``threshold_at_far``): with n mismatched pairs at most k = floor(F n)
  may be accepted, so the threshold is the (k+1)-th smallest mismatched distance. Not facenet's
  ``val_threshold``, which interpolates FAR over a grid and so may choose a threshold whose FAR is
  above the target: a threshold sold "at FAR 0.01" must not give more there;
* ``--best-accuracy``: the threshold of the best accuracy on the 0.01 grid, the first of equals
  (``core.verification.best_threshold``, the rule eval-lfw's accuracy uses).

A pair whose face was not found is an error at every threshold (``core.verification.worst_case``): a
failed mismatched pair is a false accept whatever the threshold, so a target FAR below the failed
mismatched pairs' share is met by no threshold, and that is one line, not a threshold that does not
deliver. The FAR, TAR and accuracy reached at the threshold are printed and recorded.

Pairs left out, before the choice: with ``--people`` (an LFW people list with its folds), every
pair naming a person (an image's folder) of fold ``--leave-out-fold``, by default the fold the
embedder's training record says its build left out (``lfw_fold_left_out``): the fold its figures
are reported on, whose people must not choose its threshold. Pairs of people the embedder learnt
(its record's ``people``) are *not* refused but counted, printed and recorded
(``pairs_of_learnt_people``): a pair of learnt faces sits farther apart when mismatched and closer
when matched than a stranger's, so a threshold chosen on them gives more false accepts on unseen
people than it promises; calibrating on such pairs is a choice to be read with that bias (the
shipped embedder's calibration on View 1 is such a choice, and its card measures the bias on
fold 10). eval-lfw, which writes the distances, refuses learnt people by itself.

The distances must be this embedder's: ``results.json`` beside each distances file (written with
it by eval-lfw / eval-pairs) names the embedder that measured them; it must be this file, or a file
whose tensors are this one's (the digest of a file changes with its record, not with its tensors).

Writes a new weights file, the embedder's tensors bit-identical (checked by loading it back) and its
training record with ``calibration`` added (or replaced): ``threshold``, ``method``, ``far_target``,
``far``, ``tar``, ``accuracy``, the pairs files and their SHA-256, the distances files and theirs,
the counts, what was left out; with its digest (``trainers.checkpoint.save_weights``:
``<file>.sha256``, or its line of the folder's ``SHA256SUMS``) and ``embedder.json``, the readable
copy of the record. By default to ``OUT/embedder.pt``; with ``--overwrite-shipped`` (and
``--embedder shipped``) over ``weights/embedder.pt``, its ``SHA256SUMS`` line and
``weights/embedder.json``. Each file is written whole or not at all (atomic); the weights file comes
before its digest, so a run cut between the two leaves a file whose load is refused, naming the
digest, rather than a file that loads as something it is not. ``OUT/calibration.json`` is written
last (make's target). ``make compare``, ``identify`` and ``cluster`` use the calibrated threshold by
default (``recognition.threshold``).

An embedder whose file carries no training record is refused: a record holding only a calibration
would read as an embedder that learnt nobody, and eval-lfw would then score it on anyone's pairs.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotations.identities import identity_of
from annotations.lfw import fold_people, parse_people
from core.atomic import atomic_write_json
from core.lock import folder_lock
from core.outputs import SHIPPED_FLAG, check_names_free, check_not_shipped, check_output_apart, file_sha256, real_path
from core.stage import stage_cli
from core.verification import ACCURACY_THRESHOLDS, best_threshold, rates, worst_case
from core.weights import SHIPPED_WEIGHTS_DIR, content_sha256, json_record, load_weights, pack_weights
from recognition.embedder import EMBEDDER_FILE, resolve_embedder
from recognition.threshold import calibration_source, check_threshold
from trainers.checkpoint import save_weights

RESULTS = "calibration.json"
RECORD_COPY = "embedder.json"
METHODS = ("far", "best-accuracy")
DISTANCE_COLUMNS = ("fold", "first", "second", "same", "distance")
# Keys of every calibration.json this stage writes: how a rerun knows the files in OUT are its own.
RESULT_KEYS = ("stage", "calibration", "embedder_out")
STAGE = "evaluation.calibrate"
PROG = f"python -m {STAGE}"


@dataclass(frozen=True)
class CalibrateConfig:
    distances: tuple[str, ...]
    """Per-pair distances CSVs (eval-lfw's / eval-pairs' pairs.csv), pooled; results.json beside each."""
    pairs: tuple[str, ...]
    """The pairs files the distances were scored from: recorded by name and SHA-256 as the source."""
    out: str
    """Output folder: calibration.json, and embedder.pt (+ .sha256, embedder.json) unless --overwrite-shipped."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt: the one that measured the distances."""
    far: float = 0.01
    """Target false accept rate: the largest threshold whose FAR on the mismatched pairs is at most this."""
    best_accuracy: bool = False
    """Choose the threshold of the best accuracy instead of one at --far."""
    people: str | None = None
    """An LFW people list with folds (people.txt): pairs naming a person of --leave-out-fold are left out."""
    leave_out_fold: int | None = None
    """With --people: leave out the pairs of this fold's people (1-based). None: the fold the embedder's
    training record left out (lfw_fold_left_out), if any; 0: none."""
    overwrite_shipped: bool = False
    """Write the calibrated record into weights/embedder.pt (its SHA256SUMS line and embedder.json) instead of OUT/embedder.pt."""

    def __post_init__(self):
        if not 0 < self.far < 1:
            raise ValueError(f"--far must be between 0 and 1, got {self.far}")
        if not self.distances or not self.pairs:
            raise ValueError("give the distances files (--distances) and the pairs files they were scored from (--pairs)")
        if self.leave_out_fold is not None and self.leave_out_fold < 0:
            raise ValueError(f"--leave-out-fold is 1-based (0: none), got {self.leave_out_fold}")
        if self.leave_out_fold and self.people is None:
            raise ValueError("--leave-out-fold needs --people, the people list that says who is in which fold")

    @property
    def method(self) -> str:
        return "best-accuracy" if self.best_accuracy else "far"


# -- the choice (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    threshold: float
    far: float
    """False accept rate at the threshold (failed mismatched pairs accepted)."""
    tar: float
    """True accept rate at the threshold (failed matched pairs rejected)."""
    accuracy: float
    false_accepts: int
    matched: int
    mismatched: int


def _choice(d: np.ndarray, same: np.ndarray, threshold: float) -> Choice:
    tar, far, accuracy = rates(d, same, threshold)
    return Choice(float(threshold), far, tar, accuracy, int(np.sum((d < threshold) & ~same)), int(same.sum()),
                  int((~same).sum()))


def _checked(dist, same, failed) -> tuple[np.ndarray, np.ndarray]:
    same = np.asarray(same, bool)
    if not same.any() or same.all():
        raise ValueError(f"the pairs hold {int(same.sum())} matched and {int((~same).sum())} mismatched pairs: "
                         f"a threshold needs both (TAR on the matched, FAR on the mismatched)")
    return worst_case(np.nan_to_num(np.asarray(dist, np.float64)), same, failed), same


def threshold_at_far(dist, same, failed, far_target: float) -> Choice:
    """The largest threshold whose FAR (a mismatched pair accepted when its distance is strictly
    below) is at most ``far_target``: the (k+1)-th smallest mismatched distance, k = floor(target n).
    Failed pairs are errors at every threshold (``worst_case``). ValueError when no threshold in
    (0, 4) meets the target."""
    d, same = _checked(dist, same, failed)
    mismatched = np.sort(d[~same])
    n = len(mismatched)
    allowed = math.floor(far_target * n + 1e-9)  # 0.01 * 300 is 3, not 2.9999999999999996
    if allowed >= n:
        raise ValueError(f"--far {far_target:g} allows all {n} mismatched pairs: no threshold in (0, 4) is needed")
    threshold = float(mismatched[allowed])
    failed_mismatched = int(np.isneginf(mismatched).sum())
    if failed_mismatched > allowed:
        raise ValueError(f"no threshold gives FAR <= {far_target:g}: {failed_mismatched} of the {n} mismatched pairs "
                         f"have a face not found and are false accepts at every threshold (FAR >= "
                         f"{failed_mismatched / n:.4g}); calibrate at --far {failed_mismatched / n:.4g} or above, or "
                         f"on pairs whose faces are found")
    if not 0 < threshold < 4:
        raise ValueError(f"no threshold in (0, 4) gives FAR <= {far_target:g}: {allowed + 1} of the {n} mismatched "
                         f"pairs are at squared distance {threshold:g} or less")
    return _choice(d, same, threshold)


def rates_at(dist, same, failed, threshold: float) -> Choice:
    """What ``threshold`` gives on these pairs (failed ones errors at every threshold), choosing
    nothing: how a calibration is checked on pairs it was not chosen on (the shipped embedder's, on
    LFW fold 10)."""
    return _choice(*_checked(dist, same, failed), threshold)


def threshold_best_accuracy(dist, same, failed) -> Choice:
    """The grid threshold (0.01 to 3.99 by 0.01) of the best accuracy, the first of equals."""
    d, same = _checked(dist, same, failed)
    return _choice(d, same, best_threshold(d, same, ACCURACY_THRESHOLDS[1:]))


# -- the inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distances:
    first: list[str]
    second: list[str]
    same: np.ndarray
    dist: np.ndarray
    """NaN where a face was not found."""

    @property
    def failed(self) -> np.ndarray:
        return np.isnan(self.dist)


def read_distances(path) -> Distances:
    """A per-pair CSV (``DISTANCE_COLUMNS``); ValueError naming the file and line of a bad row."""
    path = Path(path)
    first, second, same, dist = [], [], [], []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:5]) != DISTANCE_COLUMNS:
            raise ValueError(f"{path}:1: expected the header {','.join(DISTANCE_COLUMNS)} (the pairs.csv of make "
                             f"eval-lfw / eval-pairs), got {','.join(header or [])!r}")
        for line, row in enumerate(reader, 2):
            try:
                if len(row) < 5 or row[3] not in ("0", "1"):
                    raise ValueError
                d = float("nan") if row[4] == "" else float(row[4])
                if not (math.isnan(d) or 0 <= d <= 4.001):  # squared distances of unit vectors, float rounding
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}:{line}: expected 'fold,first,second,same (0/1),distance (0-4, or empty "
                                 f"where a face was not found)', got {','.join(row)!r}") from None
            first.append(row[1])
            second.append(row[2])
            same.append(row[3] == "1")
            dist.append(d)
    if not same:
        raise ValueError(f"{path} holds no pair")
    return Distances(first, second, np.array(same, bool), np.array(dist, np.float64))


def pool(parts: list[Distances]) -> Distances:
    return Distances([f for p in parts for f in p.first], [s for p in parts for s in p.second],
                     np.concatenate([p.same for p in parts]), np.concatenate([p.dist for p in parts]))


def keep_pairs(pairs: Distances, leave_out: set[str]) -> tuple[Distances, int]:
    """The pairs naming no person of ``leave_out``, and how many were left out."""
    keep = np.array([identity_of(a) not in leave_out and identity_of(b) not in leave_out
                     for a, b in zip(pairs.first, pairs.second)], bool)
    kept = Distances([f for f, k in zip(pairs.first, keep) if k], [s for s, k in zip(pairs.second, keep) if k],
                     pairs.same[keep], pairs.dist[keep])
    return kept, int((~keep).sum())


def tensors_sha256(state: dict) -> str:
    """The digest of a state dict's tensors alone (``content_sha256`` with no record): what stays the
    same when a file's record is rewritten."""
    return content_sha256(state, None)


def check_measured_by(distances: Path, embedder_path: Path, tensors: str, pairs: list[Path]) -> str:
    """The embedder file that measured ``distances`` (its SHA-256), refused unless it is
    ``embedder_path`` or holds the same tensors; and the pairs file it names, unless one of ``pairs``."""
    results = distances.parent / "results.json"
    try:
        doc = json.loads(results.read_text())
        measured, named = doc["embedder_sha256"], doc.get("embedder")
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{results} (beside {distances.name}) does not say which embedder measured the distances "
                         f"(embedder_sha256, as eval-lfw / eval-pairs write it): score the pairs with this embedder "
                         f"(make eval-lfw / eval-pairs) and calibrate on that pairs.csv") from None
    scored = (doc.get("settings") or {}).get("pairs")
    if scored and real_path(scored) not in {real_path(p) for p in pairs}:
        raise ValueError(f"{distances} was scored from the pairs file {scored} ({results}), not from --pairs "
                         f"{' '.join(map(str, pairs))}")
    if measured == file_sha256(embedder_path):
        return measured
    if named and Path(named).is_file() and file_sha256(named) == measured:
        if tensors_sha256(load_weights(named).state) == tensors:
            return measured
    raise ValueError(f"{distances} was measured by the embedder {named} (sha256 {measured[:12]}...), whose tensors are "
                     f"not {embedder_path}'s: its threshold would be another net's; score the pairs with this embedder")


def file_sources(paths) -> list[dict]:
    return [{"path": str(p), "sha256": file_sha256(p)} for p in paths]


def is_own_output(out: Path):
    """This stage's files in ``out``: a calibration.json holding ``RESULT_KEYS``, and the files it names."""
    def own(path: Path) -> bool:
        try:
            doc = json.loads((out / RESULTS).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and all(k in doc for k in RESULT_KEYS) and doc["stage"] == STAGE
    return own


# -- the stage ---------------------------------------------------------------------------------------


def main(cfg: CalibrateConfig) -> dict:
    """Choose the threshold, write the calibrated embedder and calibration.json; returns the latter."""
    out = Path(cfg.out)
    source = resolve_embedder(cfg.embedder)
    shipped = SHIPPED_WEIGHTS_DIR / EMBEDDER_FILE
    if cfg.overwrite_shipped and real_path(source) != real_path(shipped):
        raise ValueError(f"{SHIPPED_FLAG} writes the calibrated record into {shipped}: calibrate --embedder shipped "
                         f"with it, not {cfg.embedder}")
    target = shipped if cfg.overwrite_shipped else out / EMBEDDER_FILE
    check_not_shipped(out, "--out")
    inputs = {"--distances": list(cfg.distances), "--pairs": list(cfg.pairs), "--embedder": source, "--people": cfg.people}
    check_output_apart(out, inputs)
    for path in [*cfg.distances, *cfg.pairs, *([cfg.people] if cfg.people else [])]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist")
    written = [RESULTS] + ([] if cfg.overwrite_shipped else [EMBEDDER_FILE, f"{EMBEDDER_FILE}.sha256", RECORD_COPY])
    check_names_free(out, written, PROG, is_own_output(out))

    weights = load_weights(source)
    record = weights.record
    if record is None:
        raise ValueError(f"{source} carries no training record, so a calibration would be its only record and it "
                         f"would read as an embedder that learnt nobody (eval-lfw would score it on any pairs): "
                         f"calibrate an embedder trained here (make train-embed)")
    tensors = tensors_sha256(weights.state)
    measured = {str(d): check_measured_by(Path(d), source, tensors, [Path(p) for p in cfg.pairs])
                for d in cfg.distances}

    pairs = pool([read_distances(d) for d in cfg.distances])
    total = len(pairs.same)
    fold = cfg.leave_out_fold if cfg.leave_out_fold is not None else record.get("lfw_fold_left_out")
    left_out = None
    if cfg.people is not None and fold:
        people = fold_people(parse_people(cfg.people), fold - 1)
        pairs, dropped = keep_pairs(pairs, people)
        left_out = {"fold": fold, "people": str(cfg.people), "pairs": dropped,
                    "why": "given" if cfg.leave_out_fold else "the fold the embedder's training record left out"}
    learnt = set(record.get("people") or [])
    of_learnt = sum(identity_of(a) in learnt or identity_of(b) in learnt for a, b in zip(pairs.first, pairs.second))

    if cfg.best_accuracy:
        choice = threshold_best_accuracy(pairs.dist, pairs.same, pairs.failed)
    else:
        choice = threshold_at_far(pairs.dist, pairs.same, pairs.failed, cfg.far)
    check_threshold(choice.threshold, "the calibrated threshold")
    calibration = {
        "threshold": choice.threshold, "method": cfg.method, "far_target": None if cfg.best_accuracy else cfg.far,
        "far": choice.far, "tar": choice.tar, "accuracy": choice.accuracy, "false_accepts": choice.false_accepts,
        "pairs": [str(p) for p in cfg.pairs], "pairs_sha256": [file_sha256(p) for p in cfg.pairs],
        "distances": file_sources(cfg.distances), "pairs_counted": int(len(pairs.same)),
        "matched": choice.matched, "mismatched": choice.mismatched, "failed_pairs": int(pairs.failed.sum()),
        "left_out": left_out, "pairs_of_learnt_people": int(of_learnt), "tensors_sha256": tensors}
    new_record = {**record, "calibration": calibration}

    with folder_lock(out, PROG):
        old_sha = file_sha256(source)
        save_weights(pack_weights(weights.state, new_record), target)
        back = load_weights(target)  # its recorded digest and stored SHA-256 checked on the way
        if tensors_sha256(back.state) != tensors or back.record != json_record(new_record):
            raise RuntimeError(f"{target}: the tensors or the record read back are not those written")
        atomic_write_json(target.parent / RECORD_COPY, new_record)
        results = {"stage": STAGE, "calibration": calibration, "embedder_in": str(source), "embedder_in_sha256": old_sha,
                   "embedder_out": str(target), "embedder_out_sha256": file_sha256(target),
                   "pairs_read": total, "distances_measured_by": measured}
        atomic_write_json(out / RESULTS, results)
    print(f"threshold {choice.threshold:.6g} ({calibration_source(calibration)}): {len(pairs.same)} of {total} pairs "
          f"counted ({choice.matched} matched, {choice.mismatched} mismatched, {int(pairs.failed.sum())} with a face "
          f"not found, as errors), {choice.false_accepts} false accepts, accuracy {choice.accuracy:.4f}"
          + (f"; {left_out['pairs']} pairs of fold {fold}'s people left out" if left_out else ""))
    if of_learnt:
        print(f"warning: {of_learnt} of the {len(pairs.same)} pairs are of people the embedder learnt: on unseen "
              f"people this threshold gives a higher FAR than {choice.far:.4g} (recorded as pairs_of_learnt_people)",
              file=sys.stderr)
    print(f"-> {target} (sha256 {old_sha[:12]}... -> {results['embedder_out_sha256'][:12]}...), {out / RESULTS}")
    return results


cli = stage_cli(CalibrateConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
