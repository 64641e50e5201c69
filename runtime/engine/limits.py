"""How fast calls go to a provider: an adaptive rate limiter (AIMD) under configured ceilings.

`RateControl` makes the decisions and is given the time (`now`) by its caller, so tests drive it with a fake
clock; `RateLimiter` is the asyncio side: calls wait in a FIFO queue for their turn, woken by one timer, and
nothing sleeps holding a lock or a concurrency slot (a call waiting for its turn holds no slot, and one waiting
call never keeps another from finishing).

The rules (spec/run.md, "Rate limits"):
- Configured `requests_per_minute` and `tokens_per_minute` are ceilings the rate never exceeds.
- A 429 or 503 with `Retry-After` pauses new sends to the provider until then. Only a reply to a call sent after
  the last pause began is a new signal: the calls of the cohort that was already in flight do not each pause it
  again, and a pause starts at most once a window.
- The rate decreases at most once a window (`WINDOW`), and only for calls sent since the last decrease, when the
  window's replies hold at least two overload replies (429, 503) making up at least `OVERLOAD_SHARE` of them (a
  server that 429s a small fixed share whatever the rate is not slowed down by slowing down). It decreases to
  `DECREASE` times the rate actually served (2xx replies a second over the last window), and never below one
  call per slot in flight per `Retry-After` (Little's law gives the calls in flight, on average; the longest
  `Retry-After` of the window counts, and as at least a second, because a token bucket's 429s ask only for
  the time to its next token), so a rate never collapses to a call a minute.
- After a decrease it increases additively, by a tenth of the decreased rate a second, while calls succeed and
  the limit is what holds calls back: within a few seconds it is back where it was.
- A provider with no configured ceiling starts unlimited: the first overload window gives it a rate.

Peers met the same collapse: vllm-project/aibrix#2452 (one decrease per sample window, at least two overload
errors and a share of them, a 0.9 factor, a capacity floor), UKGovernmentBEIS/inspect_ai#3820 (adaptive
connections between bounds), oumi-ai/oumi#2515 (a retry waits outside the concurrency slot).

Retries are in `retries.py`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..providers.base import ProviderError

WINDOW = 1.0
"""Seconds: at most one decrease (and one pause) a window; served rates are measured over one."""
DECREASE = 0.9
"""A decrease sets the rate to this share of the rate actually served."""
OVERLOAD_SHARE = 0.2
"""The share of a window's replies that must be overload replies for the rate to decrease."""
INCREASE = 0.1
"""Each second of success adds this share of the last decreased rate."""
HISTORY = 200
"""Rate changes kept for the run's summary."""


class RateControl:
    """The adaptive limiter's state and decisions, for one provider. Times are `time.monotonic()` seconds."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None, now: float) -> None:
        self.ceiling = requests_per_minute / 60.0 if requests_per_minute else None
        """The configured requests a second, or None."""
        self.rate: float | None = self.ceiling
        """Requests a second allowed now; None: unlimited."""
        self.token_rate = tokens_per_minute / 60.0 if tokens_per_minute else None
        self.requests = self._burst()
        self.tokens = self._token_burst()
        self.updated = now
        self.started = now
        self.paused_until = 0.0
        self.pause_began = -math.inf
        self.last_decrease = -math.inf
        self.decreased_to = 0.0
        self.last_increase = now
        self.last_wait = -math.inf
        self.longest_wait = 0.0
        """The longest `Retry-After` of an overload reply since the last decrease."""
        self.in_flight = 0
        self.replies: deque[tuple[float, float, int]] = deque()
        """(reply time, send time, 0 ok / 1 overload / 2 other failure) over the last window."""
        self.busy = 0.0
        """Seconds of calls in flight summed over the replies in `replies` (Little's law: busy / WINDOW)."""
        self.durations: deque[float] = deque()
        self.decreases = 0
        self.overloads = 0
        self.paused = 0.0
        self.history: list[tuple[float, float | None]] = [(0.0, self.per_minute)]

    @property
    def per_minute(self) -> float | None:
        return None if self.rate is None else round(self.rate * 60.0, 1)

    def _burst(self) -> float:
        """A fifth of a second's worth of requests may go at once (a second's for a configured ceiling)."""
        if self.rate is None:
            return 0.0
        return max(1.0, self.rate if self.rate == self.ceiling else self.rate / 5.0)

    def _token_burst(self) -> float:
        """Ten seconds' worth of tokens, so that one large request is never starved."""
        return self.token_rate * 10.0 if self.token_rate else 0.0

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.token_rate is not None or self.paused_until > 0

    def _refill(self, now: float) -> None:
        elapsed, self.updated = max(0.0, now - self.updated), max(now, self.updated)
        if self.rate is not None:
            self.requests = min(self._burst(), self.requests + elapsed * self.rate)
        if self.token_rate is not None:
            self.tokens = min(self._token_burst(), self.tokens + elapsed * self.token_rate)

    def wait(self, now: float, tokens: float = 0.0) -> float:
        """Seconds until a call of `tokens` tokens may be sent (0: now)."""
        self._refill(now)
        waits = [self.paused_until - now]
        if self.rate is not None and self.requests < 1.0:
            waits.append((1.0 - self.requests) / self.rate)
        if self.token_rate is not None:
            need = min(tokens, self._token_burst())
            if self.tokens < need:
                waits.append((need - self.tokens) / self.token_rate)
        wait = max(waits)
        return wait if wait > 1e-9 else 0.0  # float residue of a refill is no reason to wait

    def take(self, now: float, tokens: float = 0.0, *, waited: bool = False) -> None:
        """A call is sent now."""
        self._refill(now)
        if self.rate is not None:
            self.requests -= 1.0
        if self.token_rate is not None:
            self.tokens -= min(tokens, self._token_burst())
        self.in_flight += 1
        if waited:
            self.last_wait = now

    def reply(self, now: float, sent: float, outcome: int, retry_after: float | None = None) -> None:
        """A call sent at `sent` got its reply: 0 ok, 1 overload (429, 503), 2 any other failure."""
        self.in_flight = max(0, self.in_flight - 1)
        self.replies.append((now, sent, outcome))
        self.durations.append(now - sent)
        self.busy += now - sent
        while self.replies and self.replies[0][0] < now - WINDOW:
            self.replies.popleft()
            self.busy -= self.durations.popleft()
        if outcome == 1:
            self.overloads += 1
            self._overloaded(now, sent, retry_after)
        elif outcome == 0:
            self._succeeded(now)

    def _overloaded(self, now: float, sent: float, retry_after: float | None) -> None:
        if retry_after:
            self.longest_wait = max(self.longest_wait, retry_after)
        new_signal = sent >= self.pause_began
        if retry_after and new_signal and now - self.pause_began >= WINDOW:
            self.pause_began = now
            until = now + retry_after
            if until > self.paused_until:
                self.paused += until - max(now, self.paused_until)
                self.paused_until = until
        if sent < self.last_decrease or now - self.last_decrease < WINDOW:
            return
        cohort = [outcome for _, at, outcome in self.replies if at >= self.last_decrease]
        overloads = cohort.count(1)
        if overloads < 2 or len(cohort) < 5 or overloads < OVERLOAD_SHARE * len(cohort):
            return
        served = cohort.count(0) / WINDOW
        # The longest wait asked for since the last decrease: a token bucket's 429s ask for the time to its next
        # token, which is shorter the later in the gap they come.
        floor = max(1.0, self.busy / WINDOW) / max(self.longest_wait, WINDOW)
        rate = max(DECREASE * served, floor, 1.0 / 60.0)
        if self.rate is not None:
            rate = min(rate, self.rate)
        self._set(now, rate)
        self.decreases += 1
        self.last_decrease = now
        self.decreased_to = rate
        self.longest_wait = 0.0
        self.last_increase = now
        self.requests = min(self.requests, 1.0)

    def _succeeded(self, now: float) -> None:
        if self.rate is None or self.rate == self.ceiling:
            return
        elapsed = now - self.last_increase
        if elapsed < 0.1:
            return
        self.last_increase = now
        if now - self.last_wait > WINDOW:
            return  # the limit is not what holds calls back: growing it would only make the next cut late
        rate = self.rate + INCREASE * self.decreased_to * elapsed
        self._set(now, rate if self.ceiling is None else min(rate, self.ceiling))

    def _set(self, now: float, rate: float) -> None:
        self.rate = rate
        self.history.append((round(now - self.started, 3), self.per_minute))
        if len(self.history) > HISTORY:
            del self.history[1 : len(self.history) - HISTORY + 1]

    def summary(self) -> dict[str, Any]:
        """For the run's `--json` summary and metrics."""
        return {
            "requests_per_minute": self.per_minute,
            "ceiling_per_minute": None if self.ceiling is None else round(self.ceiling * 60.0, 1),
            "decreases": self.decreases,
            "rate_limited": self.overloads,
            "paused_seconds": round(self.paused, 3),
            "history": [list(entry) for entry in self.history],
        }


class RateLimiter:
    """The asyncio side of `RateControl`: `try_take` or `await acquire` before a call, `reply` after it."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.control = RateControl(requests_per_minute, tokens_per_minute, clock())
        self._waiters: deque[tuple[asyncio.Future[float], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self.control.limited

    def try_take(self, tokens: float = 0.0) -> float | None:
        """The send time when a call may go now (and it is counted as sent), else None: `await acquire()`."""
        now = self.clock()
        control = self.control
        if not self._waiters and (not control.limited or control.wait(now, tokens) <= 0.0):
            control.take(now, tokens)
            return now
        return None

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait for this call's turn (first come, first served); returns its send time."""
        sent = self.try_take(tokens)
        if sent is not None:
            return sent
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, tokens))
        self._arm()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.control.in_flight = max(0, self.control.in_flight - 1)
            raise

    def reply(self, sent: float, error: BaseException | None = None) -> None:
        """The call sent at `sent` ended: with success (`error` None) or `error`."""
        if isinstance(error, ProviderError):
            overload = error.kind == "rate_limit" or error.status == 503
            outcome, retry_after = (1 if overload else 2), error.retry_after
        else:
            outcome, retry_after = (0 if error is None else 2), None
        self.control.reply(self.clock(), sent, outcome, retry_after)
        if outcome == 1 and self._waiters:
            self._arm()

    def cancel_waits(self) -> None:
        """Cancel every call waiting for its turn (a stop)."""
        waiters, self._waiters = self._waiters, deque()
        for future, _ in waiters:
            future.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters and self._waiters[0][0].done():
            self._waiters.popleft()
        if not self._waiters:
            return
        delay = self.control.wait(self.clock(), self._waiters[0][1])
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(delay, 0.0005), self._release)

    def _release(self) -> None:
        self._timer = None
        control = self.control
        while self._waiters:
            future, tokens = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            now = self.clock()
            if control.wait(now, tokens) > 0.0:
                break
            self._waiters.popleft()
            control.take(now, tokens, waited=True)
            future.set_result(now)
        self._arm()
