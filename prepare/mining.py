"""Hard-example mining: the crops of a WIDER image are the earlier cascade stages' detections.

``make rnet-data`` / ``make onet-data`` mine 24 px samples from P-Net's detections and 48 px
samples from P-Net then R-Net (``MINING_STAGES``), run as the detector runs them
(``detector.Detector.detect_stages``), squared and cut as the next stage will be fed them, and
labelled by IoU with the faces (``sampling.label_detections``). Only the mining branch of a work
item lives here; ``prepare.generate`` orders the items and writes the shards.
"""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path

import numpy as np

from core.geometry import square
from core.weights import load_nets
from detector import Detector, DetectorConfig
from prepare.sampling import FaceCrops, SamplingConfig, label_detections, with_jittered_faces

# Sample size -> the cascade stages whose detections become samples of that size.
MINING_STAGES = {24: ("pnet",), 48: ("pnet", "rnet")}


def mining_stages(net_size: int) -> tuple[str, ...]:
    """The cascade stages whose detections feed ``net_size`` px samples (24: P-Net; 48: P- and R-Net)."""
    if net_size not in MINING_STAGES:
        raise ValueError(f"mining writes {' or '.join(map(str, MINING_STAGES))} px samples, not {net_size}")
    return MINING_STAGES[net_size]


@functools.lru_cache(maxsize=2)
def mining_detector(weights_dir: str, net_size: int, cfg: DetectorConfig) -> Detector:
    """The cascade that mines ``net_size`` px samples, loaded once per worker process."""
    import torch

    if multiprocessing.parent_process() is not None:
        # A pool worker: the pool already runs one process per core, and torch's default of a
        # thread per core in each process would oversubscribe them.
        torch.set_num_threads(1)
    nets = load_nets(Path(weights_dir), cfg.device)
    stages = mining_stages(net_size)
    missing = [name for name in stages if name not in nets]
    if missing:
        raise FileNotFoundError(f"{weights_dir} lacks {', '.join(m + '.pt' for m in missing)} needed to mine "
                                f"{net_size} px samples")
    return Detector({name: nets[name] for name in stages}, cfg)


def mined_crops(rng, image: np.ndarray, detector: Detector, net_size: int, faces, all_faces, max_negatives: int,
                sampling: SamplingConfig, jittered_faces: bool = False) -> FaceCrops:
    """The labelled crops of one image: ``detector``'s last mining stage's detections as squares
    (the crops the next stage is fed), at most ``max_negatives`` negatives; with
    ``jittered_faces`` also every face's jittered positives and part faces."""
    stages = mining_stages(net_size)
    detections = detector.detect_stages(image, stages)[stages[-1]]
    boxes = np.floor(square(detections.boxes)).astype(np.int64)
    crops = label_detections(rng, boxes, faces, all_faces, max_negatives, sampling)
    if jittered_faces:
        crops = with_jittered_faces(rng, image.shape[1], image.shape[0], crops, faces, sampling)
    return crops
