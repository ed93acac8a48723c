"""An ordered process pool: ``fn`` over tasks in worker processes, results in task order.

Generic (no knowledge of samples or images). Three properties the data stages rely on:

* results come back in the order of the tasks, whatever worker finishes first, so a writer can
  append them as they arrive and the output does not depend on scheduling;
* at most ``window_per_worker * workers`` tasks are in flight, so memory stays flat however
  many tasks there are (the task iterable is consumed lazily);
* each worker runs OpenCV and torch on one thread: the pool already runs one process per core,
  and a thread pool per process on top of that oversubscribes the cores.

Workers are spawned, not forked: a fork would copy whatever the parent holds (open LMDB
environments, torch's thread pools) into every worker. ``fn`` and the tasks must therefore be
picklable: ``fn`` a module-level function.
"""

from __future__ import annotations

import collections
import multiprocessing
import sys
from typing import Callable, Iterable, Iterator, TypeVar

import cv2

T = TypeVar("T")
R = TypeVar("R")


def single_threaded() -> None:
    """Make this process's OpenCV (and torch, once imported) use one thread."""
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def ordered_map(fn: Callable[[T], R], tasks: Iterable[T], workers: int, window_per_worker: int = 4) -> Iterator[R]:
    """``fn(task)`` for each task, in task order; ``workers <= 1`` runs them in this process."""
    if workers <= 1:
        single_threaded()
        yield from map(fn, tasks)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=single_threaded) as pool:
        window: collections.deque = collections.deque()
        for task in tasks:
            window.append(pool.apply_async(fn, (task,)))
            if len(window) >= window_per_worker * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()
