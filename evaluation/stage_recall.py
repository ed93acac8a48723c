"""Recall of each cascade stage on WIDER FACE val faces: ``make stage-recall``.

    python -m evaluation.stage_recall --images WIDER_val/images --gt eval_tools/ground_truth \\
        --weights shipped --out build/stage-recall/shipped [--min-face 20] [--limit N]

WIDER AP says how good the whole cascade is; this says which net loses the faces. Every image goes
through the detector as ``detect`` runs it, and each stage's boxes (after its threshold, regression
and NMS, as ``Detector.detect_stages`` hands them to the next stage) are kept. A face is recalled by a
stage when one of that stage's boxes overlaps it with IoU >= 0.5 in the official WIDER arithmetic
(``evaluation.wider_eval.official_iou``); no score threshold beyond the detector's own. A face a stage
drops never comes back, so recall falls from stage to stage, and the fall is that net's cost.

Written to ``out/results.json``: per stage, the recall of the faces counted in each of the easy,
medium and hard settings, and of the hard setting's faces by height in pixels (``SIZE_BINS``), with
the face counts, the weights files' sha256 and the settings. The table is printed as well. Bad input
(missing images, ground truth or weights, a device this machine lacks, an output folder that cannot
be written or that another run holds) prints one line and exits with code 2 before any detection.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotations.wider_mat import SETTINGS
from core.atomic import atomic_write_json, ensure_writable_folder
from core.device import resolve_device
from core.imageio import try_read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.stage import run_stage
from core.weights import weights_digests
from detector import DetectorConfig, load_detector
from detector.cascade import check_image_pyramids
from evaluation.wider_eval import IOU_THRESHOLD, official_iou, present_images

# Face heights: the first bin starts at the detector's usual smallest face; faces below it count
# in no bin (a stage is not asked to find them), but in the settings they count as WIDER says.
SIZE_BINS = (20, 32, 64, 128, math.inf)


def size_bin_names(edges=SIZE_BINS) -> list[str]:
    return [f"{lo:g}-{hi:g}" if hi != math.inf else f"{lo:g}+" for lo, hi in zip(edges[:-1], edges[1:])]


def recalled_faces(gt_xywh: np.ndarray, boxes_xyxy: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """(K,) bool: which faces (``x y w h``) some box (inclusive ``x1 y1 x2 y2``) overlaps by ``iou_threshold``."""
    gt_xywh = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(gt_xywh) == 0 or len(boxes) == 0:
        return np.zeros(len(gt_xywh), dtype=bool)
    # The widths write_predictions submits (x2 - x1 + 1), so a stage's box scores as eval-wider scores it.
    boxes_xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2] + 1], axis=1)
    return official_iou(boxes_xywh, gt_xywh).max(axis=0) >= iou_threshold


@dataclass
class RecallCounts:
    """Faces counted and recalled, per group (a setting or a size bin); added up over images."""

    faces: dict[str, int] = field(default_factory=dict)
    recalled: dict[str, int] = field(default_factory=dict)

    def add(self, group: str, hits: np.ndarray) -> None:
        self.faces[group] = self.faces.get(group, 0) + int(len(hits))
        self.recalled[group] = self.recalled.get(group, 0) + int(np.count_nonzero(hits))

    def recall(self) -> dict[str, float | None]:
        return {g: (self.recalled[g] / n if n else None) for g, n in self.faces.items()}


def count_image(counts: RecallCounts, hits: np.ndarray, keep: dict[str, np.ndarray], heights: np.ndarray,
                edges=SIZE_BINS) -> None:
    """Add one image's recalled faces ``hits`` (K,) to ``counts``: per setting (``keep``: the indices
    of the faces it counts) and, for the hard setting's faces, per height bin."""
    for setting in SETTINGS:
        counts.add(setting, hits[keep[setting]])
    hard = np.asarray(keep["hard"], dtype=np.int64)
    for name, lo, hi in zip(size_bin_names(edges), edges[:-1], edges[1:]):
        in_bin = hard[(heights[hard] >= lo) & (heights[hard] < hi)]
        counts.add(name, hits[in_bin])


@dataclass(frozen=True)
class StageRecallConfig:
    images: str
    """WIDER_val/images: one folder per event holding its .jpg images."""
    gt: str
    """Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (eval_tools/ground_truth)."""
    weights: str
    """shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt."""
    out: str
    """Output folder: results.json."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device, ...)."""
    limit: int | None = None
    """Only the first N ground-truth images found under --images (quick runs)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


# Keys every results.json of this stage holds: how a rerun knows the file it replaces is its own.
RESULT_KEYS = ("recall", "size_bins", "images_evaluated", "weights_sha256")


def main(cfg: StageRecallConfig) -> dict:
    """Run the cascade over the val images, write and print each stage's recall; the results."""
    resolve_device(cfg.detector.device)
    present, missing = present_images(cfg.images, cfg.gt)
    present = present[: cfg.limit]
    # An image too large for --min-face is refused now, naming it, rather than dropped from the figures.
    check_image_pyramids([Path(cfg.images) / g.event / f"{g.name}.jpg" for g in present], cfg.detector.min_face)
    detector = load_detector(cfg.weights, cfg.detector)
    digests = weights_digests(cfg.weights)
    check_output_apart(cfg.out, {"--images": cfg.images, "--gt": cfg.gt, "--weights": weights_folder(cfg.weights)})
    check_names_free(cfg.out, ["results.json"], "evaluation.stage_recall", json_holding(*RESULT_KEYS))
    out = ensure_writable_folder(cfg.out)
    with folder_lock(out, "evaluation.stage_recall"):
        return _run(cfg, present, detector, digests, out, missing=missing)


def _run(cfg: StageRecallConfig, present: list, detector, digests: dict, out: Path, missing: int) -> dict:
    from tqdm import tqdm

    counts = {stage: RecallCounts() for stage in detector.stages}
    unreadable = []
    for g in tqdm(present, desc="stage recall", unit="img", file=sys.stderr, disable=not cfg.progress):
        image = try_read_image_rgb(Path(cfg.images) / g.event / f"{g.name}.jpg")
        if image is None:
            unreadable.append(f"{g.event}/{g.name}.jpg")
            continue
        for stage, dets in detector.detect_stages(image, detector.stages).items():
            count_image(counts[stage], recalled_faces(g.boxes, dets.boxes), g.keep, g.boxes[:, 3])
    results = {
        "recall": {stage: c.recall() for stage, c in counts.items()},
        "faces": next(iter(counts.values())).faces,
        "iou_threshold": IOU_THRESHOLD,
        "size_bins": "face height in pixels, the hard setting's faces",
        "images_evaluated": len(present) - len(unreadable),
        "images_missing": missing,
        "unreadable_images": unreadable,
        "weights_sha256": digests,
        "config": asdict(cfg),
    }
    atomic_write_json(out / "results.json", results)
    print(format_table(results))
    print(f"wrote {out / 'results.json'}")
    return results


def format_table(results: dict) -> str:
    groups = list(results["faces"])
    rows = [["stage", *groups], ["faces", *(f"{results['faces'][g]:,}" for g in groups)]]
    for stage, recall in results["recall"].items():
        rows.append([stage, *("-" if recall[g] is None else f"{recall[g]:.3f}" for g in groups)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


if __name__ == "__main__":
    sys.exit(run_stage(StageRecallConfig, main))
