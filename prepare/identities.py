"""Aligned identity faces for the embedding trainer: ``make recog-data``.

    python -m prepare.identities --images lfw/ --out build/recog/fold-10 [--people people.txt --fold 10]
        [--aligned build/recog/aligned] [--weights shipped] [--align similarity] [--image-size 64]

1. The project's detector runs over every image of the identity folder ``<images>/<identity>/<image>``
   and keeps one face per image, the largest and most central (``detector.align``'s ``--largest``),
   aligned by the 5-point similarity warp (or the margin crop), into ``--aligned``: a resumable
   folder of crops plus ``index.csv`` that every fold's build (and ``make eval-lfw`` on the same
   images) reuses, so the detector runs once per image.
2. The crops of the identities kept (with ``--fold k``, less the people of LFW fold k of
   ``--people``) are packed into LMDB shards (``lmdb_builders.faces`` records, ``ShardWriter``) with
   ``manifest.json`` written last: the identities and their face counts, every image's path, the
   images where no face was found and the unreadable ones (counted and listed, never dropped
   silently), and the identities with fewer than ``--min-images`` faces, which are left out
   (a batch of P people x K images needs K of each; one image gives no matched pair).

Bad input (a missing folder, a malformed people list, a fold it does not have) is one line and
exit code 2.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from annotations.identities import read_identity_folder
from annotations.lfw import fold_people, parse_people
from core.imageio import read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart, weights_folder
from core.stage import stage_cli
from detector.align import ALIGN_MODES, INDEX_NAME, AlignConfig, read_index
from detector.align import main as align_main
from detector.cascade import DetectorConfig
from lmdb_builders.faces import FACES, make_face_records
from lmdb_builders.manifest import MANIFEST_NAME, fingerprint, is_build_manifest
from lmdb_builders.writer import ShardWriter, WriterConfig

PROG = "python -m prepare.identities"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class IdentityDataConfig:
    images: str
    """Identity folder: <images>/<identity>/<image> (.jpg .jpeg .png .bmp)."""
    out: str
    """Build folder: size-bucketed shards and manifest.json."""
    aligned: str | None = None
    """Folder of the aligned crops (index.csv, reused by every build of these images and settings).
    None: <out>/../aligned."""
    people: str | None = None
    """LFW's people.txt, whose folds --fold refers to."""
    fold: int | None = None
    """Leave out the people of this fold of --people (1-based: 1 to 10); None: keep everyone."""
    only_people: str | None = None
    """Keep only the people of this LFW people list (View 1's peopleDevTrain.txt, for choosing settings)."""
    min_images: int = 2
    """Identities with fewer aligned faces than this are reported and left out."""
    weights: str = "shipped"
    """The detector: shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device, ...)."""
    align: str = field(default="similarity", metadata={"choices": ALIGN_MODES})
    """similarity (5-point warp onto the ArcFace template) or margin (facenet's box + margin)."""
    image_size: int = 64
    """Side of the aligned crops in pixels (the embedder's input size)."""
    margin: int = 32
    """margin mode: pixels added around the box in total (facenet's 32 at 160 px)."""
    shard_mb: int = 1024
    """Roll to a new shard after this many MiB of records."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if (self.fold is None) != (self.people is None) and self.fold is not None:
            raise ValueError("--fold needs --people (LFW's people.txt)")
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold is 1-based (1 to 10), got {self.fold}")
        if self.min_images < 1 or self.image_size < 16 or self.shard_mb < 1:
            raise ValueError("--min-images must be >= 1, --image-size >= 16, --shard-mb >= 1")

    @property
    def aligned_dir(self) -> Path:
        return Path(self.aligned) if self.aligned else Path(self.out).parent / "aligned"

    def align_config(self) -> AlignConfig:
        return AlignConfig(images=self.images, out=str(self.aligned_dir), weights=self.weights, detector=self.detector,
                           largest=True, align=self.align, margin=self.margin, image_size=self.image_size,
                           progress=self.progress)


def _excluded(cfg: IdentityDataConfig, names: set[str]) -> set[str]:
    """The identities of the folder that the build leaves out: fold k's people, and with
    --only-people everyone not on that list."""
    out = fold_people(parse_people(cfg.people), cfg.fold - 1) & names if cfg.fold is not None else set()
    if cfg.only_people:
        out |= names - {p.name for p in parse_people(cfg.only_people)}
    return out


def main(cfg: IdentityDataConfig) -> dict:
    """Align (or reuse the aligned crops) and pack; returns the manifest."""
    inputs = {"--images": cfg.images, "--people": cfg.people, "--only-people": cfg.only_people,
              "--weights": weights_folder(cfg.weights)}
    check_output_apart(cfg.out, inputs)
    check_output_apart(cfg.aligned_dir, inputs, "--aligned")
    check_names_free(cfg.out, [MANIFEST_NAME], PROG, lambda path: is_build_manifest(path, FACES.name))
    everyone = read_identity_folder(cfg.images)
    excluded = _excluded(cfg, set(everyone.identities))
    folder = everyone.without(excluded)
    sources = [path for _, path in folder.images]
    align_cfg = cfg.align_config()
    with folder_lock(align_cfg.out, f"{PROG} (aligning {cfg.images})"):
        align_summary = align_main(align_cfg, sources=sources)
    rows = read_index(Path(align_cfg.out) / INDEX_NAME)
    aligned_dir = Path(align_cfg.out)

    crop_of = {s: r[0]["crop"] for s, r in rows.items() if r and r[0]["crop"]}
    no_face = sorted(s for s in sources if s in rows and s not in crop_of)
    too_large = sorted(s for s in align_summary.get("too_large", {}) if s not in rows)  # for --min-face
    unreadable = sorted(s for s in sources if s not in rows and s not in too_large)
    faces = Counter(folder.identities[i] for i, s in folder.images if s in crop_of)
    too_few = sorted(name for name in folder.identities if faces[name] < cfg.min_images)
    kept = [name for name in folder.identities if faces[name] >= cfg.min_images]
    number = {name: k for k, name in enumerate(kept)}
    # In identity order, so that the manifest's face counts give every record's identity.
    items = sorted((number[folder.identities[i]], s) for i, s in folder.images
                   if s in crop_of and folder.identities[i] in number)

    # The rows of this build's images only: aligning other images into the shared folder (another
    # fold's, or make eval-lfw's) leaves the build up to date.
    # (Less each file's stat, which a copy changes and its content check follows.)
    index_digest = fingerprint([None if rows.get(s) is None else [{k: v for k, v in r.items() if k != "source_stat"}
                                                                  for r in rows[s]] for s in sources])
    settings = {**{k: v for k, v in asdict(cfg).items() if k not in ("images", "out", "aligned", "people", "only_people", "progress",
                                                                       "detector", "shard_mb")},
                "align_settings": align_cfg.settings(), "excluded_people": sorted(excluded)}
    fp = fingerprint({"settings": settings, "aligned_index": index_digest, "record": FACES.name})
    out = Path(cfg.out)
    with folder_lock(out, PROG):
        writer = ShardWriter(out, fp, WriterConfig(shard_bytes=cfg.shard_mb << 20), spec=FACES)
        bar = tqdm(total=len(items), initial=writer.resume_image, unit="face", desc="packing",
                   disable=not cfg.progress, file=sys.stderr)
        try:
            for k in range(writer.resume_image, len(items)):
                identity, source = items[k]
                crop = read_image_rgb(aligned_dir / crop_of[source])
                if crop.shape[:2] != (cfg.image_size, cfg.image_size):
                    raise ValueError(f"{aligned_dir / crop_of[source]}: {crop.shape[1]}x{crop.shape[0]}, "
                                     f"not the {cfg.image_size} px of --image-size; delete {aligned_dir}")
                writer.add_image(k, [make_face_records(crop[None], [identity], [k])])
                bar.update(1)
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        manifest = writer.finish(len(items), {
            "config": settings,
            "identities": [[name, faces[name]] for name in kept],
            "images": [s for _, s in items],
            "report": {"images": len(sources), "faces": len(items), "no_face": no_face, "unreadable": unreadable,
                       "too_large": too_large, "too_few_images": too_few, "loose_images": folder.loose,
                       "under_two_identities": list(everyone.ambiguous),
                       "excluded_people": len(excluded), "align": align_summary},
        })
    print(f"{len(sources)} images of {len(folder.identities)} identities"
          f"{f' (fold {cfg.fold} left out: {len(excluded)} people)' if cfg.fold else ''}: "
          f"{len(items)} faces of {len(kept)} identities -> {out}; no face in {len(no_face)}, "
          f"unreadable {len(unreadable)}{f', too large for --min-face {len(too_large)}' if too_large else ''}, "
          f"{len(too_few)} identities with fewer than {cfg.min_images} faces left out"
          f"{f', {len(everyone.ambiguous)} images filed under two identities left out' if everyone.ambiguous else ''}")
    return manifest


cli = stage_cli(IdentityDataConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
