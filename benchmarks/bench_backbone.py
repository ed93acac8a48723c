"""The embedder's backbones side by side, run by ``make bench`` (figures are printed, never asserted).

For each of ``small`` (the default recipe's net at 64 px), ``iresnet18`` and ``iresnet50``
(arcface_torch's, at their 112 px and 512-d embedding): parameters, multiply-adds per crop
(``core.embednet.count_flops``), training samples/s (the trainer's net and ArcFace loss,
``trainers.embed_task``, forward, backward and an SGD step on random crops of 1,000 identities:
no data loading) and inference samples/s (``recognition.embedder.embed``), on the CPU and on CUDA
where torch sees it. A few batches each, smaller ones on the CPU, so the run stays short.

    python -m benchmarks.bench_backbone [--backbones small iresnet18 iresnet50] [--steps 2]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np
import torch

from benchmarks.bench_embed import bench_inference
from core.embednet import build_net, count_flops
from trainers.embed_config import EmbedConfig
from trainers.embed_task import Embedder, EmbedWithLoss
from trainers.metric_losses import build_loss

CLASSES = 1000
# Crops per training step and per inference batch: (cpu, cuda). The CPU's are small so that
# iresnet50 (about 19 G multiply-adds a crop forward and back) takes seconds a step on 2 cores.
TRAIN_BATCH = {"small": (128, 128), "iresnet18": (8, 128), "iresnet50": (4, 128)}
EMBED_BATCH = {"small": (256, 512), "iresnet18": (16, 512), "iresnet50": (8, 512)}


def backbone_config(backbone: str) -> EmbedConfig:
    """The default recipe, or its loss and head with an IResNet of arcface_torch's 512-d embedding."""
    return EmbedConfig(data="-", out="-", loss="arcface", backbone=backbone,
                       **({} if backbone == "small" else {"dim": 512, "dropout": 0.0}))


def input_size(backbone: str) -> int:
    return 64 if backbone == "small" else 112


def bench_training(cfg: EmbedConfig, batch: int, steps: int, device: torch.device) -> float:
    """Training samples/s: ``steps`` timed steps after one warm-up step."""
    torch.manual_seed(0)
    model = Embedder(build_net(cfg.spec(input_size(cfg.backbone))), build_loss(cfg, CLASSES))
    model = model.to(device, memory_format=torch.channels_last).train()
    loss_model = EmbedWithLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    size = input_size(cfg.backbone)
    rng = np.random.default_rng(0)
    batch_data = {"image": torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), np.uint8)).to(device),
                  "identity": torch.from_numpy(rng.integers(0, CLASSES, batch)).to(device)}
    autocast = torch.amp.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step():
        with autocast:
            loss, _ = loss_model(batch_data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["small", "iresnet18", "iresnet50"])
    parser.add_argument("--steps", type=int, default=2,
                        help="timed training steps and inference batches (CUDA: 10 times as many)")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"backbones (torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          + (torch.cuda.get_device_name(0) if len(devices) > 1 else "no CUDA") + ")")
    for backbone in args.backbones:
        cfg = backbone_config(backbone)
        net = build_net(cfg.spec(input_size(backbone)))
        params = sum(p.numel() for p in net.parameters())
        print(f"{backbone:10s} {input_size(backbone)} px, dim {cfg.dim}: {params / 1e6:.2f} M parameters, "
              f"{count_flops(net) / 1e6:,.1f} M multiply-adds per crop")
        for device in devices:
            on_gpu = device.type == "cuda"
            train_batch, embed_batch = TRAIN_BATCH[backbone][on_gpu], EMBED_BATCH[backbone][on_gpu]
            steps = args.steps * (10 if on_gpu else 1)
            train = bench_training(cfg, train_batch, steps, device)
            infer = bench_inference(build_net(cfg.spec(input_size(backbone))), embed_batch, steps, device)
            print(f"  {device.type:4s} train {train:8.1f} samples/s (batch {train_batch}, ArcFace), "
                  f"embed {infer['crops_per_s']:8.1f} crops/s (batch {embed_batch}), "
                  f"{infer['crops_per_s_with_mirror']:8.1f} with the mirror image")


if __name__ == "__main__":
    main()
