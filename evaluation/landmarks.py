"""Landmark accuracy of the whole cascade on a 5-point landmark list: ``make eval-landmarks``.

    python -m evaluation.landmarks --landmarks .../trainImageList.txt --weights shipped \
        --out build/eval-landmarks/shipped [--part holdout]

Every image of the list goes through the detector as a user would run it (pyramid, P-Net, R-Net,
O-Net, O-Net's landmarks). Each annotated face is matched to one detection (greedy by IoU, at
least ``match_iou``); a face without one counts as missed. For a matched face the normalised mean
error is the mean of the five point distances divided by the inter-ocular distance (the distance
between the two annotated eye centres), the usual 5-point measure. Written to ``out``:
``results.json`` (detection rate, mean and median NME, failure rate at NME 0.1 with and without
missed faces), ``faces.csv`` (one row per annotated face) and ``ced.png`` (the cumulative error
distribution). ``--part holdout`` (default) evaluates only the faces every training build leaves
out (``annotations.landmarks.landmark_holdout_mask``), so trained weights are scored on faces they
never saw.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotations.landmarks import (DEFAULT_HOLDOUT_FRACTION, LANDMARK_COLUMNS, landmark_holdout_mask,
                                  landmark_images_root, load_landmarks)
from core.atomic import atomic_write_bytes, atomic_write_json, ensure_writable_folder
from core.device import resolve_device
from core.geometry import iou_matrix
from core.imageio import ImageReadError, read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.stage import run_stage
from core.weights import weights_digests
from detector import DetectorConfig, load_detector
from detector.cascade import check_image_pyramids


@dataclass(frozen=True)
class LandmarkEvalConfig:
    landmarks: str
    """A CNN_FacePoint ``trainImageList.txt`` or a folder with CelebA's two lists."""
    weights: str
    """shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt."""
    out: str
    """Output folder: results.json, faces.csv, ced.png."""
    part: str = field(default="holdout", metadata={"choices": ("holdout", "train", "all")})
    """Which faces: those held out of every training build, the training ones, or all."""
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    """Share of the list held out (must match the data builds' ``landmark_holdout``)."""
    match_iou: float = 0.4
    """A detection is a face's when their IoU is at least this (landmark-list boxes are tighter
    than the detector's, so the usual 0.5 would call well-placed detections misses)."""
    failure_nme: float = 0.1
    """A matched face whose NME exceeds this is a failure."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device, ...)."""
    limit: int | None = None
    """Evaluate only the first N images (quick runs)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if not 0 < self.match_iou <= 1:
            raise ValueError(f"match_iou must be in (0, 1], got {self.match_iou}")
        if not self.failure_nme > 0:
            raise ValueError(f"failure_nme must be > 0, got {self.failure_nme}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


# -- pure metrics -----------------------------------------------------------------------------
def match_faces(gt_boxes, det_boxes, min_iou: float) -> np.ndarray:
    """For each ground-truth box the index of its detection, or -1: pairs are taken greedily in
    descending IoU, each detection and each face used once, and only pairs with IoU >= ``min_iou``."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    match = np.full(len(gt), -1, dtype=np.int64)
    if len(gt) == 0 or len(det) == 0:
        return match
    overlap = iou_matrix(gt, det)
    used = np.zeros(len(det), dtype=bool)
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        g, d = divmod(int(flat), len(det))
        if overlap[g, d] < min_iou:
            break
        if match[g] < 0 and not used[d]:
            match[g], used[d] = d, True
    return match


def normalized_mean_error(pred, gt) -> np.ndarray:
    """Per face: mean point distance / inter-ocular distance; points (N, 5, 2), left eye first."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 5, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 5, 2)
    inter_ocular = np.linalg.norm(g[:, 0] - g[:, 1], axis=1)
    return np.linalg.norm(p - g, axis=2).mean(axis=1) / inter_ocular


def ced_curve(nme, total: int, max_error: float = 0.3, points: int = 301) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: for each error x, the share of ``total`` faces with NME <= x
    (missed faces are in ``total`` but never below any x)."""
    xs = np.linspace(0.0, max_error, points)
    sorted_nme = np.sort(np.asarray(nme, dtype=np.float64))
    return xs, np.searchsorted(sorted_nme, xs, side="right") / max(total, 1)


def summarize(nme, faces: int, failure_nme: float) -> dict:
    """Named figures from the NMEs of the matched faces out of ``faces`` annotated ones."""
    nme = np.asarray(nme, dtype=np.float64)
    matched = len(nme)
    failures = int((nme > failure_nme).sum())
    return {
        "faces": faces,
        "detected": matched,
        "detection_rate": matched / faces if faces else 0.0,
        "mean_nme": float(nme.mean()) if matched else None,
        "median_nme": float(np.median(nme)) if matched else None,
        "failure_nme": failure_nme,
        "failure_rate": failures / matched if matched else None,
        "failure_rate_with_missed": (failures + faces - matched) / faces if faces else None,
    }


# -- the stage --------------------------------------------------------------------------------
# Keys every results.json of this stage holds: how a rerun knows the file it replaces is its own.
RESULT_KEYS = ("detection_rate", "mean_nme", "unreadable_images", "config", "weights_sha256")


def select_faces(cfg: LandmarkEvalConfig):
    """The annotated faces to evaluate and the folder their image paths are relative to."""
    marks = load_landmarks(cfg.landmarks)
    faces = marks.faces
    if cfg.part != "all":
        held_out = landmark_holdout_mask(len(faces), cfg.holdout_fraction)
        faces = faces[held_out if cfg.part == "holdout" else ~held_out]
    return faces, Path(marks.images_root)


def evaluate(cfg: LandmarkEvalConfig, selected=None) -> tuple[list[dict], list[str]]:
    """One row per annotated face (matched detection, NME) and the images that could not be read;
    ``selected``: ``select_faces(cfg)`` when the caller has it already."""
    from tqdm import tqdm

    faces, root = selected or select_faces(cfg)
    detector = load_detector(cfg.weights, cfg.detector)
    groups = list(faces.groupby("image", sort=False))[: cfg.limit]
    rows, unreadable = [], []
    for image_name, group in tqdm(groups, unit="img", desc="landmarks", disable=not cfg.progress, dynamic_ncols=True):
        gt_boxes = group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        gt_points = group[list(LANDMARK_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 5, 2)
        try:
            dets = detector.detect(read_image_rgb(root / image_name))
        except ImageReadError as e:
            unreadable.append(str(e))
            dets = None
        match = match_faces(gt_boxes, dets.boxes if dets is not None else np.zeros((0, 4)), cfg.match_iou)
        for k, d in enumerate(match):
            row = {"image": image_name, "detected": bool(d >= 0), "iou": None, "score": None, "nme": None}
            if d >= 0 and not np.isnan(dets.landmarks[d]).any():
                row["iou"] = float(iou_matrix(gt_boxes[k], dets.boxes[d])[0, 0])
                row["score"] = float(dets.scores[d])
                row["nme"] = float(normalized_mean_error(dets.landmarks[d], gt_points[k])[0])
            elif d >= 0:
                raise ValueError(f"{cfg.weights}: the cascade's last net has no landmark head; landmarks need O-Net")
            rows.append(row)
    return rows, unreadable


def plot_ced(curves: dict[str, tuple[np.ndarray, np.ndarray]], failure_nme: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label)
    ax.axvline(failure_nme, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("NME (mean point error / inter-ocular distance)")
    ax.set_ylabel("share of annotated faces")
    ax.set_xlim(0, xs[-1])
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Cumulative error distribution (missed faces never reach 1)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def main(cfg: LandmarkEvalConfig) -> dict:
    resolve_device(cfg.detector.device)  # a device this machine lacks, an output folder that cannot be written
    digests = weights_digests(cfg.weights)  # or missing weights: one line before any work
    # The folder holding the list's images is an input too.
    check_output_apart(cfg.out, {"--landmarks": cfg.landmarks, "the images of --landmarks":
                                 landmark_images_root(cfg.landmarks), "--weights": weights_folder(cfg.weights)})
    check_names_free(cfg.out, ["results.json"], "evaluation.landmarks", json_holding(*RESULT_KEYS))
    out = ensure_writable_folder(cfg.out)
    with folder_lock(out, "evaluation.landmarks"):
        return _run(cfg, out, digests)


def _run(cfg: LandmarkEvalConfig, out: Path, digests: dict[str, str]) -> dict:
    faces, root = selected = select_faces(cfg)
    # An image too large for --min-face is refused before any detection, naming it, rather than
    # dropped from the figures.
    images = list(faces["image"].unique())[: cfg.limit]
    check_image_pyramids([root / image for image in images], cfg.detector.min_face)
    rows, unreadable = evaluate(cfg, selected)
    nme = [r["nme"] for r in rows if r["nme"] is not None]
    results = summarize(nme, len(rows), cfg.failure_nme)
    results.update(unreadable_images=unreadable, config=asdict(cfg), weights_sha256=digests)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["image", "detected", "iou", "score", "nme"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "faces.csv", table.getvalue().encode())
    atomic_write_bytes(out / "ced.png", plot_ced({cfg.weights: ced_curve(nme, len(rows))}, cfg.failure_nme))
    atomic_write_json(out / "results.json", results)
    print(format_results(results))
    print(f"wrote {out / 'results.json'}, {out / 'faces.csv'}, {out / 'ced.png'}")
    return results


def format_results(r: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    return (f"faces {r['faces']:,}  detected {r['detected']:,} ({r['detection_rate']:.3f})  "
            f"mean NME {fmt(r['mean_nme'])}  median {fmt(r['median_nme'])}  "
            f"failures (NME > {r['failure_nme']}) {fmt(r['failure_rate'])} of detected, "
            f"{fmt(r['failure_rate_with_missed'])} counting missed faces; "
            f"unreadable images {len(r['unreadable_images'])}")


if __name__ == "__main__":
    sys.exit(run_stage(LandmarkEvalConfig, main))
