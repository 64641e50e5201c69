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

Triggered runs of one job run one at a time, in arrival order (a file or a POST body is data: it is never
dropped), unless the job's `overlap` is `allow`. SIGTERM or SIGINT stops taking new runs, asks every running job
to stop gracefully (the calls in flight end, what is done is written), waits for them, and returns 0; a second
signal cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ..compiler.ir import JobStep, Plan, thaw
from ..compiler.planner import PlanResult
from ..compiler.planner import plan as compile_plan
from .alerts import AlertDispatcher
from .logs import configure, log_hooks, logger_name, secrets_in
from .metrics import RunMetrics, export_after_run
from .pipeline import PipelineResult, run_pipeline
from .run import DEFAULT_STATE, Hooks, JobRun, RunOptions, RunResult, RunStopped, chain_hooks
from .schedule import CronSchedule, overlap_decision
from .triggers import (
    FileGlob,
    TriggerState,
    WebhookBodyError,
    conditions_hold,
    connection_for,
    connections,
    new_files,
    settled,
    verify,
    webhook_rows,
    write_incoming,
)

__all__ = [
    "BODY_LIMIT",
    "Clock",
    "FastClock",
    "Service",
    "SystemClock",
    "TriggerOutcome",
]

BODY_LIMIT = 1 << 20
"""The largest webhook body taken (1 MiB); a larger one gets 413."""
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
SETTLE_SECONDS = 0.2
"""A new file is taken once its size and mtime stay the same this long (a writer may still be writing)."""

log = logging.getLogger("sleipnir.serve")


# -- clocks -------------------------------------------------------------------------------------------------


class Clock(Protocol):
    """Where the scheduler reads the time and waits for it: the system clock, or a simulated one in tests."""

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...

    async def sleep_until(self, moment: datetime) -> None:
        """Return at `moment` (at once when it has passed)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        # Re-read the wall clock at least every 30 s: a suspended machine or a stepped clock does not leave the
        # scheduler asleep past a fire time.
        while (left := (moment - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(left, 30.0))


class FastClock:
    """Simulated time for tests and demos: starts at `start` (default: now) and runs `factor` times as fast as
    the real clock, so a day of cron fire times passes in seconds."""

    def __init__(self, start: datetime | None = None, factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError("a clock's factor must be above 0")
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.factor = factor
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.factor)

    async def sleep_until(self, moment: datetime) -> None:
        while (left := (moment - self.now()).total_seconds()) > 0:
            await asyncio.sleep(left / self.factor)


# -- served jobs --------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Job:
    """A served job or pipeline: its current plan and the scheduler's mutable state for it."""

    plan: Plan
    schedule: CronSchedule | None = None
    next_due: datetime | None = None
    running: int = 0
    waiting: int = 0
    """Scheduled runs queued behind a running one (`overlap: queue`)."""
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the job's run unless its overlap is `allow`: runs of one job take turns."""

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def overlap(self) -> str:
        return self.schedule.overlap if self.schedule else "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerOutcome:
    """What `Service.trigger` did: `held` (with the reason) or `ran` (with the result)."""

    status: str
    reason: str = ""
    result: RunResult | PipelineResult | None = None


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
        self.jobs: dict[str, _Job] = {}
        self.endpoints: dict[str, tuple[str, Mapping[str, Any]]] = {}
        """Webhook path -> (job name, trigger)."""
        self.globs: dict[str, tuple[FileGlob, ...]] = {}
        self.state: TriggerState | None = None
        self.started = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: set[JobRun] = set()
        self._run_tasks: set[asyncio.Task[Any]] = set()
        self._files_seen: set[tuple[str, str]] = set()
        self._watchers: list[asyncio.Task[None]] = []
        self._stop_watching = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._draining = False
        self._signals = 0
        self._runner: web.AppRunner | None = None

    # -- compiling --------------------------------------------------------------------------------------------

    def compile(self, target: str | None = None) -> PlanResult:
        """Compile the workspace's scheduled and triggered jobs and pipelines, or the one `target` names
        (synchronous; call it from a thread in the loop)."""
        if target is not None:
            return compile_plan(target, workspace=self.workspace, environ=self.environ)
        return compile_plan(workspace=self.workspace, environ=self.environ, select=_served)

    def _install(self, compiled: PlanResult, now: datetime) -> None:
        """Take the plans of a good compile: keep each job's scheduler state, recompute changed schedules."""
        self._take_workspace(compiled)
        served: dict[str, _Job] = {}
        for plan in _newest(compiled):
            schedule = self._schedule_of(plan)
            if schedule is None and not (plan.settings.get("triggers") or ()):
                continue
            job = self.jobs.get(plan.name) or _Job(plan=plan)
            job.plan = plan
            self._job_log(plan)
            if schedule != job.schedule or job.next_due is None:
                job.schedule = schedule
                job.next_due = self._first_due(job, now)
            served[plan.name] = job
        self.jobs = served
        self.endpoints, self.globs = {}, {}
        for job in served.values():
            for trigger in thaw(job.plan.settings.get("triggers") or ()):
                if trigger.get("type") == "webhook":
                    endpoint = str(trigger["endpoint"])
                    if endpoint in self.endpoints:
                        _log("config", f"webhook {endpoint} is taken by {self.endpoints[endpoint][0]}", job=job.name, level=logging.WARNING)
                        continue
                    self.endpoints[endpoint] = (job.name, trigger)
                    if not trigger.get("secret_env"):
                        _log("config", f"{endpoint} has no secret_env: anyone who reaches the server can start the job", job=job.name, level=logging.WARNING)
                    elif not self.environ.get(str(trigger["secret_env"])):
                        secret = trigger["secret_env"]
                        _log("config", f"{secret} is not set: {endpoint} answers 401", job=job.name, level=logging.WARNING)
                elif trigger.get("type") == "file_created":
                    glob = FileGlob.under(str(trigger["path"]), self.root)
                    self.globs[job.name] = (*self.globs.get(job.name, ()), glob)

    def _take_workspace(self, compiled: PlanResult) -> None:
        workspace = compiled.check.workspace
        self.root = str(Path(workspace.root or self.workspace).resolve())
        self.manifest = workspace.manifest.body if workspace.manifest is not None else {}

    def _schedule_of(self, plan: Plan) -> CronSchedule | None:
        settings = plan.settings.get("schedule")
        if not settings:
            return None
        try:
            return CronSchedule.from_settings(thaw(settings))
        except (KeyError, ValueError) as error:
            _log("config", f"its schedule cannot run: {error}", job=plan.name, level=logging.ERROR)
            return None

    def _first_due(self, job: _Job, now: datetime) -> datetime | None:
        if job.schedule is None or not job.schedule.enabled:
            return None
        return self._next(job, job.schedule.first_due, now)

    def _next(self, job: _Job, step: Callable[[datetime], datetime], moment: datetime) -> datetime | None:
        try:
            return step(moment)
        except (ValueError, KeyError, StopIteration) as error:  # croniter found no date (a 30 February)
            _log("config", f"no next fire time for {job.schedule}: {error}", job=job.name, level=logging.ERROR)
            return None

    # -- the service --------------------------------------------------------------------------------------

    async def serve(self) -> int:
        """Compile, start every part, and run until a signal or `stop()`; returns the exit code: 0 after a
        drain, 1 when the workspace does not compile, the port cannot be taken, or a second signal cut the drain
        short."""
        compiled = await asyncio.to_thread(self.compile)
        if not compiled.ok:
            _log("start", "the workspace does not compile; serve did not start:\n" + _rendered(compiled), level=logging.ERROR)
            return 1
        now = self.clock.now()
        self._install(compiled, now)
        self.state = await asyncio.to_thread(self._open_state)
        try:
            await self._start_http()
        except OSError as error:
            _log("start", f"cannot listen on {self.host}:{self.port}: {error.strerror or error}", level=logging.ERROR)
            await asyncio.to_thread(self.state.close)
            return 1
        self._install_signals()
        await self._catch_up(now)
        self._restart_watchers()
        self._spawn(self._scheduler(), self._tasks)
        self._spawn(self._watch_workspace(), self._tasks)
        self._spawn(self._resume_incoming(), self._tasks)
        served = ", ".join(sorted(self.jobs)) or "none (waiting for a job with a schedule or triggers)"
        _log("start", f"serving {len(self.jobs)} jobs: {served}")
        await self._stopped.wait()
        await self._drain()
        return 0 if self._signals < 2 else 1

    def stop(self) -> None:
        """Stop taking runs, drain the running ones, and make `serve` return."""
        self._stopped.set()
        self._wake.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1:
            _log("stop", f"{name}: finishing the running jobs, then stopping")
            self.stop()
        else:
            _log("stop", f"{name} again: cancelling the running jobs", level=logging.WARNING)
            for task in list(self._run_tasks):
                task.cancel()

    async def _drain(self) -> None:
        self._draining = True
        self._stop_watching.set()
        for task in [*self._tasks, *self._watchers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._watchers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for run in list(self._runs):
            if run.stopping is None:
                run.stopping = RunStopped("interrupted", "serve is stopping: the calls in flight finished, what is done is written")
        if self._run_tasks:
            _log("stop", f"waiting for {len(self._run_tasks)} runs to stop")
        await asyncio.gather(*self._run_tasks, return_exceptions=True)
        if self.state is not None:
            now = self.clock.now()
            for job in self.jobs.values():
                if job.schedule is not None:
                    await asyncio.to_thread(self.state.set_handled_until, job.name, now)
            await asyncio.to_thread(self.state.close)
        if self.alerts is not None:
            await asyncio.to_thread(self.alerts.close)
        _log("stop", "stopped")

    def _spawn(self, work: Coroutine[Any, Any, Any], into: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        into.add(task)
        task.add_done_callback(into.discard)
        task.add_done_callback(_log_crash)
        return task

    def _open_state(self) -> TriggerState:
        url = str(self.manifest.get("state") or DEFAULT_STATE)
        return TriggerState(connections(None, self.manifest, self.environ).get(url, url), self.root)

    # -- scheduling -----------------------------------------------------------------------------------------

    async def _catch_up(self, now: datetime) -> None:
        """Make up the runs missed while serve was down, per each schedule's `catchup`."""
        assert self.state is not None
        for job in self.jobs.values():
            if job.schedule is None:
                continue
            last = await asyncio.to_thread(self.state.handled_until, job.name)
            missed = job.schedule.missed(last, now)
            if missed:
                shown = ", ".join(m.isoformat() for m in missed[:5]) + (" ..." if len(missed) > 5 else "")
                _log("catchup", f"making up {len(missed)} missed runs ({job.schedule.catchup}): {shown}", job=job.name)
                self._spawn(self._make_up(job, missed), self._run_tasks)
            await asyncio.to_thread(self.state.set_handled_until, job.name, now)

    async def _make_up(self, job: _Job, missed: list[datetime]) -> None:
        for fire in missed:  # one at a time, oldest first
            if self._draining:
                return
            await self._guarded(job, f"catch-up of {fire.isoformat()}", functools.partial(self._scheduled, job, fire))

    async def _scheduler(self) -> None:
        assert self.state is not None
        while not self._stopped.is_set():
            self._wake.clear()  # before reading the plans: a reload from here on wakes the next wait
            now = self.clock.now()
            handled: dict[str, datetime] = {}
            for job in list(self.jobs.values()):
                while job.next_due is not None and job.next_due <= now and job.schedule is not None:
                    fire = job.next_due
                    job.next_due = self._next(job, job.schedule.next_fire, fire)
                    self._fire(job, fire)
                    handled[job.name] = fire
            for name, fire in handled.items():
                await asyncio.to_thread(self.state.set_handled_until, name, fire)
            due = [job.next_due for job in self.jobs.values() if job.next_due is not None]
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            if due:
                waits.append(asyncio.ensure_future(self.clock.sleep_until(min(due))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    def _fire(self, job: _Job, fire: datetime) -> None:
        decision = overlap_decision(job.overlap, running=job.running, waiting=job.waiting)
        cause = f"schedule {fire.isoformat()}"
        if decision == "skip":
            _log("skipped", f"skipped the run due {fire.isoformat()}: the previous run is still going (overlap: {job.overlap})", job=job.name)
            self.metrics.skipped(job.name, "overlap")
            return
        if decision == "queue":
            _log("queued", f"the run due {fire.isoformat()} waits for the previous one", job=job.name)
        self._spawn(self._guarded(job, cause, lambda: self._scheduled(job, fire), queued=decision == "queue"), self._run_tasks)

    async def _scheduled(self, job: _Job, fire: datetime) -> RunResult | PipelineResult:
        # A fire time is a new run over the source as it is now, with a ledger entry of its own: a second fire
        # time does not find every item done by the first, and overlapping runs (`overlap: allow`) keep apart.
        return await self._execute(job, None, scope=f"schedule:{fire.isoformat()}")

    # -- runs ---------------------------------------------------------------------------------------------

    async def _guarded(
        self,
        job: _Job,
        cause: str,
        work: Callable[[], Coroutine[Any, Any, RunResult | PipelineResult | None]],
        *,
        queued: bool = False,
    ) -> RunResult | PipelineResult | None:
        """Run `work` in the job's turn (at once with `overlap: allow`), after its conditions: None when it is
        held back, or when serve began stopping before its turn came."""
        if queued:
            job.waiting += 1
        try:
            async with contextlib.AsyncExitStack() as turn:
                if job.overlap != "allow":
                    await turn.enter_async_context(job.gate)
                if queued:
                    job.waiting -= 1
                    queued = False
                if self._draining:
                    return None
                job.running += 1
                try:
                    reason = await self._held(job.plan)
                    if reason is not None:
                        _log("held", f"held back ({cause}): {reason}", job=job.name)
                        self.metrics.held(job.name, reason.partition(":")[0])
                        return None
                    _log("run_start", f"starting ({cause})", job=job.name)
                    return await work()
                finally:
                    job.running -= 1
        finally:
            if queued:  # cancelled while waiting for its turn
                job.waiting -= 1

    async def _held(self, plan: Plan) -> str | None:
        conditions = thaw(plan.settings.get("conditions") or ())
        if not conditions:
            return None
        schedule = plan.settings.get("schedule") or {}
        ok, reason = await asyncio.to_thread(
            conditions_hold,
            conditions,
            now=self.clock.now(),
            zone=str(schedule.get("timezone") or "UTC"),
            root=self.root,
            connection_for=lambda name: connection_for(plan, name, self.manifest, self.environ),
        )
        return None if ok else reason

    def _options(
        self, plan: Plan, input_path: str | None, *, scope: str | None = None, fresh: bool = False
    ) -> RunOptions:
        return RunOptions(
            input_path=input_path,
            scope=scope,
            fresh=fresh,
            environ=self.environ,
            state=self.manifest.get("state"),
            hooks=self._hooks(plan),
            handle_signals=self.one_off,  # in `serve`, the service handles the signals for all its runs
        )

    def _hooks(self, plan: Plan) -> Hooks:
        """The run's callbacks: its job's log (`logging:`), and its `alerts:` (item failures as they happen,
        the rules after the run, delivered on the dispatcher's thread)."""
        logger = self._job_log(plan)
        alerts = thaw(plan.settings.get("alerts") or ())
        if not alerts:
            return log_hooks(logger)
        if self.alerts is None:
            self.alerts = AlertDispatcher(self.manifest, self.root, self.environ, logger=log)
        with_cost = lambda metrics: {**metrics, "cost": self._cost(metrics, plan)}  # noqa: E731
        return chain_hooks(log_hooks(logger), self.alerts.hooks(plan.name, alerts, metrics=with_cost))

    def _job_log(self, plan: Plan) -> logging.Logger:
        settings = plan.settings.get("logging") or {}
        return configure(settings, job=plan.name, root=plan.root, secrets=secrets_in(plan, self.environ), environ=self.environ)

    def _cost(self, metrics: Mapping[str, Any], plan: Plan) -> float | None:
        return self.cost(metrics["tokens_by_model"], plan.root) if self.cost else None

    async def _execute(
        self, job: _Job, input_path: str | None, *, run: JobRun | None = None, scope: str | None = None
    ) -> RunResult | PipelineResult:
        plan = job.plan if run is None else run.plan
        options = self._options(plan, input_path, scope=scope) if run is None else run.options
        result: RunResult | PipelineResult
        if plan.kind == "pipeline":
            steps = [n for n in plan.nodes if isinstance(n, JobStep)]
            hooks = {step.id: self._hooks(step.plan) for step in steps}
            result = pipeline = await run_pipeline(
                plan, dataclasses.replace(options, hooks=Hooks()), job_hooks=hooks, runs=self._runs
            )
            runs = [(pipeline.jobs[step.id], step.plan) for step in steps if step.id in pipeline.jobs]
        else:
            run = run or JobRun(plan, options)
            self._runs.add(run)
            try:
                result = await run.run()
            finally:
                self._runs.discard(run)
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
            cost = self._cost(result.metrics, plan)
            if export_to == "prometheus" and not self.one_off:
                selected = monitoring.get("metrics")
                self.metrics.observe(result.job, result.status, result.metrics, cost, selected=selected)
            elif export_to != "none":
                done = export_after_run(monitoring, root=plan.root, job=result.job, status=result.status, metrics=result.metrics, cost=cost)
                if done:
                    _log("metrics", done, job=result.job, run_id=result.run_id)
        except Exception as error:  # the metrics never take the service down
            _log("internal_error", f"metrics: {type(error).__name__}: {error}", job=result.job, run_id=result.run_id, level=logging.ERROR)

    async def trigger(self, name: str, input_path: str | None = None) -> TriggerOutcome:
        """Run one job or pipeline of the workspace by hand, through the serve path: its conditions are checked
        first. Raises LookupError when the workspace has no such job, ValueError when it does not compile."""
        compiled = await asyncio.to_thread(self.compile, name)
        if any(d.code == "unknown-target" for d in compiled.diagnostics):
            raise LookupError(name)
        if not compiled.ok:
            raise ValueError(_rendered(compiled))
        plans = {p.name: p for p in _newest(compiled)}
        if name not in plans:
            raise LookupError(name)
        self._take_workspace(compiled)
        self.one_off = True
        job = _Job(plan=plans[name], schedule=self._schedule_of(plans[name]))
        self._job_log(job.plan)
        try:
            reason = await self._held(job.plan)
            if reason is not None:
                _log("held", f"held back (trigger): {reason}", job=name)
                self.metrics.held(name, reason.partition(":")[0])
                return TriggerOutcome(status="held", reason=reason)
            result = await self._execute(job, os.path.abspath(input_path) if input_path else None)
            return TriggerOutcome(status="ran", result=result)
        finally:
            if self.alerts is not None:
                await asyncio.to_thread(self.alerts.close)

    # -- file triggers --------------------------------------------------------------------------------------

    def _restart_watchers(self) -> None:
        for task in self._watchers:
            task.cancel()
        self._watchers = [
            asyncio.get_running_loop().create_task(self._watch_glob(name, glob))
            for name, globs in self.globs.items()
            for glob in globs
        ]
        for task in self._watchers:
            task.add_done_callback(_log_crash)

    async def _watch_glob(self, name: str, glob: FileGlob) -> None:
        _log("watch", f"watching {glob.pattern}", job=name)
        async for path in new_files(glob, self._stop_watching):
            self._spawn(self._file_seen(name, path), self._run_tasks)

    async def _file_seen(self, name: str, path: str) -> None:
        """One file a trigger saw: run it once, however often it is reported (a write reports several changes;
        a restart scans the folder again)."""
        key = (name, path)
        if key in self._files_seen or self._draining:
            return
        self._files_seen.add(key)
        try:
            stat = await settled(path, SETTLE_SECONDS)
            job = self.jobs.get(name)
            if stat is None or job is None or self.state is None:
                return
            size, mtime = stat
            record = await asyncio.to_thread(self.state.file, name, path)
            same = record is not None and (record.size, record.mtime) == (size, mtime)
            if same and record is not None and record.status != "started":
                return
            # A path seen before with other contents is a new file: its earlier items must not count as done.
            run = JobRun(job.plan, self._options(job.plan, path, fresh=record is not None and not same))
            await asyncio.to_thread(self.state.mark_file, name, path, size=size, mtime=mtime, status="started", run_id=run.run_id)
            result = await self._guarded(job, f"file {path}", lambda: self._execute(job, path, run=run))
            if (result is None and self._draining) or (isinstance(result, RunResult) and result.status == "interrupted"):
                return  # left `started`: the next start resumes it
            status = "held" if result is None else "done"
            await asyncio.to_thread(self.state.mark_file, name, path, size=size, mtime=mtime, status=status, run_id=run.run_id)
        finally:
            self._files_seen.discard(key)

    # -- workspace reload -----------------------------------------------------------------------------------

    async def _watch_workspace(self) -> None:
        from watchfiles import awatch

        def yaml_file(change: Any, path: str) -> bool:
            parts = Path(path).parts
            return path.endswith((".yaml", ".yml")) and ".sleipnir" not in parts and ".git" not in parts

        async for _changes in awatch(self.root, watch_filter=yaml_file, stop_event=self._stop_watching, step=50, debounce=400):
            await self.reload()

    async def reload(self) -> bool:
        """Recompile the workspace; take the new plans when they compile, else keep the old ones and log the
        diagnostics. Returns whether the new plans were taken."""
        compiled = await asyncio.to_thread(self.compile)
        if not compiled.ok:
            _log("reload", "the workspace changed and does not compile; the plans that run are kept:\n" + _rendered(compiled), level=logging.ERROR)
            return False
        globs = self.globs
        self._install(compiled, self.clock.now())
        if globs != self.globs:
            self._restart_watchers()
        self._wake.set()
        _log("reload", f"reloaded: serving {len(self.jobs)} jobs: {', '.join(sorted(self.jobs)) or 'none'}")
        return True

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _start_http(self) -> None:
        app = web.Application(client_max_size=self.body_limit)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/{path:.*}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])  # the port taken, when asked for port 0
        _log("listen", f"listening on http://{self.host}:{self.port}")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": PROMETHEUS_TEXT})

    async def _healthz(self, request: web.Request) -> web.Response:
        jobs = [
            {"name": job.name, "kind": job.plan.kind, "schedule": job.schedule.cron if job.schedule else None,
             "next_fire": job.next_due.isoformat() if job.next_due else None, "running": job.running,
             "triggers": [t.get("type") for t in job.plan.settings.get("triggers") or ()], "waiting": job.waiting}
            for job in sorted(self.jobs.values(), key=lambda j: j.name)
        ]  # fmt: skip
        uptime = round(time.monotonic() - self.started, 3)
        status = "draining" if self._draining else "ok"
        return web.json_response({"status": status, "uptime": uptime, "now": self.clock.now().isoformat(), "jobs": jobs})

    async def _webhook(self, request: web.Request) -> web.Response:
        found = self.endpoints.get(request.path)
        if found is None:
            return _error(404, f"no webhook at {request.path}")
        if self._draining:
            return _error(503, "serve is stopping")
        name, trigger = found
        too_large = _error(413, f"the body is over the limit of {self.body_limit} bytes")
        if request.content_length is not None and request.content_length > self.body_limit:
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        secret_env = trigger.get("secret_env")
        if secret_env and not verify(request.headers, body, self.environ.get(str(secret_env), "")):
            _log("unauthorized", f"webhook {request.path}: refused a request without a valid secret", job=name, level=logging.WARNING)
            return _error(401, "a bearer token or an X-Sleipnir-Signature is required", {"WWW-Authenticate": "Bearer"})
        try:
            rows = webhook_rows(body)
        except WebhookBodyError as error:
            return _error(400, str(error))
        job = self.jobs[name]
        path = await asyncio.to_thread(write_incoming, self.root, name, rows)
        run = JobRun(job.plan, self._options(job.plan, path))
        self._spawn(self._webhook_run(job, run, path), self._run_tasks)
        return web.json_response({"job": name, "run_id": run.run_id, "items": len(rows)}, status=202)

    async def _webhook_run(self, job: _Job, run: JobRun, path: str) -> None:
        result = await self._guarded(job, f"webhook {run.run_id}", lambda: self._execute(job, path, run=run))
        interrupted = self._draining and (result is None or getattr(result, "status", "") == "interrupted")
        if not interrupted:  # an interrupted body stays, and the next start runs it again (resuming)
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _resume_incoming(self) -> None:
        """Run again the webhook bodies a stop left behind (accepted, not finished)."""
        folder = Path(self.root, ".sleipnir", "incoming")
        left = await asyncio.to_thread(lambda: sorted(folder.glob("*/*.jsonl")) if folder.is_dir() else [])
        for path in left:
            job = self.jobs.get(path.parent.name)
            if job is not None:
                _log("resume", f"running a webhook body left by the last stop: {path.name}", job=job.name)
                run = JobRun(job.plan, self._options(job.plan, str(path)))
                self._spawn(self._webhook_run(job, run, str(path)), self._run_tasks)


# -- helpers ------------------------------------------------------------------------------------------------


def _newest(compiled: PlanResult) -> list[Plan]:
    """The plans to serve: each job's and pipeline's newest version."""
    registry = compiled.check.registry
    chosen = []
    for plan in compiled.plans:
        newest = registry.get(plan.kind, plan.name)
        if newest is None or plan.version is None or newest.version == plan.version:
            chosen.append(plan)
    return chosen


def _rendered(compiled: PlanResult) -> str:
    from ..compiler.render import RENDERERS

    return str(RENDERERS["human"](compiled.report, False))


def _log(event: str, message: str, *, job: str | None = None, run_id: str | None = None, level: int = logging.INFO) -> None:
    """One log record, with its event (and job and run) as fields. A job's record goes to the job's log (its
    `logging:` settings) once a run configured it; the service's own records go to `sleipnir.serve`."""
    fields: dict[str, Any] = {"event": event}
    if run_id:
        fields["run_id"] = run_id
    if job is None:
        log.log(level, message, extra=fields)
        return
    own = logging.getLogger(logger_name(job))
    (own if own.handlers else log).log(level, message, extra={**fields, "job": job})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        log.error(f"internal error: {type(error).__name__}: {error}", exc_info=error, extra={"event": "internal_error"})


def _served(document: Any) -> bool:
    """Whether `serve` runs a document: a job or pipeline with a schedule or triggers. The others are checked
    (a check error stops serve) but not planned, so a job that needs a secret only when run by hand does not."""
    body = document.body if isinstance(document.body, dict) else {}
    return bool(body.get("schedule") or body.get("triggers"))
