"""Trainer benchmarks, run by ``make bench`` (figures are printed, never asserted).

For each net: synthetic shards of realistic size (``--samples``: 200k 12 px / 50k 24 px / 20k 48 px
by default, written with ``ShardWriter`` into ``--work-dir``, reused when already there), then
``trainers.train.main`` for short epochs at the trainer's default batch size and threads with 0
and 1 DataLoader workers. Reported per net and worker count, as medians over the epochs after the
first (which pays for starting workers and first-touch allocation): training throughput in
samples/s and the share of the epoch's wall time spent waiting for the next batch (reading and
decoding included).

    python -m benchmarks.bench_train [--nets pnet rnet onet] [--steps 200 40 12] [--workers 0 1] [--threads N] [--device cuda]
                                     [--batch-sizes 384 1536]

The data are ``lmdb_builders.synthetic`` builds (the tests' data set, at a realistic size).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lmdb_builders.synthetic import write_synthetic_build

DEFAULT_SAMPLES = {12: 200_000, 24: 50_000, 48: 20_000}
NET_OF_SIZE = {12: "pnet", 24: "rnet", 48: "onet"}


def bench_net(net: str, data: Path, work: Path, steps: int, workers: int, threads: int | None, repeats: int,
              device: str = "cpu", batch_size: int | None = None) -> dict:
    """Medians over ``repeats`` timed epochs that follow one warm-up epoch."""
    from trainers.config import TrainConfig
    from trainers.train import main

    sizes = {} if batch_size is None else {"batch_size": batch_size}
    cfg = TrainConfig(net=net, data=str(data), out=str(work / f"run-{net}-w{workers}"), epochs=1 + repeats,
                      batches_per_epoch=steps, num_workers=workers, val_fraction=0.002, progress=False,
                      threads=threads, device=device, restart=True, **sizes)  # the work folder is reused
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
    p.add_argument("--device", default="cpu", help="cpu or cuda (mixed precision, as the trainer does)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="samples per step (default: the trainer's)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "mtcnn_bench_train"))
    p.add_argument("--samples", type=int, nargs=3, metavar=("N12", "N24", "N48"),
                   default=[DEFAULT_SAMPLES[s] for s in (12, 24, 48)])
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1 (leave it out for the trainer's default), got {a.threads}")
    work = Path(a.work_dir)
    samples = dict(zip((12, 24, 48), a.samples))
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads() if a.threads is None else a.threads} threads, "
          f"{os.cpu_count()} CPUs, device {a.device}")
    rows = []
    for net in a.nets:
        size = {"pnet": 12, "rnet": 24, "onet": 48}[net]
        t0 = time.perf_counter()
        m = write_synthetic_build(work / f"data{size}", size, samples[size])
        print(f"{net}: synthetic build of {m['buckets'][str(size)]['samples']} {size} px samples ready "
              f"({time.perf_counter() - t0:.1f} s)")
        for w in a.workers:
            for batch in a.batch_sizes or [None]:
                r = bench_net(net, work / f"data{size}", work, dict(zip(("pnet", "rnet", "onet"), a.steps))[net],
                              w, a.threads, a.repeats, a.device, batch)
                rows.append(r)
                print(f"  {net} workers={w} batch={r['batch']}: {r['samples_per_s']:8.0f} samples/s, "
                      f"{r['step_ms']:6.1f} ms/step, data wait {100 * r['data_wait_share']:5.1f}% of step time")
    return rows


if __name__ == "__main__":
    main()
