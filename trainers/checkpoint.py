"""Epoch checkpoints: everything a resumed run needs to end with an uninterrupted run's weights.

``<out>/checkpoints/epoch-XXX.pt`` holds the model, optimizer, scheduler, loss scaler, sampler
position, every random state, the config, the data's fingerprint and the log so far, all as
tensors and plain types so that it loads with ``torch.load(..., weights_only=True)``. Files are
written atomically: an interrupted save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_write_bytes
from core.weights import CHECKPOINT_FORMAT, DIGEST_SUFFIX, content_sha256, json_record, write_digest
from trainers.config import RESUMABLE_CHANGES, TrainConfig


class ResumeError(ValueError):
    """The latest checkpoint in the output folder belongs to a different run."""


# -- random states -------------------------------------------------------------------------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64)},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), None))


# -- files ---------------------------------------------------------------------------------------
def checkpoint_path(out, epoch: int) -> Path:
    return Path(out) / "checkpoints" / f"epoch-{epoch:03d}.pt"


def _checkpoints(out) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in (Path(out) / "checkpoints").glob("epoch-*.pt")
            if (m := re.fullmatch(r"epoch-(\d+)\.pt", p.name))]


def latest_checkpoint(out) -> Path | None:
    found = _checkpoints(out)
    return max(found)[1] if found else None


def latest_epoch(out) -> int | None:
    """The epoch of the latest checkpoint in ``out`` (None: no checkpoint)."""
    found = _checkpoints(out)
    return max(found)[0] if found else None


def save_torch(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_weights(obj, path) -> None:
    """A run's weights file, then its SHA-256 in ``<path>.sha256`` (in the folder's ``SHA256SUMS`` for
    a file that lists it: ``core.weights.write_digest``), which every later load of the file checks."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    write_digest(path, hashlib.sha256(data).hexdigest())


def load_checkpoint(path) -> dict:
    """A checkpoint's contents; a file that cannot be read as one is ``ResumeError`` (one line)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # whatever the zip reader or unpickler raises on damaged bytes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ResumeError(f"{path}: not a readable checkpoint ({first}): delete it to resume from the one "
                          f"before, or start over with RESTART=1 (--restart)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path}: not a training checkpoint ({CHECKPOINT_FORMAT})")
    if ckpt.get("sha256") is not None and content_sha256(ckpt["model"], ckpt.get("record")) != ckpt["sha256"]:
        raise ResumeError(f"{path}: its model is not the one whose SHA-256 is stored with it (a flipped bit?): delete "
                          f"it to resume from the one before, or start over with RESTART=1 (--restart)")
    return ckpt


def cpu_state(model: nn.Module) -> dict:
    """The model's weights as contiguous float32 CPU tensors (what the detector loads)."""
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def run_files(out: Path, net: str) -> list[Path]:
    """The files a training run writes in ``out`` under its own names (what a fresh run removes)."""
    return [*(out / "checkpoints").glob("epoch-*.pt"), out / "log.csv", out / "loss_curve.png", out / f"{net}.pt",
            out / f"{net}.pt{DIGEST_SUFFIX}"]


def foreign_files(out: Path, net: str) -> list[Path]:
    """The files of ``run_files`` present in ``out`` that no training run wrote there: a ``<net>.pt``
    without the digest a run records beside it (or another), a ``log.csv`` without the log's
    header, and the curve and digest of those. A fresh run must not delete a user's files."""
    weights, digest, log = out / f"{net}.pt", out / f"{net}.pt{DIGEST_SUFFIX}", out / "log.csv"
    try:
        own_weights = weights.is_file() and digest.is_file() and digest.read_text().split()[:1] == [
            hashlib.sha256(weights.read_bytes()).hexdigest()]
        own_log = log.is_file() and log.read_text(errors="replace").startswith("epoch,")
    except OSError:
        own_weights = own_log = False
    own = {weights: own_weights, digest: own_weights, log: own_log, out / "loss_curve.png": own_log}
    return [f for f in run_files(out, net) if f.is_file() and not own.get(f, True)]


def clean_out(out: Path, net: str) -> None:
    """A fresh run (``--restart``, or no checkpoint to protect): remove what an earlier run left in
    its own file names."""
    for old in run_files(out, net):
        if old.is_file():
            old.unlink()


# -- save and restore ----------------------------------------------------------------------------
def save_checkpoint(cfg: TrainConfig, epoch: int, model: nn.Module, optimizer, scheduler, scaler, *,
                    data_fingerprint: str, world_size: int, history: list[dict], record: dict | None = None) -> Path:
    """Write ``<out>/checkpoints/epoch-<epoch>.pt`` after ``epoch`` epochs are done, with the run's
    training ``record`` (the embedder's people) and the SHA-256 of the model and record
    (``core.weights.content_sha256``), checked wherever the checkpoint is loaded as weights."""
    path = checkpoint_path(cfg.out, epoch)
    state, record = cpu_state(model), json_record(record)
    save_torch({
        "format": CHECKPOINT_FORMAT,
        "net": cfg.net,
        "epoch": epoch,
        "model": state,
        "record": record,
        "sha256": content_sha256(state, record),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "sampler": {"epoch": epoch, "start_batch": 0, "seed": cfg.seed},
        "rng": rng_state(),
        "config": asdict(cfg),
        "data_fingerprint": data_fingerprint,
        "world_size": world_size,
        "history": history,
    }, path)
    return path


def check_resumable(cfg: TrainConfig, saved: TrainConfig, data_fp: str, saved_fp: str) -> None:
    """Refuse a checkpoint made with other settings (any config class: its fields less
    ``RESUMABLE_CHANGES``, a nested config's by their own names) or other data."""
    diff = _differences(cfg, saved)
    if data_fp != saved_fp:
        diff.append(f"data fingerprint ({saved_fp} -> {data_fp})")
    if diff:
        raise ResumeError(f"cannot resume in {cfg.out}: the checkpoint was made with a different "
                          f"{', '.join(diff)}; start over with RESTART=1 (--restart) or choose another --out")


def _differences(cfg, saved) -> list[str]:
    diff = []
    for f in fields(type(cfg)):
        ours, theirs = getattr(cfg, f.name), getattr(saved, f.name)
        if f.name in RESUMABLE_CHANGES or ours == theirs:
            continue
        # A nested config (OptimConfig) names the fields that differ, as the command line does.
        diff += _differences(ours, theirs) if is_dataclass(ours) and type(ours) is type(theirs) else [f.name]
    return diff


def restore(ckpt: dict, model: nn.Module, optimizer, scheduler, scaler) -> tuple[int, int, list[dict]]:
    """Load a checkpoint's states (the random states last); returns (epoch, start batch, history)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt["sampler"]["epoch"], ckpt["sampler"]["start_batch"], list(ckpt["history"])
