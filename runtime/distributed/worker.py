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
    counts = partition_counts(progress, job.options.partition, finished=job.context.stopping is None)
    progress.read, progress.already_done = counts["read"], counts["already_done"]
    own, _ = verdict(progress, None)
    # A stop the counts do not explain (a source or sink error, a stop from the driver) stops the run.
    stopped = result.status != "succeeded" and (job.context.stopping is not None or own == "succeeded")
    return {
        "counts": counts,
        "tokens_by_model": progress.tokens_by_model,
        "limits": progress.limits,
        "errors": [asdict(e) for e in result.errors[:100]],
        "notices": list(result.notices),
        "stop": [result.status, result.message] if stopped else None,
    }


async def _watch(job: JobRun, channel: str) -> None:
    """Stop this partition when the driver publishes a stop (a signal, a timeout, an item that failed), share
    the providers' pauses (a 429's `Retry-After`) with the other workers, both ways, and tell the driver what
    the partition did so far (`LiveCounts`)."""
    distributed = dask()
    event = distributed.Event(channel)
    shared = Pauses(distributed, channel)
    worker = distributed.get_worker()
    partition: Partition = job.options.partition
    reported: dict[str, int] = {}
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        if await asyncio.to_thread(event.is_set):
            job.stop("interrupted", "stopped by the driver")
            return
        if job.item_worker is not None:
            await asyncio.to_thread(shared.exchange, job.item_worker.limiters)
        counts = partition_counts(job.progress, partition, finished=False)
        if counts != reported:
            worker.log_event(progress_topic(channel), {"number": partition.number, "counts": counts})
            reported = counts


def partition_counts(progress: Progress, partition: Partition, *, finished: bool) -> dict[str, int]:
    """What a partition's run did (`COUNTED`): the reader counts rows from the partition's first; the repeats of
    an earlier partition's keys it passed over are already done, as a local run's reader counts a key it read
    before (all of them once the partition is `finished`)."""
    counts = {name: getattr(progress, name) for name in COUNTED}
    read = max(0, progress.read - partition.first)
    passed = passed_over(partition, read, finished=finished)
    counts["read"], counts["already_done"] = read + passed, progress.already_done + passed
    return counts


def progress_topic(channel: str) -> str:
    """The Dask event topic on which a run's partitions report what they did so far."""
    return f"{channel}-progress"


class LiveCounts:
    """What the partitions running now did so far (`_watch` reports it every `WATCH_SECONDS`), added to the
    driver's progress as it comes, and taken out again when a partition's final counts are added instead: a
    partition larger than a few seconds' work still shows its progress while it runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.live: dict[int, dict[str, int]] = {}
        self.finished: set[int] = set()

    def report(self, number: int, counts: dict[str, int]) -> None:
        """A partition's counts so far (a partition run again after a kill starts over: the latest wins)."""
        if number in self.finished:
            return  # a report that came after the partition's result
        self._add(self.live.get(number), -1)
        self.live[number] = counts
        self._add(counts, 1)

    def finish(self, number: int) -> None:
        """The partition's final counts are about to be added: its live ones go."""
        self.finished.add(number)
        self._add(self.live.pop(number, None), -1)

    def _add(self, counts: dict[str, int] | None, sign: int) -> None:
        for name, value in (counts or {}).items():
            if name in COUNTED:
                setattr(self.progress, name, getattr(self.progress, name) + sign * int(value))


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
