"""How many worker processes a stage may start: the one rule the data builds and the trainer share."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and ``taskset`` narrow),
    not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cap_workers(requested: int) -> tuple[int, str | None]:
    """``requested`` workers capped at ``usable_cpus()``, and the warning to print when capped
    (more processes than CPUs only add memory and switching, and compete with the main process)."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested, None
    return cpus, f"--workers {requested} is more than the {cpus} CPUs this process may use: using {cpus}"
