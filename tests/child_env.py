"""The environment for a test's child Python process: the repo importable, one thread."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with the repo put in front of ``PYTHONPATH``, not in its place: packages found
    only through the caller's ``PYTHONPATH`` (a ``pip install --target`` folder) stay importable."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}
