"""Sample generation: WIDER faces + a 5-point landmark list -> LMDB shards, for any stage.

``make pnet-data`` runs::

    python -m prepare.generate --wider-txt .../wider_face_train_bbx_gt.txt \
        --wider-images .../WIDER_train/images --landmarks .../trainImageList.txt \
        --out build/pnet --net-size 12 --workers 2

and writes ``build/pnet/12/shard-*.lmdb`` plus ``build/pnet/manifest.json`` (last), and
``build/pnet/report.json`` (timing). Negatives, positives and part faces come from random crops of
each WIDER image (``prepare.sampling``), landmark samples from each face of the landmark list
(``prepare.landmark_aug``).

``make rnet-data`` / ``make onet-data`` add ``--mine-with build/weights --net-size 24`` (or 48):
the crops of a WIDER image are then the detections of the earlier stages of the cascade
(P-Net for 24 px, P-Net then R-Net for 48 px; ``detector.cascade``), squared and cut as the next
stage will see them, labelled by IoU with the faces (``sampling.label_detections``): hard examples. Work item ``i`` (WIDER images first, then landmark images) draws every
random number from ``np.random.default_rng([seed, i])`` and results are written in item order, so
the same seed gives byte-identical shards with any number of workers. A killed run resumes where
its last complete part ended (``lmdb_builders.writer``); a finished one is left alone.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from annotations.errors import AnnotationError
from annotations.landmarks import LANDMARK_COLUMNS, load_landmarks
from annotations.wider import parse_wider
from core.atomic import atomic_write_json
from core.imageio import ImageReadError, read_image_rgb
from lmdb_builders.manifest import MANIFEST_NAME, fingerprint, load_manifest
from lmdb_builders.schema import KIND_NAMES, NET_SIZES, Kind, make_records
from lmdb_builders.writer import ShardWriter, WriterConfig
from core.geometry import regression_targets, square, xywh_to_xyxy
from prepare.crops import CropSource, cut_and_resize
from prepare.landmark_aug import LandmarkAugConfig, landmark_samples
from prepare.sampling import SamplingConfig, label_detections, sample_image_crops, with_jittered_faces


@dataclass(frozen=True)
class GenerateConfig:
    wider_txt: str
    """WIDER ``wider_face_*_bbx_gt.txt``."""
    wider_images: str
    """Folder the txt's image paths are relative to (``WIDER_train/images``)."""
    out: str
    """Build folder: shards go to ``<out>/<size>/``, the manifest to ``<out>/manifest.json``."""
    landmarks: str | None = None
    """CNN_FacePoint ``trainImageList.txt`` or a CelebA folder; None for no landmark samples."""
    net_sizes: tuple[int, ...] = (12,)
    """Sample sizes to write; each crop is resized to every size (one bucket of shards each)."""
    seed: int = 0
    workers: int = 0
    """Worker processes (0: as many as CPUs). Does not change the output."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    landmark_aug: LandmarkAugConfig = field(default_factory=LandmarkAugConfig)
    landmark_holdout: float = 0.05
    """Share of the landmark list's faces kept out of training, for held-out evaluation."""
    landmark_part: str = "train"
    """"train": the faces not held out (training builds); "holdout": only the held-out ones."""
    writer: WriterConfig = field(default_factory=WriterConfig)
    limit_images: int | None = None
    """Use only the first N WIDER images (quick runs)."""
    mine_with: str | None = None
    """Hard-example mining: a folder with the earlier stages' weights (pnet.pt [, rnet.pt]).
    None: random crops (P-Net data, held-out evaluation samples)."""
    mine_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    mine_min_face: float = 20.0
    mine_negatives_per_image: int = 60
    mine_device: str = "cpu"
    mine_jittered_faces: bool = False
    """Mining: add the jittered positives / part faces of every face (``sampling.with_jittered_faces``)
    to the labelled detections."""

    def mining_stages(self) -> tuple[str, ...]:
        """The cascade stages whose detections feed a ``net_sizes`` bucket (24: P-Net; 48: P- and R-Net)."""
        return {24: ("pnet",), 48: ("pnet", "rnet")}[self.net_sizes[0]]


def tiny_config(wider_txt, wider_images, landmarks, out, **overrides) -> GenerateConfig:
    """A small variant for demos and tests: fewer crops per image, 1 MiB shards (``overrides`` win)."""
    small = dict(sampling=SamplingConfig(negatives_per_image=12, jitter_attempts_per_face=8, min_face=12),
                 landmark_aug=LandmarkAugConfig(samples_per_face=3), writer=WriterConfig(shard_bytes=1 << 20, commit_every=50))
    return GenerateConfig(
        wider_txt=str(wider_txt), wider_images=str(wider_images), landmarks=str(landmarks) if landmarks else None,
        out=str(out), **{**small, **overrides},
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


def landmark_holdout_mask(num_faces: int, fraction: float) -> np.ndarray:
    """Which faces of a landmark list are held out: fixed by list position, independent of the seed,
    so that every training build excludes exactly the faces the evaluation build uses."""
    return np.random.default_rng(0x4E1D).random(num_faces) < fraction


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
        detections = mining_detector(cfg).detect_stages(image, cfg.mining_stages())[cfg.mining_stages()[-1]]
        boxes = np.floor(square(detections.boxes)).astype(np.int64)  # the crops the next stage is fed
        crops = label_detections(rng, boxes, item.faces, item.all_faces, cfg.mine_negatives_per_image, cfg.sampling)
        if cfg.mine_jittered_faces:
            crops = with_jittered_faces(rng, image.shape[1], image.shape[0], crops, item.faces, cfg.sampling)
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


@functools.lru_cache(maxsize=2)
def mining_detector(cfg: GenerateConfig):
    """The cascade used for mining, loaded once per worker process."""
    import torch

    from core.weights import load_nets
    from detector.cascade import DetectorConfig, Detector  # torch only when mining

    if multiprocessing.parent_process() is not None:
        # A pool worker: the pool already runs one process per core, and torch imported here (after
        # _init_worker) would otherwise start a thread per core in each (2x slower on 2 cores).
        torch.set_num_threads(1)
    nets = load_nets(Path(cfg.mine_with), cfg.mine_device)
    stages = cfg.mining_stages()
    missing = [name for name in stages if name not in nets]
    if missing:
        raise FileNotFoundError(f"{cfg.mine_with} lacks {', '.join(m + '.pt' for m in missing)} needed to mine "
                                f"{cfg.net_sizes[0]} px samples")
    detector_cfg = DetectorConfig(min_face=cfg.mine_min_face, thresholds=cfg.mine_thresholds,
                                  device=cfg.mine_device, pnet_regression="inclusive")
    return Detector({name: nets[name] for name in stages}, detector_cfg)


def _work(args):
    index, item, cfg = args
    try:
        return index, item_records(item, np.random.default_rng([cfg.seed, index]), cfg), None
    except ImageReadError as e:
        return index, [], str(e)
    except cv2.error as e:
        return index, [], f"{item.path}: OpenCV could not process the image ({e.err})"


def _init_worker():
    cv2.setNumThreads(1)  # one process per core already
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _ordered_results(items, cfg: GenerateConfig, start: int, workers: int):
    """(index, samples, error) for items[start:], in order, with at most a few items in flight."""
    tasks = ((i, items[i], cfg) for i in range(start, len(items)))
    if workers <= 1:
        _init_worker()
        yield from map(_work, tasks)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked copies of the parent's state
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        # A bounded window of pending results keeps memory flat however many images there are.
        window = collections.deque()
        for task in tasks:
            window.append(pool.apply_async(_work, (task,)))
            if len(window) >= 4 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


# -- the stage --------------------------------------------------------------------------------
def file_digest(path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.glob("list_*_celeba.txt")) if p.is_dir() else [p]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_fingerprint(cfg: GenerateConfig) -> tuple[str, dict]:
    """The config that decides the output (not paths, not worker count) and its hash."""
    described = dataclasses.asdict(cfg)
    for key in ("out", "workers", "wider_txt", "wider_images", "landmarks", "mine_with", "mine_device"):
        described.pop(key)
    described["inputs"] = {
        "wider_txt": file_digest(cfg.wider_txt),
        "landmarks": file_digest(cfg.landmarks) if cfg.landmarks else None,
    }
    if cfg.mine_with:  # retrained nets make mined data stale
        described["inputs"]["mining_nets"] = {n: file_digest(Path(cfg.mine_with) / f"{n}.pt") for n in cfg.mining_stages()}
    else:
        for key in [k for k in described if k.startswith("mine_")]:
            described.pop(key)
    return fingerprint(described), described


def main(cfg: GenerateConfig) -> dict:
    if not cfg.net_sizes or not set(cfg.net_sizes) <= set(NET_SIZES):
        raise ValueError(f"net sizes must be among {NET_SIZES}, got {cfg.net_sizes}")
    if cfg.landmark_part not in ("train", "holdout"):
        raise ValueError(f"landmark_part must be 'train' or 'holdout', got {cfg.landmark_part!r}")
    if cfg.mine_with and (len(cfg.net_sizes) != 1 or cfg.net_sizes[0] == 12):
        raise ValueError("mining writes one size, 24 (from P-Net) or 48 (from P-Net + R-Net)")
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
        for index, records, error in _ordered_results(items, cfg, start, workers):
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
        "mined_with": cfg.mining_stages() if cfg.mine_with else None,
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wider-txt", required=True)
    p.add_argument("--wider-images", required=True)
    p.add_argument("--landmarks", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--net-size", type=int, nargs="+", default=[12], choices=NET_SIZES,
                   help="one or more sample sizes (e.g. 12 24 48 for held-out evaluation samples)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit-images", type=int, default=None)
    p.add_argument("--negatives-per-image", type=int, default=SamplingConfig.negatives_per_image)
    p.add_argument("--min-face", type=int, default=SamplingConfig.min_face)
    p.add_argument("--landmark-samples-per-face", type=int, default=LandmarkAugConfig.samples_per_face)
    p.add_argument("--landmark-part", choices=("train", "holdout"), default="train",
                   help="landmark faces to use: those not held out (training) or the held-out ones (evaluation)")
    p.add_argument("--shard-mb", type=float, default=WriterConfig.shard_bytes / 2**20)
    p.add_argument("--mine-with", default=None, help="folder with pnet.pt [rnet.pt]: mine 24/48 px samples from detections")
    p.add_argument("--mine-thresholds", type=float, nargs=3, default=GenerateConfig.mine_thresholds)
    p.add_argument("--mine-min-face", type=float, default=GenerateConfig.mine_min_face)
    p.add_argument("--mine-negatives-per-image", type=int, default=GenerateConfig.mine_negatives_per_image)
    p.add_argument("--mine-jittered-faces", action="store_true",
                   help="mining: also add each face's jittered positives and part faces (as P-Net's data has)")
    p.add_argument("--device", default="cpu", help="device for the mining nets")
    p.add_argument("--tiny", action="store_true", help="the small demo/test variant of the sampling config")
    a = p.parse_args(argv)
    common = dict(net_sizes=tuple(a.net_size), seed=a.seed, workers=a.workers, limit_images=a.limit_images,
                  mine_with=a.mine_with, mine_thresholds=tuple(a.mine_thresholds), mine_min_face=a.mine_min_face,
                  mine_negatives_per_image=a.mine_negatives_per_image, mine_device=a.device,
                  mine_jittered_faces=a.mine_jittered_faces,
                  landmark_part=a.landmark_part)
    if a.tiny:
        return tiny_config(a.wider_txt, a.wider_images, a.landmarks, a.out, **common)
    return GenerateConfig(
        wider_txt=a.wider_txt, wider_images=a.wider_images, landmarks=a.landmarks, out=a.out, **common,
        sampling=SamplingConfig(negatives_per_image=a.negatives_per_image, min_face=a.min_face),
        landmark_aug=LandmarkAugConfig(samples_per_face=a.landmark_samples_per_face),
        writer=WriterConfig(shard_bytes=int(a.shard_mb * 2**20)),
    )


if __name__ == "__main__":
    try:
        main(parse_args())
    except (AnnotationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
