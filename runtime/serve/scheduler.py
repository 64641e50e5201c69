"""The scheduler loop of `serve`: it sleeps until the next fire time of any job (on the service's `Clock`),
fires what is due, makes up the runs a downtime missed (`catchup`), and applies `overlap` when a run comes due
while the job's previous run goes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from ...compiler.ir import Plan, thaw
from ..io.dbconn import DatabaseError
from .jobs import ServedJob, log_event
from .runs import NotStarted
from .schedule import CronSchedule, overlap_decision

if TYPE_CHECKING:
    from .service import Service


CLAIM_RETENTION = timedelta(days=3)
"""How long a claim of a fire time or a file outlives its need (`TriggerState.prune_claims`)."""
PRUNE_EVERY = timedelta(hours=1)
HANDLED_BEFORE = timedelta(milliseconds=1)
"""How far before the first fire time it did not take up a stopping scheduler records its schedule handled."""


class Scheduler:
    """Fires the served jobs' schedules."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.making_up: set[tuple[str, datetime]] = set()
        """The fire times this process is making up, or about to."""

    def schedule_of(self, plan: Plan) -> CronSchedule | None:
        settings = plan.settings.get("schedule")
        if not settings:
            return None
        try:
            return CronSchedule.from_settings(thaw(settings))
        except (KeyError, ValueError) as error:
            log_event("config", f"its schedule cannot run: {error}", job=plan.name, level=logging.ERROR)
            return None

    def first_due(self, job: ServedJob, now: datetime) -> datetime | None:
        if job.schedule is None or not job.schedule.enabled:
            return None
        return self.next_fire(job, job.schedule.first_due, now)

    def next_fire(self, job: ServedJob, step: Callable[[datetime], datetime], moment: datetime) -> datetime | None:
        try:
            return step(moment)
        except (ValueError, KeyError, StopIteration) as error:  # croniter found no date (a 30 February)
            log_event("config", f"no next fire time for {job.schedule}: {error}", job=job.name, level=logging.ERROR)
            return None

    async def catch_up(self, now: datetime) -> None:
        """Make up the runs missed while serve was down, and those a stop left unrun, per each schedule's
        `catchup`."""
        assert self.service.state is not None
        for job in self.service.jobs.values():
            if job.schedule is None:
                continue
            last = await asyncio.to_thread(self.service.state.handled_until, job.name)
            missed = job.schedule.missed(last, now, left=await self.left(job))
            if missed:
                shown = ", ".join(m.isoformat() for m in missed[:5]) + (" ..." if len(missed) > 5 else "")
                log_event("catchup", f"making up {len(missed)} missed runs ({job.schedule.catchup}): {shown}", job=job.name)
                self.service.spawn(self._make_up(job, missed), self.service.run_tasks)
            await asyncio.to_thread(self.service.state.set_handled_until, job.name, now)

    async def take_up(self, job: ServedJob, fire: datetime) -> None:
        """At a fire time of `job`, make up the earlier ones a stopped replica left unrun (`catchup: all`; with
        `latest`, this fire time is the latest)."""
        if job.schedule is None or job.schedule.catchup != "all" or self.service.draining:
            return
        owed = job.schedule.owed(await self.left(job), fire)
        if owed:
            log_event("catchup", f"making up {len(owed)} runs a stop left unrun: {', '.join(m.isoformat() for m in owed)}", job=job.name)
            await self._make_up(job, owed)

    async def left(self, job: ServedJob) -> list[datetime]:
        """The fire times of `job` a stop left unrun (`leave`)."""
        assert self.service.state is not None
        keys = await asyncio.to_thread(self.service.state.released, "schedule", job.name)
        fires = []
        for key in keys:
            with contextlib.suppress(ValueError):  # a row not written by `leave` is no fire time
                fires.append(datetime.fromisoformat(key))
        return [fire for fire in fires if fire.tzinfo is not None]

    async def leave(self, job: ServedJob, fires: list[datetime], why: str) -> None:
        """Give back fire times whose runs did not start, or did not end, before serve stopped: the next replica
        to start, or to fire the job, makes them up by the schedule's `catchup` (an interrupted run resumes)."""
        assert self.service.state is not None
        await asyncio.to_thread(self.service.state.release, "schedule", job.name, *(fire.isoformat() for fire in fires))
        shown = ", ".join(fire.isoformat() for fire in fires)
        policy = job.schedule.catchup if job.schedule is not None else "none"
        then = "not made up (catchup: none)" if policy == "none" else f"left for the next start or replica to make up (catchup: {policy})"
        log_event("left", f"{why}: {shown} {then}", job=job.name)

    async def _make_up(self, job: ServedJob, missed: list[datetime]) -> None:
        mine = [fire for fire in missed if (job.name, fire) not in self.making_up]  # not twice in one process
        self.making_up.update((job.name, fire) for fire in mine)
        try:
            for index, fire in enumerate(mine):  # one at a time, oldest first
                if self.service.draining:
                    await self.leave(job, mine[index:], "serve stopped before these runs were made up")
                    return
                if await self.claim(job, fire):
                    await self._run(job, fire, f"catch-up of {fire.isoformat()}")
        finally:
            self.making_up.difference_update((job.name, fire) for fire in mine)

    async def _run(self, job: ServedJob, fire: datetime, cause: str, *, queued: bool = False) -> None:
        """The run of a claimed fire time; given back (`leave`) when serve's stop comes before it or cuts it short."""
        try:
            result = await self.service.runs.guarded(job, cause, functools.partial(self.service.run_scheduled, job, fire), queued=queued)
        except NotStarted:
            await self.leave(job, [fire], "serve stopped before the run's turn")
            return
        if self.service.draining and getattr(result, "status", "") == "interrupted":
            await self.leave(job, [fire], "serve's stop interrupted the run")

    async def loop(self) -> None:
        assert self.service.state is not None
        while not self.service.stopped.is_set():
            self.service.wake.clear()  # before reading the plans: a reload from here on wakes the next wait
            now = self.service.clock.now()
            handled: dict[str, datetime] = {}
            for job in list(self.service.jobs.values()):
                while job.next_due is not None and job.next_due <= now and job.schedule is not None:
                    fire = job.next_due
                    job.next_due = self.next_fire(job, job.schedule.next_fire, fire)
                    self._fire(job, fire)
                    handled[job.name] = fire
            for name, fire in handled.items():
                await asyncio.to_thread(self.service.state.set_handled_until, name, fire)
            due = [job.next_due for job in self.service.jobs.values() if job.next_due is not None]
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.service.wake.wait())]
            if due:
                waits.append(asyncio.ensure_future(self.service.clock.sleep_until(min(due))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def prune(self) -> None:
        """Delete the claims no replica will ask for again, at the start and every hour on the service's clock."""
        assert self.service.state is not None
        while not self.service.stopped.is_set():
            try:
                pruned = await asyncio.to_thread(self.service.state.prune_claims, self.service.clock.now(), CLAIM_RETENTION)
            except (DatabaseError, sqlite3.Error, psycopg.Error) as error:
                log_event("claims", f"cannot prune the claims: {error}", level=logging.WARNING)
            else:
                if pruned:
                    log_event("claims", f"pruned {pruned} claims no replica will ask for again ({CLAIM_RETENTION.days} days old)")
            await self.service.clock.sleep_until(self.service.clock.now() + PRUNE_EVERY)

    async def claim(self, job: ServedJob, fire: datetime) -> bool:
        """Whether this replica runs the fire time: replicas of `serve` sharing a state store each claim it, and
        one gets it (`TriggerState.claim`)."""
        assert self.service.state is not None
        claimed = await asyncio.to_thread(self.service.state.claim, "schedule", job.name, fire.isoformat())
        if not claimed:
            log_event("claimed", f"the run due {fire.isoformat()} is another replica's", job=job.name)
        return claimed

    def _fire(self, job: ServedJob, fire: datetime) -> None:
        self.service.spawn(self._fire_claimed(job, fire), self.service.run_tasks)
        self.service.spawn(self.take_up(job, fire), self.service.run_tasks)

    async def _fire_claimed(self, job: ServedJob, fire: datetime) -> None:
        if self.service.draining:
            await self.leave(job, [fire], "serve stopped as the run came due")
            return
        if not await self.claim(job, fire):
            return
        decision = overlap_decision(job.overlap, running=job.running, waiting=job.waiting)
        cause = f"schedule {fire.isoformat()}"
        if decision == "skip":
            log_event("skipped", f"skipped the run due {fire.isoformat()}: the previous run is still going (overlap: {job.overlap})", job=job.name)
            self.service.metrics.skipped(job.name, "overlap")
            return
        if decision == "queue":
            log_event("queued", f"the run due {fire.isoformat()} waits for the previous one", job=job.name)
        await self._run(job, fire, cause, queued=decision == "queue")
