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
(``prepare.fingerprint``) is left alone.
"""

from __future__ import annotations

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
from annotations.landmarks import DEFAULT_HOLDOUT_FRACTION, LANDMARK_COLUMNS, landmark_holdout_mask, load_landmarks
from annotations.wider import parse_wider
from core.atomic import atomic_write_json
from core.cli import config_from_namespace, config_parser
from core.geometry import regression_targets, xywh_to_xyxy
from core.imageio import ImageReadError, read_image_rgb
from detector import DetectorConfig
from lmdb_builders.manifest import MANIFEST_NAME, load_manifest
from lmdb_builders.schema import KIND_NAMES, NET_SIZES, Kind, make_records
from lmdb_builders.writer import ShardWriter, WriterConfig
from prepare.crops import CropSource, cut_and_resize
from prepare.fingerprint import build_fingerprint
from prepare.landmark_aug import LandmarkAugConfig, landmark_samples
from prepare.mining import mined_crops, mining_detector, mining_stages
from prepare.pool import ordered_map
from prepare.sampling import SamplingConfig, sample_image_crops

LANDMARK_PARTS = ("train", "holdout")


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
    mine_thresholds: tuple[float, float, float] = DetectorConfig().thresholds
    """Mining: the cascade's P-, R- and O-Net score thresholds (the detector's by default)."""
    mine_min_face: float = DetectorConfig().min_face
    """Mining: the smallest face the cascade looks for, pixels (the detector's by default)."""
    mine_negatives_per_image: int = 60
    """Mining: at most this many negatives (detections overlapping no face) per image."""
    mine_device: str = field(default="cpu", metadata={"flag": "--device"})
    """Mining: the device the nets run on (cpu, cuda); not part of the fingerprint."""
    mine_jittered_faces: bool = False
    """Mining: also add each face's jittered positives and part faces (as P-Net's data has them)
    to the labelled detections."""

    def __post_init__(self):
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


def build_items(cfg: GenerateConfig) -> tuple[list, dict]:
    """Parse the annotations into the ordered list of work items, plus what the parsers dropped."""
    wider = parse_wider(cfg.wider_txt, cfg.wider_images)
    images = wider.images
    if cfg.limit_images is not None:
        images = images.iloc[: cfg.limit_images]
    root = Path(cfg.wider_images)
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
        for image, group in faces.groupby("image", sort=False):
            items.append(
                LandmarkItem(
                    str(Path(marks.images_root) / image),
                    group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64),
                    group[list(LANDMARK_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 5, 2),
                )
            )
        dropped["landmarks"] = dict(marks.dropped)
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
        detector = mining_detector(cfg.mine_with, cfg.net_sizes[0], cfg.mine_min_face, cfg.mine_thresholds,
                                   cfg.mine_device)
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
    """(index, records, error) of one ``(index, item, cfg)`` task; run in a pool worker. An image
    that cannot be read or processed gives no records and a reason, not a failed build."""
    index, item, cfg = task
    try:
        return index, item_records(item, np.random.default_rng([cfg.seed, index]), cfg), None
    except ImageReadError as e:
        return index, [], str(e)
    except cv2.error as e:
        return index, [], f"{item.path}: OpenCV could not process the image ({e.err})"


# -- the stage --------------------------------------------------------------------------------
def main(cfg: GenerateConfig) -> dict:
    """Build (or resume, or leave alone) the shards and manifest of ``cfg``; returns the manifest."""
    out = Path(cfg.out)
    key, described = build_fingerprint(cfg)
    if (out / MANIFEST_NAME).exists():
        manifest = load_manifest(out)
        if manifest.get("fingerprint") == key:
            print(f"{out / MANIFEST_NAME} is up to date (fingerprint {key}); nothing to do")
            return manifest
    items, dropped = build_items(cfg)
    num_wider = sum(isinstance(i, WiderItem) for i in items)
    writer = ShardWriter(out, key, cfg.writer)
    start = writer.resume_image
    if start:
        print(f"resuming after {start} of {len(items)} items (earlier shards kept)")
    workers = cfg.workers or os.cpu_count() or 1
    skipped: list[str] = []
    n_samples = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), initial=start, unit="img", desc=f"{'/'.join(map(str, cfg.net_sizes))} px samples", dynamic_ncols=True)
    try:
        tasks = ((i, items[i], cfg) for i in range(start, len(items)))
        for index, records, error in ordered_map(work, tasks, workers):
            if error:
                skipped.append(error)
            writer.add_image(index, records)
            n_samples += sum(len(r) for r in records)
            bar.update(1)
            bar.set_postfix_str(f"{n_samples / max(bar.format_dict['elapsed'], 1e-9):.0f} samples/s", refresh=False)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    # Errors of items done by an earlier, interrupted run are re-checked cheaply here so the
    # report lists every unreadable image, not only those of this run.
    skipped = sorted(set(skipped) | {f"{it.path}: missing" for it in items[:start] if not os.path.exists(it.path)})
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
            "dropped_annotations": dropped,
        },
    })
    timing = {"seconds": round(elapsed, 2), "items_processed": len(items) - start, "workers": workers,
              "seconds_per_item": round(elapsed / max(len(items) - start, 1), 4),
              "items_per_s": round((len(items) - start) / max(elapsed, 1e-9), 1),
              "samples_per_s": round(n_samples / max(elapsed, 1e-9), 1)}
    atomic_write_json(out / "report.json", {"timing": timing, "skipped_images": skipped})
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
    print(f"  images: {report['wider_images']:,} WIDER + {report['landmark_images']:,} landmark; "
          f"skipped {len(report['skipped_images'])} unreadable")
    for name in report["skipped_images"][:10]:
        print(f"    skipped {name}")
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
    writer = WriterConfig(shard_bytes=int(ns.shard_mb * 2**20), commit_every=ns.commit_every)
    try:
        return config_from_namespace(GenerateConfig, ns, writer=writer)
    except (TypeError, ValueError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    try:
        main(parse_args())
    except (AnnotationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
