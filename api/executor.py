"""`JobExecutor` and `AsyncJobExecutor`: compile a job or pipeline, then run its plan, from Python.

    from sleipnir import JobExecutor

    executor = JobExecutor("sentiment_analysis_job")
    executor.on("progress", lambda p: print(f"Progress: {p}%"))
    results = executor.run()

A thin facade: the compiler makes the plan (problems raise `CompileError` with every diagnostic), and the
runtime runs it. Callbacks: `start` gets nothing, `progress` a percentage (None while the total is unknown),
`complete` the result, `error` the error message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from .compiler.diagnostics import Diagnostic
from .compiler.ir import Plan
from .compiler.overrides import Override
from .compiler.planner import PlanResult
from .compiler.planner import plan as compile_plan
from .compiler.render import RENDERERS
from .runtime.engine.job import Hooks, JobRun, Progress, RunOptions, RunResult
from .runtime.engine.pipeline import PipelineResult, run_pipeline

_log = logging.getLogger("sleipnir.executor")

EVENTS = ("start", "progress", "complete", "error")


class CompileError(Exception):
    """The job or pipeline did not compile; `diagnostics` says why, `str()` prints them."""

    def __init__(self, result: PlanResult) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = result.diagnostics
        super().__init__(RENDERERS["human"](result.report, False))


class JobExecutor:
    """Runs a job or pipeline by name (in the workspace around the current folder, or `workspace`) or path."""

    def __init__(
        self,
        name_or_path: str,
        *,
        profile: str | None = None,
        params: Mapping[str, Any] | None = None,
        input: str | os.PathLike[str] | None = None,
        workspace: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        fresh: bool = False,
        retry_failed: bool = False,
        environ: Mapping[str, str] | None = None,
        state: str | None = None,
        cache: bool = False,
    ) -> None:
        self.target = str(name_or_path)
        self.profile = profile
        self.params = dict(params or {})
        self.input = None if input is None else os.fspath(input)
        self.workspace = None if workspace is None else os.fspath(workspace)
        self.limit = limit
        self.fresh = fresh
        self.retry_failed = retry_failed
        self.environ = dict(os.environ if environ is None else environ)
        self.state = state
        self.cache = cache
        self._callbacks: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self._raised: list[str] = []
        """What the callbacks raised during the run, for its notices."""
        self._workspace_state: str | None = None

    def on(self, event: str, callback: Callable[..., Any]) -> JobExecutor:
        """Call `callback` on `event` (start, progress, complete, error); returns the executor, to chain."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; the events are: {', '.join(EVENTS)}")
        self._callbacks[event].append(callback)
        return self

    def plan(self) -> Plan:
        """The plan that `run` would run. Raises `CompileError`."""
        overrides = [Override(key=k, value=v, origin="params=") for k, v in self.params.items()]
        result = compile_plan(
            self.target, profile=self.profile, overrides=overrides, environ=self.environ, workspace=self.workspace
        )
        if not result.ok or len(result.plans) != 1:
            if result.ok:
                raise ValueError(f"`{self.target}` holds {len(result.plans)} jobs and pipelines; name one")
            raise CompileError(result)
        manifest = result.check.workspace.manifest
        self._workspace_state = manifest.body.get("state") if manifest is not None else None
        return result.plans[0]

    def run(self) -> RunResult | PipelineResult:
        """Compile and run to the end; returns the result (outputs, errors, metrics). Inside a running event loop
        (a Jupyter notebook, an async web handler) the run gets an event loop of its own in a thread, and this
        call waits for it; code that is already async should `await run_async()` instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async())
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sleipnir-run") as pool:
            return pool.submit(asyncio.run, self.run_async()).result()

    async def run_async(self) -> RunResult | PipelineResult:
        plan = self.plan()
        options = RunOptions(
            input_path=self.input,
            limit=self.limit,
            fresh=self.fresh,
            retry_failed=self.retry_failed,
            environ=self.environ,
            state=self.state or self._workspace_state,
            cache=self.cache,
            keep_outputs=True,
            hooks=self._hooks(),
        )
        self._raised.clear()
        if plan.kind == "pipeline":
            # The pipeline's start and end are the events; its jobs run without the executor's callbacks.
            self._emit("start")
            result: RunResult | PipelineResult = await run_pipeline(plan, dataclasses.replace(options, hooks=Hooks()))
            self._emit("complete" if result.ok else "error", result if result.ok else f"pipeline {result.status}")
        else:
            result = await JobRun(plan, options).run()
        notices = getattr(result, "notices", None)
        if isinstance(notices, list):
            notices.extend(dict.fromkeys(self._raised))  # each once, in order
        return result

    def _hooks(self) -> Hooks:
        last: list[float | None] = [None]

        def progress(*, progress: Progress) -> None:
            percent = progress.percent
            if percent is not None:
                percent = round(percent, 1)
            if percent != last[0]:
                last[0] = percent
                self._emit("progress", percent)

        return Hooks(
            on_start=lambda **_: self._emit("start"),
            on_progress=progress,
            on_complete=lambda *, result: self._emit("complete", result),
            on_error=lambda *, error, result: self._emit("error", error),
        )

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self._callbacks[event]:
            try:
                callback(*args)
            except Exception as error:
                # The caller's code, not the run's: it is logged (with its traceback) and named in the result's
                # notices, and the run goes on, so that a broken callback never leaves a run half-recorded.
                _log.exception("the %r callback %r raised", event, callback)
                self._raised.append(f"the {event!r} callback raised {type(error).__name__}: {error}")


class AsyncJobExecutor(JobExecutor):
    """`JobExecutor` for code that is already async: `await AsyncJobExecutor("my_job").run_async()`."""
