"""Per-stage ROC of face / non-face classification on held-out samples, plus regression errors.

``make roc`` runs::

    python -m evaluation.roc --val-data build/val --weights build/weights --out build/roc

``build/val`` is a sample build of the WIDER *val* images at 12, 24 and 48 px with the held-out
landmark faces (``make val-data``). For every net found in the weights folder (``pnet.pt``,
``rnet.pt``, ``onet.pt``) it scores the positives and negatives of its size and writes

* ``roc.png``: one ROC curve per stage, AUC in the legend (false-positive rate on a log axis);
* ``roc.csv``: the curves (stage, threshold, fpr, tpr);
* ``summary.json`` and a printed table: AUC, recall and false-positive rate at the stage's
  detection threshold, mean absolute box-offset error on positives, and the landmark NME
  (mean point error over the inter-ocular distance) on held-out landmark samples.

Bad input (a device this machine lacks, unusable weights, a missing build, a shard missing or
unreadable, an output folder that cannot be written or that another run holds) is found before
the nets run and printed as one line, exit code 2.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np
import torch

from core.atomic import atomic_write_bytes, atomic_write_json, ensure_writable_folder
from core.cli import parse_config
from core.device import resolve_device
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.nets import INPUT_SIZES, NET_NAMES, normalize_images
from core.stage import run_stage
from core.weights import load_nets, resolve_weights
from detector import DetectorConfig
from lmdb_builders.reader import ShardDataset, records_to_batch
from lmdb_builders.schema import Kind

BATCH_SIZE = 1024  # samples per forward pass where --batch-size is none


@dataclass(frozen=True)
class RocConfig:
    val_data: str
    """Build folder of held-out samples with 12/24/48 px buckets (``make val-data``)."""
    weights: str
    """A folder with pnet.pt [rnet.pt [onet.pt]] state dicts, ``shipped`` or ``original:PATH``."""
    out: str
    """Output folder: roc.png, roc.csv, summary.json."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings, of which ROC reads three: --thresholds (at which each stage's recall and
    false-positive rate are reported, the detector's), --device and --batch-size (samples per forward
    pass; none: 1024)."""
    max_curve_points: int = 1000
    """At most this many points per stage in roc.csv (the curve is thinned evenly, ends kept)."""

    def __post_init__(self):
        if self.max_curve_points < 2:
            raise ValueError(f"max_curve_points must be >= 2, got {self.max_curve_points}")


# -- pure metrics -----------------------------------------------------------------------------
def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0).

    A sample counts as detected at threshold t when its score >= t.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, dtype=int)
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    positives, negatives = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fp / negatives]
    tpr = np.r_[0.0, tp / positives]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
    """Area under a curve given by increasing ``fpr`` (trapezoids)."""
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def rates_at(scores, labels, threshold: float) -> tuple[float, float]:
    """(recall of faces, false-positive rate of non-faces) when keeping scores >= threshold."""
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    keep = scores >= threshold
    recall = float(keep[labels].mean()) if labels.any() else float("nan")
    fpr = float(keep[~labels].mean()) if (~labels).any() else float("nan")
    return recall, fpr


def landmark_nme(pred, target) -> float:
    """Mean over samples of the mean point error divided by the inter-ocular distance.

    Both are (N, 10) normalised values ``x1..x5, y1..y5`` on square crops (points 0 and 1 are
    the eyes), so the crop size cancels.
    """
    p = np.stack([pred[:, :5], pred[:, 5:]], axis=2)
    t = np.stack([target[:, :5], target[:, 5:]], axis=2)
    inter_ocular = np.linalg.norm(t[:, 0] - t[:, 1], axis=1)
    return float(np.mean(np.linalg.norm(p - t, axis=2).mean(axis=1) / inter_ocular))


def thin(curve: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points along a curve, ends included."""
    if len(curve) <= max_points:
        return np.arange(len(curve))
    return np.unique(np.linspace(0, len(curve) - 1, max_points).round().astype(int))


# -- running the nets -------------------------------------------------------------------------
def net_outputs(net, dataset: ShardDataset, batch_size: int, device) -> dict[str, np.ndarray]:
    """Face probability, box offsets and landmarks for every sample of a dataset, in order."""
    probs, boxes, marks, batches = [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = records_to_batch(dataset.__getitems__(range(start, min(start + batch_size, len(dataset)))))
            out = net(normalize_images(batch["image"].to(device)))
            logits = out.logits.flatten(1)
            probs.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
            boxes.append(out.box.flatten(1).cpu().numpy())
            marks.append(None if out.landmarks is None else out.landmarks.flatten(1).cpu().numpy())
            batches.append({k: batch[k].numpy() for k in ("kind", "label", "box", "landmarks")})
    joined = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    joined.update(prob=np.concatenate(probs), pred_box=np.concatenate(boxes),
                  pred_landmarks=None if marks[0] is None else np.concatenate(marks))
    return joined


def stage_summary(name: str, o: dict, threshold: float) -> tuple[dict, tuple]:
    scored = o["label"] >= 0
    fpr, tpr, thr = roc_curve(o["prob"][scored], o["label"][scored] == 1)
    recall, false_pos = rates_at(o["prob"][scored], o["label"][scored] == 1, threshold)
    pos = o["kind"] == Kind.POSITIVE
    lm = o["kind"] == Kind.LANDMARK
    summary = {
        "stage": name,
        "faces": int((o["label"] == 1).sum()),
        "non_faces": int((o["label"] == 0).sum()),
        "auc": auc(fpr, tpr),
        "threshold": threshold,
        "recall_at_threshold": recall,
        "fpr_at_threshold": false_pos,
        "box_mae_positives": float(np.abs(o["pred_box"][pos] - o["box"][pos]).mean()) if pos.any() else None,
        "landmark_samples": int(lm.sum()),
        "landmark_nme": (landmark_nme(o["pred_landmarks"][lm], o["landmarks"][lm])
                         if o["pred_landmarks"] is not None and lm.any() else None),
    }
    return summary, (fpr, tpr, thr)


def plot_curves(curves: dict, summaries: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for s in summaries:
        fpr, tpr, _ = curves[s["stage"]]
        ax.semilogx(np.maximum(fpr, 1e-5), tpr, label=f"{s['stage']} (AUC {s['auc']:.4f})")
        ax.plot([max(s["fpr_at_threshold"], 1e-5)], [s["recall_at_threshold"]], "o", color=ax.lines[-1].get_color())
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (non-faces scored as faces)")
    ax.set_ylabel("true-positive rate (recall of faces)")
    ax.set_title("MTCNN stages on held-out samples (dots: stage thresholds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def main(cfg: RocConfig) -> list[dict]:
    # Everything that can be wrong with the inputs or the output folder is found before the nets run.
    device = resolve_device(cfg.detector.device)
    # summary.json is a list of one summary per stage: how a rerun knows the file it replaces is its own.
    check_names_free(cfg.out, ["summary.json"], "evaluation.roc", json_holding("stage", "auc", "recall_at_threshold"))
    nets = load_nets(resolve_weights(cfg.weights), device)
    datasets = {name: ShardDataset(cfg.val_data, INPUT_SIZES[name]) for name in NET_NAMES if name in nets}
    check_output_apart(cfg.out, {"--val-data": cfg.val_data, "--weights": weights_folder(cfg.weights)})
    out = ensure_writable_folder(cfg.out)
    with folder_lock(out, "evaluation.roc"):
        return _run(cfg, nets, datasets, device, out)


def _run(cfg: RocConfig, nets: dict, datasets: dict, device, out: Path) -> list[dict]:
    summaries, curves = [], {}
    for i, name in enumerate(NET_NAMES):
        if name not in nets:
            continue
        outputs = net_outputs(nets[name].to(device).eval(), datasets[name], cfg.detector.batch_size or BATCH_SIZE,
                              device)
        summary, curves[name] = stage_summary(name, outputs, cfg.detector.thresholds[i])
        summaries.append(summary)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["stage", "threshold", "fpr", "tpr"])
    for name, (fpr, tpr, thr) in curves.items():
        for j in thin(fpr, cfg.max_curve_points):
            writer.writerow([name, f"{thr[j]:.6g}", f"{fpr[j]:.6g}", f"{tpr[j]:.6g}"])
    atomic_write_bytes(out / "roc.csv", rows.getvalue().encode())
    atomic_write_json(out / "summary.json", summaries)
    atomic_write_bytes(out / "roc.png", plot_curves(curves, summaries))
    print_table(summaries)
    print(f"wrote {out / 'roc.png'}, {out / 'roc.csv'}, {out / 'summary.json'}")
    return summaries


def print_table(summaries: list[dict]) -> None:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"{'stage':6} {'faces':>7} {'non-faces':>9} {'AUC':>7} {'thr':>5} {'recall':>7} {'FPR':>7} "
          f"{'box MAE':>8} {'lm NME':>7}")
    for s in summaries:
        print(f"{s['stage']:6} {s['faces']:7,} {s['non_faces']:9,} {s['auc']:7.4f} {s['threshold']:5.2f} "
              f"{s['recall_at_threshold']:7.4f} {s['fpr_at_threshold']:7.4f} {fmt(s['box_mae_positives'], '8.4f')} "
              f"{fmt(s['landmark_nme'], '7.4f')}")


def parse_args(argv=None) -> RocConfig:
    return parse_config(RocConfig, argv, prog="python -m evaluation.roc", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    # lmdb.Error: a shard LMDB cannot open (a corrupt header); the rest are ValueError or OSError
    sys.exit(run_stage(RocConfig, main, parse=parse_args, errors=(lmdb.Error,)))
