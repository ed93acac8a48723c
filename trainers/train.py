"""One training loop for P-Net, R-Net and O-Net, from a build's LMDB shards.

    python -m trainers.train --net pnet --data data/pnet --out runs/pnet [--export weights/pnet.pt] [--resume]
    torchrun --nproc_per_node 2 -m trainers.train --net pnet ...      # data-parallel (gloo on CPU)

Batches mix the sample kinds in the paper's ratio or ``kind_ratio`` (``MixedKindBatchSampler``);
a per-kind share of the shards (``val_fraction``) is held out and evaluated after every epoch.
The loss is the masked multi-task loss with OHEM (``trainers.losses``).

The output folder holds ``checkpoints/epoch-XXX.pt`` (``trainers.checkpoint``), ``log.csv`` and
``loss_curve.png`` (``trainers.reporting``, rewritten atomically after every epoch) and, once the
last epoch is done, ``<net>.pt``: the plain state dict the detector loads, with its SHA-256 in
``<net>.pt.sha256`` (and so for ``--export``), checked whenever the file is loaded. ``--resume`` continues
from the latest checkpoint and ends with exactly the weights an uninterrupted run would have
produced; ``--restart`` deletes an earlier run's outputs and starts over, and without either an
output folder holding checkpoints is refused. The settings are ``trainers.config.TrainConfig``;
what is checked before any work (writable folders, an earlier run, the sample kinds the loss
needs), ``trainers.preflight``; the nets' loss, batches and validation, ``trainers.detector_task``;
the generic epoch and validation pass, ``trainers.engine``; torchrun's
processes, ``trainers.distributed``. The output folder is locked (``core.lock``) for the run.

At the command line a run that fails for a reason outside the code (a folder in use or
unwritable, a full disk, a device this machine lacks, unusable ``--init`` weights, a missing or
corrupt shard, a diverging loss) ends with one line, ``python -m trainers.train: error: ...``,
and exit code 2.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.cpus import cap_workers
from core.device import DeviceError
from core.lock import FolderLockedError, folder_lock
from core.stage import run_stage
from core.weights import WeightsError, pack_weights
from lmdb_builders.reader import worker_error_message
from lmdb_builders.schema import SchemaError
from trainers.checkpoint import (ResumeError, check_resumable, clean_out, cpu_state, latest_checkpoint,
                                 load_checkpoint, restore, save_checkpoint, save_weights)
from trainers.config import PROG, parse_args
from trainers.detector_task import detector_parts
from trainers.distributed import DistInfo, barrier, destroy_process_group, init_process_group, training_device, wrap_ddp
from trainers.engine import train_one_epoch
from trainers.model import build_optimizer
from trainers.parts import Loader
from trainers.preflight import PreflightError, check_earlier_run, check_writable

# What ends a command-line run with one line and exit code 2: causes outside the code (folders,
# disks, devices, weights files, shards, a diverging loss), each raised with a one-line message.
ONE_LINE_ERRORS = (PreflightError, FolderLockedError, ResumeError, DeviceError, WeightsError, SchemaError, OSError,
                   FloatingPointError)


@dataclass
class TrainResult:
    weights_path: Path | None
    """``<out>/<net>.pt``, or None when the run stopped early (``stop_after_epochs``)."""
    history: list[dict]
    state_dict: dict
    """The final weights of this process's model (CPU)."""


def main(cfg, build_parts=None) -> TrainResult:
    """Train as ``cfg`` says; ``build_parts(cfg, device, dist_info) -> Parts`` is the kind of model
    (default ``trainers.detector_task.detector_parts``: the net ``cfg.net`` of the cascade)."""
    build_parts = build_parts or detector_parts
    dist_info = DistInfo.from_env()
    device = training_device(cfg.device, dist_info)
    workers, warning = cap_workers(cfg.num_workers)  # DataLoader workers; 0 loads in this process
    if warning and dist_info.main:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    cfg = replace(cfg, num_workers=workers)
    if dist_info.main:  # the other ranks write nothing in the folders, and must not take rank 0's lock
        check_writable(cfg)
    lock = folder_lock(cfg.out, f"trainers.train --net {cfg.net}") if dist_info.main else nullcontext()
    with lock:
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        elif cfg.net == "pnet" and cfg.num_workers and device.type == "cpu":
            torch.set_num_threads(max(1, threads_before - cfg.num_workers))
        init_process_group(device, dist_info)
        try:
            return _run(cfg, device, dist_info, build_parts)
        finally:
            torch.set_num_threads(threads_before)
            destroy_process_group(dist_info)


def _run(cfg, device: torch.device, dist_info: DistInfo, build_parts) -> TrainResult:
    out = Path(cfg.out)
    if dist_info.main:
        check_earlier_run(cfg)
    parts = build_parts(cfg, device, dist_info)
    model, sampler, loader = parts.model, parts.sampler, parts.loader

    optimizer, scheduler = build_optimizer(model, cfg, sampler.batches_per_epoch)
    use_fp16 = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=use_fp16)

    start_epoch, history = 0, []
    ckpt_file = latest_checkpoint(out) if cfg.resume else None
    if ckpt_file is not None:
        ckpt = load_checkpoint(ckpt_file)
        check_resumable(cfg, parts.config_from_dict(ckpt["config"]), parts.data_fingerprint, ckpt["data_fingerprint"])
        start_epoch, start_batch, history = restore(ckpt, model, optimizer, scheduler, scaler)
        sampler.set_epoch(start_epoch, start_batch)
        if dist_info.main:
            print(f"resuming {cfg.net} from {ckpt_file} (epoch {start_epoch} of {cfg.epochs} done)", file=sys.stderr)
    elif dist_info.main:  # --restart, or a folder without checkpoints (check_earlier_run)
        clean_out(out, cfg.net)
    barrier(dist_info)  # nobody reads the folder while rank 0 cleans it
    train_model = wrap_ddp(parts.loss_model, device, dist_info)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch, sampler.start_batch if epoch == start_epoch else 0)
            stats = train_one_epoch(train_model, loader, optimizer, scheduler, scaler, cfg, device, dist_info, epoch,
                                    sampler.start_batch, parts.recipe)
            row = {"epoch": epoch + 1, **stats}
            if dist_info.main:
                row.update(parts.evaluate())
            history.append(row)
            if dist_info.main:
                save_checkpoint(cfg, epoch + 1, model, optimizer, scheduler, scaler,
                                data_fingerprint=parts.data_fingerprint, world_size=dist_info.world, history=history,
                                record=parts.record)
                parts.report(history, out)
                print(parts.summary(row), file=sys.stderr)
            barrier(dist_info)
            if cfg.stop_after_epochs is not None and epoch + 1 >= cfg.stop_after_epochs and epoch + 1 < cfg.epochs:
                return TrainResult(None, history, cpu_state(parts.result(model)))
    finally:
        stop_workers(loader)

    final = out / f"{cfg.net}.pt"
    weights = cpu_state(parts.result(model))
    if dist_info.main:
        if start_epoch == cfg.epochs and history:  # resumed after its last epoch: reports added since get written
            parts.report(history, out)
        contents = weights if parts.record is None else pack_weights(weights, parts.record)
        save_weights(contents, final)  # and its SHA-256 beside it, in <file>.sha256
        if cfg.export:
            save_weights(contents, cfg.export)
    return TrainResult(final, history, weights)


def stop_workers(loader: Loader) -> None:
    """Stop the loader's worker processes now rather than whenever garbage collection reaches them:
    they were forked holding the output folder's lock, which lasts while any of them lives."""
    # A ShardLoader's persistent workers; torch has no public close.
    iterator = getattr(getattr(loader, "loader", None), "_iterator", None)
    if iterator is not None:
        iterator._shutdown_workers()
        loader.loader._iterator = None


def one_line(err: BaseException) -> str:
    """An error's message as one line (a DataLoader worker's error carries the worker's traceback)."""
    lines = str(err).strip().splitlines()
    if len(lines) > 1:
        return worker_error_message(err) or lines[0]
    return lines[0] if lines else type(err).__name__


def cli(argv=None) -> int:
    """The command line: parse, train, and turn a failure with an outside cause into one line (exit 2)."""
    def train(cfg) -> None:
        result = main(cfg)
        if result.weights_path is not None and DistInfo.from_env().main:
            print(f"wrote {result.weights_path}")

    return run_stage(None, train, prog=PROG, argv=argv, errors=ONE_LINE_ERRORS, describe=one_line,
                     parse=lambda argv: parse_args(argv, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    sys.exit(cli())
