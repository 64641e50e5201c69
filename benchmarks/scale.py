"""How far does the `dask` engine scale a job out, and what limits it on paper?

In one run, against the loopback OpenAI-compatible server (`tests/llm_server.py`, `--responder fixed`) answering
after 50 ms, with a PostgreSQL state store for both engines (the dask engine on a cluster needs one):

- items/s of the same job (the `runtime.py` benchmark's: one prompt, structured outputs, a JSON Lines file sink)
  run by the local engine (one process, `execution.concurrency` 100) and by the dask engine on a running
  2-worker local cluster (concurrency 100 in each worker; the cluster started before the clock), best of
  `--repeat` interleaved rounds; **the goal is at least 1.5x**. The dask engine also runs with its workers'
  bound on what a kill loses (`job.PARTITION_BOUND`, 1 x concurrency) set to a local run's 2x, to show what the
  tighter bound costs;
- the state store's recording ceiling: items recorded per second (each item one answer and one outcome, in
  grouped commits of 100, as the runtime groups them) by 1 and by 4 writers at once, each with its own
  connection: the cluster's scaling limit on paper, however many workers call the model;
- the time to start (and to close) a 2-worker `LocalCluster`, the dask engine's embedded default.

    python benchmarks/scale.py                       # 10,000 items, best of 2
    python benchmarks/scale.py --items 4000 --repeat 1

PostgreSQL at 127.0.0.1:5432, database `test` (`--state` for another URL). No assertion on time; a run fails
only if it does not process every item.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dask.config as dask_config
import psycopg

from sleipnir.compiler.ir import Plan
from sleipnir.runtime.distributed import dask
from sleipnir.runtime.distributed.driver import WORKER_CONFIG
from sleipnir.runtime.engine import job
from sleipnir.runtime.engine.job import JobRun, RunOptions
from sleipnir.runtime.engine.ledger import Answer, Ledger, Outcome
from sleipnir.runtime.engine.state import ClusterOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
bench: Any = importlib.import_module("runtime")
"""The runtime benchmark, beside this file: its workload (workspace, job, server) is the one measured here."""

LATENCY = 0.05
GOAL = 1.5
GROUP = 100


async def timed_run(job_plan: Plan, options: RunOptions, items: int) -> float:
    started = time.perf_counter()
    result = await JobRun(job_plan, options).run()
    wall = time.perf_counter() - started
    assert result.ok, f"the run failed: {result.status}: {result.message} {result.errors[:3]}"
    assert result.progress.succeeded == items, f"{result.progress.succeeded} of {items} items succeeded"
    return items / wall


def throughput(state: str, items: int, repeat: int, workers: int) -> dict[str, float]:
    """Best items/s of the local engine, and of the dask engine on a running local cluster with the workers' bound
    on what a kill loses at 1 x concurrency (`job.PARTITION_BOUND`, what they run) and at 2 x (a local run's),
    in interleaved rounds."""
    server_module = bench.load_server_module()
    distributed = dask()
    with (
        server_module.LLMServer(latency=LATENCY, responder="fixed") as server,
        tempfile.TemporaryDirectory(prefix="sleipnir-scale-bench-") as folder,
        dask_config.set(WORKER_CONFIG),  # the workers a run's own local cluster starts (driver.py)
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        job_plan = bench.compile_job(bench.write_workspace(Path(folder), items, server.base_url, 100))
        base = {"fresh": True, "environ": bench.ENVIRON, "state": state}
        local_options = RunOptions(**base)  # type: ignore[arg-type]
        dask_options = RunOptions(**base, engine="dask", cluster=ClusterOptions(scheduler=cluster.scheduler_address))  # type: ignore[arg-type]
        best = dict.fromkeys(("local", "dask", "dask 2x"), 0.0)
        for round_ in range(repeat):
            order = list(best) if round_ % 2 == 0 else list(reversed(best))
            for variant in order:
                if variant == "local":
                    rate = asyncio.run(timed_run(job_plan, local_options, items))
                else:
                    client.run(_set_partition_bound, 2 if variant == "dask 2x" else job.PARTITION_BOUND)
                    rate = asyncio.run(timed_run(job_plan, dask_options, items))
                best[variant] = max(best[variant], rate)
        return best


def _set_partition_bound(bound: int) -> None:
    """In a worker process: the bound its partitions' runs take (`job.PARTITION_BOUND`)."""
    job.PARTITION_BOUND = bound


def recording_ceiling(state: str, items: int, writers: int) -> float:
    """Items recorded per second (an answer and an outcome each, committed `GROUP` at a time) by `writers`."""
    scope = f"bench:{uuid.uuid4().hex[:8]}"
    share = items // writers
    ledgers = [Ledger(state) for _ in range(writers)]

    def write(ledger: Ledger, first: int) -> None:
        for start in range(first, first + share, GROUP):
            keys = [f"k{i}" for i in range(start, min(first + share, start + GROUP))]
            ledger.record_answers(scope, [Answer(key=k, call="p", fingerprint="f", output={"label": "good"}) for k in keys])
            ledger.record(scope, "run", [Outcome(key=k, status="succeeded", fingerprint="f") for k in keys])

    threads = [threading.Thread(target=write, args=(ledgers[w], w * share)) for w in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = share * writers / (time.perf_counter() - started)
    ledgers[0].reset(scope)
    for ledger in ledgers:
        ledger.close()
    return rate


def cluster_start(workers: int) -> tuple[float, float]:
    distributed = dask()
    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    client.wait_for_workers(workers)
    up = time.perf_counter() - started
    started = time.perf_counter()
    client.close()
    cluster.close()
    return up, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--state", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    try:
        psycopg.connect(args.state, connect_timeout=5).close()
    except psycopg.Error as exc:
        print(f"PostgreSQL is needed at {args.state}: {exc}", file=sys.stderr)
        return 2
    up, down = cluster_start(args.workers)
    print(f"LocalCluster of {args.workers} worker processes: started in {up:.2f} s, closed in {down:.2f} s")
    for writers in (1, 4):
        rate = recording_ceiling(args.state, 20_000, writers)
        print(f"state store ceiling, PostgreSQL, {writers} writer(s), commits of {GROUP}: {rate:,.0f} items recorded/s")
    best = throughput(args.state, args.items, args.repeat, args.workers)
    local, cluster, loose = best["local"], best["dask"], best["dask 2x"]
    print(f"{args.items:,} items at {LATENCY * 1000:.0f} ms, concurrency 100 (per worker), best of {args.repeat}, interleaved:")
    print(f"  local engine, one process:   {local:,.0f} items/s")
    print(f"  dask engine, {args.workers} workers:      {cluster:,.0f} items/s (a kill loses at most 1 x concurrency calls)")
    print(f"  the same, bound 2 x:         {loose:,.0f} items/s ({cluster / loose:.2f}x of it)")
    ratio = cluster / local
    print(f"  ratio: {ratio:.2f}x ({'meets' if ratio >= GOAL else 'misses'} the goal of at least {GOAL}x)")
    print(f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
