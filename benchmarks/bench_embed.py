"""Embedder benchmarks, run by ``make bench`` (figures are printed, never asserted).

The default recipe's net (``trainers.embed_config.EmbedConfig``): its multiply-adds per crop and
parameters, then the training throughput of the real loop (``trainers.train.main`` with the
embedder's parts, both losses) on a synthetic identity build of ``--people`` x ``--images`` random
crops, as the median over the epochs after the first, and the inference throughput of ``embed``
(with and without the mirror image).

    python -m benchmarks.bench_embed [--people 200 --images 8] [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.embednet import EmbedNet, count_flops
from lmdb_builders.faces import FACES, make_face_records
from lmdb_builders.writer import ShardWriter


def synthetic_identity_build(out: Path, people: int, images: int, size: int, seed: int = 0) -> Path:
    """Random crops, ``images`` per person, written as ``make recog-data`` writes (identity order)."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(out, f"bench-{people}-{images}-{size}", spec=FACES)
    for k in range(people * images):
        crop = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        writer.add_image(k, [make_face_records(crop, [k // images], [k])])
    writer.finish(people * images, {"identities": [[f"p{p}", images] for p in range(people)],
                                    "images": [f"p{k // images}/{k}.jpg" for k in range(people * images)]})
    return out


def bench_training(data: Path, work: Path, loss: str, steps: int, device: str) -> dict:
    from trainers.embed_config import EmbedConfig
    from trainers.embed_task import embed_parts
    from trainers.train import main

    cfg = EmbedConfig(data=str(data), out=str(work / f"run-{loss}"), loss=loss, epochs=3, batches_per_epoch=steps,
                      num_workers=0, device=device, progress=False, restart=True, val_fraction=0.05)
    history = main(cfg, embed_parts).history
    return {"samples_per_s": float(np.median([r["samples_per_s"] for r in history[1:]])),
            "data_wait_share": float(np.median([r["data_wait_share"] for r in history[1:]]))}


def bench_inference(net: nn.Module, batch: int = 256, repeats: int = 5, device: torch.device | str = "cpu") -> dict:
    """``embed``'s crops/s on ``net`` (an ``EmbedNet`` or ``IResNet``), with and without the mirror image."""
    from recognition.embedder import FaceEmbedder, embed

    embedder = FaceEmbedder(net.to(device).eval(), torch.device(device), Path("-"))
    crops = np.random.default_rng(0).integers(0, 256, (batch, net.spec.input_size, net.spec.input_size, 3), np.uint8)
    out = {}
    for flip in (False, True):
        embed(embedder, crops, flip=flip)
        start = time.perf_counter()
        for _ in range(repeats):
            embed(embedder, crops, flip=flip)
        out["crops_per_s" + ("_with_mirror" if flip else "")] = batch * repeats / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="batches per timed epoch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from trainers.embed_config import EmbedConfig

    spec = EmbedConfig(data="-", out="-").spec(64)
    net = EmbedNet(spec)
    params = sum(p.numel() for p in net.parameters())
    print(f"embedder {spec.widths} blocks {spec.blocks} dim {spec.dim} at {spec.input_size} px: "
          f"{count_flops(net) / 1e6:.1f} M multiply-adds per crop, {params / 1e6:.2f} M parameters "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_identity_build(Path(tmp) / "build", args.people, args.images, spec.input_size)
        for loss in ("arcface", "triplet"):
            r = bench_training(data, Path(tmp), loss, args.steps, args.device)
            print(f"train {loss:8s} batch 32 x 4: {r['samples_per_s']:7.1f} samples/s, data wait "
                  f"{100 * r['data_wait_share']:.1f}%")
    r = bench_inference(net)
    print(f"embed: {r['crops_per_s']:.0f} crops/s, {r['crops_per_s_with_mirror']:.0f} with the mirror image added")


if __name__ == "__main__":
    main()
