"""The squared distance below which two faces are one person, and where it came from.

    from recognition.threshold import resolve_threshold
    threshold, source = resolve_threshold(cfg.threshold, embedder.record)
    print(f"threshold {threshold:g} ({source})")

Order, the first that is set wins:

1. the command line's ``--threshold`` (make ``THRESHOLD=``): the user knows better for their photos;
2. the embedder's calibration, ``record["calibration"]`` (written by ``make calibrate``,
   ``evaluation.calibrate``): a threshold chosen on a named pairs file at a target FAR (or for the
   best accuracy), stored in the weights file with the FAR and TAR it gave there, so the number and
   its meaning travel with the embedder it belongs to;
3. a ``threshold`` in the training record (what records held before calibrations existed);
4. ``UNCALIBRATED_THRESHOLD``, with a warning naming ``make calibrate``: nothing says what FAR it
   gives for this embedder.

Every value is a squared distance of unit vectors, so it must lie in (0, 4); anything else is one
line (``ValueError``) naming where it came from.
"""

from __future__ import annotations

from pathlib import Path

# The shipped embedder's card before it was calibrated: on LFW fold 10 each sub-fold's best-accuracy
# threshold lay between 1.28 and 1.42, 1.35 is the middle. Only a fallback for an embedder that
# carries no calibration, and printed as such: another embedder's distances need not be alike.
UNCALIBRATED_THRESHOLD = 1.35
UNCALIBRATED_SOURCE = ("not calibrated: the shipped embedder card's best-accuracy thresholds on LFW fold 10, "
                       "1.28-1.42, whatever FAR that gives for this embedder")
UNCALIBRATED_WARNING = ("warning: the embedder carries no calibrated threshold, so {value:g} is a guess; choose one at "
                        "a known FAR with make calibrate EMBEDDER=... PAIRS=... (or give THRESHOLD=)")
FLAG = "--threshold"


def check_threshold(value: float, origin: str) -> None:
    if not 0 < value < 4:
        raise ValueError(f"{origin} must be in (0, 4), the range of squared distances of unit vectors, got {value}")


def calibration_source(calibration: dict) -> str:
    """How a calibration reads in one phrase: ``calibrated at FAR 0.01 on a.txt+b.txt, FAR 0.0098, TAR 0.62``."""
    pairs = "+".join(Path(p).name for p in calibration.get("pairs") or []) or "unnamed pairs"
    reached = f"FAR {calibration['far']:.4g}, TAR {calibration['tar']:.4g}"
    if calibration.get("method") == "best-accuracy":
        return f"calibrated for the best accuracy on {pairs}, accuracy {calibration['accuracy']:.4g}, {reached}"
    return f"calibrated at FAR {calibration['far_target']:g} on {pairs}, {reached}"


def resolve_threshold(given: float | None, record: dict | None) -> tuple[float, str]:
    """The threshold and where it came from (module docstring: the order)."""
    if given is not None:
        check_threshold(float(given), FLAG)
        return float(given), FLAG
    record = record or {}
    calibration = record.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict) or not isinstance(calibration.get("threshold"), (int, float)):
            raise ValueError(f"the embedder record's calibration is not a calibration (no threshold): "
                             f"{str(calibration)[:80]}; calibrate it again with make calibrate")
        check_threshold(float(calibration["threshold"]), "the embedder's calibrated threshold")
        return float(calibration["threshold"]), calibration_source(calibration)
    if record.get("threshold") is not None:
        check_threshold(float(record["threshold"]), "the embedder record's threshold")
        return float(record["threshold"]), "the embedder's training record"
    return UNCALIBRATED_THRESHOLD, UNCALIBRATED_SOURCE


def is_calibrated(source: str) -> bool:
    return source != UNCALIBRATED_SOURCE


def threshold_lines(given: float | None, record: dict | None) -> tuple[float, str, list[str]]:
    """The threshold, its source and the lines a stage prints about it: ``threshold T (source)``, and
    the warning when it is the uncalibrated fallback."""
    value, source = resolve_threshold(given, record)
    lines = [f"threshold {value:g} ({source})"]
    if not is_calibrated(source):
        lines.append(UNCALIBRATED_WARNING.format(value=value))
    return value, source, lines
