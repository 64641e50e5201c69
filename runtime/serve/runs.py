"""How `serve` runs a job: in the job's turn (`overlap`), after its `conditions`, with its log and alerts as
hooks, then its metrics exported."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ...compiler.ir import JobStep, Plan, thaw
from ...compiler.ir.common import workspace_paths_of
from ..engine.job import Hooks, JobRun, RunOptions, RunResult, chain_hooks
from ..engine.pipeline import PipelineResult, run_pipeline
from ..engine.state import ClusterOptions
from .alerts import AlertDispatcher
from .jobs import ServedJob, log, log_event
from .logs import configure, log_hooks, secrets_in
from .metrics import export_after_run
from .triggers import conditions_hold, connection_for

if TYPE_CHECKING:
    from .service import Service


class NotStarted(Exception):
    """`serve` began stopping before the run's turn came: nothing of it ran."""


class Runs:
    """Runs the served jobs: guarded by their turn and conditions, logged, alerted on, measured."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def guarded(
        self,
        job: ServedJob,
        cause: str,
        work: Callable[[], Coroutine[Any, Any, RunResult | PipelineResult | None]],
        *,
        queued: bool = False,
    ) -> RunResult | PipelineResult | None:
        """Run `work` in the job's turn (at once with `overlap: allow`), after its conditions: None when it is
        held back. Raises NotStarted when serve began stopping before its turn came."""
        if queued:
            job.waiting += 1
        try:
            async with contextlib.AsyncExitStack() as turn:
                if job.overlap != "allow":
                    await turn.enter_async_context(job.gate)
                if queued:
                    job.waiting -= 1
                    queued = False
                if self.service.draining:
                    raise NotStarted
                job.running += 1
                try:
                    reason = await self.held(job.plan)
                    if reason is not None:
                        log_event("held", f"held back ({cause}): {reason}", job=job.name)
                        self.service.metrics.held(job.name, reason.partition(":")[0])
                        return None
                    log_event("run_start", f"starting ({cause})", job=job.name)
                    return await work()
                finally:
                    job.running -= 1
        finally:
            if queued:  # cancelled while waiting for its turn
                job.waiting -= 1

    async def held(self, plan: Plan) -> str | None:
        conditions = thaw(plan.settings.get("conditions") or ())
        if not conditions:
            return None
        schedule = plan.settings.get("schedule") or {}
        ok, reason = await asyncio.to_thread(
            conditions_hold,
            conditions,
            now=self.service.clock.now(),
            zone=str(schedule.get("timezone") or "UTC"),
            root=self.service.root,
            connection_for=lambda name: connection_for(plan, name, self.service.manifest, self.service.environ),
        )
        return None if ok else reason

    def options(
        self, plan: Plan, input_path: str | None, *, scope: str | None = None, fresh: bool = False
    ) -> RunOptions:
        return RunOptions(
            input_path=input_path,
            scope=scope,
            fresh=fresh,
            environ=self.service.environ,
            state=self.service.manifest.get("state"),
            cluster=ClusterOptions.of(self.service.manifest, self.service.environ),  # a job on the dask engine
            hooks=self.hooks(plan),
            handle_signals=self.service.one_off,  # in `serve`, the service handles the signals for all its runs
        )

    def hooks(self, plan: Plan) -> Hooks:
        """The run's callbacks: its job's log (`logging:`), and its `alerts:` (item failures as they happen,
        the rules after the run, delivered on the dispatcher's thread)."""
        logger = self.job_log(plan)
        alerts = thaw(plan.settings.get("alerts") or ())
        if not alerts:
            return log_hooks(logger)
        if self.service.alerts is None:
            self.service.alerts = AlertDispatcher(self.service.manifest, self.service.root, self.service.environ, logger=log)
        with_cost = lambda metrics: {**metrics, "cost": self.cost(metrics, plan)}  # noqa: E731
        return chain_hooks(log_hooks(logger), self.service.alerts.hooks(plan.name, alerts, metrics=with_cost))

    def job_log(self, plan: Plan) -> logging.Logger:
        settings = plan.settings.get("logging") or {}
        environ = self.service.environ
        return configure(
            settings, job=plan.name, root=plan.root, secrets=secrets_in(plan, environ), environ=environ,
            paths=workspace_paths_of(plan),
        )

    def cost(self, metrics: Mapping[str, Any], plan: Plan) -> float | None:
        return self.service.cost(metrics["tokens_by_model"], plan.root) if self.service.cost else None

    async def execute(
        self, job: ServedJob, input_path: str | None, *, run: JobRun | None = None, scope: str | None = None
    ) -> RunResult | PipelineResult:
        plan = job.plan if run is None else run.plan
        options = self.options(plan, input_path, scope=scope) if run is None else run.options
        result: RunResult | PipelineResult
        if plan.kind == "pipeline":
            steps = [n for n in plan.nodes if isinstance(n, JobStep)]
            hooks = {step.id: self.hooks(step.plan) for step in steps}
            result = pipeline = await run_pipeline(
                plan, dataclasses.replace(options, hooks=Hooks()), job_hooks=hooks, runs=self.service.runs_in_flight
            )
            runs = [(pipeline.jobs[step.id], step.plan) for step in steps if step.id in pipeline.jobs]
        else:
            run = run or JobRun(plan, options)
            self.service.runs_in_flight.add(run)
            try:
                result = await run.run()
            finally:
                self.service.runs_in_flight.discard(run)
            runs = [(result, plan)]
        for one, one_plan in runs:
            self._export(one, one_plan)
        return result

    def _export(self, result: RunResult, plan: Plan) -> None:
        """The run's metrics, as its job's `monitoring` says: into `/metrics` (`prometheus`), a textfile or a
        Pushgateway; a one-off run (`trigger`) has no `/metrics`, so `prometheus` writes the textfile."""
        monitoring = plan.settings.get("monitoring") or {}
        export_to = monitoring.get("export_to") or "none"
        try:
            cost = self.cost(result.metrics, plan)
            if export_to == "prometheus" and not self.service.one_off:
                selected = monitoring.get("metrics")
                self.service.metrics.observe(result.job, result.status, result.metrics, cost, selected=selected)
            elif export_to != "none":
                done = export_after_run(monitoring, root=plan.root, job=result.job, status=result.status, metrics=result.metrics, cost=cost)
                if done:
                    log_event("metrics", done, job=result.job, run_id=result.run_id)
        except Exception as error:  # the metrics never take the service down
            log_event("internal_error", f"metrics: {type(error).__name__}: {error}", job=result.job, run_id=result.run_id, level=logging.ERROR)
