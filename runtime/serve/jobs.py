"""What `serve` shares between its parts: the served jobs (`ServedJob`), what a trigger did (`TriggerOutcome`),
and the service's log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from ...compiler.ir import Plan
from ...compiler.planner import PlanResult
from ..engine.job import RunResult
from ..engine.pipeline import PipelineResult
from .logs import logger_name
from .schedule import CronSchedule

log = logging.getLogger("sleipnir.serve")


@dataclass(slots=True, kw_only=True)
class ServedJob:
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


def newest_plans(compiled: PlanResult) -> list[Plan]:
    """The plans to serve: each job's and pipeline's newest version."""
    registry = compiled.check.registry
    chosen = []
    for plan in compiled.plans:
        newest = registry.get(plan.kind, plan.name)
        if newest is None or plan.version is None or newest.version == plan.version:
            chosen.append(plan)
    return chosen


def log_event(event: str, message: str, *, job: str | None = None, run_id: str | None = None, level: int = logging.INFO) -> None:
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


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        log.error(f"internal error: {type(error).__name__}: {error}", exc_info=error, extra={"event": "internal_error"})


def served_document(document: Any) -> bool:
    """Whether `serve` runs a document: a job or pipeline with a schedule or triggers. The others are checked
    (a check error stops serve) but not planned, so a job that needs a secret only when run by hand does not."""
    body = document.body if isinstance(document.body, dict) else {}
    return bool(body.get("schedule") or body.get("triggers"))
