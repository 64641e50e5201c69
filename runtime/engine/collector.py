"""The cyclic garbage collector, paced for a run.

A run allocates a few dozen short-lived containers an item (rows, requests, futures, the HTTP client's
objects). With CPython's default thresholds (700, 10, 10) the collector ran about 550 young and 50 middle
collections over a 5,000-item run, and every few of those a full one over everything the process holds (the
plan, every imported module); in `benchmarks/runtime.py` at 0 ms that was a third or more of the run's CPU. While
runs are under way, `paced()` moves what existed before them out of the collector's sight (`gc.freeze`) and raises
the young threshold, so that nearly every item's objects are freed by reference counting before a collection
looks at them. Cycles are still collected, only less often. When the last run in the process ends, the
thresholds are restored and the frozen objects are handed back to the collector (`gc.unfreeze`).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 50_000
"""Allocations of containers (less deallocations) between young collections during a run."""

_lock = threading.Lock()
_runs = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def paced() -> Iterator[None]:
    """Pace the collector while the block runs; runs may nest and overlap (a pipeline's jobs, `serve`)."""
    global _runs, _saved
    with _lock:
        _runs += 1
        if _runs == 1 and gc.isenabled():
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(YOUNG_THRESHOLD, _saved[0]), _saved[1], _saved[2])
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()
                _saved = None
