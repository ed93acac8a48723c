"""Reading an identity build (``lmdb_builders.faces`` records) for the embedding trainer.

* ``split_identities``: a seeded share of the identities (never of the images: a held-out person
  is one the net never saw) for validation;
* ``IdentityBatchSampler``: FaceNet's batches of P people x K images each, every batch a
  deterministic function of (seed, epoch, batch), resumable mid-epoch like
  ``reader.MixedKindBatchSampler``;
* ``faces_to_batch``: decoded records to tensors (``ShardLoader(to_batch=faces_to_batch)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler


def split_identities(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) record indices, sorted: ``val_fraction`` of the identities (at least 2 when
    there are 4 or more, so that held-out pairs can be mismatched) go to validation."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    n_val = int(round(len(ids) * val_fraction))
    if len(ids) >= 4:
        n_val = min(max(n_val, 2), len(ids) - 2)
    rng = np.random.default_rng([seed, 0x1D5])
    val_ids = ids[rng.permutation(len(ids))[:n_val]]
    held = np.isin(labels, val_ids)
    return np.flatnonzero(~held), np.flatnonzero(held)


class IdentityBatchSampler(Sampler):
    """Batches of ``people`` identities x ``per_person`` images of ``indices`` (record indices whose
    identity is ``labels[index]``).

    People come from a stream of reshuffled permutations of the identities (all seen once before
    any repeats); each person's images are drawn without replacement when it has enough, else
    with (so a person with 2 images still gives K, repeated, and matched pairs). The stream of
    epoch ``e`` depends only on ``(seed, e)``; ``start_batch`` skips batches already consumed.
    """

    def __init__(self, labels: np.ndarray, indices: np.ndarray, people: int, per_person: int, seed: int = 0,
                 batches_per_epoch: int | None = None):
        labels, indices = np.asarray(labels), np.asarray(indices, dtype=np.int64)
        self.by_person = [indices[labels[indices] == p] for p in np.unique(labels[indices])]
        if len(self.by_person) < 2:
            raise ValueError(f"a batch needs at least 2 people; the training split has {len(self.by_person)}")
        self.people = min(people, len(self.by_person))
        self.per_person = per_person
        self.batch_size = self.people * per_person
        self.seed = seed
        self.batches_per_epoch = batches_per_epoch or max(1, math.ceil(len(indices) / self.batch_size))
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, 0x9E0])
        order = np.zeros(0, dtype=np.int64)
        for b in range(self.batches_per_epoch):
            while len(order) < self.people:  # a batch never holds one person twice
                fresh = rng.permutation(len(self.by_person))
                order = np.concatenate([order, fresh[~np.isin(fresh, order)], fresh[np.isin(fresh, order)]])
            chosen, order = order[:self.people], order[self.people:]
            picks = [rng.choice(self.by_person[p], self.per_person, replace=len(self.by_person[p]) < self.per_person)
                     for p in chosen]
            if b >= self.start_batch:
                yield np.sort(np.concatenate(picks)).tolist()


def faces_to_batch(recs: np.ndarray) -> dict[str, torch.Tensor]:
    """Face records to tensors: uint8 crops (B, S, S, 3) and int64 identity numbers."""
    return {"image": torch.from_numpy(np.array(recs["image"])),
            "identity": torch.from_numpy(recs["identity"].astype(np.int64))}
