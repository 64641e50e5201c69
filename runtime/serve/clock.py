"""Where `serve`'s scheduler reads the time and waits for it: the wall clock, or simulated time for tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


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
