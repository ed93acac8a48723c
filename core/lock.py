"""One run per output folder: an advisory lock that dies with its process.

Two builds writing one folder delete each other's temporary shards and can certify a half-written
one, so every stage that writes a folder (data builds, training, evaluation, export) holds
``folder_lock(out)`` while it works. The lock is ``fcntl.flock`` on ``<out>/.lock``: the kernel
releases it when the holder exits for any reason (``kill -9`` included), so a lock left by a
killed run is simply taken over by the next one, with no stale-pid guessing. The file records the
holder's pid and command so that the refusal names them. A forked child (a DataLoader worker, a
process pool) closes its copy of the descriptor at once: otherwise the lock would outlive the run
for as long as such a child lingers.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)  # the parent's descriptor keeps the lock
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class FolderLockedError(RuntimeError):
    """The folder is being written by another live process; ``str()`` is one line naming it."""


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def folder_lock(folder, purpose: str = "a run"):
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block, or raise
    ``FolderLockedError`` at once when another live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            pid = who.get("pid", "?")
            raise FolderLockedError(
                f"{folder} is in use by pid {pid} ({who.get('purpose', 'another run')}, started "
                f"{who.get('started', '?')}): wait for it to finish, or stop it (kill {pid}) and run again"
            ) from None
        record = {"pid": os.getpid(), "purpose": purpose, "command": " ".join(sys.argv),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        _HELD.add(fd)
        yield folder
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the flock
