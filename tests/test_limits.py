"""The adaptive rate limiter (runtime/limits.py), driven by a fake clock.

`RateControl` takes the time from its caller, so these tests step time by hand, and `simulate` plays whole runs
against model servers in fake time: a run of N calls at concurrency C, a server of L seconds latency that 429s
either a fixed share of requests or beyond a real token bucket.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass

import pytest

from sleipnir.runtime.engine.limits import WINDOW, RateControl, RateLimiter
from sleipnir.runtime.providers.base import ProviderError

OK, OVERLOAD, OTHER = 0, 1, 2


def test_a_configured_ceiling_is_never_exceeded_even_while_calls_succeed() -> None:
    control = RateControl(120, None, 0.0)
    sent: list[float] = []
    now = 0.0
    while now < 30.0:
        if control.wait(now) <= 0.0:
            control.take(now, waited=True)
            sent.append(now)
            control.reply(now + 0.001, now, OK)
        now = round(now + 0.001, 3)
    assert control.per_minute == 120.0
    for start in range(0, 29):
        assert sum(1 for t in sent if start <= t < start + 1) <= 2 + 1, f"second {start}"
    assert len(sent) <= 30 * 2 + 2


def test_a_token_ceiling_holds_too() -> None:
    control = RateControl(None, 6000, 0.0)  # 100 tokens a second, a 1,000-token burst
    sent, now = 0, 0.0
    while now < 20.0:
        if control.wait(now, 500) <= 0.0:
            control.take(now, 500)
            sent += 1
        now = round(now + 0.01, 2)
    assert sent <= (1000 + 20 * 100) // 500 + 1


def test_unlimited_until_overloaded() -> None:
    control = RateControl(None, None, 0.0)
    assert not control.limited and control.wait(0.0) == 0.0


def test_a_429_with_retry_after_pauses_new_sends_and_its_cohort_does_not_extend_the_pause() -> None:
    control = RateControl(None, None, 0.0)
    for _ in range(10):
        control.take(0.0)
    control.reply(0.05, 0.0, OVERLOAD, retry_after=2.0)
    assert control.wait(0.05) == pytest.approx(2.0)
    # Nine more 429s for calls sent in the same cohort, as they come back: not new signals.
    for n in range(9):
        control.reply(0.06 + n / 100, 0.0, OVERLOAD, retry_after=2.0)
    assert control.paused_until == pytest.approx(2.05)
    assert control.wait(2.05) == 0.0 or control.rate is not None


def test_the_rate_decreases_once_a_window_to_a_share_of_what_was_served() -> None:
    control = RateControl(None, None, 0.0)
    now = 0.0
    # 100 calls a second served for two seconds.
    for n in range(200):
        now = n / 100
        control.take(now)
        control.reply(now + 0.01, now, OK)
    # Then the 40 calls in flight all come back 429 (no Retry-After): a third of the window's replies.
    for _ in range(40):
        control.take(now)
    for n in range(40):
        control.reply(now + 0.02 + n / 1000, now, OVERLOAD)
    assert control.decreases == 1, "one cohort, one decrease"
    assert control.rate == pytest.approx(0.9 * 100, rel=0.05)
    # Late 429s of calls sent before the decrease do not decrease it again, even a window later.
    for n in range(5):
        control.reply(now + WINDOW + 0.5 + n / 100, now - 0.001, OVERLOAD)
    assert control.decreases == 1


def test_a_small_fixed_share_of_429s_does_not_slow_the_rate() -> None:
    control = RateControl(None, None, 0.0)
    for n in range(2000):
        now = n / 200
        control.take(now)
        control.reply(now + 0.01, now, OVERLOAD if (n + 1) % 7 == 0 else OK, retry_after=0.2)
    assert control.decreases == 0 and control.rate is None
    assert control.overloads == 2000 // 7
    assert control.paused <= 10 * 0.2 + 0.2, "at most one pause a window"


def test_the_floor_is_one_call_per_slot_in_flight_per_retry_after() -> None:
    control = RateControl(None, None, 0.0)
    # 10 calls always in flight, each taking 0.5 s, all of the last ones 429 with Retry-After 1 s.
    for n in range(40):
        sent = n * 0.05
        control.take(sent)
        control.reply(sent + 0.5, sent, OVERLOAD if n >= 30 else OK, retry_after=1.0)
    assert control.decreases == 1
    assert control.rate is not None and control.rate >= 9.0, "about 10 in flight / 1 s, not a call a minute"


def test_the_rate_grows_back_additively_within_seconds_while_the_limit_holds_calls_back() -> None:
    control = RateControl(None, None, 0.0)
    for n in range(100):
        control.take(n / 100)
        control.reply(n / 100 + 0.001, n / 100, OK)
    for _ in range(40):
        control.take(1.0)
    for n in range(40):
        control.reply(1.01 + n / 1000, 1.0, OVERLOAD)
    decreased = control.rate
    assert decreased is not None
    now = 1.1
    while now < 4.1:
        if control.wait(now) <= 0.0:
            control.take(now, waited=True)
            control.reply(now + 0.001, now, OK)
        now += 0.001
    assert control.rate is not None and control.rate >= 1.25 * decreased, "three seconds of success"
    assert [rate for _, rate in control.history][:2] == [None, round(decreased * 60, 1)]


# --- whole runs in fake time -------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    calls: int
    overloads: int


def simulate(*, calls: int, concurrency: int, latency: float, rpm: float | None = None, every: int | None = None,
             retry_after: float = 0.2) -> Outcome:  # fmt: skip
    """N calls, each retried until it succeeds (after its Retry-After), C at a time, against a server that 429s
    every `every`th request or beyond a token bucket of `rpm` (burst: a second's worth)."""
    control = RateControl(None, None, 0.0)
    events: list[tuple[float, int, str, float]] = []  # (time, order, kind, sent)
    order = 0
    started, done, made, overloads, now = min(calls, concurrency), 0, 0, 0, 0.0
    bucket, updated = (rpm / 60 if rpm else 0.0), 0.0

    def push(at: float, kind: str, sent: float = 0.0) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, sent))

    for _ in range(started):
        push(0.0, "want")
    while events and done < calls:
        now, _, kind, sent = heapq.heappop(events)
        if kind == "want":
            wait = control.wait(now)
            if wait > 0:
                push(now + wait, "want")
                continue
            control.take(now, waited=True)
            made += 1
            refused = False
            if every is not None:
                refused = made % every == 0
            if rpm is not None:
                bucket = min(rpm / 60, bucket + (now - updated) * rpm / 60)
                updated = now
                refused = bucket < 1.0
                if not refused:
                    bucket -= 1.0
            push(now + latency, "overload" if refused else "ok", now)
        elif kind == "ok":
            control.reply(now, sent, OK)
            done += 1
            if started < calls:
                started += 1
                push(now, "want")
        else:
            overloads += 1
            wait = retry_after if rpm is None else max(0.001, (1.0 - bucket) / (rpm / 60))
            control.reply(now, sent, OVERLOAD, retry_after=wait)
            push(now + wait, "want")
    return Outcome(seconds=now, calls=made, overloads=overloads)


def test_a_server_that_429s_every_7th_request_keeps_most_of_the_pace() -> None:
    clean = simulate(calls=300, concurrency=10, latency=0.05)
    faulty = simulate(calls=300, concurrency=10, latency=0.05, every=7)
    assert faulty.seconds <= 3.0 * clean.seconds, (faulty, clean)
    assert faulty.calls == 300 + faulty.overloads


def test_against_a_real_token_bucket_the_run_paces_itself_near_the_limit() -> None:
    outcome = simulate(calls=200, concurrency=20, latency=0.01, rpm=600)
    assert outcome.seconds <= 1.5 * 200 / 10, outcome
    assert outcome.overloads < 0.3 * outcome.calls, outcome


# --- the asyncio side --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_waiting_calls_go_first_come_first_served_and_a_stop_cancels_them_at_once() -> None:
    async def run() -> tuple[list[int], list[int]]:
        limiter = RateLimiter(requests_per_minute=60 * 50)  # 50 a second, a burst of 50
        order: list[int] = []

        async def call(n: int) -> None:
            await limiter.acquire()
            order.append(n)

        await asyncio.gather(*(call(n) for n in range(60)))
        waiting = [asyncio.create_task(call(100 + n)) for n in range(20)]
        await asyncio.sleep(0.005)
        limiter.cancel_waits()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        cancelled = [n for n, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
        return order, cancelled

    order, cancelled = asyncio.run(run())
    assert order == list(range(60)), "first come, first served"
    assert len(cancelled) >= 15, "the waits were cancelled, not slept out"


def test_a_429_reply_pauses_the_queue_for_its_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    sent = limiter.try_take()
    assert sent == 0.0
    clock.now = 0.1
    limiter.reply(sent, ProviderError("429", retryable=True, retry_after=1.5, status=429, kind="rate_limit"))
    assert limiter.try_take() is None, "paused"
    clock.now = 1.7
    assert limiter.try_take() == 1.7
    summary = limiter.control.summary()
    assert summary["rate_limited"] == 1 and summary["paused_seconds"] == pytest.approx(1.5)
