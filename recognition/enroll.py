"""Enroll the faces of an identity folder into a gallery: ``make enroll GALLERY=<root>/<identity>/<image>``.

    python -m recognition.enroll --gallery people/ --out build/gallery [--embedder shipped] [--weights shipped]
        [--align similarity] [--image-size 64] [--rebuild]

Every image under ``--gallery`` (``<identity>/<image>``, any depth below the identity's folder;
.jpg .jpeg .png .bmp) has its one face (the largest and most central) detected and aligned as the
embedder's training build aligns (``make recog-data``: ``--align``, ``--image-size``), embedded
with its mirror image added, and written to ``OUT/gallery.npz`` (``recognition.gallery``): the
vectors, each one's identity, source image and its SHA-256, and the fingerprints of the embedder
and the detector. Enrolling again embeds only the images that are new or whose bytes changed, and
drops the rows of images no longer there; a gallery of another embedder, detector or alignment is
refused (one line naming both) unless ``--rebuild``, which embeds every image again.

Images where no face is found and unreadable ones are counted and named in one line each (an
identity with no face at all, too); an image directly under the root (no identity folder) is
counted and left out. The gallery is rewritten every few seconds and at the end, always whole
(an interrupted run keeps what it embedded, and the next one goes on from there), and ``OUT`` is
locked while it works: a second enroll into the same gallery is refused, naming the first. An
empty gallery (no images, or no face in any) is refused rather than written.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.atomic import ensure_writable_folder
from core.imageio import ImageReadError, read_image_rgb
from core.lock import folder_lock
from core.outputs import check_output_apart, file_sha256, weights_folder
from core.weights import SHIPPED_WEIGHTS_DIR
from core.stage import stage_cli
from detector.align import AlignConfig, align_image, list_images
from detector.cascade import load_detector
from recognition.inputs import FaceCrops
from recognition.embedder import embed, load_embedder
from recognition.gallery import (Gallery, GalleryError, detector_fingerprint, embedder_fingerprint,
                                 fingerprint_problem, gallery_path, load_gallery, save_gallery)

PROG = "python -m recognition.enroll"
# Seconds between rewrites of the gallery while enrolling: what an interrupted run keeps.
FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class EnrollConfig:
    gallery: str
    """The identity folder: <root>/<identity>/<image>; the identity is the image's first folder."""
    out: str
    """Output folder of gallery.npz (apart from --gallery)."""
    embedder: str = "shipped"
    """shipped (weights/embedder.pt), a weights file, or a folder holding embedder.pt."""
    crops: FaceCrops = field(default_factory=FaceCrops)
    """The detector and the alignment of the crops (--weights, --min-face, ..., --align, --image-size, --margin)."""
    flip: bool = True
    """Add the mirror image's embedding (as make eval-lfw and make compare do)."""
    batch_images: int = 16
    """Images per detect_batch call, embedded together."""
    rebuild: bool = False
    """Embed every image again, also into a gallery of another embedder, detector or alignment."""
    threads: int | None = None
    """CPU threads of torch; None: one per core."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 or none, got {self.threads}")
        if self.batch_images < 1 or self.crops.image_size < 1 or self.crops.margin < 0:
            raise ValueError("--batch-images and --image-size must be >= 1, --margin >= 0")

    def align_config(self) -> AlignConfig:
        return self.crops.align_config(self.gallery, self.out, largest=True, progress=False)


def embedder_input(spec: str):
    """The file or folder an --embedder spec reads (an input the outputs must stay apart from)."""
    return SHIPPED_WEIGHTS_DIR / "embedder.pt" if spec == "shipped" else spec


def identity_of(source: str) -> str | None:
    """The identity of an image path relative to the gallery root: its first folder (None: none)."""
    parts = Path(source).parts
    return parts[0] if len(parts) > 1 else None


@dataclass
class _Rows:
    """The gallery being built: kept and new rows, and the images enrolled without a face."""

    vectors: list = field(default_factory=list)
    identities: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    sha256: list = field(default_factory=list)
    no_face: dict = field(default_factory=dict)

    def add(self, vector, identity: str, source: str, digest: str) -> None:
        self.vectors.append(np.asarray(vector, np.float32))
        self.identities.append(identity)
        self.sources.append(source)
        self.sha256.append(digest)

    def gallery(self, meta: dict, dim: int) -> Gallery:
        # Rows grouped by identity, then by source: the order search's per-person minimum reads.
        order = sorted(range(len(self.sources)), key=lambda i: (self.identities[i], self.sources[i]))
        vectors = np.stack([self.vectors[i] for i in order]) if order else np.zeros((0, dim), np.float32)
        return Gallery(vectors, [self.identities[i] for i in order], [self.sources[i] for i in order],
                       [self.sha256[i] for i in order], {**meta, "no_face": dict(sorted(self.no_face.items()))})


def main(cfg: EnrollConfig) -> dict:
    """Enroll ``cfg.gallery`` into ``cfg.out``/gallery.npz; returns the summary. FileNotFoundError,
    ValueError (GalleryError, OutputError), FolderLockedError on bad input."""
    root, out = Path(cfg.gallery), Path(cfg.out)
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder {root} does not exist (give --gallery <root>/<identity>/<image>)")
    check_output_apart(out, {"--gallery": root, "--weights": weights_folder(cfg.crops.weights),
                             "--embedder": embedder_input(cfg.embedder)})
    sources = list_images(root, exclude=out)
    if not sources:
        raise GalleryError(f"{root} holds no image (.jpg .jpeg .png .bmp under <root>/<identity>/): the gallery would "
                           f"be empty")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    embedder = load_embedder(cfg.embedder, cfg.crops.detector.device)
    detector = load_detector(cfg.crops.weights, cfg.crops.detector)
    align_cfg = cfg.align_config()
    if cfg.crops.align == "similarity" and "onet" not in detector.stages:
        raise ValueError(f"similarity alignment needs O-Net's landmarks; {cfg.crops.weights} has no onet")
    meta = {"embedder": embedder_fingerprint(embedder), "detector": detector_fingerprint(cfg.crops.weights, align_cfg, cfg.flip),
            "cascade": cfg.crops.detector.result_settings()}
    path = gallery_path(out)
    ensure_writable_folder(out)
    with folder_lock(out, PROG):
        earlier = load_gallery(path) if path.is_file() and not cfg.rebuild else None
        if earlier is not None:
            problem = fingerprint_problem(earlier.meta, meta["embedder"], meta["detector"])
            if problem:
                raise GalleryError(f"gallery {path} {problem}; pass --rebuild (make enroll REBUILD=1) to embed every "
                                   f"image again, or enroll into another folder")
        return _enroll(cfg, root, path, sources, earlier, meta, embedder, detector, align_cfg)


def _enroll(cfg, root: Path, path: Path, sources, earlier, meta, embedder, detector, align_cfg) -> dict:
    skipped: Counter = Counter()
    rows, todo = _Rows(), []
    known = {}
    if earlier is not None:
        for i, source in enumerate(earlier.sources):
            known.setdefault(str(source), []).append(i)
    earlier_no_face = dict((earlier.meta.get("no_face") or {}) if earlier is not None else {})
    for source in sources:
        identity = identity_of(source)
        if identity is None:
            skipped["outside an identity folder"] += 1
            tqdm.write(f"skipped: {root / source}: not in an identity folder (<root>/<identity>/<image>)", file=sys.stderr)
            continue
        try:
            digest = file_sha256(root / source)
        except OSError as err:
            skipped["unreadable"] += 1
            tqdm.write(f"unreadable: {root / source}: {err.strerror or err}", file=sys.stderr)
            continue
        if source in known and all(earlier.sha256[i] == digest for i in known[source]):
            for i in known[source]:
                rows.add(earlier.vectors[i], identity, source, digest)
        elif earlier_no_face.get(source) == digest:
            rows.no_face[source] = digest
        else:
            todo.append((source, identity, digest))
    kept = len(rows.sources)
    dropped = 0 if earlier is None else len(earlier) - kept
    faces, last_flush = Counter(), time.monotonic()
    bar = tqdm(total=len(todo), unit="img", disable=not cfg.progress, file=sys.stderr)
    for start in range(0, len(todo), cfg.batch_images):
        batch, pictures = [], []
        for source, identity, digest in todo[start : start + cfg.batch_images]:
            try:
                pictures.append(read_image_rgb(root / source))
                batch.append((source, identity, digest))
            except ImageReadError as err:
                skipped["unreadable"] += 1
                tqdm.write(f"unreadable: {err}", file=sys.stderr)
        crops, named = [], []
        for (source, identity, digest), image, dets in zip(batch, pictures, detector.detect_batch(pictures)):
            found = align_image(image, dets, align_cfg)
            if not found:
                rows.no_face[source] = digest
                tqdm.write(f"no face: {root / source}", file=sys.stderr)
                continue
            crops.append(next(iter(found.values())))
            named.append((source, identity, digest))
        for (source, identity, digest), vector in zip(named, embed(embedder, crops, flip=cfg.flip)):
            rows.add(vector, identity, source, digest)
            faces[identity] += 1
        bar.update(len(todo[start : start + cfg.batch_images]))
        if rows.sources and time.monotonic() - last_flush > FLUSH_SECONDS:
            save_gallery(path, rows.gallery(meta, embedder.dim))
            last_flush = time.monotonic()
    bar.close()
    if rows.no_face:  # those found now and those an earlier run found, unchanged since
        skipped["no face found"] = len(rows.no_face)
    people = {identity_of(s) for s in sources} - {None}
    enrolled = set(rows.identities)
    faceless = sorted(people - enrolled)
    for identity in faceless:
        count = sum(1 for s in sources if identity_of(s) == identity)
        print(f"skipped: identity {identity}: no face found in its {count} image{'s' * (count != 1)} (not enrolled)",
              file=sys.stderr)
    if not rows.sources:
        raise GalleryError(f"no face found in any of the {len(sources)} images under {root}: the gallery would be empty"
                           f"{'; ' + path.name + ' is left as it was' if path.is_file() else ''}")
    gallery = rows.gallery(meta, embedder.dim)
    save_gallery(path, gallery)
    summary = {"images": len(sources), "kept": kept, "embedded": sum(faces.values()), "dropped": dropped,
               "faces": len(gallery), "people": len(gallery.people), "people_without_face": faceless,
               "skipped": dict(skipped)}
    print(f"{len(gallery)} faces of {len(gallery.people)} people in {path} ({summary['embedded']} embedded now, "
          f"{kept} kept, {dropped} dropped); {len(sources)} images, "
          f"{sum(skipped.values())} skipped{' (' + ', '.join(f'{n} {r}' for r, n in skipped.items()) + ')' if skipped else ''}"
          f"{f', {len(faceless)} people without a face' if faceless else ''}")
    return summary


cli = stage_cli(EnrollConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
