"""The driver of a `dask` run: the job's input split into partitions, one Dask task each, and what they did
added up; the rest of the run (the lock, the record of the run, the gathering, publishing) is the `JobRun`'s.

- The cluster is the scheduler the options name, or a local cluster of worker processes started for the run
  and closed after it.
- The state store is shared by every worker: a cluster reached through a scheduler needs a PostgreSQL store (a
  worker on another machine cannot share a SQLite file); a local cluster may use the workspace's SQLite file,
  whose writers take turns (`BEGIN IMMEDIATE`, a busy timeout), or PostgreSQL.
- A database sink is written by every worker (upserts by key); the driver creates its table first. A file
  sink is spooled per partition by the workers; at the end the driver appends the partitions' spools to the
  sink's own, in partition order, and the sink publishes it as a local run would (merged by key, atomically).
- A worker killed mid-partition: Dask runs the partition again elsewhere, and the items the state store has as
  done are not called again (nor the answers it recorded). A stop of the driver (a signal, the timeout, an item
  that failed under `fail`) is published to the workers as a Dask `Event`; each stops its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..engine.state import ClusterOptions, ItemFailure, RunStopped
from ..io import IOContext, SinkError
from ..io.dbconn import parse_database_url
from ..io.partitions import UNKNOWN_ROWS, Partition, split_input
from . import dask
from .worker import LiveCounts, add_counts, progress_topic, run_partition

if TYPE_CHECKING:
    from ..engine.job import JobRun

PARTITIONS_PER_WORKER = 4
"""Without `partition_size`: the input in about this many partitions per worker (balance against set-up), and
none smaller than `WAVES` times the job's concurrency."""
WAVES = 50
"""Without `partition_size`, a partition holds at least this many times the job's concurrency in items. A
partition costs about two rounds of its calls beyond its items (its first calls all go at once, its last ones
end with the slots running dry) and its set-up: at 50 ms latency, 2 workers and 10,000 items, partitions of
12.5 rounds each made about a tenth fewer items a second than partitions of 50 (benchmarks/README.md)."""
SMALLEST_PARTITION = 200
CONNECT_SECONDS = 10
"""How long the driver tries to reach a scheduler before the run fails."""
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}
"""Dask settings of the local cluster's workers: no statistical profiler, which samples every thread's stack a
hundred times a second (10% of a worker's CPU at 50 ms latency, measured; see benchmarks/README.md)."""


async def distribute(job: JobRun, context: IOContext, sink: Any, *, resume: bool) -> None:
    """Run the job's items as partitions on the cluster; the run's progress adds up what each partition did."""
    run = job.context
    options = job.options
    cluster = options.cluster or ClusterOptions()
    state = context.connection(options.state or ".sleipnir/state.db")
    if cluster.scheduler and not cluster.local and parse_database_url(state, root=job.plan.root).kind != "postgresql":
        raise SinkError(
            "the dask engine on a cluster needs a PostgreSQL state store that every worker reaches: set `state: "
            "postgresql://...` in sleipnir.yaml (only a local cluster may share the workspace's SQLite file)"
        )
    prepare = getattr(sink, "prepare", None)
    if prepare is not None:
        await asyncio.to_thread(prepare)
    spools = getattr(sink, "partition_spools", None)
    if spools is not None and not resume:
        for stale in await asyncio.to_thread(spools):
            stale.unlink(missing_ok=True)
    partitions = await asyncio.to_thread(_partitions, job, context, cluster)
    if run.progress.total is None and partitions and partitions[-1].stop < UNKNOWN_ROWS:
        run.progress.total = partitions[-1].stop  # an API's rows, which the driver counted as it listed the pages
    settings: dict[str, Any] = {
        "input_path": options.input_path,
        "retry_failed": options.retry_failed,
        "keep_stale": options.keep_stale,
        "record_answers": options.record_answers,
        "scope": options.scope,
        "state": options.state,
        "cache": options.cache,
        "grace": options.grace,
        "run_id": run.run_id,
    }
    channel = f"sleipnir-{run.run_id}-{uuid.uuid4().hex[:8]}"
    async with open_client(cluster) as client:
        stop = dask().Event(channel, client=client)
        await dask().Variable(f"{channel}-pauses", client=client).set({})
        workers = len(client.scheduler_info().get("workers") or ()) or cluster.workers
        settings["limit_share"] = 1.0 / workers
        futures = [
            client.submit(run_partition, job.plan, settings, p, channel, pure=False, key=f"sleipnir-{run.run_id}-{p.number}")
            for p in partitions
        ]
        numbers = {future.key: p.number for future, p in zip(futures, partitions, strict=True)}
        written: dict[int, int] = {}
        """Rows each partition's last run wrote: a file sink checks its spool against them (`absorb`)."""
        live = LiveCounts(run.progress)

        def reported(event: tuple[float, Any]) -> None:
            message = event[1]
            live.report(int(message["number"]), dict(message["counts"]))
            run.progress_now()

        client.subscribe_topic(progress_topic(channel), reported)
        watcher = asyncio.create_task(_publish_stop(job, stop))
        try:
            async for future in dask().as_completed(futures):
                try:
                    done = await future
                except Exception as error:  # a partition that could not run: a worker killed too often, a bug
                    run.stop("failed", f"a partition failed on the cluster: {error}")
                    continue
                number = numbers[future.key]
                written[number] = int(done["counts"]["succeeded"])
                live.finish(number)
                add_counts(run.progress, done)
                run.progress.limits.update(done["limits"])
                if len(run.result.errors) < 1000:
                    run.result.errors.extend(ItemFailure(**e) for e in done["errors"])
                for notice in done["notices"]:
                    run.notice(notice)
                if done["stop"] is not None:
                    reason, message = done["stop"]
                    run.stop(reason, message)
                run.progress_now()
        finally:
            with contextlib.suppress(Exception):  # a scheduler gone: the error that ended the run is the one to show
                client.unsubscribe_topic(progress_topic(channel))
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await client.cancel(futures)
    if spools is not None:
        await asyncio.to_thread(sink.absorb, await asyncio.to_thread(spools), written)


async def _publish_stop(job: JobRun, stop: Any) -> None:
    while job.context.stopping is None:
        await asyncio.sleep(0.2)
    await stop.set()


def _partitions(job: JobRun, context: IOContext, cluster: ClusterOptions) -> list[Partition]:
    run = job.context
    options = job.options
    total = run.progress.total
    size = cluster.partition_size or max(
        SMALLEST_PARTITION, WAVES * run.shape.concurrency, math.ceil((total or 0) / (cluster.workers * PARTITIONS_PER_WORKER))
    )
    spread = 0 if cluster.partition_size or total is not None else cluster.workers * PARTITIONS_PER_WORKER
    found = split_input(
        run.shape.source, context, input_path=options.input_path, total=total, size=size, key_field=run.key_field, spread=spread
    )
    limit = options.limit
    chosen = [p for p in found if limit is None or p.first < limit]
    if limit is not None:
        chosen = [dataclasses.replace(p, stop=min(p.stop, limit), repeats=tuple(r for r in p.repeats if r < limit)) for p in chosen]
    return [dataclasses.replace(p, key_field=run.key_field) for p in chosen]


@contextlib.asynccontextmanager
async def shared_cluster(cluster: ClusterOptions) -> AsyncIterator[ClusterOptions]:
    """A local cluster for several runs at once (a pipeline's independent jobs), closed after them."""
    _quiet()
    async with _local_cluster(dask(), cluster) as local:
        yield dataclasses.replace(cluster, scheduler=local.scheduler_address, local=True)


@contextlib.asynccontextmanager
async def _local_cluster(distributed: Any, cluster: ClusterOptions) -> AsyncIterator[Any]:
    import dask.config

    with dask.config.set(WORKER_CONFIG):  # the nannies hand the settings to the workers they start
        async with distributed.LocalCluster(
            n_workers=cluster.workers, threads_per_worker=1, processes=True, asynchronous=True, dashboard_address=None
        ) as local:
            yield local


def _quiet() -> None:
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.asynccontextmanager
async def open_client(cluster: ClusterOptions) -> AsyncIterator[Any]:
    """A client of the scheduler `cluster` names, or of a local cluster started now and closed after."""
    distributed = dask()
    _quiet()
    if cluster.scheduler:
        try:
            client = await distributed.Client(cluster.scheduler, asynchronous=True, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as error:
            raise RunStopped("failed", f"cannot reach the Dask scheduler at {cluster.scheduler}: {error}") from error
        try:
            yield client
        finally:
            await client.close()
        return
    async with _local_cluster(distributed, cluster) as local, distributed.Client(local, asynchronous=True) as client:
        yield client
