"""Streaming reader of a shard set: a torch Dataset, a kind-mixing batch sampler and a loader.

``ShardDataset(build_dir, size)`` checks the manifest (schema version, each shard's records
against the manifest's SHA-256, see ``lmdb_builders.verify``, per-kind counts against each shard's
own kinds index) and keeps only the small kinds arrays in memory; LMDB environments
are opened lazily, once per process, so the dataset can be sent to DataLoader workers (an open
environment cannot be pickled). ``__getitems__`` reads a whole batch in one transaction and
returns the raw structured records (one ``np.frombuffer``).

``ShardLoader`` runs a DataLoader over those record batches and turns each into tensors in the
consuming process: one numpy buffer crosses the process boundary per batch, which is about three
times faster than sending seven tensors through shared memory. A ``SchemaError`` (or
``ShardCorruptError``) raised in a worker reaches the caller as the same class with its one-line
message (a DataLoader otherwise replaces the message with the worker's whole traceback).

Use::

    ds = ShardDataset("data/pnet", size=12)
    train, val = split_by_kind(ds.kinds, val_fraction=0.05, seed=0)
    sampler = MixedKindBatchSampler(train, batch_size=384, ratio=PAPER_RATIO, seed=0)
    for batch in ShardLoader(ds, sampler, num_workers=1):
        batch["image"], batch["label"], batch["box"], ...
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lmdb_builders.manifest import load_manifest, rebuild_hint
from lmdb_builders.schema import (
    CLASS_LABEL,
    HAS_BOX,
    HAS_LANDMARKS,
    SAMPLES,
    Kind,
    RecordSpec,
    SchemaError,
    ShardCorruptError,
    record_key,
)
from lmdb_builders.verify import VerifiedShards, open_shard, verified_kinds

# neg : pos : part : landmark, as in the paper.
PAPER_RATIO = {Kind.NEGATIVE: 3, Kind.POSITIVE: 1, Kind.PART: 1, Kind.LANDMARK: 2}


def keep_batch(batch):
    """DataLoader collate_fn for a dataset whose ``__getitems__`` already returns the whole batch."""
    return batch


class ShardDataset(Dataset):
    """All records of one bucket (image size) of a build, addressed by a global index."""

    def __init__(self, build_dir, size: int, spec: RecordSpec = SAMPLES):
        self.spec = spec
        self.manifest = load_manifest(build_dir, spec.name, spec.version)
        self.root = Path(self.manifest["_path"]).parent
        self.size = int(size)
        shards = [s for s in self.manifest["shards"] if s["size"] == self.size]
        if not shards:
            raise SchemaError(f"{self.manifest['_path']}: no {size} px shards in this build")
        self.paths = [self.root / s["path"] for s in shards]
        self.hint = rebuild_hint(self.manifest)
        cache = VerifiedShards(self.root)
        kinds = []
        for entry, path in zip(shards, self.paths):
            k = verified_kinds(path, entry["path"], entry["sha256"], cache, self.hint)
            counts = {spec.kind_names[int(v)]: int(n) for v, n in zip(*np.unique(k, return_counts=True))}
            expected = {name: n for name, n in entry["counts"].items() if n}
            if len(k) != entry["samples"] or counts != expected:
                raise SchemaError(f"{path}: holds {len(k)} records {counts}, manifest says {entry['samples']} {expected}")
            kinds.append(k)
        cache.save()
        self.kinds = np.concatenate(kinds)
        self.starts = np.cumsum([0] + [len(k) for k in kinds])
        self._envs = None
        self._pid = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_envs"] = None  # reopened lazily in the worker
        return state

    def _env(self, shard: int):
        if self._envs is None or self._pid != os.getpid():
            self._envs = [None] * len(self.paths)
            self._pid = os.getpid()
        if self._envs[shard] is None:
            self._envs[shard] = open_shard(self.paths[shard])
        return self._envs[shard]

    def __getitems__(self, indices) -> np.ndarray:
        """Structured records (see ``schema.record_dtype``) for global ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} records")
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        buffers = [None] * len(idx)
        for shard in np.unique(shard_of):
            positions = np.flatnonzero(shard_of == shard)
            keys = [record_key(int(i)) for i in idx[positions] - self.starts[shard]]
            try:
                with self._env(shard).begin(buffers=False) as txn:
                    found = txn.cursor().getmulti(keys)
            except lmdb.Error as e:  # changed since it was verified
                raise ShardCorruptError(f"{self.paths[shard]}: cannot read records ({e}): {self.hint}") from None
            if len(found) != len(keys):
                raise ShardCorruptError(f"{self.paths[shard]}: {len(keys) - len(found)} records missing: {self.hint}")
            for p, (_, value) in zip(positions, found):
                buffers[p] = value
        return self.spec.decode(buffers, self.size)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.__getitems__([index])[0]


class ShardLoader:
    """Batches of tensors (``records_to_batch``) from a dataset and a batch sampler.

    Workers read and return raw record arrays; decoding into tensors happens here, in the
    consumer. ``num_workers=0`` reads in the calling process. ``seed`` fixes the workers' random
    states (numpy, random, torch) so that a run is repeatable.
    """

    def __init__(self, dataset: ShardDataset, batch_sampler, num_workers: int = 1, prefetch_factor: int = 4,
                 pin_memory: bool = False, persistent_workers: bool = False, seed: int = 0, to_batch=None):
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers,
                 "worker_init_fn": seed_worker} if num_workers else {}
        self.batch_sampler = batch_sampler
        self.pin_memory = pin_memory
        self.to_batch = to_batch or records_to_batch  # records -> tensors (``lmdb_builders.identity`` for faces)
        self.loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=keep_batch,
                                 num_workers=num_workers, generator=torch.Generator().manual_seed(seed), **extra)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        try:
            for records in self.loader:
                batch = self.to_batch(records)
                if self.pin_memory:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                yield batch
        except SchemaError as e:
            message = worker_error_message(e)
            if message is None:
                raise
            raise type(e)(message) from None


def worker_error_message(err: Exception) -> str | None:
    """The one-line message of an exception a DataLoader worker raised, or None when ``err`` was
    not re-raised from a worker. The DataLoader rebuilds the worker's exception in the parent as
    ``type(err)("Caught ... in DataLoader worker process N. Original Traceback ...")``; the
    traceback's last line is ``module.Class: message``."""
    text = str(err)
    if not text.startswith("Caught ") or "DataLoader worker" not in text.split("\n", 1)[0]:
        return None
    cls = type(err)
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for line in reversed(text.splitlines()):
        for prefix in prefixes:
            if line.startswith(prefix):
                return line[len(prefix):]
    return None


def seed_worker(worker_id: int) -> None:
    """DataLoader worker start: numpy and random follow torch's per-worker seed (the loader's
    generator plus the worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def records_to_batch(recs: np.ndarray) -> dict[str, torch.Tensor]:
    """Decoded records to tensors: uint8 images (B, S, S, 3), targets, and the loss masks."""
    kind = recs["kind"].astype(np.int64)
    return {
        "image": torch.from_numpy(np.array(recs["image"])),  # a writable, contiguous copy
        "kind": torch.from_numpy(kind),
        "label": torch.from_numpy(CLASS_LABEL[kind]),
        "box": torch.from_numpy(np.ascontiguousarray(recs["box"])),
        "landmarks": torch.from_numpy(np.ascontiguousarray(recs["landmarks"])),
        "has_box": torch.from_numpy(HAS_BOX[kind]),
        "has_landmarks": torch.from_numpy(HAS_LANDMARKS[kind]),
    }


def split_by_kind(kinds: np.ndarray, val_fraction: float, seed: int):
    """Hold out ``val_fraction`` of each kind; returns (train, val) as dicts kind -> sorted indices."""
    rng = np.random.default_rng([seed, 0x5E1])
    train, val = {}, {}
    for kind in Kind:
        idx = np.flatnonzero(kinds == kind)
        n_val = int(round(len(idx) * val_fraction))
        perm = rng.permutation(len(idx))
        val[kind] = np.sort(idx[perm[:n_val]])
        train[kind] = np.sort(idx[perm[n_val:]])
    return train, val


def kind_quotas(batch_size: int, ratio: dict, available: dict) -> dict:
    """Samples per kind in a batch: ``ratio`` over the kinds that have samples, summing to batch_size."""
    active = {k: r for k, r in ratio.items() if r > 0 and len(available.get(k, ())) > 0}
    if not active:
        raise ValueError("no samples of any kind the ratio asks for")
    total = sum(active.values())
    quotas = {k: int(batch_size * r // total) for k, r in active.items()}
    # Hand the rounding remainder to the kinds with the largest fractional parts.
    remainder = batch_size - sum(quotas.values())
    by_fraction = sorted(active, key=lambda k: (-(batch_size * active[k] / total - quotas[k]), int(k)))
    for k in by_fraction[:remainder]:
        quotas[k] += 1
    return quotas


class MixedKindBatchSampler(Sampler):
    """Batches with a fixed share of each kind (default the paper's 3:1:1:2).

    Each kind is drawn from its own stream of reshuffled permutations, so every sample of a kind
    is seen once before any is repeated. The stream of epoch ``e`` depends only on
    ``(seed, e)``; ``start_batch`` skips batches already consumed (exact resume).
    """

    def __init__(self, indices_by_kind: dict, batch_size: int, ratio: dict = PAPER_RATIO, seed: int = 0,
                 batches_per_epoch: int | None = None):
        self.indices = {Kind(k): np.asarray(v, dtype=np.int64) for k, v in indices_by_kind.items()}
        self.batch_size = batch_size
        self.quotas = kind_quotas(batch_size, {Kind(k): r for k, r in ratio.items()}, self.indices)
        self.seed = seed
        total = sum(len(self.indices[k]) for k in self.quotas)
        self.batches_per_epoch = batches_per_epoch or max(1, math.ceil(total / batch_size))
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def _kind_stream(self, rng, pool: np.ndarray, per_batch: int):
        buffer = np.zeros(0, dtype=np.int64)
        while True:
            while len(buffer) < per_batch:
                buffer = np.concatenate([buffer, pool[rng.permutation(len(pool))]])
            yield buffer[:per_batch]
            buffer = buffer[per_batch:]

    def __iter__(self):
        streams = [
            self._kind_stream(np.random.default_rng([self.seed, self.epoch, int(k)]), self.indices[k], q)
            for k, q in sorted(self.quotas.items())
        ]
        for b in range(self.batches_per_epoch):
            batch = np.sort(np.concatenate([next(s) for s in streams]))  # sorted: LMDB locality
            if b >= self.start_batch:
                yield batch.tolist()
