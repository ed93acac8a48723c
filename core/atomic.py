"""Atomic output: a reader sees either the old file or the whole new one, never a half-written one.

Every file the project writes (manifests, reports, weights, checkpoints, plots, detections,
predictions, ground truth) goes through ``atomic_write_bytes``: a temporary file beside the
target, flushed and fsynced, then ``os.replace``. The temporary file gets the permissions a plain
``open`` would (``0o666`` less the umask), because ``mkstemp``'s 0600 would survive the rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj, indent: int = 2, sort_keys: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n").encode())
