"""How fast and how often calls are made: the retry policy (tenacity) and the adaptive rate limiter.

Retries: the first attempt is made directly, and tenacity's policy is entered only after a failure, since
wrapping every call costs 60 to 85 us of CPU (MEASURED.md). `max_retries` counts retries, not attempts; the wait
before retry n is the plan's `Retry.delay(n)` (`min(max_delay, initial * factor^(n-1))` for exponential), with
jitter, and never shorter than what the server asked for with `Retry-After`.

Rate limits: a token bucket per provider for requests and tokens per minute. When the server answers 429 the
bucket shrinks to half its rate, and it grows back by a tenth each quiet minute, as promptfoo's adaptive limiter
does; a provider without configured limits starts unlimited and, when a 429 comes under load (20 or more requests in
the last 10 seconds), gets a bucket at half the rate it was actually served at.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ...compiler.ir import Retry
from ..providers.base import ProviderError
from .render import ReplyError

T = TypeVar("T")


def retryable(error: BaseException) -> bool:
    return isinstance(error, ReplyError) or (isinstance(error, ProviderError) and error.retryable)


class Attempts:
    """How many attempts a call took, for the ledger and the metrics."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


async def with_retries(
    policy: Retry,
    attempt: Callable[[], Awaitable[T]],
    attempts: Attempts,
    *,
    on_retry: Callable[[BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`attempt()`, retried per `policy` on retryable errors; raises the last error when retries are spent."""
    attempts.count = 1
    try:
        return await attempt()
    except Exception as error:
        if policy.max_retries == 0 or not retryable(error):
            raise
        first = error

    def wait(state: RetryCallState) -> float:
        # Tenacity counts its own attempts; the first retry was made before entering it, so after tenacity's
        # attempt n comes retry n + 1.
        error = state.outcome.exception() if state.outcome is not None else first
        return _delay(policy, state.attempt_number + 1, error)

    if on_retry is not None:
        on_retry(first, _delay(policy, 1, first))
    await sleep(_delay(policy, 1, first))

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error, state.upcoming_sleep)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries),
        wait=wait,
        retry=retry_if_exception(retryable),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )
    async for attempt_state in retrying:
        with attempt_state:
            attempts.count += 1
            return await attempt()
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def _delay(policy: Retry, retry: int, error: BaseException | None) -> float:
    delay = policy.delay(retry)
    if policy.jitter:
        delay *= random.uniform(0.5, 1.0)
    asked = error.retry_after if isinstance(error, ProviderError) else None
    return max(delay, asked or 0.0)


class RateLimiter:
    """Token buckets for requests and tokens per minute, shrinking on 429 and recovering when quiet."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> None:
        self.configured = (requests_per_minute, tokens_per_minute)
        self.rpm: float | None = float(requests_per_minute) if requests_per_minute else None
        self.tpm: float | None = float(tokens_per_minute) if tokens_per_minute else None
        now = time.monotonic()
        self._requests = self._request_burst()
        self._tokens = self._token_burst()
        self._updated = now
        self._last_429 = 0.0
        self._served: deque[float] = deque(maxlen=4096)
        self._lock = asyncio.Lock()
        self.shrinks = 0

    def _request_burst(self) -> float:
        """A second's worth of requests may go at once (at least one)."""
        return max(1.0, self.rpm / 60.0) if self.rpm else 0.0

    def _token_burst(self) -> float:
        """Ten seconds' worth of tokens, so one large request is never starved."""
        return self.tpm / 6.0 if self.tpm else 0.0

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request (and `tokens` tokens) may be sent."""
        if not self.active:
            self._served.append(time.monotonic())
            return
        async with self._lock:
            while True:
                self._refill()
                need_tokens = min(float(tokens), self._token_burst()) if self.tpm else 0.0
                if (self.rpm is None or self._requests >= 1) and (self.tpm is None or self._tokens >= need_tokens):
                    if self.rpm is not None:
                        self._requests -= 1
                    if self.tpm is not None:
                        self._tokens -= need_tokens
                    self._served.append(time.monotonic())
                    return
                await asyncio.sleep(self._wait(need_tokens))

    def _wait(self, tokens: float) -> float:
        waits = [0.01]
        if self.rpm is not None and self._requests < 1:
            waits.append((1 - self._requests) * 60.0 / self.rpm)
        if self.tpm is not None and self._tokens < tokens:
            waits.append((tokens - self._tokens) * 60.0 / self.tpm)
        return max(waits)

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._updated = now - self._updated, now
        if self._last_429 and now - self._last_429 > 60:
            self._recover(now)
        if self.rpm is not None:
            self._requests = min(self._request_burst(), self._requests + elapsed * self.rpm / 60.0)
        if self.tpm is not None:
            self._tokens = min(self._token_burst(), self._tokens + elapsed * self.tpm / 60.0)

    def _recover(self, now: float) -> None:
        configured_rpm, configured_tpm = self.configured
        if self.rpm is not None:
            self.rpm = self.rpm * 1.1
            if configured_rpm is None and self.rpm > 1e6:
                self.rpm = None
            elif configured_rpm is not None:
                self.rpm = min(self.rpm, float(configured_rpm))
        if self.tpm is not None and configured_tpm is not None:
            self.tpm = min(self.tpm * 1.1, float(configured_tpm))
        self._last_429 = now

    def throttled(self) -> None:
        """The server said 429: halve the rate (starting from the rate actually served, if there was no limit)."""
        now = time.monotonic()
        self.shrinks += 1
        self._last_429 = now
        if self.rpm is None:
            recent = [t for t in self._served if now - t <= 10]
            if len(recent) < 20:
                # Too little traffic to measure a rate: the server's Retry-After paces the retry alone.
                return
            self.rpm = max(60.0, len(recent) * 6.0 / 2)
            self._requests = 0.0
            self._updated = now
        else:
            self.rpm = max(1.0, self.rpm / 2)
            self._requests = min(self._requests, 1.0)
        if self.tpm is not None:
            self.tpm = max(100.0, self.tpm / 2)
