"""Aligned identity faces for the embedding trainer: ``make recog-data``.

    python -m prepare.identities --images lfw/ [outside/ ...] --out build/recog/fold-10 [--people people.txt --fold 10]
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

Several roots (``--images lfw/ celeba/``: LFW's and an outside set's, "unrestricted, labeled outside
data" in LFW's terms) are one build: the first root's identities keep their names (LFW's, which
people.txt, the pairs and ``make eval-lfw``'s check of the embedder's record name), every other
root's become ``<root's folder name>/<name>``, so that two sets' "John Smith" stay two people and
none can be taken for an LFW name; image paths in the manifest are namespaced alike. Each root
aligns into its own crop cache (the first into ``--aligned``, another into ``<aligned>-<name>``), as
a cache is keyed by paths relative to its root. ``--fold k`` leaves out, in every root, each person
whose normalised name (``annotations.identities.normalised_name``: case, accents, spaces,
underscores, hyphens) is one of fold k's people's; the outside roots' people so removed are counted
and named in the report (``outside_matching_left_out``, ``outside_matching_names``), and
``report.roots`` gives each root's images, identities and faces as read, used and packed. The
manifest's ``config.outside_roots`` (only with outside roots) names them, and reaches the
embedder's training record (``build``) through ``trainers.embed_task.training_record``.

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

from annotations.identities import IdentityFolder, namespaced, normalised_name, read_identity_folder, root_labels
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
    images: tuple[str, ...]
    """Identity folders ("roots"), each <root>/<identity>/<image> (.jpg .jpeg .png .bmp): LFW first
    (its people keep their names), then outside sets (their identities become <root's name>/<name>)."""
    out: str
    """Build folder: size-bucketed shards and manifest.json."""
    aligned: str | None = None
    """Folder of the first root's aligned crops (index.csv, reused by every build of these images and
    settings); each further root's are in <aligned>-<root's name>. None: <out>/../aligned."""
    people: str | None = None
    """LFW's people.txt, whose folds --fold refers to."""
    fold: int | None = None
    """Leave out the people of this fold of --people (1-based: 1 to 10), in every root by their
    normalised names; None: keep everyone."""
    only_people: str | None = None
    """Keep only the people of this LFW people list (View 1's peopleDevTrain.txt, for choosing settings)
    among the first root's; outside roots are kept whole."""
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
        if isinstance(self.images, (str, Path)):  # one root, as callers in Python give it
            object.__setattr__(self, "images", (str(self.images),))
        if not self.images:
            raise ValueError("--images needs at least one identity folder")
        if (self.fold is None) != (self.people is None) and self.fold is not None:
            raise ValueError("--fold needs --people (LFW's people.txt)")
        if self.fold is not None and self.fold < 1:
            raise ValueError(f"--fold is 1-based (1 to 10), got {self.fold}")
        if self.min_images < 1 or self.image_size < 16 or self.shard_mb < 1:
            raise ValueError("--min-images must be >= 1, --image-size >= 16, --shard-mb >= 1")

    @property
    def aligned_dir(self) -> Path:
        return Path(self.aligned) if self.aligned else Path(self.out).parent / "aligned"

    def aligned_dirs(self, labels: list[str]) -> list[Path]:
        """Each root's crop cache: the first root's --aligned (shared with make eval-lfw on LFW), a
        further root's a sibling of it, since a cache is keyed by paths relative to one root."""
        first = self.aligned_dir
        return [first] + [first.with_name(f"{first.name}-{label}") for label in labels[1:]]

    def align_config(self, images: str | None = None, aligned: Path | None = None) -> AlignConfig:
        return AlignConfig(images=images or self.images[0], out=str(aligned or self.aligned_dir), weights=self.weights,
                           detector=self.detector, largest=True, align=self.align, margin=self.margin,
                           image_size=self.image_size, progress=self.progress)


@dataclass(frozen=True)
class Root:
    """One identity folder of the build, its identities namespaced (``annotations.identities.namespaced``)."""

    label: str
    folder: IdentityFolder
    """The folder less the people the build leaves out."""
    names: tuple[str, ...]
    """The build's name of each of ``folder``'s identities."""
    excluded: tuple[str, ...]
    """The build's names of the people left out."""
    aligned: Path


def left_out(cfg: IdentityDataConfig, k: int, names: tuple[str, ...]) -> set[str]:
    """The identities of root ``k`` (0-based) that the build leaves out: with --fold, those whose
    normalised name is one of fold k's people's (``normalised_name``: an outside set spelling a
    left-out LFW person otherwise would teach the embedder the faces it is scored on), and with
    --only-people, the first root's people not on that list."""
    out = set()
    if cfg.fold is not None:
        fold = {normalised_name(p) for p in fold_people(parse_people(cfg.people), cfg.fold - 1)}
        out = {n for n in names if normalised_name(n) in fold}
    if cfg.only_people and k == 0:
        out |= set(names) - {p.name for p in parse_people(cfg.only_people)}
    return out


def read_roots(cfg: IdentityDataConfig, labels: list[str]) -> tuple[list[Root], list[IdentityFolder]]:
    """The build's roots, each less the people it leaves out, and each root's folder as read."""
    roots, everyone = [], []
    for k, (images, label, aligned) in enumerate(zip(cfg.images, labels, cfg.aligned_dirs(labels))):
        folder = read_identity_folder(images)
        excluded = left_out(cfg, k, folder.identities)
        kept = folder.without(excluded)
        roots.append(Root(label, kept, tuple(namespaced(k, label, n) for n in kept.identities),
                          tuple(sorted(namespaced(k, label, n) for n in excluded)), aligned))
        everyone.append(folder)
    return roots, everyone


def main(cfg: IdentityDataConfig) -> dict:
    """Align (or reuse the aligned crops) and pack; returns the manifest."""
    inputs = {"--images": list(cfg.images), "--people": cfg.people, "--only-people": cfg.only_people,
              "--weights": weights_folder(cfg.weights)}
    check_output_apart(cfg.out, inputs)
    labels = root_labels(cfg.images)
    for aligned in cfg.aligned_dirs(labels):
        check_output_apart(aligned, inputs, "--aligned")
    check_names_free(cfg.out, [MANIFEST_NAME], PROG, lambda path: is_build_manifest(path, FACES.name))
    roots, everyone = read_roots(cfg, labels)
    # Every image by its key: its path relative to its root, namespaced as its identity is.
    keys, crop_of, summaries, index_rows = [], {}, [], []
    for k, root in enumerate(roots):
        align_cfg = cfg.align_config(cfg.images[k], root.aligned)
        sources = [path for _, path in root.folder.images]
        with folder_lock(align_cfg.out, f"{PROG} (aligning {cfg.images[k]})"):
            summaries.append(align_main(align_cfg, sources=sources))
        rows = read_index(root.aligned / INDEX_NAME)
        for source in sources:
            key = namespaced(k, root.label, source)
            keys.append((key, source in rows))
            index_rows.append(rows.get(source))
            if rows.get(source) and rows[source][0]["crop"]:
                crop_of[key] = (root.aligned, rows[source][0]["crop"])
        summaries[-1] = {**summaries[-1], "too_large": {namespaced(k, root.label, s): why
                                                         for s, why in summaries[-1].get("too_large", {}).items()}}
    too_large_all = {s for summary in summaries for s in summary["too_large"]}
    no_face = sorted(key for key, indexed in keys if indexed and key not in crop_of)
    too_large = sorted(key for key, indexed in keys if key in too_large_all and not indexed)  # for --min-face
    unreadable = sorted(key for key, indexed in keys if not indexed and key not in too_large_all)
    image_names = [(root.names[i], namespaced(k, root.label, s)) for k, root in enumerate(roots)
                   for i, s in root.folder.images]
    names = [name for root in roots for name in root.names]
    faces = Counter(name for name, key in image_names if key in crop_of)
    too_few = sorted(name for name in names if faces[name] < cfg.min_images)
    kept = [name for name in names if faces[name] >= cfg.min_images]
    number = {name: k for k, name in enumerate(kept)}
    # In identity order, so that the manifest's face counts give every record's identity.
    items = sorted((number[name], key) for name, key in image_names if key in crop_of and name in number)
    excluded = sorted(name for root in roots for name in root.excluded)

    # The rows of this build's images only: aligning other images into the shared folder (another
    # fold's, or make eval-lfw's) leaves the build up to date.
    # (Less each file's stat, which a copy changes and its content check follows.)
    index_digest = fingerprint([None if r is None else [{k: v for k, v in row.items() if k != "source_stat"} for row in r]
                                for r in index_rows])
    settings = {**{k: v for k, v in asdict(cfg).items() if k not in ("images", "out", "aligned", "people", "only_people", "progress",
                                                                       "detector", "shard_mb")},
                "align_settings": cfg.align_config().settings(), "excluded_people": excluded,
                # Only with outside roots, so that an LFW-only build is the one it was before there were any.
                **({"outside_roots": [root.label for root in roots[1:]]} if len(roots) > 1 else {})}
    fp = fingerprint({"settings": settings, "aligned_index": index_digest, "record": FACES.name})
    per_root = [root_report(k, root, everyone[k], summaries[k], faces, kept, cfg.images[k]) for k, root in enumerate(roots)]
    outside_matches = [name for root in roots[1:] for name in root.excluded] if cfg.fold is not None else []
    out = Path(cfg.out)
    with folder_lock(out, PROG):
        writer = ShardWriter(out, fp, WriterConfig(shard_bytes=cfg.shard_mb << 20), spec=FACES)
        bar = tqdm(total=len(items), initial=writer.resume_image, unit="face", desc="packing",
                   disable=not cfg.progress, file=sys.stderr)
        try:
            for k in range(writer.resume_image, len(items)):
                identity, key = items[k]
                aligned_dir, crop_path = crop_of[key]
                crop = read_image_rgb(aligned_dir / crop_path)
                if crop.shape[:2] != (cfg.image_size, cfg.image_size):
                    raise ValueError(f"{aligned_dir / crop_path}: {crop.shape[1]}x{crop.shape[0]}, "
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
            "images": [key for _, key in items],
            "report": {"images": len(image_names), "faces": len(items), "no_face": no_face, "unreadable": unreadable,
                       "too_large": too_large, "too_few_images": too_few,
                       "loose_images": sum(root.folder.loose for root in roots),
                       "under_two_identities": [namespaced(k, root.label, s) for k, root in enumerate(roots)
                                                for s in everyone[k].ambiguous],
                       "excluded_people": len(excluded), "outside_matching_left_out": len(outside_matches),
                       "outside_matching_names": outside_matches, "align": summaries[0], "roots": per_root},
        })
    ambiguous = sum(len(folder.ambiguous) for folder in everyone)
    print(f"{len(image_names)} images of {len(names)} identities"
          f"{f' (fold {cfg.fold} left out: {len(excluded)} people)' if cfg.fold else ''}: "
          f"{len(items)} faces of {len(kept)} identities -> {out}; no face in {len(no_face)}, "
          f"unreadable {len(unreadable)}{f', too large for --min-face {len(too_large)}' if too_large else ''}, "
          f"{len(too_few)} identities with fewer than {cfg.min_images} faces left out"
          f"{f', {ambiguous} images filed under two identities left out' if ambiguous else ''}"
          + (f"; by root: {', '.join(root_line(r) for r in per_root)}" if len(roots) > 1 else ""))
    return manifest


def root_report(k: int, root: Root, everyone: IdentityFolder, summary: dict, faces: Counter, kept: list[str],
                images: str) -> dict:
    """One root's counts for the manifest's report: its images and identities as read, those the
    build used and packed, and the people it left out."""
    kept_here = [name for name in root.names if name in set(kept)]
    return {"label": root.label, "images": images, "namespace": "" if k == 0 else f"{root.label}/",
            "read": {"images": len(everyone.images), "identities": len(everyone.identities)},
            "used": {"images": len(root.folder.images), "identities": len(root.folder.identities)},
            "packed": {"faces": sum(faces[name] for name in kept_here), "identities": len(kept_here)},
            "excluded_people": list(root.excluded), "align": summary}


def root_line(r: dict) -> str:
    return f"{r['label']} {r['packed']['faces']} faces of {r['packed']['identities']} identities"


cli = stage_cli(IdentityDataConfig, main)

if __name__ == "__main__":
    sys.exit(cli())
