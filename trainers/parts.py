"""What a kind of model brings to the one training loop (``trainers.train``): ``Parts``, and the
interfaces of the pieces it carries as Protocols.

The detector nets' parts are ``trainers.detector_task.detector_parts``, the embedder's
``trainers.embed_task.embed_parts``; the loop itself knows neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import nn


class Recipe(Protocol):
    """What ``trainers.engine.train_one_epoch`` asks of a kind of model, besides its forward."""

    sums: tuple[str, ...]
    """The names of the step sums the loss model returns, plus ``grad_norm`` and ``steps``."""
    label: str
    """The progress bar's and the error messages' name for the model."""

    def prepare(self, batch: dict, epoch: int, batch_index: int, rank: int) -> dict:
        """The batch augmented, drawn per (seed, epoch, batch, rank) so that resume repeats it."""

    def postfix(self, sums: dict) -> dict:
        """The progress bar's figures from the running sums."""

    def columns(self, sums: dict, wait: float, elapsed: float) -> dict:
        """The epoch's log columns from its sums, data-wait and elapsed seconds."""


class BatchSampler(Protocol):
    """Batches of record indices, a pure function of (seed, epoch, batch): resumable mid-epoch."""

    start_batch: int
    batches_per_epoch: int

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


class Loader(Protocol):
    """One epoch's batches (dicts of tensors) for this process, as many as ``len`` says."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[dict]: ...


@dataclass
class Parts:
    """What one kind of model brings to the training loop (``trainers.train._run``)."""

    model: nn.Module
    """What the optimizer trains and a checkpoint holds (the net, with a margin softmax's classes)."""
    loss_model: nn.Module
    """``forward(batch) -> (loss, step sums)`` around ``model``."""
    recipe: Recipe
    """Step sums, batch augmentation, log columns."""
    sampler: BatchSampler
    loader: Loader
    data_fingerprint: str
    evaluate: Callable[[], dict]
    """The validation columns of the model as it is now."""
    report: Callable[[list, Path], None]
    """Rewrites log.csv and loss_curve.png from the history."""
    summary: Callable[[dict], str]
    """One line per epoch for the terminal."""
    config_from_dict: Callable[[dict], object]
    """The config class's reader of a checkpoint's stored config (``asdict`` output)."""
    result: Callable[[nn.Module], nn.Module] = lambda model: model
    """The part of ``model`` whose state dict is the run's weights."""
    record: dict | None = None
    """The training record stored in every checkpoint and in the weights file itself
    (``core.weights.pack_weights``; the embedder's people); None: the weights file is the plain
    state dict (the detector nets)."""
