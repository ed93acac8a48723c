"""Print what a WIDER annotation file (and a landmark list) holds, and plot its face sizes.

Run as ``make stats``, i.e.
``python -m annotations.stats --wider TXT --images DIR [--landmarks PATH] --out-png PNG``.
Prints a table (images, empty and missing images, faces kept and dropped by reason, faces per
image, face-size quantiles; the same basics for the landmark list) and writes a histogram of face
sizes to PNG. Face size is ``sqrt(w * h)`` in pixels, the side of the square of the same area,
which is what the detector's pyramid scales against.

Look at it before generating samples: the size quantiles decide which faces P-Net (12 px input)
can see at all, and dropped/missing counts show a broken or misplaced data set early.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotations.landmarks import OUTSIDE_IMAGE, LandmarkAnnotations, faces_inside_images, load_landmarks
from annotations.wider import WiderAnnotations, parse_wider
from core.atomic import atomic_write_bytes
from core.geometry import box_sizes
from core.stage import run_stage

QUANTILES = (0.0, 0.05, 0.25, 0.50, 0.75, 0.95, 1.0)
QUANTILE_LABELS = ("min", "5%", "25%", "50%", "75%", "95%", "max")
SIZE_DEFINITION = "sqrt(w*h) px"
HISTOGRAM_BINS = 40
PNET_INPUT_SIZE = 12  # marked on the histogram: smaller faces are below P-Net's window


@dataclass(frozen=True, kw_only=True)
class StatsConfig:
    wider_txt: Path = field(metadata={"flag": "--wider"})
    """A ``wider_face_*_bbx_gt.txt`` file."""
    images_dir: Path | None = field(metadata={"flag": "--images"})
    """Its ``WIDER_*/images`` folder, read for image sizes (boxes are clipped, missing images
    counted)"""
    landmarks: Path | None = None
    """A CNN_FacePoint ``.txt`` list or a CelebA folder, for its figures too."""
    out_png: Path
    """Where to write the face-size histogram (PNG)."""


def face_sizes_wider(faces) -> np.ndarray:
    """sqrt(w * h) of each row of a WIDER faces table."""
    return np.sqrt(faces["w"].to_numpy(dtype=np.float64) * faces["h"].to_numpy(dtype=np.float64))


def face_sizes_landmarks(faces) -> np.ndarray:
    """sqrt(w * h) of each landmark face box (inclusive x1 y1 x2 y2, see core.geometry)."""
    widths, heights = box_sizes(faces[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64))
    return np.sqrt(widths * heights)


def size_quantiles(sizes) -> dict[str, float]:
    """min / 5% / ... / max of ``sizes``; NaN for each when there are none."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.size == 0:
        return {label: float("nan") for label in QUANTILE_LABELS}
    return {label: float(v) for label, v in zip(QUANTILE_LABELS, np.quantile(sizes, QUANTILES))}


def wider_figures(ann: WiderAnnotations) -> dict:
    """The figures of one parsed WIDER file; pure."""
    per_image = ann.images["num_faces"].to_numpy()
    return {
        "source": ann.source,
        "images": int(len(ann.images)),
        "images_with_0_faces": int(np.count_nonzero(per_image == 0)),
        "missing_or_unreadable_images": int(np.count_nonzero(~ann.images["exists"].to_numpy(dtype=bool))),
        "boxes_in_file": int(len(ann.all_boxes)),
        "faces_kept": int(len(ann.faces)),
        "faces_per_image_mean": float(per_image.mean()) if per_image.size else float("nan"),
        "faces_per_image_median": float(np.median(per_image)) if per_image.size else float("nan"),
        "faces_per_image_max": int(per_image.max()) if per_image.size else 0,
        "face_size": size_quantiles(face_sizes_wider(ann.faces)),
        "dropped": dict(ann.dropped),
        "clipped": int(ann.clipped),
    }


def landmark_figures(lm: LandmarkAnnotations, missing_images: int, mostly_outside: int = 0) -> dict:
    """The figures of one parsed landmark list; ``missing_images`` and ``mostly_outside`` (faces
    sample generation drops, ``faces_inside_images``) are counted by the caller (I/O)."""
    faces = lm.faces
    sizes = face_sizes_landmarks(faces)
    return {
        "source": lm.source,
        "faces_kept": int(len(faces)),
        "images": int(faces["image"].nunique()),
        "missing_images": int(missing_images),
        "face_size": size_quantiles(sizes),
        "dropped": {**lm.dropped, OUTSIDE_IMAGE: int(mostly_outside)},
    }


def format_table(figures: dict) -> str:
    """The printed table of ``main``'s figures; pure."""
    rows: list[tuple[str, str]] = []
    wider = figures["wider"]
    rows.append(("WIDER annotations", wider["source"]))
    rows.append(("images", f"{wider['images']:,}"))
    rows.append(("images with 0 faces (after drops)", f"{wider['images_with_0_faces']:,}"))
    rows.append(("missing/unreadable images", f"{wider['missing_or_unreadable_images']:,}"))
    rows.append(("boxes in file", f"{wider['boxes_in_file']:,}"))
    rows.append(("faces kept", f"{wider['faces_kept']:,}"))
    rows.append(
        (
            "faces per image mean/median/max",
            f"{wider['faces_per_image_mean']:.2f} / {wider['faces_per_image_median']:g} / {wider['faces_per_image_max']}",
        )
    )
    rows.append((f"face size, {SIZE_DEFINITION}", _format_quantiles(wider["face_size"])))
    for reason, count in wider["dropped"].items():
        rows.append((f"dropped: {reason}", f"{count:,}"))
    rows.append(("clipped to the image (kept)", f"{wider['clipped']:,}"))
    landmarks = figures.get("landmarks")
    if landmarks is not None:
        rows.append(("", ""))
        rows.append(("landmark list", landmarks["source"]))
        rows.append(("faces kept", f"{landmarks['faces_kept']:,}"))
        rows.append(("distinct images", f"{landmarks['images']:,}"))
        rows.append(("missing images", f"{landmarks['missing_images']:,}"))
        rows.append((f"face size, {SIZE_DEFINITION}", _format_quantiles(landmarks["face_size"])))
        for reason, count in landmarks["dropped"].items():
            rows.append((f"dropped: {reason}", f"{count:,}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


def _format_quantiles(quantiles: dict[str, float]) -> str:
    return "  ".join(f"{label} {value:.1f}" for label, value in quantiles.items())


def write_size_histogram(out_png: Path, wider_sizes, landmark_sizes=None) -> None:
    """Histogram of face sizes on log-spaced bins, written atomically (temp file + os.replace)."""
    # The Agg canvas directly, not pyplot: no global backend state, safe in tests and headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    series = [("WIDER faces kept", np.asarray(wider_sizes, dtype=np.float64))]
    if landmark_sizes is not None:
        series.append(("landmark faces", np.asarray(landmark_sizes, dtype=np.float64)))
    everything = np.concatenate([values for _, values in series])
    everything = everything[everything > 0]

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if everything.size:
        bins = np.geomspace(max(everything.min(), 1.0) * 0.999, everything.max() * 1.001, HISTOGRAM_BINS + 1)
        for label, values in series:
            axes.hist(values[values > 0], bins=bins, alpha=0.6, label=f"{label} ({values.size:,})")
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ScalarFormatter())  # 10, 100 rather than 10^1, 10^2
        axes.axvline(PNET_INPUT_SIZE, color="black", linestyle="--", linewidth=1)
        axes.text(PNET_INPUT_SIZE, axes.get_ylim()[1] * 0.95, " 12 px (P-Net input)", va="top", fontsize=8)
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no faces", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel(f"face size, {SIZE_DEFINITION} (log scale)")
    axes.set_ylabel("faces")
    axes.set_title("Face sizes")
    figure.tight_layout()

    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    atomic_write_bytes(out_png, buf.getvalue())


def main(cfg: StatsConfig) -> dict:
    """Parse, print the table, write the histogram; return the printed figures."""
    wider = parse_wider(cfg.wider_txt, cfg.images_dir)
    figures = {"wider": wider_figures(wider), "landmarks": None}
    landmark_sizes = None
    if cfg.landmarks is not None:
        landmarks = load_landmarks(cfg.landmarks)
        missing = sum(not (landmarks.images_root / image).is_file() for image in landmarks.faces["image"].unique())
        outside = int(np.count_nonzero(~faces_inside_images(landmarks.faces, landmarks.images_root)))
        figures["landmarks"] = landmark_figures(landmarks, missing, outside)
        landmark_sizes = face_sizes_landmarks(landmarks.faces)
    print(format_table(figures))
    write_size_histogram(cfg.out_png, face_sizes_wider(wider.faces), landmark_sizes)
    print(f"face-size histogram written to {cfg.out_png}")
    return figures


if __name__ == "__main__":
    sys.exit(run_stage(StatsConfig, main))
