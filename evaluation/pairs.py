"""Face verification on any pairs list: ``make eval-pairs PAIRS_CSV=... IMAGES_ROOT=... [EMBEDDER=...]``.

    python -m evaluation.pairs --pairs pairs.csv --images root/ --out build/eval-pairs [--embedder shipped] [--seed 0]

The pairs are a CSV ``first,second,same[,fold]`` of image paths relative to ``--images``
(``annotations.pairs_csv``: CFP-FP, AgeDB-30 or a user's own set need only a converter to it;
``python -m annotations.pairs_csv --lfw`` converts LFW's). Each image is detected and aligned with
the settings of ``make recog-data`` and ``make eval-lfw`` (one face per image, the largest and
most central; ``--aligned`` is the same resumable crops folder), embedded (with the mirror image
added unless ``--no-flip``), and each pair's squared distance scored with LFW's k-fold protocol:
for each fold, the threshold with the best accuracy on the other folds' pairs, the accuracy on
this fold's; VAL at FAR = ``--far`` the same way (``core.verification``); AUC and EER over all
pairs. The folds are the CSV's fold column when it has one; without it, ``--num-folds`` (ten)
made with ``--seed`` (``seeded_folds``: stratified, so each holds matched and mismatched pairs).

A pair with an image where no face was found (or that cannot be read) counts as an error at every
threshold (``core.verification.worst_case``); how many is reported. A pair naming an image that is
not under ``--images`` is one line, or with ``--allow-missing`` an error too.

A CSV names images, not people, so nothing here can check that the embedder never learnt the
pairs' people (``make eval-lfw`` refuses LFW's learnt people by name): ``results.json`` says what
the embedder was trained on (``embedder_training``: its record less the names, or "embedder of
unknown training data"), and reading the figures with it is the user's part.

Writes ``results.json`` (last: the make target), ``pairs.csv`` (``fold,first,second,same,distance``:
the fold each pair was scored in, 1-based; the distance empty where a face is missing) and
``roc.png``. ``evaluation.lfw`` is LFW's parser in front of the same scoring (``score_pairs``),
with the same outputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from annotations.errors import AnnotationError
from annotations.pair import Pair
from annotations.pairs_csv import read_pairs_csv
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

UNKNOWN_TRAINING = "embedder of unknown training data"
# Keys every results.json of this scoring holds: how a rerun knows the file it replaces is its own.
RESULT_KEYS = ("pairs", "failed_pairs", "embedder_sha256", "align_settings")


@dataclass(frozen=True)
class PairScoring:
    """What every pairs scoring reads (this stage's and ``evaluation.lfw``'s configs extend it)."""
    images: str
    """The images root: the pairs' paths are relative to it."""
    pairs: str
    """The pairs file."""
    out: str
    """Output folder: results.json, pairs.csv, roc.png."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
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
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if not 0 < self.far < 1:
            raise ValueError(f"--far must be between 0 and 1, got {self.far}")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(self.images, self.aligned or str(Path(self.out) / "aligned"), largest=True, progress=self.progress)


@dataclass(frozen=True)
class PairsEvalConfig(PairScoring):
    pairs: str
    """The pairs CSV: first,second,same[,fold] (annotations.pairs_csv), paths relative to --images."""
    seed: int = 0
    """Seed of the folds made when the CSV has no fold column (ignored when it has one)."""
    num_folds: int = 10
    """How many folds to make when the CSV has no fold column."""

    def __post_init__(self):
        super().__post_init__()
        if self.num_folds < 2:
            raise ValueError(f"--num-folds must be at least 2 (one fold has no others to choose its threshold), "
                             f"got {self.num_folds}")


def seeded_folds(same, n: int = 10, seed: int = 0) -> np.ndarray:
    """0-based fold of each pair, stratified and fixed by ``seed``: the matched pairs, shuffled
    (numpy's ``default_rng(seed)``), are dealt round the ``n`` folds, then the mismatched pairs,
    shuffled, go on from the fold where the matched ones stopped; so each fold holds the matched
    and the mismatched pairs' shares to within one, and the folds' sizes differ by one at most.
    ValueError when there are fewer than ``n`` of either kind (a fold would lack it)."""
    same = np.asarray(same, bool)
    matched, mismatched = np.flatnonzero(same), np.flatnonzero(~same)
    if min(len(matched), len(mismatched)) < n:
        raise ValueError(f"{n} folds each with a matched and a mismatched pair need {n} of each; the pairs hold "
                         f"{len(matched)} matched and {len(mismatched)} mismatched (give fewer with --num-folds, or "
                         f"the folds in a fold column)")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(matched), rng.permutation(mismatched)])
    folds = np.empty(len(same), np.int64)
    folds[order] = np.arange(len(same)) % n
    return folds


def check_images(pairs: list[Pair], images: Path, path) -> None:
    for p in pairs:
        for image in (p.first, p.second):
            if not (images / image).is_file():
                missing = sum(not (images / i).is_file() for q in pairs for i in (q.first, q.second))
                raise AnnotationError(path, p.line, f"{image} is not in {images} ({missing} image mentions of the "
                                                    f"pairs are missing); is --images the folder its paths start "
                                                    f"from?")


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
    """The per-pair distances: ``fold,first,second,same,distance`` (fold 1-based, distance empty
    where a face is missing); make calibrate reads these columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "first", "second", "same", "distance"])
    for p, d in zip(pairs, dist):
        w.writerow([p.fold + 1, p.first, p.second, int(p.same), "" if np.isnan(d) else f"{d:.6f}"])
    atomic_write_text(path, buf.getvalue())


def check_inputs_apart(cfg: PairScoring) -> None:
    """Refuse an output or crops folder that is, holds or lies in an input (before any input is read)."""
    if not Path(cfg.images).is_dir():
        raise FileNotFoundError(f"images folder {cfg.images} does not exist")
    inputs = {"--images": cfg.images, "--pairs": cfg.pairs, "--weights": weights_folder(cfg.crops.weights),
              "--embedder": SHIPPED_WEIGHTS_DIR / "embedder.pt" if cfg.embedder == "shipped" else cfg.embedder}
    check_output_apart(cfg.out, inputs)
    check_output_apart(cfg.align_config().out, inputs, "--aligned")


@dataclass(frozen=True)
class ScoredPairs:
    """The pairs a front end hands to ``score_pairs``, with how to score and label them."""
    pairs: list[Pair]
    """Each with its fold (0-based): the per-pair CSV's fold column."""
    folds: np.ndarray
    """The protocol's fold of each pair (the pairs' own, or sub-folds of the one fold scored)."""
    protocol: str
    """results.json's description of the folds."""
    name: str
    """The benchmark as the printed line and the ROC's title name it (LFW fold 10, pairs.csv)."""
    fold: int | None = None
    """results.json's fold: the one LFW fold scored, else None."""
    category: Callable[[dict | None], str] | None = None
    """The benchmark's protocol category of the embedder's figures, from its training record
    (LFW's: ``evaluation.lfw.lfw_category``): printed after the name, results.json's ``category``."""


def score_pairs(cfg: PairScoring, chosen: ScoredPairs, prog: str,
                vet: Callable[[FaceEmbedder], None] | None = None) -> dict:
    """Align, embed and score ``chosen``'s pairs; write results.json, pairs.csv and roc.png to
    ``cfg.out``. ``vet`` sees the loaded embedder first and may refuse it (eval-lfw's learnt people)."""
    images, out, pairs = Path(cfg.images), Path(cfg.out), chosen.pairs
    named = sorted({i for p in pairs for i in (p.first, p.second)})
    missing = [i for i in named if not (images / i).is_file()]
    if not cfg.allow_missing:
        check_images(pairs, images, cfg.pairs)
    # An image too large for --min-face is refused now, naming it, rather than counted as a failed pair.
    present = [i for i in named if i not in missing]
    check_image_pyramids([images / i for i in present], cfg.align_config().detector.min_face)
    check_names_free(out, ["results.json"], prog, json_holding(*RESULT_KEYS))
    embedder = load_embedder(cfg.embedder, cfg.embed_device)
    if vet is not None:
        vet(embedder)
    category = chosen.category(embedder.record) if chosen.category else None
    name = f"{chosen.name} ({category})" if category else \
        f"{chosen.name}{f' ({UNKNOWN_TRAINING})' if embedder.record is None else ''}"
    align_cfg = cfg.align_config()
    with folder_lock(out, prog):
        with folder_lock(align_cfg.out, f"{prog} (aligning)"):
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
        figures = score(dist, same, failed, chosen.folds, cfg.far)
        no_face = sorted(set(named) - crops.keys() - set(missing))
        write_pairs_csv(out / "pairs.csv", pairs, dist)
        plot_roc(figures["roc"]["far"], figures["roc"]["tar"], out / "roc.png",
                 f"{name}: accuracy {figures['accuracy_mean']:.3f}")
        results = {"pairs": len(pairs), "failed_pairs": int(failed.sum()), "no_face_images": no_face,
                   "missing_images": missing, "fold": chosen.fold, "protocol": chosen.protocol, **figures,
                   "embedder": str(embedder.path), "embedder_sha256": hashlib.sha256(embedder.path.read_bytes()).hexdigest(),
                   "embedder_training": training_summary(embedder.record), **({"category": category} if category else {}),
                   "settings": {**{k: v for k, v in asdict(cfg).items() if k not in ("progress", "crops")},
                                **cfg.crops.settings()},
                   "align_settings": align_cfg.settings()}
        atomic_write_json(out / "results.json", results)
    print(f"{name}: {len(pairs)} pairs ({int(failed.sum())} with a face not "
          f"found{f' or an image missing ({len(missing)})' if missing else ''}, counted as errors): "
          f"accuracy {figures['accuracy_mean']:.4f} +- {figures['accuracy_std']:.4f}, "
          f"VAL {figures['val_mean']:.4f} +- {figures['val_std']:.4f} @ FAR {figures['far_mean']:.5f}, "
          f"AUC {figures['auc']:.4f}, EER {figures['eer']:.4f} -> {out / 'results.json'}")
    return results


def main(cfg: PairsEvalConfig) -> dict:
    check_inputs_apart(cfg)
    pairs = read_pairs_csv(cfg.pairs)
    if pairs[0].fold is not None:
        protocol = "the pairs file's folds"
    else:
        try:
            made = seeded_folds([p.same for p in pairs], cfg.num_folds, cfg.seed)
        except ValueError as err:
            raise ValueError(f"{cfg.pairs}: {err}") from None
        pairs = [replace(p, fold=int(k)) for p, k in zip(pairs, made)]
        protocol = f"{cfg.num_folds} folds made with seed {cfg.seed}"
    chosen = ScoredPairs(pairs, np.array([p.fold for p in pairs]), protocol, Path(cfg.pairs).name)
    return score_pairs(cfg, chosen, "python -m evaluation.pairs")


cli = stage_cli(PairsEvalConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
