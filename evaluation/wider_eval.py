"""WIDER FACE evaluation, the official protocol (``eval_tools/wider_eval.m`` and its Python port).

    python -m evaluation.wider_eval --images WIDER_val/images --gt eval_tools/ground_truth \\
        --pred out/pred --weights original:weights/original [--min-face 20] [--device cpu] [--limit N]

runs the detector over every image of the ground-truth lists found under ``--images``
(``<event>/<image>.jpg``), writes the predictions in the official submission format, evaluates
them, writes ``PRED/pr_curve.png`` and ``PRED/results.json`` and prints as its last line
``easy E medium M hard H``. Predictions already on disk (complete files) are kept, so an
interrupted run resumes; ``--overwrite`` redoes them. ``PRED/settings.json`` records the detector
settings and the sha256 of every weights file: a run with other settings over the same folder is
refused unless ``--overwrite``; a run whose weights files changed under the same name (retrained
into the same folder) deletes the old predictions, says so, and detects every image again.
Bad input (missing images, ground truth or weights, unusable weights files or ``--device``,
settings that differ, an output folder that cannot be written or that another run holds) prints
one line and exits with code 2, before any detection.

The protocol, as in the official Matlab code:

* ground truth: ``wider_face_val.mat`` (``event_list``, ``file_list``, ``face_bbx_list``, boxes
  ``x y w h``) and ``wider_{easy,medium,hard}_val.mat`` whose ``gt_list`` holds, per image, the
  1-based indices of the faces that count in that setting; the other faces are "ignored";
* predictions: ``PRED/<event>/<image>.txt``: image name, count, then ``x y w h score`` lines;
  read sorted by score, best first (``read_pred.m``);
* scores are normalised to [0, 1] by the global minimum and maximum over all images
  (``norm_score.m``, which starts from max 0 and min 1);
* per image, each detection (best first) is matched to the face of highest IoU; IoU >= 0.5 with
  a counted face recalls it (a second detection of it is a false positive); IoU >= 0.5 with an
  ignored face makes the detection count neither as true nor as false positive; images without
  faces or without detections are skipped (their faces still count as missed);
* 1000 score thresholds ``1 - t/1000``, precision = recalled / proposals, recall = recalled /
  counted faces, AP = VOC-style area under the interpolated (monotone) precision curve.

Box convention: the official code turns ``x y w h`` into ``[x, y, x + w, y + h]`` and takes IoU
with ``+1`` widths (``boxoverlap.m``), for detections and ground truth alike. The project's boxes
are inclusive (``[x, y, x + w - 1, y + h - 1]`` for a WIDER ``x y w h``, see core/geometry.py), so
``write_predictions`` writes ``w = x2 - x1 + 1``: a detection equal to a ground-truth box is written
with the ground truth's own ``w h`` and gets IoU 1. The IoU itself is ``core.geometry.iou_matrix``
on ``[x, y, x + w, y + h]``, which is exactly the official arithmetic.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_bytes, ensure_writable_folder
from core.cli import parse_config
from core.device import resolve_device
from core.geometry import as_boxes, iou_matrix
from core.imageio import try_read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.stage import run_stage
from core.weights import weights_digests
from detector import DetectorConfig, load_detector
from detector.cascade import check_image_pyramids
from annotations.wider_mat import SETTINGS, load_ground_truth

THRESH_NUM = 1000
IOU_THRESHOLD = 0.5


# -- predictions -----------------------------------------------------------------------------


def prediction_path(pred_dir, event: str, name: str) -> Path:
    return Path(pred_dir) / event / f"{name}.txt"


def read_prediction(path) -> np.ndarray:
    """(N, 5) ``x y w h score`` of one submission file, in file order. Raises ValueError when the
    file is malformed or shorter than its count says (an incomplete file)."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected the image name and a count on the first two lines")
    try:
        count = int(lines[1].strip())
        rows = [[float(v) for v in line.split()[:5]] for line in lines[2 : 2 + count]]
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if count < 0 or len(rows) != count or any(len(r) != 5 for r in rows):
        raise ValueError(f"{path}: {count} detections announced, {len(rows)} complete lines")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def prediction_complete(path) -> bool:
    try:
        read_prediction(path)
    except (OSError, ValueError):
        return False
    return True


def write_predictions(pred_dir, image_rel_path: str, boxes_xyxy, scores) -> Path:
    """Write one image's detections (inclusive ``x1 y1 x2 y2``) as ``PRED/<event>/<image>.txt``.

    ``image_rel_path`` is ``<event>/<image>.jpg``; widths are written inclusive, ``x2 - x1 + 1``
    (see the module docstring). Atomic: a file that exists is complete.
    """
    rel = Path(image_rel_path)
    boxes = as_boxes(boxes_xyxy) if len(np.asarray(boxes_xyxy).reshape(-1)) else np.zeros((0, 4))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    lines = [rel.stem, str(len(boxes))]
    for (x1, y1, x2, y2), s in zip(boxes, scores):
        lines.append(f"{x1:.2f} {y1:.2f} {x2 - x1 + 1:.2f} {y2 - y1 + 1:.2f} {s:.8f}")
    path = prediction_path(pred_dir, rel.parent.as_posix(), rel.stem)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


# -- the protocol --------------------------------------------------------------------------------


def _xywh_to_official(xywh: np.ndarray) -> np.ndarray:
    # The official [x, y, x + w, y + h], compared with +1 widths (= core.geometry' inclusive IoU).
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def official_iou(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(N, K) IoU of detections and faces, both ``x y w h``, in the official arithmetic (``boxoverlap.m``)."""
    return iou_matrix(_xywh_to_official(pred_xywh), _xywh_to_official(gt_xywh))


def normalize_scores(preds: list[np.ndarray]) -> list[np.ndarray]:
    """``norm_score.m``: ``(s - min) / (max - min)`` over all images, with max starting at 0 and min
    at 1. (If max == min, which the official code would turn into NaN, every score becomes 1.)"""
    hi, lo = 0.0, 1.0
    for p in preds:
        if len(p):
            hi, lo = max(hi, float(p[:, 4].max())), min(lo, float(p[:, 4].min()))
    out = []
    for p in preds:
        q = p.copy()
        if len(q):
            q[:, 4] = (q[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
        out.append(q)
    return out


def image_eval(pred: np.ndarray, gt_xywh: np.ndarray, counted: np.ndarray, iou_threshold: float = IOU_THRESHOLD):
    """``image_evaluation.m`` for one image, vectorised. ``pred`` (N, 5) sorted best first,
    ``counted`` (K,) bool. Returns (recalled faces after each detection (N,), proposal flags (N,):
    1 = counts as a proposal, -1 = matched an ignored face)."""
    overlaps = official_iou(pred[:, :4], gt_xywh)
    best = overlaps.argmax(axis=1)  # first maximum, like Matlab's max
    matched = overlaps[np.arange(len(pred)), best] >= iou_threshold
    hits_ignored = matched & ~counted[best]
    proposal = np.where(hits_ignored, -1, 1)
    hits = matched & counted[best]
    first = np.zeros(len(pred), dtype=bool)
    hit_rows = np.flatnonzero(hits)
    _, first_of_face = np.unique(best[hit_rows], return_index=True)
    first[hit_rows[first_of_face]] = True
    return np.cumsum(first), proposal


def image_pr_info(scores: np.ndarray, proposal: np.ndarray, pred_recall: np.ndarray, thresh_num: int = THRESH_NUM):
    """``image_pr_info.m``: (thresh_num, 2) proposals and recalled faces at each threshold ``1 - t/thresh_num``."""
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    # The official code takes the last detection with score >= threshold; scores are sorted best
    # first, so that is the count of such scores minus one.
    above = (scores[None, :] >= thresholds[:, None]).sum(axis=1)
    proposals = np.concatenate([[0], np.cumsum(proposal == 1)])
    recalled = np.concatenate([[0], pred_recall])
    return np.stack([proposals[above], recalled[above]], axis=1).astype(np.float64)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC-style AP: area under the precision envelope (NaN precisions ignored, as Matlab's max does)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate(pred_dir, gt_dir, images=None, iou_threshold: float = IOU_THRESHOLD,
             thresh_num: int = THRESH_NUM) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """AP, precision and recall (each (thresh_num,)) per setting for the predictions in ``pred_dir``.

    ``images``: the (event, name) pairs to evaluate (default: every image of the ground truth,
    each of which must then have a prediction file, as the official code requires).
    """
    gt = load_ground_truth(gt_dir)
    if images is not None:
        wanted = set(map(tuple, images))
        gt = [g for g in gt if g.key in wanted]
    missing = [g for g in gt if not prediction_path(pred_dir, g.event, g.name).is_file()]
    if missing:
        first = prediction_path(pred_dir, missing[0].event, missing[0].name)
        raise FileNotFoundError(f"{len(missing)} of {len(gt)} images have no prediction file (first: {first})")
    preds = []
    for g in gt:
        p = read_prediction(prediction_path(pred_dir, g.event, g.name))
        preds.append(p[np.argsort(-p[:, 4], kind="stable")])
    preds = normalize_scores(preds)
    results = {}
    for setting in SETTINGS:
        pr = np.zeros((thresh_num, 2))
        faces = 0
        for g, p in zip(gt, preds):
            keep = g.keep[setting]
            faces += len(keep)
            if len(g.boxes) == 0 or len(p) == 0:
                continue
            counted = np.zeros(len(g.boxes), dtype=bool)
            counted[keep] = True
            pred_recall, proposal = image_eval(p, g.boxes, counted, iou_threshold)
            pr += image_pr_info(p[:, 4], proposal, pred_recall, thresh_num)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = pr[:, 1] / pr[:, 0]
            recall = pr[:, 1] / faces if faces else np.full(thresh_num, np.nan)
        ap = voc_ap(recall, precision) if faces else math.nan
        results[setting] = (ap, precision, recall)
    return results


def plot_pr_curves(results, path: Path, title: str = "WIDER FACE val") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for setting in SETTINGS:
        ap, precision, recall = results[setting]
        ax.plot(recall, precision, label=f"{setting}: AP {ap:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# -- the stage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WiderEvalConfig:
    images: str
    """WIDER_val/images: one folder per event holding its .jpg images."""
    gt: str
    """Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (eval_tools/ground_truth)."""
    pred: str
    """Prediction folder, written; a rerun keeps the complete files already there (resumes)."""
    weights: str
    """shipped | original:PATH | a checkpoint folder with pnet.pt rnet.pt onet.pt."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device, ...)."""
    backend: str = "torch"
    """torch, or onnx (onnxruntime; --weights is then a folder written by make export)."""
    limit: int | None = None
    """Only the first N ground-truth images found under --images (quick runs)."""
    overwrite: bool = False
    """Redo the predictions already on disk, and replace a folder's recorded settings."""

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def _remove_predictions(pred: Path) -> int:
    """Delete the prediction files (``PRED/<event>/*.txt``), results and plot of a folder; their count."""
    files = sorted(pred.glob("*/*.txt"))
    for path in files + [pred / "results.json", pred / "pr_curve.png"]:
        path.unlink(missing_ok=True)
    return len(files)


def _weights_digests(cfg: WiderEvalConfig) -> dict[str, str]:
    """sha256 of the files the detector is loaded from: the nets' ``.pt`` files or, for the onnx
    backend, the export's ``mtcnn.json`` (which records each ``.onnx`` file's, checked on loading)."""
    if cfg.backend == "onnx":
        from detector.onnx_backend import MANIFEST_NAME  # imports onnxruntime: only when asked for

        path = Path(cfg.weights).expanduser() / MANIFEST_NAME
        return {MANIFEST_NAME: hashlib.sha256(path.read_bytes()).hexdigest()}
    return weights_digests(cfg.weights)


def _check_settings(pred: Path, cfg: WiderEvalConfig, digests: dict[str, str]) -> None:
    """Never mix predictions of different weights or detector settings in one folder.

    Other settings (weights spec, backend, the detector's ``result_settings``) are refused unless
    ``--overwrite``: the predictions there are a valid result of another run, which the user may
    want to keep. Other weights files under the same spec (retrained into the same folder, new
    shipped weights, or a folder that records no digests) mean the predictions there belong to
    files that no longer exist: no one can want them, and ``make eval-wider`` reruns exactly then,
    so they are deleted (with a note) and every image is detected again.
    """
    settings = {"weights": cfg.weights, "backend": cfg.backend, **cfg.detector.result_settings()}
    path = pred / "settings.json"
    if path.is_file() and not cfg.overwrite:
        try:
            old = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it or use --overwrite") from None
        if isinstance(old, dict):
            # What older folders did not record (the backend, before the onnx one came; the detector
            # settings other than min_face and thresholds) was the default.
            old = {"backend": "torch", **DetectorConfig().result_settings(), **old}
        old_digests = old.pop("weights_sha256", None) if isinstance(old, dict) else None
        if old != settings:
            raise ValueError(f"{pred} holds predictions made with {old}; use another --pred or --overwrite")
        if old_digests != digests:
            old_digests = old_digests or {}
            changed = [n for n in sorted(set(digests) | set(old_digests)) if old_digests.get(n) != digests.get(n)]
            removed = _remove_predictions(pred)
            print(f"{pred}: its predictions were made with other weights files ({', '.join(changed)} "
                  f"{'not recorded' if not old_digests else 'changed since'}): removed {removed} prediction "
                  f"files, detecting every image again", file=sys.stderr)
    atomic_write_bytes(path, (json.dumps({**settings, "weights_sha256": digests}, indent=1) + "\n").encode())


def present_images(images, gt_dir) -> tuple[list, int]:
    """The ground-truth images of ``gt_dir`` (``annotations.wider_mat``) whose ``<event>/<name>.jpg``
    is under ``images``, in ground-truth order, and how many of them are not. Raises
    FileNotFoundError when the ground truth cannot be read or none of its images is there."""
    try:
        gt = load_ground_truth(gt_dir)
    except OSError as err:  # scipy's loadmat turns a missing file into a bare OSError; its cause names the file
        raise FileNotFoundError(f"cannot read the ground truth in {gt_dir}: {err.__cause__ or err}") from None
    images = Path(images)
    present = [g for g in gt if (images / g.event / f"{g.name}.jpg").is_file()]
    if not present:
        raise FileNotFoundError(f"none of the ground-truth images is under {images}")
    return present, len(gt) - len(present)


# Keys every results.json of this stage holds: how a rerun knows the file it replaces is its own.
RESULT_KEYS = ("ap", "images_evaluated", "protocol", "weights_sha256")


def main(cfg: WiderEvalConfig) -> dict:
    """Detect (what is not on disk yet), evaluate, write the plot and results.json; the summary.

    Raises FileNotFoundError / ValueError on bad input (no images, ground truth or weights;
    unusable weights files or device; predictions of other settings in ``cfg.pred``), and
    NotWritableError / FolderLockedError / DiskFullError for a folder that cannot be written, is
    in use by another run, or fills its disk. All but the last are raised before any detection.
    """
    resolve_device(cfg.detector.device)  # a device this machine lacks: one line before any work
    pred = Path(cfg.pred)
    present, missing = present_images(cfg.images, cfg.gt)
    if missing:
        print(f"{missing} of {missing + len(present)} ground-truth images are not under {Path(cfg.images)}; "
              f"evaluating the {len(present)} that are", file=sys.stderr)
    if cfg.limit is not None:
        present = present[: cfg.limit]
    # An image too large for --min-face is refused now, naming it, rather than dropped from the figures.
    check_image_pyramids([Path(cfg.images) / g.event / f"{g.name}.jpg" for g in present], cfg.detector.min_face)
    # Loading the nets (a few ms) checks every weights file before the folder is touched.
    detector = load_detector(cfg.weights, cfg.detector, backend=cfg.backend)
    digests = _weights_digests(cfg)
    check_output_apart(pred, {"--images": cfg.images, "--gt": cfg.gt, "--weights": weights_folder(cfg.weights)},
                       "--pred")
    check_names_free(pred, ["results.json"], "evaluation.wider_eval", json_holding(*RESULT_KEYS))
    ensure_writable_folder(pred)
    with folder_lock(pred, "evaluation.wider_eval"):
        return _run(cfg, present, detector, digests)


def _run(cfg: WiderEvalConfig, present: list, detector, digests: dict[str, str]) -> dict:
    from tqdm import tqdm

    images_dir, pred = Path(cfg.images), Path(cfg.pred)
    _check_settings(pred, cfg, digests)
    todo = [g for g in present if cfg.overwrite or not prediction_complete(prediction_path(pred, g.event, g.name))]
    seconds, unreadable = 0.0, []
    if todo:
        for g in tqdm(todo, desc="detect", unit="img", file=sys.stderr):
            image = try_read_image_rgb(images_dir / g.event / f"{g.name}.jpg")
            if image is None:
                unreadable.append(f"{g.event}/{g.name}.jpg")
                continue
            start = time.perf_counter()
            dets = detector.detect(image)
            seconds += time.perf_counter() - start
            write_predictions(pred, f"{g.event}/{g.name}.jpg", dets.boxes, dets.scores)
    if unreadable:
        print(f"{len(unreadable)} unreadable images left out (first: {unreadable[0]})", file=sys.stderr)
    evaluated = [g.key for g in present if prediction_path(pred, g.event, g.name).is_file()]
    results = evaluate(pred, cfg.gt, images=evaluated)
    detected = len(todo) - len(unreadable)
    summary = {
        "ap": {s: results[s][0] for s in SETTINGS},
        "images_evaluated": len(evaluated),
        "images_detected_this_run": detected,
        "seconds_per_image": seconds / detected if detected else None,
        "weights_sha256": digests,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "protocol": "official WIDER FACE (eval_tools): IoU 0.5, 1000 thresholds, global score normalisation",
    }
    plot_pr_curves(results, pred / "pr_curve.png", title=f"WIDER FACE val ({len(evaluated)} images)")
    atomic_write_bytes(pred / "results.json", (json.dumps(summary, indent=1) + "\n").encode())
    if detected:
        print(f"{detected} images detected, {seconds / detected:.3f} s/image")
    print(" ".join(f"{s} {summary['ap'][s]:.3f}" for s in SETTINGS))
    return summary


def parse_args(argv=None) -> WiderEvalConfig:
    return parse_config(WiderEvalConfig, argv, prog="python -m evaluation.wider_eval",
                        description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(run_stage(WiderEvalConfig, main, parse=parse_args))
