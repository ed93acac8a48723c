"""Group the faces of a folder by person, without names: ``make cluster IMAGES=folder``.

    python -m recognition.cluster --images photos/ --out build/cluster [--method agglomerative]
        [--threshold 1.0] [--largest] [--embedder shipped] [--weights shipped] [--aligned folder]

Every face of every image under ``--images`` (``--largest``: only the one ``make recog-data``
keeps per image, as LFW is scored) is detected and aligned as ``make recog-data`` aligns
(``detector.align``; ``--aligned`` is its resumable crops folder, shared with ``eval-lfw`` on the
same images), embedded with its mirror image added, and clustered on the squared distances of the
unit vectors (0 to 4, as everywhere in the project) by a library:

* ``agglomerative`` (the default, chosen on LFW View 1's people: docs/pipeline.md): scikit-learn's
  ``AgglomerativeClustering(n_clusters=None, distance_threshold=--threshold, linkage=--linkage,
  metric="precomputed")`` on the squared distances: two groups merge while their average squared
  distance is below the threshold;
* ``chinese-whispers``: the graph of faces closer than ``--threshold``, each edge of weight 1 (dlib's
  and facenet's recipe), clustered by the ``chinese-whispers`` package (``--iterations``, ``--seed``);
* ``hdbscan``: scikit-learn's ``HDBSCAN(min_cluster_size=--min-cluster-size)`` on the unit vectors;
  its noise faces are unclustered.

A face in a cluster of fewer than ``--min-size`` faces (2: a face like no other) is unclustered,
cluster ``-1``. Clusters are numbered 0, 1, ... largest first (equal sizes: by their first face).

Writes ``OUT/clusters.csv`` (one row per face: image, face rank, crop, cluster, cluster size; one
row with empty face fields for an image without a face), ``OUT/sheets/cluster_NNN.png`` (a grid of
up to ``--sheet-faces`` crops of each cluster, the largest cluster first) and
``OUT/sheets/unclustered.png``, and ``OUT/summary.json`` last (the make target: counts, the
method and its parameters, the embedder's SHA-256). ``OUT`` must be apart from the images, the
crops folder and the weights; it is locked while the stage runs, and its files are written whole
or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.imageio import encode_image, read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, json_holding, weights_folder
from core.weights import SHIPPED_WEIGHTS_DIR
from core.stage import stage_cli
from detector.align import INDEX_NAME, AlignConfig, list_images, read_index
from detector.align import main as align_main
from recognition.embedder import embed, load_embedder
from recognition.inputs import FaceCrops
from recognition.threshold import check_threshold, is_calibrated, resolve_threshold

PROG = "python -m recognition.cluster"
METHODS = ("agglomerative", "chinese-whispers", "hdbscan")
LINKAGES = ("average", "complete", "single")
UNCLUSTERED = -1
CSV_NAME = "clusters.csv"
SUMMARY_NAME = "summary.json"
CSV_COLUMNS = ("image", "face", "crop", "cluster", "cluster_size")
SUMMARY_KEYS = ("faces", "clusters", "unclustered_faces", "method", "embedder_sha256")
# Chosen on LFW View 1 peopleDevTest's people less fold 10's (pairwise F1 0.426, the best of the sweep in
# docs/pipeline.md): average linkage, merging below an average squared distance of 0.85. Not the embedder's
# calibrated pair threshold (make calibrate), which is another quantity: the distance of two faces at a
# target FAR, where this one is the mean distance of two groups at which merging stops, chosen for the
# clusters' F1; on the same View 1 faces the calibrated one scores lower (docs/experiments.md, 2026-12-07).
DEFAULT_THRESHOLD = 0.85


@dataclass(frozen=True)
class ClusterConfig:
    images: str
    """Folder of photos, searched recursively (.jpg .jpeg .png .bmp)."""
    out: str
    """Output folder: clusters.csv, sheets/, summary.json."""
    method: str = field(default="agglomerative", metadata={"choices": METHODS})
    """agglomerative (scikit-learn), chinese-whispers (the chinese-whispers package) or hdbscan (scikit-learn)."""
    threshold: float = DEFAULT_THRESHOLD
    """agglomerative: the linkage distance at which merging stops; chinese-whispers: faces closer than
    this are joined by an edge. Squared distance of unit vectors (0-4). Not the embedder's calibrated
    pair threshold (printed beside it): 0.85 was chosen for clustering (make THRESHOLD= gives another)."""
    linkage: str = field(default="average", metadata={"choices": LINKAGES})
    """agglomerative: how the distance of two groups is their faces' (average, complete, single)."""
    iterations: int = 20
    """chinese-whispers: rounds of label passing."""
    min_cluster_size: int = 2
    """hdbscan: the smallest group it calls a cluster."""
    min_size: int = 2
    """Faces in clusters of fewer faces than this are unclustered (-1)."""
    largest: bool = False
    """Only one face per image, the largest and most central (as LFW is scored); default every face."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    flip: bool = True
    """Add the embedding of each crop's mirror image."""
    aligned: str | None = None
    """Folder of aligned crops (resumable; shared with eval-lfw on the same images). None: <out>/aligned."""
    crops: FaceCrops = field(default_factory=FaceCrops)
    """The detector and the alignment of the crops (--weights, --min-face, ..., --align, --image-size, --margin)."""
    sheet_faces: int = 48
    """Crops shown per contact sheet (the first faces of the cluster)."""
    sheet_columns: int = 8
    """Crops per row of a contact sheet."""
    embed_device: str = "cpu"
    """Device of the embedder (cpu, cuda, cuda:N)."""
    seed: int = 0
    """chinese-whispers' random order of visits (the other methods are deterministic)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        check_threshold(self.threshold, "--threshold")
        if self.min_size < 1 or self.min_cluster_size < 2 or self.iterations < 1:
            raise ValueError("--min-size must be >= 1, --min-cluster-size >= 2, --iterations >= 1")
        if self.sheet_faces < 1 or self.sheet_columns < 1:
            raise ValueError("--sheet-faces and --sheet-columns must be >= 1")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(self.images, self.aligned or str(Path(self.out) / "aligned"), largest=self.largest, progress=self.progress)

    def parameters(self) -> dict:
        """The method's own parameters (what summary.json and the docs record of the choice)."""
        own = {"agglomerative": ("threshold", "linkage"), "chinese-whispers": ("threshold", "iterations", "seed"),
               "hdbscan": ("min_cluster_size",)}[self.method]
        return {"method": self.method, **{k: getattr(self, k) for k in own}, "min_size": self.min_size}


# -- the clustering ------------------------------------------------------------------------------


def squared_distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """(N, N) float64 squared distances of the rows, exactly 0 on the diagonal, never negative."""
    v = np.asarray(vectors, dtype=np.float64)
    sq = np.einsum("ij,ij->i", v, v)
    d = sq[:, None] + sq[None] - 2 * v @ v.T
    np.fill_diagonal(d, 0)
    return np.maximum(d, 0)


def raw_labels(vectors: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """The library's labels of the faces (-1: its noise), before ``relabel``."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, np.int64)  # one face (or none): nothing to group, and the libraries need two
    if cfg.method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        model = AgglomerativeClustering(n_clusters=None, distance_threshold=cfg.threshold, linkage=cfg.linkage,
                                        metric="precomputed")
        return model.fit_predict(squared_distance_matrix(vectors)).astype(np.int64)
    if cfg.method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        if n < cfg.min_cluster_size:
            return np.full(n, UNCLUSTERED, np.int64)
        return HDBSCAN(min_cluster_size=cfg.min_cluster_size, copy=True).fit_predict(
            np.asarray(vectors, np.float64)).astype(np.int64)
    import networkx as nx
    from chinese_whispers import chinese_whispers

    d = squared_distance_matrix(vectors)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    i, j = np.nonzero(np.triu(d < cfg.threshold, k=1))
    graph.add_edges_from(zip(i.tolist(), j.tolist()), weight=1.0)
    chinese_whispers(graph, weighting="top", iterations=cfg.iterations, seed=cfg.seed)
    return np.array([graph.nodes[k]["label"] for k in range(n)], np.int64)


def relabel(labels, min_size: int = 2) -> np.ndarray:
    """Clusters numbered 0, 1, ... by size, largest first (equal sizes: the one whose first face comes
    first); faces of clusters smaller than ``min_size``, and ``UNCLUSTERED`` ones, stay -1."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    out = np.full(len(labels), UNCLUSTERED, np.int64)
    groups = {}
    for k, label in enumerate(labels.tolist()):
        if label != UNCLUSTERED:
            groups.setdefault(label, []).append(k)
    kept = sorted((g for g in groups.values() if len(g) >= min_size), key=lambda g: (-len(g), g[0]))
    for number, members in enumerate(kept):
        out[members] = number
    return out


def cluster_vectors(vectors: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """The cluster of each face (``relabel``'s numbering; -1 unclustered)."""
    return relabel(raw_labels(vectors, cfg), cfg.min_size)


# -- the outputs ---------------------------------------------------------------------------------


def contact_sheet(crops: list[np.ndarray], title: str, columns: int) -> np.ndarray:
    """RGB uint8 grid of the crops (all one size), a title strip above it."""
    side = crops[0].shape[0]
    rows = -(-len(crops) // columns)
    width = side * min(columns, len(crops))
    strip = 18
    sheet = np.full((strip + rows * side, max(width, 8 * len(title) // 2), 3), 255, np.uint8)
    for k, crop in enumerate(crops):
        r, c = divmod(k, columns)
        sheet[strip + r * side : strip + (r + 1) * side, c * side : (c + 1) * side] = crop
    cv2.putText(sheet, title, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def is_own_output(path: Path) -> bool:
    """Whether a clusters.csv or summary.json in OUT is this stage's (its header, its keys)."""
    if path.name == CSV_NAME:
        try:
            with path.open(encoding="utf-8") as f:
                return f.readline().strip() == ",".join(CSV_COLUMNS)
        except (OSError, UnicodeDecodeError):
            return False
    return json_holding(*SUMMARY_KEYS)(path)


def linkage_line(cfg: ClusterConfig, record: dict | None) -> str:
    """What threshold clusters, whence, and the embedder's calibrated pair threshold beside it."""
    pair, source = resolve_threshold(None, record)
    whence = ("the default, chosen on LFW View 1 for clustering's F1" if cfg.threshold == DEFAULT_THRESHOLD
              else "--threshold")
    beside = (f"the embedder's pair threshold {pair:g} ({source}) is another quantity" if is_calibrated(source)
              else "the embedder carries no calibrated pair threshold (make calibrate)")
    return f"{cfg.method} threshold {cfg.threshold:g} ({whence}); {beside}"


def sheet_names(n_clusters: int) -> list[str]:
    return [f"cluster_{k:03d}.png" for k in range(n_clusters)] + ["unclustered.png"]


def main(cfg: ClusterConfig) -> dict:
    images, out = Path(cfg.images), Path(cfg.out)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    align_cfg = cfg.align_config()
    inputs = {"--images": images, "--weights": weights_folder(cfg.crops.weights),
              "--embedder": SHIPPED_WEIGHTS_DIR / "embedder.pt" if cfg.embedder == "shipped" else cfg.embedder}
    check_output_apart(out, {**inputs, **({"--aligned": cfg.aligned} if cfg.aligned else {})})
    check_output_apart(align_cfg.out, inputs, "--aligned")
    check_names_free(out, [CSV_NAME, SUMMARY_NAME], PROG, is_own_output)
    sources = list_images(images, exclude=out)
    if not sources:
        raise ValueError(f"{images} holds no image (.jpg .jpeg .png .bmp)")
    embedder = load_embedder(cfg.embedder, cfg.embed_device)
    print(linkage_line(cfg, embedder.record), file=sys.stderr)
    with folder_lock(out, PROG):
        with folder_lock(align_cfg.out, f"{PROG} (aligning)"):
            align_main(align_cfg, sources=sources)
        index = read_index(Path(align_cfg.out) / INDEX_NAME)
        faces = [(s, r) for s in sources for r in index.get(s, []) if r["crop"]]
        crops = [read_image_rgb(Path(align_cfg.out) / r["crop"]) for _, r in faces]
        vectors = embed(embedder, crops, flip=cfg.flip)
        labels = cluster_vectors(vectors, cfg)
        sizes = np.bincount(labels[labels >= 0], minlength=0) if len(labels) else np.zeros(0, np.int64)
        rows = []
        k = 0
        for s in sources:
            found = [r for r in index.get(s, []) if r["crop"]]
            if not found:
                rows.append({"image": s, "face": "", "crop": "", "cluster": "", "cluster_size": ""})
            for r in found:
                label = int(labels[k])
                rows.append({"image": s, "face": r["face"], "crop": r["crop"], "cluster": label,
                             "cluster_size": int(sizes[label]) if label >= 0 else 1})
                k += 1
        n_clusters = len(sizes)
        sheets = out / "sheets"
        # Sheets of an earlier run beyond this run's clusters would read as clusters: removed first.
        if sheets.is_dir():
            for old in sheets.glob("cluster_*.png"):
                if old.name not in sheet_names(n_clusters):
                    old.unlink()
        small = [cv2.resize(c, (cfg.crops.image_size, cfg.crops.image_size)) if c.shape[0] != cfg.crops.image_size else c for c in crops]
        for number in [*range(n_clusters), UNCLUSTERED]:
            members = np.flatnonzero(labels == number)
            name = f"cluster_{number:03d}.png" if number >= 0 else "unclustered.png"
            if not len(members):
                (sheets / name).unlink(missing_ok=True)
                continue
            shown = [small[m] for m in members[: cfg.sheet_faces]]
            title = (f"cluster {number}: {len(members)} faces" if number >= 0 else f"unclustered: {len(members)} faces")
            if len(members) > len(shown):
                title += f" (first {len(shown)})"
            atomic_write_bytes(sheets / name, encode_image(contact_sheet(shown, title, cfg.sheet_columns), ".png"))
        write_csv(out / CSV_NAME, rows)
        summary = {"images": len(sources), "images_without_face": sum(1 for r in rows if r["face"] == ""),
                   "faces": len(faces), "clusters": n_clusters, "unclustered_faces": int((labels == UNCLUSTERED).sum()),
                   "cluster_sizes": sizes.tolist(), **cfg.parameters(), "parameters": cfg.parameters(),
                   "embedder": str(embedder.path),
                   "embedder_sha256": hashlib.sha256(embedder.path.read_bytes()).hexdigest(),
                   "settings": {**{k: v for k, v in asdict(cfg).items() if k not in ("progress", "crops")},
                                **cfg.crops.settings()},
                   "align_settings": align_cfg.settings()}
        atomic_write_json(out / SUMMARY_NAME, summary)
    print(f"{len(faces)} faces in {len(sources)} images ({summary['images_without_face']} without a face): "
          f"{n_clusters} clusters{f' (largest {sizes.max()})' if n_clusters else ''}, "
          f"{summary['unclustered_faces']} unclustered, by {cfg.method} {cfg.parameters()} -> {out / CSV_NAME}, "
          f"contact sheets in {sheets}")
    return summary


cli = stage_cli(ClusterConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
