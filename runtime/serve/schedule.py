"""Cron schedules as pure logic: when a job is next due, which runs a downtime missed, what an overlap does.

Nothing here reads a clock: every function takes the time it needs, as an aware datetime, and answers in UTC.
That keeps daylight-saving changes testable (spec/schedules.md):

- Fire times are computed with croniter on the job's local wall clock (naive datetimes in its IANA zone), then
  each one is placed on the UTC time line. croniter's own handling of aware datetimes fires an ambiguous local
  time twice at fall-back, so it is not used.
- A local time skipped at spring-forward (02:30 on the night clocks jump from 02:00 to 03:00) fires once, at
  the first instant after the gap (03:00); several skipped times (`*/15`) collapse into that one run.
- A local time that happens twice at fall-back fires once, the first time (the summer-time instant).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from ...compiler.ir.common import parse_duration

__all__ = [
    "CATCHUP",
    "OVERLAP",
    "CronSchedule",
    "overlap_decision",
]

CATCHUP = ("none", "latest", "all")
OVERLAP = ("skip", "queue", "allow")
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CronSchedule:
    """A job's `schedule:` as the scheduler reads it (the plan's `settings["schedule"]`, defaults filled)."""

    cron: str
    """Five cron fields or a macro such as `@daily`."""
    timezone: str = "UTC"
    """The IANA zone the cron times are read in."""
    enabled: bool = True
    catchup: str = "latest"
    """`none`, `latest` or `all`: which runs missed during a downtime are made up."""
    catchup_window: timedelta = timedelta(days=1)
    """Only runs due this long before the scheduler started count as missed."""
    overlap: str = "skip"
    """`skip`, `queue` or `allow`: what a run that comes due while the previous one is going does."""

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"invalid cron expression {self.cron!r}")
        ZoneInfo(self.timezone)  # raises ZoneInfoNotFoundError (a KeyError) or ValueError
        if self.catchup not in CATCHUP:
            raise ValueError(f"unknown catchup {self.catchup!r} (use {', '.join(CATCHUP)})")
        if self.overlap not in OVERLAP:
            raise ValueError(f"unknown overlap {self.overlap!r} (use {', '.join(OVERLAP)})")
        if self.catchup_window < timedelta(0):
            raise ValueError("catchup_window cannot be negative")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CronSchedule:
        """The schedule of a plan's `settings["schedule"]`; missing keys take the spec's defaults."""
        return cls(
            cron=str(settings["cron"]),
            timezone=str(settings.get("timezone") or "UTC"),
            enabled=bool(settings.get("enabled", True)),
            catchup=str(settings.get("catchup") or "latest"),
            catchup_window=timedelta(seconds=parse_duration(settings.get("catchup_window", "1d"))),
            overlap=str(settings.get("overlap") or "skip"),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (an aware datetime), in UTC."""
        return next(self.fires(after))

    def fires(self, after: datetime) -> Iterator[datetime]:
        """Every fire time strictly after `after`, in order, in UTC, each once."""
        after = _utc(after)
        zone = self.zone
        wall = croniter(self.cron, after.astimezone(zone).replace(tzinfo=None))
        last = after
        while True:
            local: datetime = wall.get_next(datetime)
            instant = _instant(local, zone)
            # A fire time inside a fall-back's second pass maps (first occurrence) to before `after`, and the
            # times of a spring-forward gap all map to the gap's end: either way, one run at most.
            if instant > last:
                last = instant
                yield instant

    def first_due(self, now: datetime) -> datetime:
        """The first fire time at or after `now`: where a scheduler that starts at `now` begins."""
        return self.next_fire(_utc(now) - _TINY)

    def missed(self, last_run: datetime | None, now: datetime, *, left: Iterable[datetime] = ()) -> list[datetime]:
        """The runs to make up at `now` after a downtime, oldest first, by `catchup`: fire times after
        `last_run` (the last fire time handled; None: nothing is known, so nothing is missed) and before
        `now`, with the fire times a stop `left` unrun (`owed`), no older than `catchup_window`."""
        if last_run is None:
            return self.owed(left, now)
        now = _utc(now)
        start = max(_utc(last_run), now - self.catchup_window - _TINY)
        return self.owed([*itertools.takewhile(lambda fire: fire < now, self.fires(start)), *left], now)

    def owed(self, fires: Iterable[datetime], now: datetime) -> list[datetime]:
        """Of `fires`, fire times whose runs did not happen, the ones to make up at `now` by `catchup`, oldest
        first: all, the latest or none of those before `now` and no older than `catchup_window`."""
        if self.catchup == "none" or not self.enabled:
            return []
        now = _utc(now)
        due = sorted({fire for fire in map(_utc, fires) if now - self.catchup_window <= fire < now})
        return due[-1:] if self.catchup == "latest" else due


def overlap_decision(policy: str, *, running: int, waiting: int) -> str:
    """What a scheduled run that comes due does, given the job's runs going (`running`) and those already
    waiting their turn (`waiting`): `start`, `queue` (start when the previous run ends) or `skip`."""
    if policy not in OVERLAP:
        raise ValueError(f"unknown overlap {policy!r}")
    if (running == 0 and waiting == 0) or policy == "allow":
        return "start"
    if policy == "queue" and waiting == 0:
        return "queue"
    return "skip"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the scheduler works with aware datetimes")
    return moment.astimezone(UTC)


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall-clock time: the first occurrence of an ambiguous one, the end of
    the gap for one that does not exist."""
    instant = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    # Skipped by a spring-forward: fold=1 reads it with the offset after the change (too early), fold=0 with
    # the one before (too late). The gap ends at the change between the two: bisect to the microsecond.
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = instant
    while high - low > _TINY:
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) < local:
            low = middle
        else:
            high = middle
    return high
