"""What a run reports after every epoch: ``log.csv``, ``loss_curve.png`` and one summary line.

Both files are rewritten whole (atomically) from the history of rows, one per epoch, whose keys are
the kind of model's log columns (``trainers.detector_task.LOG_COLUMNS``,
``trainers.embed_task.LOG_COLUMNS``); floats are written with 6 significant digits.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from core.atomic import atomic_write_bytes


def write_log(history: list[dict], path, columns) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def plot_history(history: list[dict], path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    styles = {"loss": "-", "cls": "--", "box": "-.", "landmark": ":"}
    for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
        for term, style in styles.items():
            ax_loss.plot(epochs, [r[f"{split}_{term}"] for r in history], style, color=color,
                         label=f"{split} {term}", marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title}: losses")
    ax_loss.legend(fontsize=7, ncol=2)
    for key in ("train_acc", "val_acc", "val_recall", "val_fpr"):
        ax_acc.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=key)
    ax_acc.set(xlabel="epoch", ylim=(0, 1), title="classification (recall/fpr at the stage threshold)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: list[dict], path, title: str, loss_keys, rate_keys) -> None:
    """Losses (log scale) and rates in [0, 1] per epoch, side by side; keys without a value are skipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, keys in zip(axes, (loss_keys, rate_keys)):
        for key in keys:
            values = [r.get(key, float("nan")) for r in history]
            if any(v == v for v in values):  # not all NaN
                ax.plot(epochs, values, marker="o", ms=3, label=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title}: loss")
    axes[1].set(xlabel="epoch", ylim=(0, 1), title=f"{title}: accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def summary(row: dict) -> str:
    """One line per epoch for the terminal."""
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} (cls {row['train_cls']:.4f} "
            f"box {row['train_box']:.4f} lm {row['train_landmark']:.4f}) acc {row['train_acc']:.3f} | "
            f"val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.3f} recall {row['val_recall']:.3f} fpr {row['val_fpr']:.3f} | "
            f"{row['samples_per_s']:.0f} samples/s, data wait {100 * row['data_wait_share']:.1f}%")


def report_epoch(history: list[dict], out: Path, net: str, columns) -> None:
    """Rewrite ``log.csv`` (``columns``) and ``loss_curve.png`` in ``out``."""
    write_log(history, Path(out) / "log.csv", columns)
    plot_history(history, Path(out) / "loss_curve.png", net)
