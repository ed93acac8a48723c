"""The gallery: enrolled face vectors with their identities, and exact search in them.

A gallery is one file, ``gallery.npz`` (numpy's uncompressed zip of arrays, read with
``allow_pickle=False`` so that a file can never run code), written whole or not at all
(``core.atomic``). Its arrays, one row per enrolled face:

* ``vectors``: float32 (N, dim), the embedder's unit vectors (``recognition.embedder.embed``);
* ``identities``: the person's name (the image's folder under the gallery root);
* ``sources``: the image's path relative to the gallery root;
* ``sha256``: the image file's SHA-256, so that enrolling again embeds only new or changed files;
* ``meta``: one JSON text: the format, the embedder's fingerprint (its file and SHA-256), the
  detector's (its weights files' SHA-256 and the alignment), and the images enrolled without a
  face (with their SHA-256, so that they are not detected again while unchanged).

Distances are squared L2 distances, ``|q|^2 + |g|^2 - 2 q.g`` (0 to 4 for unit vectors, as
``evaluation.lfw`` and ``recognition.compare`` score pairs). Search is exact: one float32 matrix
product per tile of queries x gallery rows (about ``BLOCK_ELEMENTS`` distances, so memory stays
bounded whatever the number of queries or faces) and ``argpartition`` for each tile's top k,
merged over the gallery's chunks. ``make bench``
(``benchmarks/bench_gallery.py``) measures it against faiss's exact ``IndexFlatIP``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_bytes

GALLERY_FILE = "gallery.npz"
FORMAT = "face-gallery/1"
ARRAYS = ("vectors", "identities", "sources", "sha256", "meta")
# Distances computed per tile of queries x gallery rows: 2^24 float32 values (64 MB) whatever the
# gallery's size, and the gallery read in chunks of 2^16 rows (4 MB of 128-value vectors per chunk).
BLOCK_ELEMENTS = 1 << 24
CHUNK_ROWS = 1 << 16
NO_MATCH = ""  # the identity of a result slot that has no gallery row (k larger than the gallery)


class GalleryError(ValueError):
    """A gallery that cannot be used (missing, not a gallery file, empty, from another embedder or
    detector); ``str()`` is one line naming the file."""


@dataclass(frozen=True, eq=False)
class Matches:
    """The k results of each of Q queries, nearest first. Slots beyond the gallery's rows (or its
    people, for ``best_identities``) hold index -1, distance inf and identity ``""``."""

    indices: np.ndarray
    """int64 (Q, k): gallery rows."""
    distances: np.ndarray
    """float32 (Q, k): squared L2 distances."""
    identities: np.ndarray
    """str (Q, k): each row's identity."""


def _as_matrix(vectors, dim: int | None = None) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or (dim is not None and v.shape[1] != dim):
        raise ValueError(f"query vectors must be (Q, {dim if dim is not None else 'dim'}), got shape {v.shape}")
    return v


@dataclass(frozen=True, eq=False)
class Gallery:
    vectors: np.ndarray
    """float32 (N, dim)."""
    identities: np.ndarray
    """(N,) the person of each row."""
    sources: np.ndarray | None = None
    """(N,) the image each row came from, relative to the gallery root; None: unnamed."""
    sha256: np.ndarray | None = None
    """(N,) the SHA-256 of each row's image file; None: unknown."""
    meta: dict = field(default_factory=dict)
    """The fingerprints and the images without a face (module docstring)."""

    def __post_init__(self):
        vectors = _as_matrix(self.vectors)
        n = len(vectors)
        identities = np.asarray(self.identities, dtype=str).reshape(-1)
        sources = np.asarray(self.sources if self.sources is not None else [""] * n, dtype=str).reshape(-1)
        sha256 = np.asarray(self.sha256 if self.sha256 is not None else [""] * n, dtype=str).reshape(-1)
        if not len(identities) == len(sources) == len(sha256) == n:
            raise ValueError(f"a gallery needs one identity, source and sha256 per vector: {n} vectors, "
                             f"{len(identities)} identities, {len(sources)} sources, {len(sha256)} sha256")
        for name, value in (("vectors", vectors), ("identities", identities), ("sources", sources), ("sha256", sha256)):
            object.__setattr__(self, name, value)
        # The per-person minimum runs over rows grouped by identity: the order that groups them (enroll
        # writes them grouped already; otherwise a grouped copy of the vectors is kept), the first row
        # of each group, and the group's name.
        order = np.argsort(identities, kind="stable")
        grouped = identities[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if n else np.zeros(0, np.int64)
        in_order = np.array_equal(order, np.arange(n))
        norms = np.einsum("ij,ij->i", vectors, vectors)
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_people", grouped[starts])
        object.__setattr__(self, "_norms", norms)
        object.__setattr__(self, "_grouped", (vectors, norms) if in_order else (vectors[order], norms[order]))

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def people(self) -> np.ndarray:
        """The distinct identities, sorted."""
        return self._people

    def _tiles(self, q: np.ndarray, bounds: list[int], vectors: np.ndarray, norms: np.ndarray):
        """``(query start, [(chunk start, (B, rows) float32 |g|^2 - 2 q.g), ...])`` per block of queries.

        Tiles of queries x gallery chunks (``bounds``), each about ``BLOCK_ELEMENTS`` values: a
        large gallery is read once per block of queries, not once per few queries. The values are
        the squared distance less the query's own norm, the same along a row, so they rank alike;
        ``_finish`` adds it to the few distances kept."""
        chunk = max(b - a for a, b in zip(bounds, bounds[1:]))
        rows = max(1, BLOCK_ELEMENTS // chunk)
        for start in range(0, len(q), rows):
            block = q[start : start + rows]

            def tiles(block=block):
                for a, b in zip(bounds, bounds[1:]):
                    d = block @ vectors[a:b].T
                    d *= -2
                    d += norms[None, a:b]
                    yield a, d

            yield start, tiles()

    def _bounds(self, at=None) -> list[int]:
        """Chunk boundaries of the gallery's rows, about ``CHUNK_ROWS`` apart, each one of ``at``
        (the people's first rows, so that no person is split) where given."""
        n = len(self)
        if at is None:
            return list(range(0, n, CHUNK_ROWS)) + [n]
        cuts, last = [0], 0
        for s in at[1:]:
            if s - last >= CHUNK_ROWS:
                cuts.append(int(s))
                last = s
        return cuts + [n]

    def search(self, vectors, k: int = 1) -> Matches:
        """The ``k`` nearest gallery rows of each query vector (Q, dim), nearest first (equal
        distances by row order)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_matrix(vectors, self.dim)
        qn = np.einsum("ij,ij->i", q, q)[:, None]
        kept = min(k, len(self))
        indices = np.full((len(q), k), -1, np.int64)
        distances = np.full((len(q), k), np.inf, np.float32)
        if kept:
            for start, tiles in self._tiles(q, self._bounds(), self.vectors, self._norms):
                best_d, best_i = None, None
                for a, d in tiles:
                    idx = _top_k(d, min(kept, d.shape[1]))
                    best_d, best_i = _merge(best_d, best_i, np.take_along_axis(d, idx, axis=1), idx + a, kept)
                stop = start + len(best_d)
                indices[start:stop, :kept] = best_i
                distances[start:stop, :kept] = _finish(best_d, qn[start:stop])
        return Matches(indices, distances, self._names(indices, self.identities))

    def best_identities(self, vectors, k: int = 2) -> Matches:
        """The ``k`` nearest *people* of each query: each identity's distance is that of its nearest
        row, so the runner-up is the best of the other people, never a second image of the first
        (equal distances by name). ``indices`` are those nearest rows."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_matrix(vectors, self.dim)
        qn = np.einsum("ij,ij->i", q, q)[:, None]
        kept = min(k, len(self._people))
        indices = np.full((len(q), k), -1, np.int64)
        distances = np.full((len(q), k), np.inf, np.float32)
        if not kept:
            return Matches(indices, distances, self._names(indices, self.identities))
        vectors_g, norms_g = self._grouped
        ends = np.r_[self._starts[1:], len(self)]
        for start, tiles in self._tiles(q, self._bounds(self._starts), vectors_g, norms_g):
            best_d, best_p = None, None
            for a, d in tiles:
                first = int(np.searchsorted(self._starts, a))  # the chunk's first person
                last = int(np.searchsorted(self._starts, a + d.shape[1]))
                per_person = np.minimum.reduceat(d, self._starts[first:last] - a, axis=1)  # (B, its people)
                top = _top_k(per_person, min(kept, per_person.shape[1]))
                best_d, best_p = _merge(best_d, best_p, np.take_along_axis(per_person, top, axis=1), top + first, kept)
            stop = start + len(best_d)
            # The nearest row of each chosen person: an argmin over its few rows.
            for b in range(len(best_p)):
                for j, person in enumerate(best_p[b]):
                    s, e = self._starts[person], ends[person]
                    rows = norms_g[s:e] - 2 * (vectors_g[s:e] @ q[start + b])
                    indices[start + b, j] = self._order[s + int(np.argmin(rows))]
            distances[start:stop, :kept] = _finish(best_d, qn[start:stop])
        return Matches(indices, distances, self._names(indices, self.identities))

    @staticmethod
    def _names(indices: np.ndarray, identities: np.ndarray) -> np.ndarray:
        names = np.full(indices.shape, NO_MATCH, dtype=identities.dtype if len(identities) else "<U1")
        found = indices >= 0
        names[found] = identities[indices[found]]
        return names


def _finish(partial: np.ndarray, qn: np.ndarray) -> np.ndarray:
    """Squared distances from ``Gallery._tiles``' values: the query's norm added, and rounding's
    -1e-7 (a vector and itself) clipped to 0."""
    return np.maximum(partial + qn, 0)


def _merge(best_d, best_i, d, i, k: int):
    """The k smallest of two candidate sets (values, indices), smallest first, ties by index."""
    if best_d is not None:
        d, i = np.concatenate([best_d, d], axis=1), np.concatenate([best_i, i], axis=1)
    order = np.lexsort((i, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def _top_k(d: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest values of each row of ``d``, smallest first (ties by column)."""
    if k == 1:  # argmin takes the first of equal values: no tie to settle
        return d.argmin(axis=1)[:, None].astype(np.int64)
    if k < d.shape[1]:
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(d, idx, axis=1)
        # argpartition keeps any of the rows tied at the k-th distance; where more are tied than fit,
        # that row is sorted whole (stable), so the lowest rows win, whatever numpy's partition does.
        tied = np.flatnonzero((d <= values.max(axis=1, keepdims=True)).sum(axis=1) > k)
        for r in tied:
            idx[r] = np.argsort(d[r], kind="stable")[:k]
            values[r] = d[r, idx[r]]
    else:
        idx = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        values = np.take_along_axis(d, idx, axis=1)
    order = np.lexsort((idx, values), axis=1)
    return np.take_along_axis(idx, order, axis=1).astype(np.int64)


# -- the file ------------------------------------------------------------------------------------


def gallery_path(spec) -> Path:
    """``spec`` itself, or ``spec/gallery.npz`` where it is a folder."""
    path = Path(spec)
    return path / GALLERY_FILE if path.is_dir() or not path.suffix else path


def gallery_bytes(gallery: Gallery) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, vectors=gallery.vectors, identities=gallery.identities, sources=gallery.sources,
             sha256=gallery.sha256, meta=np.array(json.dumps({**gallery.meta, "format": FORMAT}, sort_keys=True)))
    return buf.getvalue()


def save_gallery(path, gallery: Gallery) -> Path:
    """Write ``gallery`` to ``path`` whole or not at all: a reader sees the old file or the new one."""
    path = Path(path)
    atomic_write_bytes(path, gallery_bytes(gallery))
    return path


def load_gallery(spec) -> Gallery:
    """The gallery in a file (or a folder's ``gallery.npz``); ``GalleryError`` (one line) for one that
    is missing or is not a gallery file."""
    path = gallery_path(spec)
    if not path.is_file():
        raise GalleryError(f"gallery {path} does not exist (make enroll GALLERY=<root>/<identity>/<image> writes it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [a for a in ARRAYS if a not in data.files]
            if missing:
                raise GalleryError(f"{path}: not a gallery file (it lacks {', '.join(missing)})")
            arrays = {a: data[a] for a in ARRAYS}
        meta = json.loads(str(arrays.pop("meta")))
    except GalleryError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise GalleryError(f"{path}: not a gallery file ({reason[:160]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise GalleryError(f"{path}: gallery format {found!r}, not {FORMAT!r}: enroll it again")
    try:
        return Gallery(arrays["vectors"], arrays["identities"], arrays["sources"], arrays["sha256"], meta)
    except ValueError as err:
        raise GalleryError(f"{path}: damaged gallery ({err})") from None


# -- fingerprints: what made the vectors ---------------------------------------------------------


def embedder_fingerprint(embedder) -> dict:
    """The embedder a gallery's vectors come from: its file, that file's SHA-256, its dimension."""
    from core.weights import file_sha256

    return {"path": str(embedder.path), "sha256": file_sha256(embedder.path), "dim": embedder.dim}


def detector_fingerprint(weights: str, align_cfg, flip: bool) -> dict:
    """What decides a face's crop and so its vector: the detector's weights files (SHA-256 each),
    the alignment (mode, side, margin) and whether the mirror image is added. The cascade's
    thresholds and smallest face are left out: they decide which faces are found, not their crops,
    so a group photo may be searched with a smaller --min-face than the gallery was enrolled with."""
    from core.weights import weights_digests

    return {"weights": weights, "weights_sha256": weights_digests(weights), "align": align_cfg.align,
            "image_size": align_cfg.crop_size, "margin": align_cfg.margin if align_cfg.align == "margin" else None,
            "flip": flip}


def fingerprint_problem(meta: dict, embedder: dict, detector: dict) -> str | None:
    """Why vectors made with ``embedder`` and ``detector`` cannot be compared with a gallery's
    (``meta``), or None when they can."""
    theirs = meta.get("embedder") or {}
    if theirs.get("sha256") != embedder["sha256"]:
        return (f"was enrolled with the embedder {theirs.get('path', '?')} (sha256 {str(theirs.get('sha256'))[:12]}), "
                f"not {embedder['path']} (sha256 {embedder['sha256'][:12]}): its vectors cannot be compared with this "
                f"embedder's")
    recorded = meta.get("detector") or {}
    differ = [k for k in ("align", "image_size", "margin", "flip") if recorded.get(k) != detector[k]]
    if differ:
        listed = ", ".join(f"{k} {recorded.get(k)!r} there, {detector[k]!r} here" for k in differ)
        return f"was enrolled with faces aligned otherwise ({listed})"
    there, here = recorded.get("weights_sha256") or {}, detector["weights_sha256"]
    if there != here:
        changed = sorted(n for n in set(there) | set(here) if there.get(n) != here.get(n))
        return (f"was enrolled with the detector {recorded.get('weights', '?')}, not {detector['weights']} "
                f"({', '.join(changed)} differ): its faces were found and aligned by other nets")
    return None
