"""`sleipnir serve`: a long-running service that runs every job with a schedule or triggers.

One asyncio loop holds everything:

- the scheduler sleeps until the next fire time of any job (on an injectable `Clock`), makes up runs a downtime
  missed at start (`catchup`), and applies `overlap` when a run comes due while the job's previous run goes;
- `file_created` triggers watch their glob's folder with watchfiles; each new file is one run's input, once
  (the state store remembers it across restarts);
- an aiohttp server takes webhook POSTs (authenticated, size-limited, JSON-checked; the body is the run's
  input), and answers `/metrics` (Prometheus text) and `/healthz`;
- the workspace's YAML files are watched: a change recompiles, and a compile with errors keeps the plans that
  run and logs the diagnostics.

Every scheduled or triggered run first checks the job's `conditions` (held back: logged and counted), then runs
as a `JobRun` (a pipeline with `run_pipeline`); its metrics go to `RunMetrics`, then to the alerts.

The parts: `scheduler.py` (the scheduler loop), `watchers.py` (file triggers and the workspace), `http.py`
(webhooks, `/metrics`, `/healthz`), `runs.py` (how a served job runs); `Service` holds what they share and
starts, reloads and drains them.

Triggered runs of one job run one at a time, in arrival order (a file or a POST body is data: it is never
dropped), unless the job's `overlap` is `allow`. SIGTERM or SIGINT stops taking new runs, asks every running job
to stop gracefully (the calls in flight end, what is done is written), waits for them, and returns 0; a second
signal cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ...compiler.ir import thaw
from ...compiler.ir.common import workspace_paths_of
from ...compiler.planner import PlanResult
from ...compiler.planner import plan as compile_plan
from ..engine.job import DEFAULT_STATE, JobRun, RunResult
from ..engine.pipeline import PipelineResult
from .alerts import AlertDispatcher
from .clock import Clock, FastClock, SystemClock
from .http import BODY_LIMIT, HttpApp
from .jobs import ServedJob, TriggerOutcome, log_crash, log_event, newest_plans, served_document
from .metrics import RunMetrics
from .runs import Runs
from .scheduler import HANDLED_BEFORE, Scheduler
from .triggers import FileGlob, TriggerState, connections
from .watchers import Watchers

__all__ = [
    "BODY_LIMIT",
    "Clock",
    "FastClock",
    "Service",
    "SystemClock",
    "TriggerOutcome",
]

Cost = Callable[[Mapping[str, Any], str], float | None]


class Service:
    """The serve process's state: the compiled workspace, the served jobs, and the tasks that run them.

    `workspace` is the workspace folder (or a folder or file inside it). `clock` is the scheduler's time (the
    system clock by default); `cost(tokens_by_model, root)` estimates a run's cost for the metrics; `metrics`
    is a `RunMetrics` (one is made when None)."""

    def __init__(
        self,
        workspace: str | Path,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        body_limit: int = BODY_LIMIT,
        metrics: Any = None,
        cost: Cost | None = None,
    ) -> None:
        self.workspace = str(workspace)
        self.clock: Clock = clock or SystemClock()
        self.environ = dict(os.environ if environ is None else environ)
        self.host = host
        self.port = port
        self.body_limit = body_limit
        self.metrics = metrics if metrics is not None else RunMetrics()
        self.cost = cost
        self.alerts: AlertDispatcher | None = None
        self.one_off = False
        """True for `trigger`: no `/metrics` is served."""
        self.root = "."
        self.manifest: Mapping[str, Any] = {}
        self.jobs: dict[str, ServedJob] = {}
        self.endpoints: dict[str, tuple[str, Mapping[str, Any]]] = {}
        """Webhook path -> (job name, trigger)."""
        self.globs: dict[str, tuple[FileGlob, ...]] = {}
        self.state: TriggerState | None = None
        self.started = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.runs_in_flight: set[JobRun] = set()
        self.run_tasks: set[asyncio.Task[Any]] = set()
        self.files_seen: set[tuple[str, str]] = set()
        self.watcher_tasks: list[asyncio.Task[None]] = []
        self.stop_watching = asyncio.Event()
        self.wake = asyncio.Event()
        self.stopped = asyncio.Event()
        self.draining = False
        self._signals = 0
        self.http_runner: web.AppRunner | None = None
        self.scheduler = Scheduler(self)
        self.runs = Runs(self)
        self.watchers = Watchers(self)
        self.http = HttpApp(self)

    def compile(self, target: str | None = None) -> PlanResult:
        """Compile the workspace's scheduled and triggered jobs and pipelines, or the one `target` names
        (synchronous; call it from a thread in the loop)."""
        if target is not None:
            return compile_plan(target, workspace=self.workspace, environ=self.environ)
        return compile_plan(workspace=self.workspace, environ=self.environ, select=served_document)

    def _install(self, compiled: PlanResult, now: datetime) -> None:
        """Take the plans of a good compile: keep each job's scheduler state, recompute changed schedules."""
        self.take_workspace(compiled)
        served: dict[str, ServedJob] = {}
        for plan in newest_plans(compiled):
            schedule = self.scheduler.schedule_of(plan)
            if schedule is None and not (plan.settings.get("triggers") or ()):
                continue
            job = self.jobs.get(plan.name) or ServedJob(plan=plan)
            job.plan = plan
            self.runs.job_log(plan)
            if schedule != job.schedule or job.next_due is None:
                job.schedule = schedule
                job.next_due = self.scheduler.first_due(job, now)
            served[plan.name] = job
        self.jobs = served
        self.endpoints, self.globs = {}, {}
        for job in served.values():
            for trigger in thaw(job.plan.settings.get("triggers") or ()):
                if trigger.get("type") == "webhook":
                    endpoint = str(trigger["endpoint"])
                    if endpoint in self.endpoints:
                        log_event("config", f"webhook {endpoint} is taken by {self.endpoints[endpoint][0]}", job=job.name, level=logging.WARNING)
                        continue
                    self.endpoints[endpoint] = (job.name, trigger)
                    if not trigger.get("secret_env"):
                        log_event("config", f"{endpoint} has no secret_env: anyone who reaches the server can start the job", job=job.name, level=logging.WARNING)
                    elif not self.environ.get(str(trigger["secret_env"])):
                        secret = trigger["secret_env"]
                        log_event("config", f"{secret} is not set: {endpoint} answers 401", job=job.name, level=logging.WARNING)
                elif trigger.get("type") == "file_created":
                    reason = workspace_paths_of(job.plan).escape(str(trigger["path"]))
                    if reason is not None:
                        log_event("config", f"not watching {trigger['path']}: it {reason}", job=job.name, level=logging.WARNING)
                        continue
                    glob = FileGlob.under(str(trigger["path"]), self.root)
                    self.globs[job.name] = (*self.globs.get(job.name, ()), glob)

    def take_workspace(self, compiled: PlanResult) -> None:
        workspace = compiled.check.workspace
        self.root = str(Path(workspace.root or self.workspace).resolve())
        self.manifest = workspace.manifest.body if workspace.manifest is not None else {}

    async def serve(self) -> int:
        """Compile, start every part, and run until a signal or `stop()`; returns the exit code: 0 after a
        drain, 1 when the workspace does not compile, the port cannot be taken, or a second signal cut the drain
        short."""
        compiled = await asyncio.to_thread(self.compile)
        if not compiled.ok:
            log_event("start", "the workspace does not compile; serve did not start:\n" + compiled.rendered(), level=logging.ERROR)
            return 1
        now = self.clock.now()
        self._install(compiled, now)
        self.state = await asyncio.to_thread(self._open_state)
        self._install_signals()  # before the listener says it is up: a SIGTERM from then on drains, never kills
        try:
            await self.http.start()
        except OSError as error:
            log_event("start", f"cannot listen on {self.host}:{self.port}: {error.strerror or error}", level=logging.ERROR)
            await asyncio.to_thread(self.state.close)
            return 1
        if not self.stopped.is_set():  # a signal during start-up: nothing new starts, and the catch-up waits for next time
            await self.scheduler.catch_up(now)
            self.watchers.restart()
            self.spawn(self.scheduler.loop(), self._tasks)
            self.spawn(self.scheduler.prune(), self._tasks)
            self.spawn(self.watchers.watch_workspace(), self._tasks)
            self.spawn(self.http.resume_incoming(), self._tasks)
            served = ", ".join(sorted(self.jobs)) or "none (waiting for a job with a schedule or triggers)"
            log_event("start", f"serving {len(self.jobs)} jobs: {served}")
        await self.stopped.wait()
        await self._drain()
        return 0 if self._signals < 2 else 1

    def stop(self) -> None:
        """Stop taking runs, drain the running ones, and make `serve` return."""
        self.stopped.set()
        self.wake.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1:
            log_event("stop", f"{name}: finishing the running jobs, then stopping")
            self.stop()
        else:
            log_event("stop", f"{name} again: cancelling the running jobs", level=logging.WARNING)
            for task in list(self.run_tasks):
                task.cancel()

    async def _drain(self) -> None:
        self.draining = True
        self.stop_watching.set()
        for task in [*self._tasks, *self.watcher_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self.watcher_tasks, return_exceptions=True)
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        for run in list(self.runs_in_flight):
            run.stop("interrupted", "serve is stopping: the calls in flight finished, what is done is written")
        if self.run_tasks:
            log_event("stop", f"waiting for {len(self.run_tasks)} runs to stop")
        await asyncio.gather(*self.run_tasks, return_exceptions=True)
        if self.state is not None:
            now = self.clock.now()
            for job in self.jobs.values():
                if job.schedule is not None:  # up to the first fire time the scheduler did not take up
                    until = now if job.next_due is None else min(now, job.next_due - HANDLED_BEFORE)
                    await asyncio.to_thread(self.state.set_handled_until, job.name, until)
            await asyncio.to_thread(self.state.close)
        if self.alerts is not None:
            await asyncio.to_thread(self.alerts.close)
        log_event("stop", "stopped")

    def spawn(self, work: Coroutine[Any, Any, Any], into: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        into.add(task)
        task.add_done_callback(into.discard)
        task.add_done_callback(log_crash)
        return task

    def state_url(self) -> str:
        """The run ledger's URL: the manifest's `state:` (a path, a URL or a connection's name) or the default."""
        url = str(self.manifest.get("state") or DEFAULT_STATE)
        return connections(None, self.manifest, self.environ).get(url, url)

    def _open_state(self) -> TriggerState:
        return TriggerState(self.state_url(), self.root)

    async def run_scheduled(self, job: ServedJob, fire: datetime) -> RunResult | PipelineResult:
        # A fire time is a new run over the source as it is now, with a ledger entry of its own: a second fire
        # time does not find every item done by the first, and overlapping runs (`overlap: allow`) keep apart.
        return await self.runs.execute(job, None, scope=f"schedule:{fire.isoformat()}")

    async def trigger(self, name: str, input_path: str | None = None) -> TriggerOutcome:
        """Run one job or pipeline of the workspace by hand, through the serve path: its conditions are checked
        first. Raises LookupError when the workspace has no such job, ValueError when it does not compile."""
        compiled = await asyncio.to_thread(self.compile, name)
        errors = [d.code for d in compiled.diagnostics if d.severity == "error"]
        if errors and set(errors) == {"unknown-target"}:  # beside other errors, they are shown with it
            raise LookupError(name)
        if not compiled.ok:
            raise ValueError(compiled.rendered())
        plans = {p.name: p for p in newest_plans(compiled)}
        if name not in plans:
            raise LookupError(name)
        self.take_workspace(compiled)
        self.one_off = True
        job = ServedJob(plan=plans[name], schedule=self.scheduler.schedule_of(plans[name]))
        self.runs.job_log(job.plan)
        try:
            reason = await self.runs.held(job.plan)
            if reason is not None:
                log_event("held", f"held back (trigger): {reason}", job=name)
                self.metrics.held(name, reason.partition(":")[0])
                return TriggerOutcome(status="held", reason=reason)
            result = await self.runs.execute(job, os.path.abspath(input_path) if input_path else None)
            return TriggerOutcome(status="ran", result=result)
        finally:
            if self.alerts is not None:
                await asyncio.to_thread(self.alerts.close)

    async def reload(self) -> bool:
        """Recompile the workspace; take the new plans when they compile, else keep the old ones and log the
        diagnostics. Returns whether the new plans were taken."""
        compiled = await asyncio.to_thread(self.compile)
        if not compiled.ok:
            log_event("reload", "the workspace changed and does not compile; the plans that run are kept:\n" + compiled.rendered(), level=logging.ERROR)
            return False
        globs = self.globs
        self._install(compiled, self.clock.now())
        if globs != self.globs:
            self.watchers.restart()
        self.wake.set()
        log_event("reload", f"reloaded: serving {len(self.jobs)} jobs: {', '.join(sorted(self.jobs)) or 'none'}")
        return True
