"""Running a pipeline's plan: its jobs in DAG order, independent branches at the same time.

A job starts when every job it depends on has succeeded. A job that fails stops its dependents (directly or
through others), which are recorded as skipped; jobs on other branches run to their end. The pipeline fails
when any job did, listing the failed and the skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field

import networkx as nx

from ...compiler.ir import JobStep, Plan, thaw
from .job import Hooks, JobRun, RunOptions, RunResult
from .state import ClusterOptions


@dataclass(slots=True, kw_only=True)
class PipelineResult:
    plan_id: str
    name: str
    status: str
    jobs: dict[str, RunResult] = field(default_factory=dict)
    """Entry id -> the run of its job."""
    skipped: list[str] = field(default_factory=list)
    """Entries not started because something they depend on failed."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> list[str]:
        return [entry for entry, run in self.jobs.items() if not run.ok]


async def run_pipeline(
    plan: Plan,
    options: RunOptions,
    *,
    job_hooks: dict[str, Hooks] | None = None,
    runs: set[JobRun] | None = None,
) -> PipelineResult:
    """Run every job of a pipeline plan; `options` apply to each job (its `--input` does not). The job runs in
    progress are kept in `runs`, so a caller can stop them (`serve` on SIGTERM); a stopped job stops its
    dependents like a failed one."""
    if plan.kind != "pipeline":
        raise ValueError("run_pipeline runs a pipeline plan")
    graph = plan.graph()
    steps = {node.id: node for node in plan.nodes if isinstance(node, JobStep)}
    result = PipelineResult(plan_id=plan.id, name=plan.name, status="running")
    finished: dict[str, asyncio.Event] = {entry: asyncio.Event() for entry in steps}

    async def run_entry(entry: str) -> None:
        try:
            for before in graph.predecessors(entry):
                await finished[before].wait()
            # Every predecessor has finished: it either ran (ok or not) or was skipped itself.
            if any(b in result.skipped or not result.jobs[b].ok for b in graph.predecessors(entry)):
                result.skipped.append(entry)
                return
            job_options = dataclasses.replace(
                options, input_path=None, hooks=(job_hooks or {}).get(entry, options.hooks)
            )
            run = JobRun(steps[entry].plan, job_options)
            if runs is not None:
                runs.add(run)
            try:
                result.jobs[entry] = await run.run()
            finally:
                if runs is not None:
                    runs.discard(run)
        finally:
            finished[entry].set()

    async with contextlib.AsyncExitStack() as stack:
        cluster = options.cluster or ClusterOptions()
        engines = {options.engine or str(thaw(s.plan.settings.get("execution") or {}).get("engine") or "local") for s in steps.values()}
        if "dask" in engines and not cluster.scheduler:
            # The jobs on the dask engine share one local cluster, so that independent ones run at once on it.
            from ..distributed.driver import shared_cluster

            options = dataclasses.replace(options, cluster=await stack.enter_async_context(shared_cluster(cluster)))
        await asyncio.gather(*(run_entry(entry) for entry in nx.topological_sort(graph)))
    result.status = "succeeded" if not result.failed and not result.skipped else "failed"
    return result
