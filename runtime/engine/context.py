"""What the collaborators of one run share: the job's shape (read once from the immutable plan) and the
`RunContext` (the mutable run state: counts, the result, notices, and the stop flag).

The reader, the item worker, the writer and the gatherer each hold the same `RunContext`; only the job run
(`job.py`) creates one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Callable
from typing import Any

from ...compiler.ir import Merge, Plan, PromptCall, Reduce, Sink, Source, Split, thaw
from .state import Progress, RunOptions, RunResult, RunStopped


class JobShape:
    """The parts of a job plan the run reads, found once: its source and sink, its call levels, its policies."""

    def __init__(self, plan: Plan) -> None:
        if plan.kind != "job":
            raise ValueError("JobRun runs a job plan; run a pipeline with PipelineRun")
        self.source = next(n for n in plan.nodes if isinstance(n, Source))
        self.sink = next(n for n in plan.nodes if isinstance(n, Sink))
        self.split = next((n for n in plan.nodes if isinstance(n, Split)), None)
        gathers = [n for n in plan.nodes if isinstance(n, Reduce | Merge)]
        levels = [[n for n in level if isinstance(n, PromptCall)] for level in plan.levels()]
        self.item_levels = [lv for lv in ([n for n in level if n.scope == "item"] for level in levels) if lv]
        """The per-item calls by level: the calls of one level run at the same time (a stack's parallel group)."""
        self.group_levels = [lv for lv in ([n for n in level if n.scope == "group"] for level in levels) if lv]
        self.all_calls = [n for n in plan.nodes if isinstance(n, PromptCall) and n.scope == "all"]
        self.collecting = bool(gathers or self.split)
        """Outputs are gathered for a `reduce` or `fan_in` rather than written item by item."""
        execution = thaw(plan.settings.get("execution") or {})
        self.concurrency = int(execution.get("concurrency") or 10)
        self.engine = str(execution.get("engine") or "local")
        self.timeout = execution.get("timeout")
        rate = execution.get("max_error_rate")
        self.max_error_rate = None if rate is None else float(rate)
        handling = thaw(plan.settings.get("error_handling") or {})
        self.on_input = str((handling.get("on_input_error") or {}).get("strategy", "fail"))
        self.on_output = str((handling.get("on_output_error") or {}).get("strategy", "fail"))
        self.alert_on = {
            stage: bool((handling.get(f"on_{stage}") or {}).get("alert"))
            for stage in ("prompt_failure", "input_error", "output_error")
        }


class CallsStopped(Exception):
    """The run stopped while a call waited for its turn or for a retry: the item is left for a resume."""


class RunContext:
    """The mutable state of one run, shared by its collaborators."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.options = options
        self.environ = options.environ
        self.shape = JobShape(plan)
        self.run_id = options.run_id or uuid.uuid4().hex[:16]
        self.progress = Progress()
        self.result = RunResult(run_id=self.run_id, plan_id=plan.id, job=plan.name, status="running", progress=self.progress)
        self.scope = ledger_scope(plan.name, options.input_path) + (f":{options.scope}" if options.scope else "")
        """What the ledger keys items under: the job, and the `--input` file when one replaces the source, and
        serve's fire time. Not the plan: an item is redone when its own work changed, not when the plan did."""
        self.no_input = self.shape.source.source == "run_input" and options.input_path is None
        """A job without `input:` run without `--input`: its prompts run once, for one item with an empty row,
        keyed by the run's scope (serve's fire time) or, without one, by the run id."""
        self.key_field = "run" if self.no_input else self.shape.source.key or ""
        self.stopping: RunStopped | None = None
        self.on_stop: list[Callable[[], None]] = []
        """Called once, when the run stops: each provider's limiter cancels its waits."""
        self.calling: set[asyncio.Task[Any]] = set()
        """The workers whose item is making calls now: what a stop cancels once its grace period is over."""
        self.halted = False
        """The calls in flight were cancelled: their items are left for a resume."""
        self._stopped: asyncio.Event | None = None

    def stop(self, reason: str, message: str) -> None:
        """Stop reading new items and end every wait for a turn or a retry (the first reason to stop wins)."""
        if self.stopping is not None:
            return
        self.stopping = RunStopped(reason, message)
        if self._stopped is not None:
            self._stopped.set()
        for callback in self.on_stop:
            callback()

    def halt(self) -> None:
        """Cancel the calls in flight (a stop's grace period is over)."""
        self.halted = True
        for task in list(self.calling):
            task.cancel()

    async def wait(self, seconds: float) -> None:
        """Sleep `seconds` before a retry; a stop ends the wait at once with `CallsStopped`."""
        if self.stopping is not None:
            raise CallsStopped
        if self._stopped is None:
            self._stopped = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        except TimeoutError:
            return
        raise CallsStopped

    def notice(self, text: str) -> None:
        """A line for the person running the job, said once."""
        if text in self.result.notices:
            return
        self.result.notices.append(text)
        if self.options.hooks.on_notice:
            self.options.hooks.on_notice(message=text)

    def alert(self, stage: str, key: str | None, message: str) -> None:
        """The alert hook (the operations layer sends it by email, Slack or webhook)."""
        if self.options.hooks.on_alert:
            self.options.hooks.on_alert(job=self.plan.name, run_id=self.run_id, stage=stage, key=key, error=message)

    def progress_now(self) -> None:
        if self.options.hooks.on_progress:
            self.options.hooks.on_progress(progress=self.progress)

    def summary(self) -> dict[str, Any]:
        return {**self.result.metrics, "message": self.result.message}


def ledger_scope(job: str, input_path: str | None) -> str:
    if input_path is None:
        return f"job:{job}"
    digest = hashlib.sha256(os.path.abspath(input_path).encode()).hexdigest()[:16]
    return f"job:{job}:input:{digest}"
