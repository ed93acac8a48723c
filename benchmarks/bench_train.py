"""Trainer benchmarks, run by ``make bench`` (figures are printed, never asserted).

For each net: synthetic shards of realistic size (``--samples``: 200k 12 px / 50k 24 px / 20k 48 px
by default, written with ``ShardWriter`` into ``--work-dir``, reused when already there), then
``trainers.train.main`` for short epochs at the trainer's default batch size and threads with 0
and 1 DataLoader workers. Reported per net and worker count, as medians over the epochs after the
first (which pays for starting workers and first-touch allocation): training throughput in
samples/s and the share of the epoch's wall time spent waiting for the next batch (reading and
decoding included).

    python -m benchmarks.bench_train [--nets pnet rnet onet] [--steps 200 40 12] [--workers 0 1] [--threads N]

``write_synthetic_build`` is also the tests' tiny data set: positives are a bright blob near the
centre (box offsets = its shift), part faces a blob far off centre, landmark samples a blob with
five dark dots whose positions are the targets, negatives noise; so the loss can really fall.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lmdb_builders.manifest import MANIFEST_NAME, fingerprint
from lmdb_builders.schema import Kind, make_records
from lmdb_builders.writer import ShardWriter, WriterConfig

# neg : pos : part : landmark in the synthetic sets (the real builds have roughly this mix).
SYNTHETIC_MIX = {Kind.NEGATIVE: 3, Kind.POSITIVE: 1, Kind.PART: 3, Kind.LANDMARK: 2}
_LANDMARK_BASE = np.array([0.32, 0.68, 0.50, 0.36, 0.64, 0.38, 0.38, 0.55, 0.74, 0.74], dtype=np.float32)
DEFAULT_SAMPLES = {12: 200_000, 24: 50_000, 48: 20_000}
NET_OF_SIZE = {12: "pnet", 24: "rnet", 48: "onet"}


def synthetic_records(rng: np.random.Generator, size: int, kind: Kind, n: int) -> np.ndarray:
    """``n`` schema records of one kind (see the module docstring)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = rng.uniform(0, 90, (n, size, size)).astype(np.float32)
    boxes = landmarks = None
    if kind != Kind.NEGATIVE:
        lim = {Kind.POSITIVE: (0.0, 0.08), Kind.PART: (0.2, 0.3), Kind.LANDMARK: (0.0, 0.08)}[kind]
        mag = rng.uniform(*lim, (n, 2)).astype(np.float32)
        shift = (mag * rng.choice([-1.0, 1.0], (n, 2))).astype(np.float32)
        cx, cy = 0.5 + shift[:, 0, None, None], 0.5 + shift[:, 1, None, None]
        img += 160 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.2**2))
        if kind == Kind.LANDMARK:
            landmarks = (_LANDMARK_BASE + np.repeat(shift, 5, axis=1)).astype(np.float32)
            for j in range(5):
                lx, ly = landmarks[:, j, None, None], landmarks[:, 5 + j, None, None]
                img -= 120 * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * 0.05**2))
        else:
            boxes = np.concatenate([shift, shift], axis=1).astype(np.float32)
    images = np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=3)
    return make_records(images, kind, boxes, landmarks)


def write_synthetic_build(out_dir, size: int, num_samples: int, seed: int = 0, per_image: int = 500,
                          shard_bytes: int = 1 << 30) -> dict:
    """A finished build folder (shards + manifest) of ``num_samples`` synthetic ``size`` px samples.

    An existing build with the same parameters is reused as it is.
    """
    out_dir = Path(out_dir)
    params = {"synthetic": True, "size": size, "num_samples": num_samples, "seed": seed, "per_image": per_image}
    fp = fingerprint(params)
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("fingerprint") == fp:
        return json.loads(manifest_path.read_text())
    writer = ShardWriter(out_dir, fp, WriterConfig(shard_bytes=shard_bytes))
    total_ratio = sum(SYNTHETIC_MIX.values())
    num_images = max(1, -(-num_samples // per_image))
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        n_here = min(per_image, num_samples - i * per_image)
        counts = {k: n_here * r // total_ratio for k, r in SYNTHETIC_MIX.items()}
        counts[Kind.NEGATIVE] += n_here - sum(counts.values())
        writer.add_image(i, [synthetic_records(rng, size, k, n) for k, n in counts.items() if n])
    return writer.finish(num_images, {"net_size": size, "config": params, "seed": seed})


def bench_net(net: str, data: Path, work: Path, steps: int, workers: int, threads: int | None, repeats: int) -> dict:
    """Medians over ``repeats`` timed epochs that follow one warm-up epoch."""
    from trainers.train import TrainConfig, main

    cfg = TrainConfig(net=net, data=str(data), out=str(work / f"run-{net}-w{workers}"), epochs=1 + repeats,
                      batches_per_epoch=steps, num_workers=workers, val_fraction=0.002, progress=False,
                      threads=threads)
    t0 = time.perf_counter()
    timed = main(cfg).history[1:]
    return {"net": net, "workers": workers, "batch": cfg.batch_size, "steps": steps,
            "samples_per_s": float(np.median([r["samples_per_s"] for r in timed])),
            "data_wait_share": float(np.median([r["data_wait_share"] for r in timed])),
            "step_ms": float(np.median([1000 * r["epoch_s"] / steps for r in timed])),
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["pnet", "rnet", "onet"], choices=["pnet", "rnet", "onet"])
    p.add_argument("--steps", type=int, nargs=3, metavar=("PNET", "RNET", "ONET"), default=[200, 40, 12],
                   help="optimizer steps per timed epoch")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, help="torch threads (default: the trainer's)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs (median reported) after a warm-up epoch")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "mtcnn_bench_train"))
    p.add_argument("--samples", type=int, nargs=3, metavar=("N12", "N24", "N48"),
                   default=[DEFAULT_SAMPLES[s] for s in (12, 24, 48)])
    a = p.parse_args(argv)
    work = Path(a.work_dir)
    samples = dict(zip((12, 24, 48), a.samples))
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads() if a.threads is None else a.threads} threads, "
          f"{os.cpu_count()} CPUs")
    rows = []
    for net in a.nets:
        size = {"pnet": 12, "rnet": 24, "onet": 48}[net]
        t0 = time.perf_counter()
        m = write_synthetic_build(work / f"data{size}", size, samples[size])
        print(f"{net}: synthetic build of {m['buckets'][str(size)]['samples']} {size} px samples ready "
              f"({time.perf_counter() - t0:.1f} s)")
        for w in a.workers:
            r = bench_net(net, work / f"data{size}", work, dict(zip(("pnet", "rnet", "onet"), a.steps))[net], w,
                          a.threads, a.repeats)
            rows.append(r)
            print(f"  {net} workers={w} batch={r['batch']}: {r['samples_per_s']:8.0f} samples/s, "
                  f"{r['step_ms']:6.1f} ms/step, data wait {100 * r['data_wait_share']:5.1f}% of step time")
    return rows


if __name__ == "__main__":
    main()
