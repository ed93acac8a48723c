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
data" (``results.json``'s ``embedder_training`` and the printed line).

Writes ``results.json`` (last: the make target), ``pairs.csv`` (fold, the two image paths, same or
not, distance; empty where a face is missing) and ``roc.png``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotations.errors import AnnotationError
from annotations.lfw import Pair, parse_pairs
from core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.imageio import read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.stage import stage_cli
from core.verification import (auc, eer, kfold_accuracy, kfold_val_far, roc, squared_distances, worst_case)
from core.weights import SHIPPED_WEIGHTS_DIR
from detector.align import INDEX_NAME, AlignConfig, read_index
from detector.align import main as align_main
from detector.cascade import check_image_pyramids
from recognition.embedder import FaceEmbedder, embed, load_embedder
from recognition.inputs import FaceCrops

PROG = "python -m evaluation.lfw"
SUBFOLDS = 10
UNKNOWN_TRAINING = "embedder of unknown training data"


@dataclass(frozen=True)
class LfwEvalConfig:
    images: str
    """LFW's images folder: <name>/<name>_NNNN.jpg (lfw.tgz's layout, any size)."""
    pairs: str
    """LFW's pairs.txt (or a View 1 pairsDevTest.txt / pairsDevTrain.txt)."""
    out: str
    """Output folder: results.json, pairs.csv, roc.png."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    fold: int | None = None
    """Score only this fold's pairs (1-based), for a model trained without its people; None: all."""
    flip: bool = True
    """Add the embedding of each crop's mirror image (facenet's --use_flipped_images)."""
    far: float = 1e-3
    """The false accept rate at which VAL is reported."""
    aligned: str | None = None
    """Folder of aligned crops (resumable; shared with make recog-data on the same images). None: <out>/aligned."""
    crops: FaceCrops = field(default_factory=FaceCrops)
    """The detector and the alignment of the crops (--weights, --min-face, ..., --align, --image-size, --margin)."""
    allow_missing: bool = False
    """Count a pair naming an image that is not in --images as an error (reported) instead of refusing
    the pairs file (the 150 px snapshot lacks Betsy_Coffin_0001, which View 1's pairsDevTest names)."""
    embed_device: str = "cpu"
    """Device of the embedder (cpu, cuda, cuda:N)."""
    unknown_embedder: bool = False
    """Score an embedder whose file carries no training record (so nothing says whose faces it learnt),
    labelling its results "embedder of unknown training data"; without it such a file is refused."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold is 1-based, got {self.fold}")
        if not 0 < self.far < 1:
            raise ValueError(f"--far must be between 0 and 1, got {self.far}")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(self.images, self.aligned or str(Path(self.out) / "aligned"), largest=True, progress=self.progress)


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


def check_images(pairs: list[Pair], images: Path, path) -> None:
    for p in pairs:
        for image in (p.first, p.second):
            if not (images / image).is_file():
                missing = sum(not (images / i).is_file() for q in pairs for i in (q.first, q.second))
                raise AnnotationError(path, p.line, f"{image} is not in {images} ({missing} image mentions of the "
                                                    f"pairs are missing); is --images LFW's images folder?")


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


def training_summary(record: dict | None):
    """What results.json says of the embedder's training: its record less the people's names (their
    count instead), or ``UNKNOWN_TRAINING``."""
    if record is None:
        return UNKNOWN_TRAINING
    people = record.get("people")
    return {**{k: v for k, v in record.items() if k != "people"}, "people": None if people is None else len(people)}


def score(dist: np.ndarray, same: np.ndarray, failed: np.ndarray, folds: np.ndarray, far: float) -> dict:
    """The protocol's figures from the pairs' distances (NaN where failed)."""
    d = worst_case(np.nan_to_num(dist), same, failed)
    acc = kfold_accuracy(d, same, folds)
    val = kfold_val_far(d, same, folds, far)
    fars, tars = roc(d, same)
    return {"accuracy_mean": float(acc.accuracy.mean()), "accuracy_std": float(acc.accuracy.std()),
            "fold_accuracy": acc.accuracy.tolist(), "fold_threshold": acc.threshold.tolist(),
            "val_mean": float(val.val.mean()), "val_std": float(val.val.std()), "far_mean": float(val.far.mean()),
            "far_target": far, "auc": auc(fars, tars), "eer": eer(fars, tars),
            "roc": {"far": fars.tolist(), "tar": tars.tolist()}}


def plot_roc(fars, tars, path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(fars, tars)
    ax.set(xscale="log", xlim=(1e-3, 1), ylim=(0, 1), xlabel="false accept rate", ylabel="true accept rate", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def write_pairs_csv(path, pairs: list[Pair], dist: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "first", "second", "same", "distance"])
    for p, d in zip(pairs, dist):
        w.writerow([p.fold + 1, p.first, p.second, int(p.same), "" if np.isnan(d) else f"{d:.6f}"])
    atomic_write_text(path, buf.getvalue())


# Keys every results.json of this stage holds: how a rerun knows the file it replaces is its own.
RESULT_KEYS = ("pairs", "failed_pairs", "embedder_sha256", "align_settings")


def main(cfg: LfwEvalConfig) -> dict:
    images, out = Path(cfg.images), Path(cfg.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    inputs = {"--images": images, "--pairs": cfg.pairs, "--weights": weights_folder(cfg.crops.weights),
              "--embedder": SHIPPED_WEIGHTS_DIR / "embedder.pt" if cfg.embedder == "shipped" else cfg.embedder}
    check_output_apart(out, inputs)
    check_output_apart(cfg.align_config().out, inputs, "--aligned")
    pairs = select_pairs(parse_pairs(cfg.pairs), cfg.fold, cfg.pairs)
    named = sorted({i for p in pairs for i in (p.first, p.second)})
    missing = [i for i in named if not (images / i).is_file()]
    if not cfg.allow_missing:
        check_images(pairs, images, cfg.pairs)
    # An image too large for --min-face is refused now, naming it, rather than counted as a failed pair.
    present = [i for i in named if i not in missing]
    check_image_pyramids([images / i for i in present], cfg.align_config().detector.min_face)
    check_names_free(out, ["results.json"], PROG, json_holding(*RESULT_KEYS))
    embedder = load_embedder(cfg.embedder, cfg.embed_device)
    check_unseen(embedder, pairs, cfg)
    unknown = f" ({UNKNOWN_TRAINING})" if embedder.record is None else ""
    align_cfg = cfg.align_config()
    with folder_lock(out, PROG):
        with folder_lock(align_cfg.out, f"{PROG} (aligning)"):
            align_main(align_cfg, sources=sorted(set(named) - set(missing)))
        rows = read_index(Path(align_cfg.out) / INDEX_NAME)
        crops = {s: r[0]["crop"] for s, r in rows.items() if r and r[0]["crop"]}
        needed = sorted(set(named) & crops.keys())
        vectors = dict(zip(needed, embed(embedder, [read_image_rgb(Path(align_cfg.out) / crops[s]) for s in needed],
                                         flip=cfg.flip)))
        failed = np.array([p.first not in vectors or p.second not in vectors for p in pairs])
        dim = embedder.dim
        a = np.stack([vectors.get(p.first, np.zeros(dim)) for p in pairs])
        b = np.stack([vectors.get(p.second, np.zeros(dim)) for p in pairs])
        dist = np.where(failed, np.nan, squared_distances(a, b))
        same = np.array([p.same for p in pairs])
        one_fold = len({p.fold for p in pairs}) == 1  # --fold, or View 1's files
        folds = subfolds(same) if one_fold else np.array([p.fold for p in pairs])
        figures = score(dist, same, failed, folds, cfg.far)
        no_face = sorted(set(named) - crops.keys() - set(missing))
        write_pairs_csv(out / "pairs.csv", pairs, dist)
        plot_roc(figures["roc"]["far"], figures["roc"]["tar"], out / "roc.png",
                 f"LFW{f' fold {cfg.fold}' if cfg.fold else ''}{unknown}: accuracy {figures['accuracy_mean']:.3f}")
        results = {"pairs": len(pairs), "failed_pairs": int(failed.sum()), "no_face_images": no_face,
                   "missing_images": missing,
                   "fold": cfg.fold, "protocol": f"{SUBFOLDS} sub-folds of the one fold scored" if one_fold else
                   "the pairs file's folds", **figures,
                   "embedder": str(embedder.path), "embedder_sha256": hashlib.sha256(embedder.path.read_bytes()).hexdigest(),
                   "embedder_training": training_summary(embedder.record),
                   "settings": {**{k: v for k, v in asdict(cfg).items() if k not in ("progress", "crops")},
                                **cfg.crops.settings()},
                   "align_settings": align_cfg.settings()}
        atomic_write_json(out / "results.json", results)
    print(f"LFW{f' fold {cfg.fold}' if cfg.fold else ''}{unknown}: {len(pairs)} pairs ({int(failed.sum())} with a face not "
          f"found{f' or an image missing ({len(missing)})' if missing else ''}, counted as errors): "
          f"accuracy {figures['accuracy_mean']:.4f} +- {figures['accuracy_std']:.4f}, "
          f"VAL {figures['val_mean']:.4f} +- {figures['val_std']:.4f} @ FAR {figures['far_mean']:.5f}, "
          f"AUC {figures['auc']:.4f}, EER {figures['eer']:.4f} -> {out / 'results.json'}")
    return results


cli = stage_cli(LfwEvalConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
