"""The task a Dask worker runs: one partition of a job's input, through the same item loop as a local run.

The worker reads its partition's rows itself (`io.partitions`), with the job's concurrency, and records each
item in the shared state store as a local run does; a file sink's rows go to a spool of the partition's own,
which the driver gathers. What it sends back is small: its counts, its first errors and why it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import asdict
from typing import Any

from ...compiler.ir import Plan
from ..engine.job import JobRun
from ..engine.state import Progress, RunOptions, verdict
from ..io.partitions import Partition
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


def run_partition(plan: Plan, settings: dict[str, Any], partition: Partition, stop_event: str | None = None) -> dict[str, Any]:
    """Run one partition to its end; `settings` are the driver's `RunOptions` fields that a worker takes. The
    worker's own environment supplies secrets (API keys), as it would to a local run on that machine."""
    options = RunOptions(**settings, partition=partition, environ=dict(os.environ), engine="local")
    return asyncio.run(_run(JobRun(plan, options), stop_event))


async def _run(job: JobRun, stop_event: str | None) -> dict[str, Any]:
    watcher = asyncio.create_task(_watch(job, stop_event)) if stop_event else None
    try:
        result = await job.run()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    progress = result.progress
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


async def _watch(job: JobRun, name: str | None) -> None:
    """Stop this partition when the driver publishes a stop (a signal, a timeout, an item that failed)."""
    event = dask().Event(name)
    while True:
        await asyncio.sleep(0.25)
        if await asyncio.to_thread(event.is_set):
            job.stop("interrupted", "stopped by the driver")
            return


def add_counts(progress: Progress, counts: dict[str, Any]) -> None:
    for name in COUNTED:
        setattr(progress, name, getattr(progress, name) + int(counts["counts"][name]))
    for model, (prompt, completion) in counts["tokens_by_model"].items():
        total = progress.tokens_by_model.setdefault(model, [0, 0])
        total[0] += prompt
        total[1] += completion
