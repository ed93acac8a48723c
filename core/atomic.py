"""Atomic output: a reader sees either the old file or the whole new one, never a half-written one.

Every file the project writes (manifests, reports, weights, checkpoints, plots, detections,
predictions, ground truth) goes through ``atomic_write_bytes``: a temporary file beside the
target, flushed and fsynced, then ``os.replace``. The temporary file gets the permissions a plain
``open`` would (``0o666`` less the umask), because ``mkstemp``'s 0600 would survive the rename.
A full disk is ``DiskFullError`` (one line: the file and the space left), and
``ensure_writable_folder`` lets a stage find a folder it cannot write before it starts working.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no other way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = current_umask()


class _OneLineOSError(OSError):
    """An OSError whose ``str()`` is its message alone (no ``[Errno N]`` prefix): one line for the user."""

    def __str__(self) -> str:
        return str(self.strerror)


class DiskFullError(_OneLineOSError):
    """ENOSPC / EDQUOT while writing a file: ``PATH: disk full (N bytes free on the device)``."""


class NotWritableError(_OneLineOSError):
    """An output folder that cannot be created or written: ``FOLDER: ... (the OS's reason)``."""


_DISK_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}


def _free_bytes(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free:,}"
    except OSError:
        return "?"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    A full disk or quota (at any step: creating, writing, flushing, syncing) raises
    ``DiskFullError`` naming ``path`` and the space left; the old file, if any, is untouched.
    """
    path = Path(path)
    try:
        _write_replace(path, data)
    except OSError as err:
        if err.errno in _DISK_FULL and not isinstance(err, DiskFullError):
            raise DiskFullError(err.errno, f"{path}: {_DISK_FULL[err.errno]} "
                                           f"({_free_bytes(path.parent)} bytes free on the device)") from None
        raise


def _write_replace(path: Path, data: bytes) -> None:
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


def ensure_writable_folder(folder) -> Path:
    """Create ``folder`` if needed and write (then remove) a probe file in it, so that a stage learns
    that it cannot write its outputs before any work rather than after. Raises ``NotWritableError``
    (or ``DiskFullError``) naming the folder and the OS's reason."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = err.strerror or err
        raise NotWritableError(err.errno, f"{folder}: cannot create the output folder ({reason})") from None
    probe = folder / f".write-probe.{os.getpid()}"
    try:
        atomic_write_bytes(probe, b"probe")
        probe.unlink()
    except DiskFullError as err:
        raise DiskFullError(err.errno, str(err).replace(str(probe), str(folder), 1)) from None
    except OSError as err:
        reason = err.strerror or err
        raise NotWritableError(err.errno, f"{folder}: cannot write in the output folder ({reason})") from None
    return folder


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj, indent: int = 2, sort_keys: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n").encode())
