"""Shard checksums: a build's shards are checked against its manifest before anything reads them.

The writer hashes every record (key, then value, in record order) while writing a shard, and the
manifest lists that SHA-256 per shard (``writer._OpenShard``). ``verified_kinds`` recomputes it
with one pass over the shard, and compares the kind byte of every record with the shard's kinds
index on the way, so that a flipped byte in a record, a truncated or overwritten file, or garbage
where the LMDB header was, is a one-line ``ShardCorruptError`` naming the shard, never a sample
silently trained or scored with other pixels or targets.

The pass reads the whole shard at about 200 MB/s: 1-2 s for a 365 MB shard of 707k 12 px samples,
about 7 s for a build of all 12,880 WIDER train images (``make bench`` prints the figures). So a
build read again and again (training runs, the ROC) remembers the shards it has verified in
``verified.json`` beside the manifest: an entry is trusted only while the shard's device, inode,
size and mtime and the manifest's digest are all unchanged, so a rewritten or copied shard is
verified again. The file is only a cache: written atomically, ignored when unreadable, not written
when the folder is read-only, and deleted by the writer when it rebuilds the folder. What it cannot
see is a byte changed without the file's mtime changing (a failing disk): delete ``verified.json``
to re-verify.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lmdb
import numpy as np

from core.atomic import atomic_write_json
from lmdb_builders.schema import KINDS_KEY, ShardCorruptError

VERIFIED_NAME = "verified.json"
_RESERVED = b"_"  # META_KEY and KINDS_KEY start with it and sort after every record key (digits)


def open_shard(path) -> lmdb.Environment:
    """A shard opened read-only (raises ``lmdb.Error`` when the file is not an LMDB file)."""
    return lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False)


def shard_digest(path) -> tuple[str, bytes, bytes | None]:
    """(SHA-256 of the records as the writer computes it, each record's kind byte, the stored kinds
    index or None) of one shard, in one read transaction. Raises ``lmdb.Error`` for a broken file."""
    digest = hashlib.sha256()
    kinds = bytearray()
    env = open_shard(path)
    try:
        with env.begin(buffers=True) as txn:
            for key, value in txn.cursor():
                if key[:1] == _RESERVED:
                    break
                digest.update(key)
                digest.update(value)
                kinds.append(value[1])  # the record's kind byte (schema.record_dtype: version, kind, ...)
            index = txn.get(KINDS_KEY)
            index = None if index is None else bytes(index)
    finally:
        env.close()
    return digest.hexdigest(), bytes(kinds), index


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class VerifiedShards:
    """The ``verified.json`` cache of one build folder (see the module docstring)."""

    def __init__(self, root):
        self.path = Path(root) / VERIFIED_NAME
        try:
            self.entries = json.loads(self.path.read_text())
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def trusted(self, name: str, path: Path, sha256: str) -> bool:
        return self.entries.get(name) == {**_identity(path), "sha256": sha256}

    def remember(self, name: str, path: Path, sha256: str) -> None:
        self.entries[name] = {**_identity(path), "sha256": sha256}
        self.changed = True

    def save(self) -> None:
        """Write the cache if it changed; a folder that cannot be written is left as it is."""
        if self.changed:
            try:
                atomic_write_json(self.path, self.entries)
            except OSError:
                pass
            self.changed = False


def verified_kinds(path: Path, name: str, sha256: str, cache: VerifiedShards | None, hint: str) -> np.ndarray:
    """The kinds index of the shard at ``path`` (``name`` in the manifest) after checking its records
    against ``sha256``; ``hint`` (how to rebuild) ends every error message."""
    if not path.is_file():
        raise ShardCorruptError(f"{path}: listed in the manifest but missing: {hint}")
    trusted = cache is not None and cache.trusted(name, path, sha256)
    try:
        if trusted:
            env = open_shard(path)
            try:
                with env.begin() as txn:
                    index = txn.get(KINDS_KEY)
            finally:
                env.close()
        else:
            digest, kinds, index = shard_digest(path)
    except lmdb.Error as e:
        raise ShardCorruptError(f"{path}: not a readable LMDB shard ({e}): the shard is corrupt; {hint}") from None
    if index is None:
        raise ShardCorruptError(f"{path}: the shard has no kinds index: it is incomplete or corrupt; {hint}")
    if not trusted:
        if digest != sha256:
            raise ShardCorruptError(f"{path}: checksum mismatch (manifest {sha256[:12]}..., file {digest[:12]}...): "
                                    f"the shard is corrupt; {hint}")
        if kinds != index:
            raise ShardCorruptError(f"{path}: its kinds index does not match its records: the shard is corrupt; {hint}")
        if cache is not None:
            cache.remember(name, path, sha256)
    return np.frombuffer(index, dtype=np.uint8).copy()

