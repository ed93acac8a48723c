"""The trainer and the detector on a GPU: mixed-precision training, and detections that match the CPU's.

Skipped where ``torch.cuda.is_available()`` is false (CI and the development machines have no GPU);
run on a machine with one: ``python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.cascade import Detector, DetectorConfig, load_detector
from lmdb_builders.reader import records_to_batch
from lmdb_builders.schema import Kind
from lmdb_builders.synthetic import synthetic_records, write_synthetic_build
from core.nets import NET_NAMES, build_net
from trainers.checkpoint import load_checkpoint
from trainers.config import TrainConfig
from trainers.detector_task import augment
from trainers.train import main
from child_env import REPO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def build_24(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_build")
    write_synthetic_build(root, 24, 600, seed=24, per_image=100)
    return root


@pytest.mark.parametrize("amp", [True, False])
def test_training_on_cuda_lowers_the_loss_and_writes_cpu_loadable_weights(build_24, tmp_path, amp):
    cfg = TrainConfig.tiny("rnet", build_24, tmp_path / "run", device="cuda", amp=amp, epochs=3, batches_per_epoch=10)
    result = main(cfg)
    losses = [row["train_loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    state = torch.load(result.weights_path, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state.values())
    ckpt = load_checkpoint(sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.pt"))[-1])
    assert ckpt["config"]["device"] == "cuda" and ckpt["config"]["amp"] == amp


def test_cuda_resume_continues_from_the_checkpoint(build_24, tmp_path):
    cfg = TrainConfig.tiny("rnet", build_24, tmp_path / "run", device="cuda", epochs=3, batches_per_epoch=5)
    first = main(replace(cfg, stop_after_epochs=1))
    assert first.weights_path is None and len(first.history) == 1
    resumed = main(replace(cfg, resume=True))
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.weights_path.is_file()


def test_augmentation_on_cuda_matches_the_cpu():
    # The trainer augments after moving a batch to the device; the draws come from the same seed.
    recs = np.concatenate([synthetic_records(np.random.default_rng(0), 48, kind, 16) for kind in Kind])
    batch = records_to_batch(recs)
    cfg = replace(TrainConfig.tiny("onet", "unused", "unused"), flip=True, photometric=True)
    cpu = augment(batch, cfg, epoch=1, batch_index=3, rank=0)
    gpu = augment({k: v.cuda() for k, v in batch.items()}, cfg, epoch=1, batch_index=3, rank=0)
    assert gpu["image"].device.type == "cuda"
    assert not torch.equal(cpu["image"], batch["image"])  # something was changed
    diff = (gpu["image"].cpu().int() - cpu["image"].int()).abs()
    assert diff.max() <= 1  # float rounding on either side of a .5 grey level
    torch.testing.assert_close(gpu["box"].cpu(), cpu["box"], equal_nan=True)


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:240, :320]
    image[(yy - 120) ** 2 / 3600 + (xx - 160) ** 2 / 2000 < 1] = (200, 160, 140)
    return image


def test_detector_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    nets = {name: build_net(name) for name in NET_NAMES}
    loose = (0.0, 0.0, 0.0)
    cpu = Detector(nets, DetectorConfig(thresholds=loose)).detect_stages(_image())
    gpu_nets = copy.deepcopy(nets)  # Detector moves its nets in place
    gpu = Detector(gpu_nets, DetectorConfig(thresholds=loose, device="cuda")).detect_stages(_image())
    for name in NET_NAMES:
        assert len(gpu[name]) > 0
        # Different kernels may reorder near-ties; the strongest boxes agree.
        n = min(len(cpu[name]), len(gpu[name]), 20)
        np.testing.assert_allclose(gpu[name].scores[:n], cpu[name].scores[:n], atol=1e-3)


def test_original_weights_on_cuda_find_the_astronaut():
    folder = Path(os.environ.get("MTCNN_ORIGINAL_WEIGHTS", REPO / "weights" / "original"))
    if not all((folder / f"{n}.pt").is_file() for n in NET_NAMES):
        pytest.skip(f"original MTCNN weights not in {folder}")
    from skimage.data import astronaut

    found = load_detector(f"original:{folder}", DetectorConfig(device="cuda")).detect(astronaut())
    assert len(found) == 1 and found.scores[0] > 0.999
    np.testing.assert_allclose(found.boxes[0] + 1, [181.05, 62.16, 267.75, 172.05], atol=1.0)
