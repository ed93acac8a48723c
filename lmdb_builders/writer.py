"""Size-bucketed, resumable LMDB shard writer.

Samples arrive image by image (in image-index order) and are routed to a bucket by their image
size (12/24/48 px). Shards are cut in *parts*: a part covers a contiguous range of images and
holds one shard per bucket that received samples; all buckets roll to a new part together, at an
image boundary, once any of them passes ``shard_bytes``. Each shard is written as
``<out>/<size>/shard-<part>.lmdb.tmp``, committed every ``commit_every`` records, and renamed to
``shard-<part>.lmdb`` only when complete, with its own description stored under ``META_KEY``.

A killed build therefore leaves only ``.tmp`` files (deleted on the next run) or a part whose
renamed shards are incomplete as a set (also deleted); the next run with the same fingerprint
resumes after the last complete part, and because every random draw is seeded per image, the
result is byte-identical to an uninterrupted run. The manifest is written last, by ``finish``.

The shard files themselves, not only their records, are byte-identical for the same samples
whatever the worker count or run: LMDB is opened with ``meminit=True``, so the unused bytes of its
pages are zeros rather than whatever the allocator held (otherwise 5 KB of a 2 MB shard and 93 KB
of a 184 MB one differ from run to run). A write that fails (a full disk, a failing one, ``ulimit -f``) is a one-line
``ShardWriteError`` naming the shard and the disk's free bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np

from core.atomic import atomic_write_json
from lmdb_builders.manifest import MANIFEST_NAME, empty_counts, load_manifest
from lmdb_builders.schema import KINDS_KEY, META_KEY, SAMPLES, RecordSpec, record_key
from lmdb_builders.verify import VERIFIED_NAME, open_shard

SHARD_GLOB = "shard-*.lmdb"
_LMDB_OVERHEAD = 64 << 20  # map size headroom on top of the shard's record bytes


@dataclass(frozen=True)
class WriterConfig:
    shard_bytes: int = field(default=1 << 30, metadata={"cli": False})  # offered in MiB: --shard-mb
    """Roll to a new part once a bucket's shard holds this many record bytes (default 1 GiB)."""
    commit_every: int = 1000
    """Records per LMDB write transaction."""

    def __post_init__(self):
        if self.shard_bytes <= 0:
            raise ValueError(f"--shard-mb must be > 0, got {self.shard_bytes / 2**20:g}")
        if self.commit_every < 1:
            raise ValueError(f"--commit-every must be >= 1, got {self.commit_every}")


class ShardWriteError(OSError):
    """A shard that could not be written; ``str()`` is one line naming it and the disk's free bytes."""


def write_error(path: Path, err: Exception, needed: int) -> ShardWriteError:
    """The error for a failed shard write. LMDB reports a full disk as an I/O error (or
    MDB_MAP_FULL), so the free bytes of the disk tell a full disk from a failing one."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        cause = f"the disk is full: {free:,} bytes free, a shard may need up to {needed:,}"
    else:
        cause = (f"the disk has {free:,} bytes free, so it is not full: check the disk (dmesg) and the "
                 "file-size limit (ulimit -f)")
    return ShardWriteError(f"{path}: cannot write the shard ({err}); {cause}")


def shard_path(out_dir: Path, size: int, part: int) -> Path:
    return out_dir / str(size) / f"shard-{part:05d}.lmdb"


def _map_size(shard_bytes: int) -> int:
    return 2 * shard_bytes + _LMDB_OVERHEAD


def _open_for_write(path: Path, shard_bytes: int) -> lmdb.Environment:
    # lock=False: one writer, and no stray "-lock" file beside a shard that is renamed later.
    # meminit=True: unused page bytes are zeros, so equal records give equal files.
    return lmdb.open(str(path), subdir=False, map_size=_map_size(shard_bytes), lock=False, sync=True, meminit=True)


open_for_read = open_shard


def read_shard_meta(path) -> dict | None:
    """The description a complete shard stores about itself, or None if it has none."""
    try:
        env = open_for_read(path)
    except lmdb.Error:
        return None
    try:
        with env.begin() as txn:
            raw = txn.get(META_KEY)
        return json.loads(raw) if raw is not None else None
    finally:
        env.close()


class _OpenShard:
    """One bucket's shard of the current part, being written."""

    def __init__(self, out_dir: Path, size: int, part: int, cfg: WriterConfig, spec: RecordSpec = SAMPLES):
        self.spec = spec
        self.final_path = shard_path(out_dir, size, part)
        self.tmp_path = self.final_path.with_name(self.final_path.name + ".tmp")
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp_path.exists():
            self.tmp_path.unlink()
        self.cfg = cfg
        self.size = size
        self.part = part
        self.env = None
        try:
            self.env = _open_for_write(self.tmp_path, cfg.shard_bytes)
        except lmdb.Error as e:
            raise write_error(self.tmp_path, e, _map_size(cfg.shard_bytes)) from None
        self.pending: list[tuple[bytes, bytes]] = []
        self.kinds = bytearray()
        self.counts = empty_counts(spec.kind_names)
        self.record_bytes = 0
        self.digest = hashlib.sha256()

    def add(self, records: np.ndarray) -> None:
        """Append a structured array of records (``schema.record_dtype(self.size)``)."""
        blob, width, first = records.tobytes(), records.dtype.itemsize, len(self.kinds)
        for j in range(len(records)):
            key, value = record_key(first + j), blob[j * width : (j + 1) * width]
            self.pending.append((key, value))
            self.digest.update(key)
            self.digest.update(value)
        kinds = records["kind"]
        self.kinds.extend(kinds.tobytes())
        for kind, n in zip(*np.unique(kinds, return_counts=True)):
            self.counts[self.spec.kind_names[int(kind)]] += int(n)
        self.record_bytes += len(blob)
        if len(self.pending) >= self.cfg.commit_every:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    txn.cursor().putmulti(self.pending, append=True)
            except lmdb.Error as e:
                raise write_error(self.tmp_path, e, _map_size(self.cfg.shard_bytes)) from None
            self.pending = []

    def close(self, meta: dict) -> dict:
        """Store kinds and the shard's description, then rename it into place."""
        self.flush()
        meta = dict(
            meta,
            size=self.size,
            part=self.part,
            samples=len(self.kinds),
            counts=self.counts,
            record_bytes=self.record_bytes,
            sha256=self.digest.hexdigest(),
        )
        try:
            with self.env.begin(write=True) as txn:
                txn.put(KINDS_KEY, bytes(self.kinds))
                txn.put(META_KEY, json.dumps(meta, sort_keys=True).encode())
            self.env.sync(True)
        except lmdb.Error as e:
            raise write_error(self.tmp_path, e, _map_size(self.cfg.shard_bytes)) from None
        self.env.close()
        os.replace(self.tmp_path, self.final_path)
        return meta

    def abandon(self) -> None:
        if self.env is not None:
            self.env.close()
        if self.tmp_path.exists():
            self.tmp_path.unlink()


class ShardWriter:
    """Writes one build's samples into ``out_dir``; see the module docstring."""

    def __init__(self, out_dir, fingerprint: str, cfg: WriterConfig = WriterConfig(), spec: RecordSpec = SAMPLES):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.fingerprint = fingerprint
        self.cfg = cfg
        self.completed: list[dict] = []  # metas of complete shards, in part order
        self.part = 0
        self.part_start = 0
        self.next_image = 0
        self.open: dict[int, _OpenShard] = {}
        self._recover()

    # -- resume -------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Keep the complete parts of an earlier run with the same fingerprint; delete the rest."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Whatever follows rewrites shards, so an old manifest (or checksum cache) must not vouch for them.
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        (self.out_dir / VERIFIED_NAME).unlink(missing_ok=True)
        for tmp in self.out_dir.glob("*/shard-*.lmdb.tmp"):
            tmp.unlink()
        shards = sorted(self.out_dir.glob(f"*/{SHARD_GLOB}"))
        metas = {path: read_shard_meta(path) for path in shards}
        stale = any(m is None or m.get("fingerprint") != self.fingerprint for m in metas.values())
        if stale:
            for path in shards:
                path.unlink()
            return
        by_part: dict[int, list[dict]] = {}
        for meta in metas.values():
            by_part.setdefault(meta["part"], []).append(meta)
        expected_start = 0
        for part in range(len(by_part) + 1):
            members = by_part.get(part, [])
            sizes = {m["size"] for m in members}
            complete = (
                members
                and all(set(m["part_sizes"]) == sizes for m in members)
                and all(m["image_start"] == expected_start for m in members)
            )
            if not complete:
                break
            self.completed.extend(sorted(members, key=lambda m: m["size"]))
            expected_start = members[0]["image_end"]
            self.part = part + 1
        for path, meta in metas.items():
            if meta["part"] >= self.part:
                path.unlink()
        self.part_start = self.next_image = expected_start

    @property
    def resume_image(self) -> int:
        """Index of the first image that still has to be processed."""
        return self.next_image

    # -- writing ------------------------------------------------------------------------------
    def add_image(self, image_index: int, record_arrays) -> None:
        """Add all records of one image (structured arrays of any bucket sizes, see
        ``schema.make_records``); images must arrive in index order without gaps."""
        if image_index != self.next_image:
            raise ValueError(f"image {image_index} arrived, expected image {self.next_image}")
        for records in record_arrays:
            if not len(records):
                continue
            size = self.spec.size_of(records)
            shard = self.open.get(size)
            if shard is None:
                shard = self.open[size] = _OpenShard(self.out_dir, size, self.part, self.cfg, self.spec)
            shard.add(records)
        self.next_image = image_index + 1
        if any(s.record_bytes >= self.cfg.shard_bytes for s in self.open.values()):
            self._close_part()

    def _close_part(self) -> None:
        if not self.open:
            return
        part_sizes = sorted(self.open)
        common = {
            "schema_version": self.spec.version,
            "fingerprint": self.fingerprint,
            "image_start": self.part_start,
            "image_end": self.next_image,
            "part_sizes": part_sizes,
        }
        for size in part_sizes:
            self.completed.append(self.open[size].close(common))
        self.open = {}
        self.part += 1
        self.part_start = self.next_image

    def counts(self) -> dict[int, dict[str, int]]:
        """Samples per kind name of each bucket size written so far (complete and open shards)."""
        totals: dict[int, dict[str, int]] = {}
        for size, counts in [(m["size"], m["counts"]) for m in self.completed] + [
                (s.size, s.counts) for s in self.open.values()]:
            bucket = totals.setdefault(size, empty_counts(self.spec.kind_names))
            for name, n in counts.items():
                bucket[name] += n
        return totals

    def finish(self, num_images: int, manifest_extra: dict) -> dict:
        """Close the last part and write the manifest (the commit marker). Returns the manifest."""
        if self.next_image != num_images:
            raise ValueError(f"finish after {self.next_image} of {num_images} images")
        self._close_part()
        totals: dict[str, dict] = {}
        for meta in self.completed:
            bucket = totals.setdefault(str(meta["size"]), {"samples": 0, "counts": empty_counts(self.spec.kind_names)})
            bucket["samples"] += meta["samples"]
            for name, n in meta["counts"].items():
                bucket["counts"][name] += n
        manifest = {
            **({} if self.spec is SAMPLES else {"record": self.spec.name}),
            "schema_version": self.spec.version,
            "fingerprint": self.fingerprint,
            "num_images": num_images,
            "buckets": totals,
            "shards": [
                {
                    "path": str(shard_path(Path("."), m["size"], m["part"])),
                    **{k: m[k] for k in ("size", "part", "image_start", "image_end", "samples")},
                    "counts": m["counts"],
                    "bytes": m["record_bytes"],
                    "sha256": m["sha256"],
                }
                for m in self.completed
            ],
            **manifest_extra,
        }
        atomic_write_json(self.out_dir / MANIFEST_NAME, manifest)
        return load_manifest(self.out_dir, self.spec.name, self.spec.version)  # as a reader will see it (JSON types)

    def abort(self) -> None:
        """Drop the part being written (its images are redone by the next run)."""
        for shard in self.open.values():
            shard.abandon()
        self.open = {}
