"""Retries of a failed call: when, how often, and which failures.

The first attempt is made directly, and tenacity's policy is entered only after a failure, since wrapping every
call costs a measured 60 to 85 us of CPU. `max_retries` counts retries, not attempts; the wait before retry n
is the plan's `Retry.delay(n)` with jitter, never shorter than what the server asked for with `Retry-After`.
Retried: what the provider marks retryable (429, 5xx, 408, timeouts, dropped connections, unusable replies) and
answers that fail the output schema; never other client errors or a context-length error. The wait is the
caller's `sleep`, which the job run makes end at once on a stop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ...compiler.ir import Retry
from ..providers.base import ProviderError
from .render import ReplyError

__all__ = ["Attempts", "delay", "retryable", "with_retries"]

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
        return delay(policy, state.attempt_number + 1, error)

    if on_retry is not None:
        on_retry(first, delay(policy, 1, first))
    await sleep(delay(policy, 1, first))

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


def delay(policy: Retry, retry: int, error: BaseException | None) -> float:
    """The wait before retry number `retry`: the policy's, with jitter, never less than a `Retry-After`."""
    wait = policy.delay(retry)
    if policy.jitter:
        wait *= random.uniform(0.5, 1.0)
    asked = error.retry_after if isinstance(error, ProviderError) else None
    return max(wait, asked or 0.0)

