"""Identification on LFW's unseen people: ``make eval-ident FOLD=10`` (closed and open set).

    python -m evaluation.ident --images lfw/ --people people.txt --fold 10 --out build/eval-ident [--embedder shipped]

The people of the fold (``--people``: LFW's people.txt, or a View 1 people file, one fold) make the
protocol: the **gallery** is the first image of each person with two images or more, the **known
probes** are those people's other images, the **unknown probes** the images of the people with
one image. Faces are detected and aligned as ``make eval-lfw`` does (one face per image, the
largest and most central; ``--aligned`` is the shared crops folder), embedded with the mirror
image added, and each probe compared with every gallery face by squared distance (exact, every
pair: ``recognition.gallery.Gallery.search`` over the whole gallery, ``gallery_distances``; it
agrees with ``distance_matrix``, eval-lfw's ``core.verification`` sum, to float32 rounding).

* **Closed set** (known probes): rank-k, the share of known probes whose own person is among the
  k nearest gallery people (``ranks``: ties counted against the probe).
* **Open set** (Best-Rowden et al. 2014, after Phillips et al.'s FRVT protocol): a probe is given
  the nearest gallery person when that distance is below a threshold t. For each target FAR f, t
  is the largest threshold at which the share of unknown probes given a name is at most f
  (``open_set_threshold``), and DIR(t), the detection and identification rate, is the share of
  known probes whose nearest gallery person is their own (rank 1) *and* below t (``dir_at``). The
  FAR reached at t is reported too (below f where ties or few probes allow no closer).

A probe where no face was found has no distance and counts as a failure everywhere: a known one is
wrong at every rank and never detected (its rank is infinite), an unknown one is a false alarm at
every threshold (its best distance is -inf), as ``core.verification.worst_case`` does for pairs. A
gallery image without a face leaves its person without a gallery entry, so their probes cannot be
identified: counted and reported. The people the embedder trained on are read from its weights file,
and any of them among the fold's is refused, as ``evaluation.lfw`` refuses their pairs.

Writes ``probes.csv`` (per probe: image, person, known or unknown, the nearest gallery person and
distance, the own person's distance and rank; from which ``figures`` recomputes every figure) and
``results.json`` last (the make target).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotations.lfw import Person, image_path, parse_people
from core.atomic import atomic_write_json, atomic_write_text
from core.imageio import read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.verification import squared_distances
from core.weights import SHIPPED_WEIGHTS_DIR
from core.stage import stage_cli
from detector.align import INDEX_NAME, AlignConfig, read_index
from detector.align import main as align_main
from recognition.embedder import embed, load_embedder
from recognition.inputs import FaceCrops
from evaluation.lfw import UNKNOWN_TRAINING, training_summary
from recognition.gallery import Gallery

PROG = "python -m evaluation.ident"
RESULT_KEYS = ("gallery", "known_probes", "unknown_probes", "rank", "dir", "embedder_sha256")
CSV_COLUMNS = ("probe", "person", "kind", "best", "best_distance", "own_distance", "rank")


# -- the maths -----------------------------------------------------------------------------------


def split(people: list[Person]) -> tuple[list[str], list[str], list[str]]:
    """(gallery, known probes, unknown probes) image paths: the first image of each person with two
    or more is the gallery's, their others known probes, one-image people's images unknown probes."""
    gallery, known, unknown = [], [], []
    for p in people:
        images = [image_path(p.name, i) for i in range(1, p.images + 1)]
        if p.images >= 2:
            gallery.append(images[0])
            known += images[1:]
        else:
            unknown += images
    return gallery, known, unknown


def distance_matrix(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(P, G) squared distances of every probe to every gallery vector (``squared_distances`` of
    each pair, so every figure rests on the one definition of eval-lfw's)."""
    p, g = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    if not len(p) or not len(g):
        return np.zeros((len(p), len(g)))
    return squared_distances(np.repeat(p, len(g), axis=0), np.tile(g, (len(p), 1))).reshape(len(p), len(g))


def gallery_distances(gallery: Gallery, probes: np.ndarray) -> np.ndarray:
    """(P, G) squared distances of every probe to every gallery row, by the gallery's exact search
    (``make identify``'s): its k = G nearest rows, put back in row order."""
    out = np.full((len(probes), len(gallery)), np.nan)
    if not len(probes) or not len(gallery):
        return out
    found = gallery.search(probes, k=len(gallery))
    np.put_along_axis(out, found.indices, found.distances.astype(np.float64), axis=1)
    return out


def ranks(dist: np.ndarray, gallery_people, probe_people) -> np.ndarray:
    """1-based rank of each probe's own person among the gallery people (one gallery face each):
    1 + the number of other people at a distance at most the own one's (ties against the probe);
    inf for a probe whose person has no gallery face or whose row is NaN (no face)."""
    dist = np.asarray(dist, np.float64)
    gallery_people = np.asarray(gallery_people)
    out = np.full(len(dist), np.inf)
    for k, person in enumerate(probe_people):
        own = np.flatnonzero(gallery_people == person)
        if not len(own) or np.isnan(dist[k]).any():
            continue
        d = dist[k, own[0]]
        out[k] = 1 + int(np.sum(np.delete(dist[k], own[0]) <= d))
    return out


def rank_k(probe_ranks, k: int) -> float:
    """Closed-set identification rate at rank k (CMC at k)."""
    r = np.asarray(probe_ranks, np.float64)
    return float(np.mean(r <= k)) if len(r) else float("nan")


def open_set_threshold(unknown_best, far: float) -> float:
    """The largest threshold t (a probe is accepted when its best distance is strictly below t) at
    which the share of unknown probes accepted is at most ``far``: with their best distances sorted
    u_1 <= ... <= u_n, t = u_{m+1} for m = floor(far * n) (inf when m = n). -inf entries (no face)
    are accepted at every finite threshold."""
    u = np.sort(np.asarray(unknown_best, np.float64))
    if not len(u):
        return math.inf
    m = int(math.floor(far * len(u) + 1e-9))
    return math.inf if m >= len(u) else float(u[m])


def false_alarm_rate(unknown_best, t: float) -> float:
    u = np.asarray(unknown_best, np.float64)
    return float(np.mean(u < t)) if len(u) else float("nan")


def dir_at(known_ranks, known_best, t: float) -> float:
    """Detection and identification rate at t: the share of known probes whose nearest gallery
    person is their own (rank 1) and nearer than t."""
    r, b = np.asarray(known_ranks, np.float64), np.asarray(known_best, np.float64)
    return float(np.mean((r == 1) & (b < t))) if len(r) else float("nan")


def figures(known_ranks, known_best, unknown_best, at_ranks=(1, 5), fars=(0.01, 0.1)) -> dict:
    """Every figure, named: rank-k per ``at_ranks``, and per FAR its threshold, the FAR reached and DIR."""
    out = {"rank": {str(k): rank_k(known_ranks, k) for k in at_ranks}, "dir": {}}
    for f in fars:
        t = open_set_threshold(unknown_best, f)
        out["dir"][str(f)] = {"threshold": t if math.isfinite(t) else None, "far": false_alarm_rate(unknown_best, t),
                              "dir": dir_at(known_ranks, known_best, t)}
    return out


def figures_from_csv(path, at_ranks=(1, 5), fars=(0.01, 0.1)) -> dict:
    """``figures`` recomputed from a probes.csv (an empty distance: no face)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    known = [r for r in rows if r["kind"] == "known"]
    unknown = [r for r in rows if r["kind"] == "unknown"]
    return figures([float(r["rank"]) if r["rank"] else math.inf for r in known],
                   [float(r["best_distance"]) if r["best_distance"] else math.inf for r in known],
                   [float(r["best_distance"]) if r["best_distance"] else -math.inf for r in unknown], at_ranks, fars)


# -- the stage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentEvalConfig:
    images: str
    """LFW's images folder: <name>/<name>_NNNN.jpg (any size)."""
    people: str
    """LFW's people.txt (View 2, ten folds) or a View 1 people file (one fold)."""
    out: str
    """Output folder: results.json, probes.csv."""
    fold: int | None = None
    """The fold of --people whose people are the gallery and probes (1-based); None: a one-fold file's."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    flip: bool = True
    """Add the embedding of each crop's mirror image."""
    ranks: tuple[int, ...] = (1, 5)
    """The closed-set ranks reported."""
    fars: tuple[float, ...] = (0.01, 0.1)
    """The open-set false alarm rates at which DIR is reported."""
    aligned: str | None = None
    """Folder of aligned crops (resumable; shared with eval-lfw and recog-data). None: <out>/aligned."""
    crops: FaceCrops = field(default_factory=FaceCrops)
    """The detector and the alignment of the crops (--weights, --min-face, ..., --align, --image-size, --margin)."""
    allow_missing: bool = False
    """Count an image the people list names but --images lacks as a face not found (reported) instead
    of refusing (the 150 px snapshot lacks Betsy_Coffin_0001)."""
    embed_device: str = "cpu"
    """Device of the embedder (cpu, cuda, cuda:N)."""
    unknown_embedder: bool = False
    """Score an embedder whose file carries no training record, the results labelled so."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold is 1-based, got {self.fold}")
        if any(k < 1 for k in self.ranks) or any(not 0 < f < 1 for f in self.fars):
            raise ValueError("--ranks must be >= 1 and --fars between 0 and 1")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(self.images, self.aligned or str(Path(self.out) / "aligned"), largest=True, progress=self.progress)


def fold_people(people: list[Person], fold: int | None, path) -> list[Person]:
    folds = sorted({p.fold for p in people})
    if fold is None:
        if len(folds) > 1:
            raise ValueError(f"{path} has {len(folds)} folds: choose one with --fold (make eval-ident FOLD=k)")
        return people
    chosen = [p for p in people if p.fold == fold - 1]
    if not chosen:
        raise ValueError(f"{path} has no fold {fold} (it has {len(folds)})")
    return chosen


def check_unseen(embedder, names: set[str], cfg: IdentEvalConfig) -> None:
    """Refuse people the embedder trained on (its record's ``people``), as ``evaluation.lfw`` does."""
    record = embedder.record
    if record is None:
        if cfg.unknown_embedder:
            return
        raise ValueError(f"{embedder.path} carries no training record, so nothing says whether it learnt these "
                         f"people; score it anyway with --unknown-embedder, the results labelled '{UNKNOWN_TRAINING}'")
    left_out = record.get("lfw_fold_left_out")
    hint = f": score it with FOLD={left_out} (--fold {left_out})" if left_out is not None else ""
    if record.get("people") is not None:
        seen = sorted(names & set(record["people"]))
        if seen:
            raise ValueError(f"{embedder.path} was trained on {len(seen)} of these people ({', '.join(seen[:3])}"
                             f"{', ...' if len(seen) > 3 else ''}; its training record){hint}; their figures would be "
                             f"measured on faces it learnt")
    elif left_out is not None and cfg.fold != left_out:
        raise ValueError(f"{embedder.path} was trained on every LFW fold's people but fold {left_out}'s{hint}")


def write_probes_csv(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _num(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))  # exact: the figures recompute from the file


def main(cfg: IdentEvalConfig) -> dict:
    images, out = Path(cfg.images), Path(cfg.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    inputs = {"--images": images, "--people": cfg.people, "--weights": weights_folder(cfg.crops.weights),
              "--embedder": SHIPPED_WEIGHTS_DIR / "embedder.pt" if cfg.embedder == "shipped" else cfg.embedder}
    check_output_apart(out, inputs)
    align_cfg = cfg.align_config()
    check_output_apart(align_cfg.out, inputs, "--aligned")
    people = fold_people(parse_people(cfg.people), cfg.fold, cfg.people)
    gallery, known, unknown = split(people)
    named = gallery + known + unknown
    missing = [i for i in named if not (images / i).is_file()]
    if missing and not cfg.allow_missing:
        raise FileNotFoundError(f"{images / missing[0]} does not exist ({len(missing)} of the {len(named)} images "
                                f"are missing); is --images LFW's images folder? (--allow-missing counts them as "
                                f"faces not found)")
    check_names_free(out, ["results.json"], PROG, json_holding(*RESULT_KEYS))
    embedder = load_embedder(cfg.embedder, cfg.embed_device)
    check_unseen(embedder, {p.name for p in people}, cfg)
    with folder_lock(out, PROG):
        with folder_lock(align_cfg.out, f"{PROG} (aligning)"):
            align_main(align_cfg, sources=sorted(set(named) - set(missing)))
        rows = read_index(Path(align_cfg.out) / INDEX_NAME)
        crops = {s: r[0]["crop"] for s, r in rows.items() if r and r[0]["crop"]}
        found = [s for s in named if s in crops]
        vectors = dict(zip(found, embed(embedder, [read_image_rgb(Path(align_cfg.out) / crops[s]) for s in found],
                                        flip=cfg.flip)))
        enrolled = [g for g in gallery if g in vectors]
        g_people = np.array([g.split("/")[0] for g in enrolled])
        probes = known + unknown
        dim = embedder.dim
        p_vec = np.stack([vectors.get(p, np.zeros(dim)) for p in probes]) if probes else np.zeros((0, dim))
        gallery_vectors = np.stack([vectors[g] for g in enrolled]) if enrolled else np.zeros((0, dim), np.float32)
        dist = gallery_distances(Gallery(gallery_vectors, g_people, np.array(enrolled)), p_vec)
        no_face = np.array([p not in vectors for p in probes])
        dist[no_face] = np.nan
        p_people = [p.split("/")[0] for p in probes]
        r = ranks(dist, g_people, p_people)
        best = np.where(no_face, np.nan, dist.min(axis=1, initial=np.inf))
        best_at = dist.argmin(axis=1) if len(enrolled) else np.zeros(len(probes), int)
        n_known = len(known)
        fig = figures(r[:n_known], np.where(no_face[:n_known], np.inf, best[:n_known]),
                      np.where(no_face[n_known:], -np.inf, best[n_known:]), cfg.ranks, cfg.fars)
        csv_rows = []
        for k, probe in enumerate(probes):
            own = np.flatnonzero(g_people == p_people[k])
            csv_rows.append({"probe": probe, "person": p_people[k], "kind": "known" if k < n_known else "unknown",
                             "best": "" if no_face[k] or not len(enrolled) else g_people[best_at[k]],
                             "best_distance": _num(best[k]),
                             "own_distance": _num(dist[k, own[0]]) if len(own) and not no_face[k] else "",
                             "rank": "" if not np.isfinite(r[k]) or k >= n_known else int(r[k])})
        write_probes_csv(out / "probes.csv", csv_rows)
        results = {"fold": cfg.fold, "people": len(people), "gallery": len(gallery), "gallery_enrolled": len(enrolled),
                   "gallery_without_face": sorted(set(gallery) - set(enrolled)), "known_probes": n_known,
                   "unknown_probes": len(unknown),
                   "probes_without_face": {"known": int(no_face[:n_known].sum()), "unknown": int(no_face[n_known:].sum())},
                   "missing_images": missing,
                   "failures": "a probe without a face: a known one is wrong at every rank and never detected, an "
                               "unknown one a false alarm at every threshold; a known probe whose gallery image has "
                               "no face cannot be identified (rank infinite)",
                   **fig, "distance": "squared L2 of unit vectors; accepted when strictly below the threshold",
                   "embedder": str(embedder.path),
                   "embedder_sha256": hashlib.sha256(embedder.path.read_bytes()).hexdigest(),
                   "embedder_training": training_summary(embedder.record),
                   "settings": {**{k: v for k, v in asdict(cfg).items() if k not in ("progress", "crops")},
                                **cfg.crops.settings()},
                   "align_settings": align_cfg.settings()}
        atomic_write_json(out / "results.json", results)
    dirs = ", ".join(f"DIR@FAR {f} {v['dir']:.4f} (t {v['threshold'] if v['threshold'] is None else round(v['threshold'], 4)},"
                     f" FAR {v['far']:.4f})" for f, v in fig["dir"].items())
    print(f"identification{f' on fold {cfg.fold}' if cfg.fold else ''}: gallery {len(enrolled)} people, "
          f"{n_known} known and {len(unknown)} unknown probes ({int(no_face.sum())} without a face, failures): "
          + ", ".join(f"rank-{k} {v:.4f}" for k, v in fig["rank"].items()) + f"; {dirs} -> {out / 'results.json'}")
    return results


cli = stage_cli(IdentEvalConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
