"""The task a Dask worker runs: one partition of a job's input, through the same item loop as a local run.

The worker reads its partition's rows itself (`io.partitions`), with the job's concurrency, and records each
item in the shared state store as a local run does; a file sink's rows go to a spool of the partition's own,
which the driver gathers. What it sends back is small: its counts, its first errors and why it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict
from typing import Any

from ...compiler.ir import Plan
from ..engine.job import JobRun
from ..engine.limits import RateLimiter
from ..engine.state import Progress, RunOptions, verdict
from ..io.partitions import Partition, passed_over
from . import dask

COUNTED = (
    "read",
    "already_done",
    "stale",
    "reused",
    "succeeded",
    "skipped",
    "failed",
    "dead_lettered",
    "calls",
    "retries",
    "prompt_tokens",
    "completion_tokens",
)
"""The counts of `Progress` a partition adds to the run's."""
WATCH_SECONDS = 0.25
"""How often a worker looks for a stop and exchanges pauses."""


def run_partition(plan: Plan, settings: dict[str, Any], partition: Partition, channel: str | None = None) -> dict[str, Any]:
    """Run one partition to its end; `settings` are the driver's `RunOptions` fields that a worker takes (with
    `limit_share`, its share of the rate limits). The worker's own environment supplies secrets (API keys), as
    it would to a local run on that machine. `channel` names the run's Dask `Event` (a stop) and `Variable`s
    (each provider's pause)."""
    options = RunOptions(**settings, partition=partition, environ=dict(os.environ), engine="local")
    return asyncio.run(_run(JobRun(plan, options), channel))


async def _run(job: JobRun, channel: str | None) -> dict[str, Any]:
    watcher = asyncio.create_task(_watch(job, channel)) if channel else None
    try:
        result = await job.run()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    progress = result.progress
    # The reader counts rows from the partition's first; the repeats of an earlier partition's keys it passed
    # over are already done, as a local run's reader counts a key it read before.
    partition: Partition = job.options.partition
    read = max(0, progress.read - partition.first)
    passed = passed_over(partition, read, finished=job.context.stopping is None)
    progress.read, progress.already_done = read + passed, progress.already_done + passed
    own, _ = verdict(progress, None)
    # A stop the counts do not explain (a source or sink error, a stop from the driver) stops the run.
    stopped = result.status != "succeeded" and (job.context.stopping is not None or own == "succeeded")
    return {
        "counts": {name: getattr(progress, name) for name in COUNTED},
        "tokens_by_model": progress.tokens_by_model,
        "limits": progress.limits,
        "errors": [asdict(e) for e in result.errors[:100]],
        "notices": list(result.notices),
        "stop": [result.status, result.message] if stopped else None,
    }


async def _watch(job: JobRun, channel: str) -> None:
    """Stop this partition when the driver publishes a stop (a signal, a timeout, an item that failed), and
    share the providers' pauses (a 429's `Retry-After`) with the other workers, both ways."""
    distributed = dask()
    event = distributed.Event(channel)
    shared = Pauses(distributed, channel)
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        if await asyncio.to_thread(event.is_set):
            job.stop("interrupted", "stopped by the driver")
            return
        if job.item_worker is not None:
            await asyncio.to_thread(shared.exchange, job.item_worker.limiters)


class Pauses:
    """The providers' pauses in one Dask `Variable` of the run (provider -> wall-clock end), which the driver
    sets first: a worker publishes a pause its limiter took from a 429 and takes on those the others published
    (the later end wins)."""

    def __init__(self, distributed: Any, channel: str) -> None:
        self.variable = distributed.Variable(f"{channel}-pauses")
        self.published: dict[str, float] = {}

    def exchange(self, limiters: dict[str, RateLimiter]) -> None:
        shared: dict[str, float] = dict(self.variable.get(timeout=5) or {})
        changed = False
        for provider, limiter in limiters.items():
            control = limiter.control
            own = time.time() + (control.paused_until - time.monotonic())
            theirs = shared.get(provider, 0.0)
            if control.paused_until > 0 and own > max(theirs, self.published.get(provider, 0.0)) + 0.01:
                shared[provider] = self.published[provider] = own
                changed = True
            elif theirs > self.published.get(provider, 0.0):
                control.paused_until = max(control.paused_until, time.monotonic() + (theirs - time.time()))
                self.published[provider] = theirs
        if changed:
            self.variable.set(shared)


def add_counts(progress: Progress, counts: dict[str, Any]) -> None:
    for name in COUNTED:
        setattr(progress, name, getattr(progress, name) + int(counts["counts"][name]))
    for model, (prompt, completion) in counts["tokens_by_model"].items():
        total = progress.tokens_by_model.setdefault(model, [0, 0])
        total[0] += prompt
        total[1] += completion
