"""Sample generation: WIDER faces + a 5-point landmark list -> LMDB shards, for any stage.

``make pnet-data`` runs::

    python -m prepare.generate --wider-txt .../wider_face_train_bbx_gt.txt \
        --wider-images .../WIDER_train/images --landmarks .../trainImageList.txt \
        --out build/pnet --net-size 12 --workers 2

and writes ``build/pnet/12/shard-*.lmdb`` plus ``build/pnet/manifest.json`` (last), and
``build/pnet/report.json`` (timing). Negatives, positives and part faces come from random crops of
each WIDER image (``prepare.sampling``), landmark samples from each face of the landmark list
(``prepare.landmark_aug``). ``--help`` lists every option (one per ``GenerateConfig`` field).

``make rnet-data`` / ``make onet-data`` add ``--mine-with build/weights --net-size 24`` (or 48):
the crops of a WIDER image are then the earlier stages' detections, labelled by IoU with the
faces (``prepare.mining``): hard examples.

Work item ``i`` (WIDER images first, then landmark images) draws every random number from
``np.random.default_rng([seed, i])`` and results are written in item order (``prepare.pool``), so
the same seed gives byte-identical shards with any number of workers. A killed run resumes where
its last complete part ended (``lmdb_builders.writer``); a finished one with the same fingerprint
(``prepare.fingerprint``: config, inputs and the sampling code) is left alone.

What the stage refuses, each with one line and exit status 2 (never a traceback): an output folder
another run is writing (``core.lock``); annotation paths that are missing or folders; option values
that mean nothing (``--workers -1``, ``--min-face 0``, negative counts, ``--seed -1``); a build in
which no WIDER image produced samples, or without one of the kinds the loss needs (negatives,
positives, part faces, and landmark samples when a landmark list is given): no manifest is written
then. Images that cannot be used (missing, truncated, not images) are skipped and counted by
reason in the report; ``--workers`` above the CPU count is capped with a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from annotations.errors import AnnotationError
from annotations.landmarks import (
    DEFAULT_HOLDOUT_FRACTION,
    LANDMARK_COLUMNS,
    OUTSIDE_IMAGE,
    faces_inside_images,
    landmark_holdout_mask,
    landmark_images_root,
    load_landmarks,
)
from annotations.wider import parse_wider
from core.atomic import atomic_write_json
from core.cpus import cap_workers, usable_cpus
from core.cli import config_from_namespace, config_parser
from core.geometry import regression_targets, xywh_to_xyxy
from core.imageio import ImageReadError, read_image_rgb
from core.lock import folder_lock
from core.outputs import check_names_free, check_output_apart
from core.stage import run_stage
from detector import DetectorConfig
from detector.cascade import PyramidTooLargeError
from lmdb_builders.manifest import MANIFEST_NAME, is_build_manifest, load_manifest
from lmdb_builders.schema import KIND_NAMES, NET_SIZES, Kind, make_records
from lmdb_builders.writer import ShardWriter, WriterConfig
from prepare.checks import require, require_fraction
from prepare.crops import CropSource, cut_and_resize
from prepare.fingerprint import build_fingerprint
from prepare.landmark_aug import LandmarkAugConfig, landmark_samples
from prepare.mining import mined_crops, mining_detector, mining_stages
from prepare.pool import ordered_map
from prepare.sampling import SamplingConfig, sample_image_crops

LANDMARK_PARTS = ("train", "holdout")
# The cascade that mines: the detector's settings, P-Net's offsets scaled as our nets are trained.
MINING_DETECTOR = DetectorConfig(pnet_regression="inclusive")


@dataclass(frozen=True)
class GenerateConfig:
    wider_txt: str
    """WIDER ``wider_face_*_bbx_gt.txt``."""
    wider_images: str
    """Folder the txt's image paths are relative to (``WIDER_train/images``)."""
    out: str
    """Build folder: shards go to ``<out>/<size>/``, the manifest to ``<out>/manifest.json``."""
    landmarks: str | None = None
    """CNN_FacePoint ``trainImageList.txt`` or a CelebA folder; without one, no landmark samples."""
    net_sizes: tuple[int, ...] = field(default=(12,), metadata={"flag": "--net-size", "choices": NET_SIZES})
    """Sample sizes to write (e.g. 12 24 48 for held-out evaluation samples); each crop is resized
    to every size, one bucket of shards each."""
    seed: int = 0
    """Seeds every random draw (item i draws from default_rng([seed, i]))."""
    workers: int = 0
    """Worker processes (0: as many as CPUs). Does not change the output."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    landmark_aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)
    landmark_holdout: float = DEFAULT_HOLDOUT_FRACTION
    """Share of the landmark list's faces kept out of training, for held-out evaluation."""
    landmark_part: str = field(default="train", metadata={"choices": LANDMARK_PARTS})
    """Landmark faces to use: "train", those not held out (training builds); "holdout", only the
    held-out ones (evaluation builds)."""
    writer: WriterConfig = field(default_factory=WriterConfig)
    limit_images: int | None = None
    """Use only the first N WIDER images (quick runs)."""
    mine_with: str | None = None
    """Hard-example mining: a folder with the earlier stages' weights (pnet.pt [, rnet.pt]), to mine
    24 px (P-Net) or 48 px (P-Net then R-Net) samples from their detections. Without one: random
    crops (P-Net data, held-out evaluation samples)."""
    mine: DetectorConfig = field(default_factory=lambda: MINING_DETECTOR,
                                 metadata={"prefix": "mine_", "flags": {"device": "--device"}})
    """Mining: the cascade's settings, the detector's but for P-Net's offsets, scaled as
    ``regression_targets`` trains them (the nets mining runs are ours); offered as --mine-thresholds,
    --mine-min-face, ... and --device (where the nets run; it and --mine-batch-size are not part of
    the fingerprint)."""
    mine_negatives_per_image: int = 60
    """Mining: at most this many negatives (detections overlapping no face) per image."""
    mine_jittered_faces: bool = False
    """Mining: also add each face's jittered positives and part faces (as P-Net's data has them)
    to the labelled detections."""

    def __post_init__(self):
        require(self.seed >= 0, self, "seed", ">= 0")
        require(self.workers >= 0, self, "workers", ">= 0 (0: one per CPU)")
        require_fraction(self, "landmark_holdout")
        require(self.limit_images is None or self.limit_images >= 0, self, "limit_images", ">= 0 (or none)")
        require(self.mine_negatives_per_image >= 0, self, "mine_negatives_per_image", ">= 0")
        if not self.net_sizes or not set(self.net_sizes) <= set(NET_SIZES):
            raise ValueError(f"net sizes must be among {NET_SIZES}, got {self.net_sizes}")
        if self.landmark_part not in LANDMARK_PARTS:
            raise ValueError(f"landmark_part must be 'train' or 'holdout', got {self.landmark_part!r}")
        if self.mine_with and (len(self.net_sizes) != 1 or self.net_sizes[0] == 12):
            raise ValueError("mining writes one size, 24 (from P-Net) or 48 (from P-Net + R-Net)")


# The small variant for demos and tests: fewer crops per image, 1 MiB shards.
TINY = dict(
    sampling=SamplingConfig(negatives_per_image=12, jitter_attempts_per_face=8, min_face=12),
    landmark_aug=LandmarkAugConfig(samples_per_face=3),
    writer=WriterConfig(shard_bytes=1 << 20, commit_every=50),
)


def tiny_config(wider_txt, wider_images, landmarks, out, **overrides) -> GenerateConfig:
    """``TINY`` for these inputs (``overrides`` win)."""
    return GenerateConfig(
        wider_txt=str(wider_txt), wider_images=str(wider_images), landmarks=str(landmarks) if landmarks else None,
        out=str(out), **{**TINY, **overrides},
    )


# -- work items -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WiderItem:
    path: str
    faces: np.ndarray  # kept faces, inclusive xyxy
    all_faces: np.ndarray  # every annotated box with positive size, dropped ones included


@dataclass(frozen=True)
class LandmarkItem:
    path: str
    boxes: np.ndarray  # (N, 4) inclusive xyxy
    points: np.ndarray  # (N, 5, 2)


class BuildError(ValueError):
    """A build that would be useless (no samples, a kind missing); ``str()`` is one line."""


def check_inputs(cfg: GenerateConfig) -> None:
    """Refuse input paths that cannot be what they are meant to be, before anything is read."""
    txt = Path(cfg.wider_txt)
    if not txt.exists():
        raise AnnotationError(txt, None, "no such file (--wider-txt: a wider_face_*_bbx_gt.txt file)")
    if txt.is_dir():
        raise AnnotationError(txt, None, "is a folder; --wider-txt takes a wider_face_*_bbx_gt.txt file")
    if not Path(cfg.wider_images).is_dir():
        raise AnnotationError(cfg.wider_images, None, "is not a folder (--wider-images: the folder the txt's "
                                                      "image paths are relative to, WIDER_train/images)")
    if cfg.landmarks and not Path(cfg.landmarks).exists():
        raise AnnotationError(cfg.landmarks, None, "no such landmark list or folder (--landmarks)")
    if cfg.mine_with:
        for name in mining_stages(cfg.net_sizes[0]):
            weights = Path(cfg.mine_with) / f"{name}.pt"
            if not weights.is_file():
                raise FileNotFoundError(f"{weights}: no such file; mining {cfg.net_sizes[0]} px samples needs the "
                                        f"trained {', '.join(mining_stages(cfg.net_sizes[0]))} (make train-{name})")


def build_items(cfg: GenerateConfig) -> tuple[list, dict]:
    """Parse the annotations into the ordered list of work items, plus what the parsers dropped.

    Refuses (``BuildError``) a WIDER list without images, or whose images are all missing."""
    wider = parse_wider(cfg.wider_txt, cfg.wider_images)
    images = wider.images
    if cfg.limit_images is not None:
        images = images.iloc[: cfg.limit_images]
    root = Path(cfg.wider_images)
    if images.empty:
        raise BuildError(f"no WIDER image produced samples (0 listed in {cfg.wider_txt})")
    if not images["exists"].any():
        raise BuildError(f"no WIDER image produced samples ({len(images)} listed, {len(images)} skipped: none is "
                         f"a readable image under {root}, e.g. {root / images['image'].iloc[0]}); is --wider-images "
                         "the folder the txt's image paths are relative to?")
    kept = wider.faces.groupby("image_index")
    boxes = wider.all_boxes[(wider.all_boxes.w > 0) & (wider.all_boxes.h > 0)].groupby("image_index")
    kept_groups, all_groups = dict(list(kept)), dict(list(boxes))

    def xyxy(groups, index):
        g = groups.get(index)
        return np.zeros((0, 4)) if g is None else xywh_to_xyxy(g[["x1", "y1", "w", "h"]].to_numpy())

    items: list = [
        WiderItem(str(root / row.image), xyxy(kept_groups, row.image_index), xyxy(all_groups, row.image_index))
        for row in images.itertuples()
    ]
    dropped = {"wider": dict(wider.dropped)}
    if cfg.landmarks:
        marks = load_landmarks(cfg.landmarks)
        held_out = landmark_holdout_mask(len(marks.faces), cfg.landmark_holdout)
        faces = marks.faces[held_out if cfg.landmark_part == "holdout" else ~held_out]
        # After the split, so that which faces are held out depends on the list alone.
        inside = faces_inside_images(faces, marks.images_root)
        faces = faces[inside]
        for image, group in faces.groupby("image", sort=False):
            items.append(
                LandmarkItem(
                    str(Path(marks.images_root) / image),
                    group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64),
                    group[list(LANDMARK_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 5, 2),
                )
            )
        dropped["landmarks"] = {**marks.dropped, OUTSIDE_IMAGE: int(np.count_nonzero(~inside))}
    return items, dropped


def item_records(item, rng, cfg: GenerateConfig) -> list[np.ndarray]:
    """Every sample of one work item as schema record arrays (pixels are read here, in the worker)."""
    image = read_image_rgb(item.path)
    if isinstance(item, LandmarkItem):
        records = []
        for size in cfg.net_sizes:
            pairs = [pair for box, points in zip(item.boxes, item.points)
                     for pair in landmark_samples(rng, image, box, points, size, cfg.landmark_aug)]
            if pairs:
                patches, values = zip(*pairs)
                records.append(make_records(np.stack(patches), Kind.LANDMARK, landmarks=np.stack(values)))
        return records
    if cfg.mine_with:
        detector = mining_detector(cfg.mine_with, cfg.net_sizes[0], cfg.mine)
        crops = mined_crops(rng, image, detector, cfg.net_sizes[0], item.faces, item.all_faces,
                            cfg.mine_negatives_per_image, cfg.sampling, cfg.mine_jittered_faces)
    else:
        height, width = image.shape[:2]
        crops = sample_image_crops(rng, width, height, item.faces, item.all_faces, min(cfg.net_sizes), cfg.sampling)
    source = CropSource(image)
    records = []
    for size in cfg.net_sizes:
        records.append(make_records(cut_and_resize(source, crops.negatives, size), Kind.NEGATIVE))
        for kind, boxes, faces in ((Kind.POSITIVE, crops.positives, crops.positive_faces),
                                   (Kind.PART, crops.parts, crops.part_faces)):
            if len(boxes):
                targets = regression_targets(boxes, faces)
                records.append(make_records(cut_and_resize(source, boxes, size), kind, boxes=targets))
    return records


def work(task):
    """(index, records, skip reason or None) of one ``(index, item, cfg)`` task; run in a pool
    worker. An image that cannot be read or processed gives no records and a reason, not a failed
    build."""
    index, item, cfg = task
    try:
        return index, item_records(item, np.random.default_rng([cfg.seed, index]), cfg), None
    except ImageReadError as e:
        return index, [], e.reason
    except PyramidTooLargeError as e:  # mining only: an image too large for --mine-min-face
        return index, [], (f"too large for --mine-min-face {cfg.mine.min_face:g} (its first pyramid level would "
                           f"exceed the detector's bound; use --mine-min-face {e.least:g} or more)")
    except cv2.error as e:
        return index, [], f"OpenCV could not process the image ({e.err})"


def pool_size(workers: int) -> int:
    """The worker count to run: 0 means one per usable CPU; more is capped, with a warning."""
    count, warning = cap_workers(workers)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return count or usable_cpus()


KIND_WORDS = {"neg": "negative", "pos": "positive", "part": "part", "landmark": "landmark"}


def refuse_useless_build(counts: dict, cfg: GenerateConfig, num_wider: int, wider_skips: dict,
                         landmark_faces: int) -> None:
    """``BuildError`` when no WIDER image gave a sample, or a kind the loss needs is missing:
    negatives, positives and part faces, and landmark samples when a landmark list was given.
    An evaluation build of a list's held-out faces (``--landmark-part holdout``) may have none
    when the held-out part of a short list is empty (a warning says so)."""
    totals = next(iter(counts.values()), {})  # every size holds the same crops
    if not any(totals.get(name, 0) for name in ("neg", "pos", "part")):
        skipped = sum(wider_skips.values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(wider_skips.items(), key=lambda kv: -kv[1]))
        hint = (f": the {'/'.join(mining_stages(cfg.net_sizes[0]))} cascade found no face candidate; train it "
                "longer or lower --mine-thresholds" if cfg.mine_with and skipped < num_wider else "")
        raise BuildError(f"no WIDER image produced samples ({num_wider} listed, {skipped} skipped"
                         f"{': ' + reasons if reasons else ''}){hint}")
    needed = ["neg", "pos", "part"]
    if cfg.landmarks and (landmark_faces or cfg.landmark_part == "train"):
        needed.append("landmark")
    elif cfg.landmarks:
        print(f"warning: the landmark list's held-out part is empty (--landmark-holdout {cfg.landmark_holdout}); "
              "the build has no landmark samples", file=sys.stderr)
    for name in needed:
        if not totals.get(name, 0):
            have = ", ".join(f"{KIND_WORDS[k]} {totals.get(k, 0):,}" for k in KIND_NAMES.values())
            why = (f"no face of the landmark list's {cfg.landmark_part} part is left" if name == "landmark"
                   and not landmark_faces else "check the annotations and the sampling options")
            raise BuildError(f"the build has no {KIND_WORDS[name]} samples ({have}); training needs every kind: "
                             f"{why}")


# -- the stage --------------------------------------------------------------------------------
def main(cfg: GenerateConfig) -> dict:
    """Build (or resume, or leave alone) the shards and manifest of ``cfg``; returns the manifest.
    Holds the output folder's lock throughout: a second run on the same folder is refused."""
    check_inputs(cfg)
    out = Path(cfg.out)
    check_output_apart(out, {"--wider-txt": cfg.wider_txt, "--wider-images": cfg.wider_images,
                             "--landmarks": cfg.landmarks, "the images of --landmarks":
                             landmark_images_root(cfg.landmarks) if cfg.landmarks else None,
                             "--mine-with": cfg.mine_with})
    check_names_free(out, [MANIFEST_NAME], "prepare.generate", is_build_manifest)
    with folder_lock(out, "prepare.generate"):
        return _build(cfg, out)


def _build(cfg: GenerateConfig, out: Path) -> dict:
    key, described = build_fingerprint(dataclasses.asdict(cfg))
    if (out / MANIFEST_NAME).exists():
        manifest = load_manifest(out)
        if manifest.get("fingerprint") == key:
            print(f"{out / MANIFEST_NAME} is up to date (fingerprint {key}); nothing to do")
            return manifest
    items, dropped = build_items(cfg)
    num_wider = sum(isinstance(i, WiderItem) for i in items)
    workers = pool_size(cfg.workers)
    writer = ShardWriter(out, key, cfg.writer)
    start = writer.resume_image
    if start:
        print(f"resuming after {start} of {len(items)} items (earlier shards kept)")
    # Items done by an earlier, interrupted run are re-checked cheaply (missing files) so that
    # the report lists every unusable image, not only those of this run.
    skips = {i: "no such file" for i in range(start) if not os.path.exists(items[i].path)}
    n_samples = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), initial=start, unit="img", desc=f"{'/'.join(map(str, cfg.net_sizes))} px samples", dynamic_ncols=True)
    try:
        tasks = ((i, items[i], cfg) for i in range(start, len(items)))
        for index, records, reason in ordered_map(work, tasks, workers):
            if reason:
                skips[index] = reason
            writer.add_image(index, records)
            n_samples += sum(len(r) for r in records)
            bar.update(1)
            bar.set_postfix_str(f"{n_samples / max(bar.format_dict['elapsed'], 1e-9):.0f} samples/s", refresh=False)
        bar.close()  # before any warning or refusal, so that it ends the progress line
        refuse_useless_build(writer.counts(), cfg, num_wider,
                             collections.Counter(r for i, r in skips.items() if i < num_wider),
                             sum(len(item.boxes) for item in items[num_wider:]))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    skipped = sorted(f"{items[i].path}: {reason}" for i, reason in skips.items())
    by_reason = dict(sorted(collections.Counter(skips.values()).items()))
    manifest = writer.finish(len(items), {
        "stage": "generate",
        "net_sizes": list(cfg.net_sizes),
        "mined_with": mining_stages(cfg.net_sizes[0]) if cfg.mine_with else None,
        "seed": cfg.seed,
        "config": described,
        "report": {
            "wider_images": num_wider,
            "landmark_images": len(items) - num_wider,
            "skipped_images": skipped,
            "skipped_by_reason": by_reason,
            "dropped_annotations": dropped,
        },
    })
    timing = {"seconds": round(elapsed, 2), "items_processed": len(items) - start, "workers": workers,
              "seconds_per_item": round(elapsed / max(len(items) - start, 1), 4),
              "items_per_s": round((len(items) - start) / max(elapsed, 1e-9), 1),
              "samples_per_s": round(n_samples / max(elapsed, 1e-9), 1)}
    atomic_write_json(out / "report.json", {"timing": timing, "skipped_images": skipped,
                                            "skipped_by_reason": by_reason})
    print_summary(out, manifest, timing)
    return manifest


def print_summary(out: Path, manifest: dict, timing: dict) -> None:
    """What was built, per size and kind, and how fast."""
    report = manifest["report"]
    print(f"wrote {out / MANIFEST_NAME}")
    for size, bucket in manifest["buckets"].items():
        counts = "  ".join(f"{name} {bucket['counts'][name]:,}" for name in KIND_NAMES.values())
        print(f"  {size} px: {bucket['samples']:,} samples ({counts}) in "
              f"{sum(s['size'] == int(size) for s in manifest['shards'])} shard(s)")
    by_reason = report.get("skipped_by_reason", {})
    print(f"  images: {report['wider_images']:,} WIDER + {report['landmark_images']:,} landmark; "
          f"skipped {len(report['skipped_images'])} unusable"
          + "".join(f"\n    {n:,} {reason}" for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1])))
    for source, reasons in report.get("dropped_annotations", {}).items():
        counts = {reason: n for reason, n in reasons.items() if n}
        print(f"  {source} annotations: dropped {sum(counts.values()):,} unusable"
              + "".join(f", {n:,} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    for name in report["skipped_images"][:10]:
        print(f"    skipped {name}")
    if len(report["skipped_images"]) > 10:
        print(f"    ... and {len(report['skipped_images']) - 10:,} more (report.json lists them all)")
    print(f"  time {timing['seconds']} s, {timing['items_per_s']} images/s ({timing['seconds_per_item'] * 1000:.1f} ms "
          f"per image), {timing['samples_per_s']} samples/s")


def parse_args(argv=None) -> GenerateConfig:
    """The config of a command line: one option per ``GenerateConfig`` field, plus ``--shard-mb``
    (``writer.shard_bytes`` in MiB) and ``--tiny`` (start from ``TINY``; options given still win)."""
    parser = config_parser(GenerateConfig, prog="python -m prepare.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard-mb", type=float, default=WriterConfig.shard_bytes / 2**20,
                        help="roll to a new shard part once a bucket holds this many MiB of records "
                             f"(default: {WriterConfig.shard_bytes / 2**20:g})")
    parser.add_argument("--tiny", action="store_true",
                        help="the small variant for demos and tests (TINY: fewer crops per image, 1 MiB shards)")
    ns = parser.parse_args(argv)
    if ns.tiny:  # TINY's values become the defaults, so that only options given override them
        tiny = {name: value for part in TINY.values() for name, value in dataclasses.asdict(part).items()}
        parser.set_defaults(**tiny, shard_mb=TINY["writer"].shard_bytes / 2**20)
        ns = parser.parse_args(argv)
    try:
        writer = WriterConfig(shard_bytes=int(ns.shard_mb * 2**20), commit_every=ns.commit_every)
        return config_from_namespace(GenerateConfig, ns, writer=writer)
    except (TypeError, ValueError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(run_stage(GenerateConfig, main, parse=parse_args))
