"""The scheduler's logic with injected times: cron fire times across daylight-saving changes both ways, macros,
catch-up after a downtime, overlap decisions (and the service applying them on a hand-driven clock), time
windows across midnight, `data_available` on real SQLite and PostgreSQL, webhook authentication and bodies, file
globs, and the trigger state store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import sqlite3
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from test_sources import pg_table, postgres_url

from sleipnir.cli.serve import clock_from_environ
from sleipnir.runtime.engine.job import Progress, RunResult
from sleipnir.runtime.engine.pipeline import PipelineResult
from sleipnir.runtime.serve.metrics import RunMetrics
from sleipnir.runtime.serve.schedule import CronSchedule, overlap_decision
from sleipnir.runtime.serve.service import FastClock, Service
from sleipnir.runtime.serve.triggers import (
    FileGlob,
    TriggerState,
    WebhookBodyError,
    conditions_hold,
    data_available,
    time_window_holds,
    verify,
    webhook_rows,
)

__all__ = ["pg_table", "postgres_url"]

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


def fires(schedule: CronSchedule, after: datetime, until: datetime) -> list[datetime]:
    return list(itertools.takewhile(lambda t: t <= until, schedule.fires(after)))


# -- cron and daylight saving -------------------------------------------------------------------------------


def test_a_job_at_0230_runs_once_at_0300_on_the_spring_forward_day() -> None:
    schedule = CronSchedule(cron="30 2 * * *", timezone="Europe/Oslo")
    # 2024-03-31: Oslo clocks jump from 02:00 to 03:00; 02:30 does not exist.
    runs = fires(schedule, local(OSLO, 2024, 3, 30, 12, 0), local(OSLO, 2024, 4, 1, 12, 0))
    assert [t.astimezone(OSLO) for t in runs] == [
        local(OSLO, 2024, 3, 31, 3, 0),
        local(OSLO, 2024, 4, 1, 2, 30),
    ]
    assert runs[0] == utc(2024, 3, 31, 1, 0), "the first instant after the gap"


def test_a_job_at_0230_runs_once_on_the_fall_back_day_the_first_time() -> None:
    schedule = CronSchedule(cron="30 2 * * *", timezone="Europe/Oslo")
    # 2024-10-27: Oslo clocks go back from 03:00 to 02:00; 02:30 happens twice (00:30 and 01:30 UTC).
    runs = fires(schedule, local(OSLO, 2024, 10, 26, 12, 0), local(OSLO, 2024, 10, 28, 12, 0))
    assert runs == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    # Asked again from inside the second pass (02:15 winter time), it does not run 02:30 a second time.
    second_pass = local(OSLO, 2024, 10, 27, 2, 15, fold=1)
    assert second_pass.astimezone(UTC) == utc(2024, 10, 27, 1, 15)
    assert schedule.next_fire(second_pass) == utc(2024, 10, 28, 1, 30)


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        # Spring forward (2024-03-10, 02:00 -> 03:00): 23 hours; the 02:00 and 02:30 runs become one at 03:00.
        ((2024, 3, 10), 23),
        # Fall back (2024-11-03, 02:00 -> 01:00): 25 hours; the 01:00 and 01:30 runs happen once each.
        ((2024, 11, 3), 25),
    ],
)
def test_half_hourly_runs_in_new_york_are_neither_doubled_nor_lost_across_a_change(day: tuple[int, int, int], hours: int) -> None:
    schedule = CronSchedule(cron="*/30 * * * *", timezone="America/New_York")
    start = local(NEW_YORK, *day, 0, 0)
    end = start + timedelta(days=1)
    assert (end.astimezone(UTC) - start.astimezone(UTC)) == timedelta(hours=hours)
    runs = fires(schedule, start.astimezone(UTC) - timedelta(seconds=1), end.astimezone(UTC) - timedelta(seconds=1))
    assert runs == sorted(set(runs)), "strictly increasing: nothing runs twice"
    walls = [t.astimezone(NEW_YORK).strftime("%H:%M") for t in runs]
    # Every local half hour that exists runs exactly once; the skipped ones fold into the first valid instant.
    expected = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 30)]
    if hours == 23:
        expected.remove("02:00")
        expected.remove("02:30")
    assert walls == expected


def test_macros_daily_and_hourly_follow_the_local_clock() -> None:
    daily = CronSchedule(cron="@daily", timezone="Europe/Oslo")
    runs = fires(daily, utc(2024, 3, 29, 12), utc(2024, 4, 1, 12))
    assert [t.astimezone(OSLO).strftime("%Y-%m-%d %H:%M") for t in runs] == [
        "2024-03-30 00:00",
        "2024-03-31 00:00",
        "2024-04-01 00:00",
    ]
    assert runs[0] == utc(2024, 3, 29, 23) and runs[2] == utc(2024, 3, 31, 22), "midnight moved with summer time"
    hourly = CronSchedule(cron="@hourly", timezone="Europe/Oslo")
    runs = fires(hourly, utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 3, 30))
    assert runs == [utc(2024, 3, 31, h) for h in range(0, 4)], "one run an hour of real time, across the jump"
    assert CronSchedule(cron="@hourly").first_due(utc(2024, 1, 1, 9)) == utc(2024, 1, 1, 9), "due now counts"
    assert CronSchedule(cron="@hourly").next_fire(utc(2024, 1, 1, 9)) == utc(2024, 1, 1, 10)


def test_a_schedule_takes_the_plan_settings_and_rejects_bad_values() -> None:
    schedule = CronSchedule.from_settings({"cron": "0 9 * * MON-FRI", "timezone": "UTC", "catchup_window": "6h"})
    assert (schedule.enabled, schedule.catchup, schedule.overlap) == (True, "latest", "skip")
    assert schedule.catchup_window == timedelta(hours=6)
    for bad in ({"cron": "61 * * * *"}, {"cron": "@daily", "timezone": "Mars/Base"}, {"cron": "@daily", "catchup": "some"}):
        with pytest.raises((ValueError, KeyError)):
            CronSchedule.from_settings(bad)


# -- catching up --------------------------------------------------------------------------------------------


def hourly(catchup: str, window: str = "1d", enabled: bool = True) -> CronSchedule:
    return CronSchedule.from_settings({"cron": "0 * * * *", "catchup": catchup, "catchup_window": window, "enabled": enabled})


def test_after_a_downtime_catchup_all_latest_and_none() -> None:
    last, now = utc(2024, 5, 1, 8, 0), utc(2024, 5, 1, 12, 30)
    assert hourly("all").missed(last, now) == [utc(2024, 5, 1, h) for h in (9, 10, 11, 12)]
    assert hourly("latest").missed(last, now) == [utc(2024, 5, 1, 12)]
    assert hourly("none").missed(last, now) == []


def test_only_runs_inside_the_catchup_window_count() -> None:
    last, now = utc(2024, 5, 1, 8, 0), utc(2024, 5, 1, 12, 30)
    assert hourly("all", "2h").missed(last, now) == [utc(2024, 5, 1, 11), utc(2024, 5, 1, 12)]
    assert hourly("latest", "10m").missed(last, now) == []


def test_nothing_is_missed_without_a_last_run_when_disabled_or_when_due_now() -> None:
    assert hourly("all").missed(None, utc(2024, 5, 1, 12, 30)) == []
    assert hourly("all", enabled=False).missed(utc(2024, 5, 1, 8), utc(2024, 5, 1, 12, 30)) == []
    # The run due exactly at start is not missed: the scheduler starts with it (`first_due`).
    assert hourly("all").missed(utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 12)) == [utc(2024, 5, 1, 11)]
    assert hourly("all").first_due(utc(2024, 5, 1, 12)) == utc(2024, 5, 1, 12)


def test_catchup_across_the_fall_back_night_makes_up_each_run_once() -> None:
    schedule = CronSchedule.from_settings({"cron": "30 2 * * *", "timezone": "Europe/Oslo", "catchup": "all", "catchup_window": "3d"})
    missed = schedule.missed(utc(2024, 10, 25, 12), utc(2024, 10, 28, 12))
    assert missed == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


# -- overlap ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "running", "waiting", "decision"),
    [
        ("skip", 0, 0, "start"),
        ("skip", 1, 0, "skip"),
        ("queue", 0, 0, "start"),
        ("queue", 1, 0, "queue"),
        ("queue", 1, 1, "skip"),
        ("allow", 3, 0, "start"),
    ],
)
def test_overlap_decisions(policy: str, running: int, waiting: int, decision: str) -> None:
    assert overlap_decision(policy, running=running, waiting=waiting) == decision


class HandClock:
    """A clock the test moves by hand; the scheduler's sleeps end when it passes their time."""

    def __init__(self, start: datetime) -> None:
        self.moment = start
        self.sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self.moment

    async def sleep_until(self, moment: datetime) -> None:
        if moment <= self.moment:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((moment, future))
        await future

    def advance(self, moment: datetime) -> None:
        self.moment = moment
        for when, future in list(self.sleepers):
            if when <= moment and not future.done():
                future.set_result(None)
        self.sleepers = [(w, f) for w, f in self.sleepers if not f.done()]


class HeldRuns(Service):
    """The service, with each scheduled run replaced by one that ends when the test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def run_scheduled(self, job: Any, fire: Any) -> RunResult | PipelineResult:
        self.started.append(job.name)
        event = self.release.setdefault(job.name, asyncio.Event())
        await event.wait()
        event.clear()
        return RunResult(run_id="r", plan_id="p", job=job.name, status="succeeded", progress=Progress())


def overlap_workspace(root: Path) -> Path:
    (root / "sleipnir.yaml").write_text("name: overlaps\n", encoding="utf-8")
    for policy in ("skip", "queue", "allow"):
        (root / f"{policy}.yaml").write_text(
            textwrap.dedent(
                f"""\
                job:
                  name: every_minute_{policy}
                  schedule:
                    cron: "* * * * *"
                    overlap: {policy}
                    catchup: none
                  prompts:
                    - name: classifier
                      version: 1.0.0
                      model: mock
                """
            ),
            encoding="utf-8",
        )
    return root


async def settle(condition: Any, what: str, serving: asyncio.Task[int]) -> None:
    """Let the service work until `condition()` holds (it compiles and reads its store on threads); the bound is
    a safety net against a hang, not a timing assertion."""
    for _ in range(6000):
        if condition():
            return
        if serving.done():
            raise AssertionError(f"the service ended before {what}") from serving.exception()
        await asyncio.sleep(0.005)
    raise AssertionError(f"never reached: {what}")


def test_the_service_applies_overlap_on_a_hand_driven_clock(tmp_path: Path) -> None:
    metrics = RunMetrics()
    clock = HandClock(utc(2024, 5, 1, 8, 59, 30))
    service = HeldRuns(overlap_workspace(tmp_path), clock=clock, port=0, metrics=metrics, environ={})

    def skipped(name: str) -> float:
        return metrics.registry.get_sample_value("sleipnir_runs_skipped_total", {"job": name, "reason": "overlap"}) or 0.0

    async def scenario() -> None:
        serving = asyncio.create_task(service.serve())
        await settle(lambda: len(service.jobs) == 3 and clock.sleepers, "the scheduler asleep", serving)
        clock.advance(utc(2024, 5, 1, 9, 0))  # all three start
        await settle(lambda: len(service.started) == 3, "three runs started", serving)
        clock.advance(utc(2024, 5, 1, 9, 1))  # each previous run is still going
        await settle(lambda: service.started.count("every_minute_allow") == 2, "allow starts a second run", serving)
        await settle(lambda: skipped("every_minute_skip") == 1, "skip skips", serving)
        assert service.jobs["every_minute_queue"].waiting == 1
        clock.advance(utc(2024, 5, 1, 9, 2))  # queue already has one waiting: this one is dropped
        await settle(lambda: skipped("every_minute_queue") == 1 and skipped("every_minute_skip") == 2, "dropped", serving)
        service.release["every_minute_queue"].set()  # the first queue run ends; the waiting one starts
        await settle(lambda: service.started.count("every_minute_queue") == 2, "the queued run started", serving)
        assert service.started.count("every_minute_skip") == 1 and service.started.count("every_minute_allow") == 3
        for event in service.release.values():
            event.set()
        service.stop()
        assert await serving == 0

    asyncio.run(scenario())
    assert skipped("every_minute_allow") == 0


# -- clocks -------------------------------------------------------------------------------------------------


def test_the_clock_comes_from_the_environment() -> None:
    clock = clock_from_environ({"SLEIPNIR_CLOCK": "fast:3600", "SLEIPNIR_CLOCK_START": "2024-03-31T00:59:00Z"})
    assert isinstance(clock, FastClock) and clock.factor == 3600
    assert clock.now() >= utc(2024, 3, 31, 0, 59)
    naive = clock_from_environ({"SLEIPNIR_CLOCK_START": "2024-03-31T00:59:00"})
    assert isinstance(naive, FastClock) and naive.start == utc(2024, 3, 31, 0, 59) and naive.factor == 1
    assert not isinstance(clock_from_environ({}), FastClock)
    for bad in ({"SLEIPNIR_CLOCK": "slow:2"}, {"SLEIPNIR_CLOCK": "fast:x"}, {"SLEIPNIR_CLOCK": "fast:0"}, {"SLEIPNIR_CLOCK_START": "noon"}):
        with pytest.raises(ValueError):
            clock_from_environ(bad)


def test_a_fast_clock_sleeps_a_simulated_hour_in_a_moment() -> None:
    clock = FastClock(utc(2024, 1, 1), factor=360000)
    asyncio.run(clock.sleep_until(utc(2024, 1, 1, 1)))
    assert clock.now() >= utc(2024, 1, 1, 1)


# -- conditions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "holds"),
    [((8, 59), False), ((9, 0), True), ((12, 0), True), ((16, 59), True), ((17, 0), False)],
)
def test_a_day_window(at: tuple[int, int], holds: bool) -> None:
    assert time_window_holds("09:00", "17:00", "UTC", utc(2024, 5, 1, *at)) is holds


@pytest.mark.parametrize(
    ("at", "holds"),
    [((21, 59), False), ((22, 0), True), ((23, 30), True), ((0, 0), True), ((5, 59), True), ((6, 0), False), ((12, 0), False)],
)
def test_a_window_across_midnight(at: tuple[int, int], holds: bool) -> None:
    assert time_window_holds("22:00", "06:00", "UTC", utc(2024, 5, 1, *at)) is holds


def test_a_window_is_read_on_its_zones_clock() -> None:
    # 21:30 UTC in January is 22:30 in Oslo: inside Oslo's night window, outside UTC's.
    now = utc(2024, 1, 15, 21, 30)
    assert time_window_holds("22:00", "06:00", "Europe/Oslo", now)
    assert not time_window_holds("22:00", "06:00", "UTC", now)


@pytest.fixture
def counted_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data" / "app.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE new_data (id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO new_data (body) VALUES (?)", [(f"row {i}",) for i in range(150)])
    connection.close()
    yield path


def test_data_available_on_sqlite(counted_db: Path, tmp_path: Path) -> None:
    ok, reason = data_available("SELECT COUNT(*) FROM new_data", 100, "data/app.db", str(tmp_path))
    assert ok and reason == "data_available: 150 >= 100"
    ok, reason = data_available("SELECT COUNT(*) FROM new_data WHERE body LIKE 'row 1%'", 100, f"sqlite:///{counted_db}", "/")
    assert not ok and reason == "data_available: the check returned 61, below the threshold 100"
    ok, reason = data_available("SELECT COUNT(*) FROM missing_table", 1, "data/app.db", str(tmp_path))
    assert not ok and "no such table: missing_table" in reason
    ok, reason = data_available("SELECT 'many'", 1, "data/app.db", str(tmp_path))
    assert not ok and "not a number" in reason
    ok, reason = data_available("SELECT COUNT(*) FROM new_data", 1, "data/absent.db", str(tmp_path))
    assert not ok and "not found" in reason


def test_data_available_opens_sqlite_read_only(counted_db: Path, tmp_path: Path) -> None:
    ok, reason = data_available("DELETE FROM new_data RETURNING 1", 0, "data/app.db", str(tmp_path))
    assert not ok and "readonly" in reason.replace("-", "").replace(" ", "")
    with sqlite3.connect(counted_db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM new_data").fetchone() == (150,)
    connection.close()


def test_data_available_on_postgresql(postgres_url: str, pg_table: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {pg_table} (id SERIAL PRIMARY KEY, body TEXT)".encode())
        connection.execute(f"INSERT INTO {pg_table} (body) SELECT 'row ' || i FROM generate_series(1, 120) i".encode())
    ok, reason = data_available(f"SELECT COUNT(*) FROM {pg_table} WHERE body LIKE 'row %'", 100, postgres_url, "/")
    assert ok and reason == "data_available: 120 >= 100"
    ok, reason = data_available(f"SELECT COUNT(*) FROM {pg_table}", 500, postgres_url, "/")
    assert not ok and "120, below the threshold 500" in reason
    ok, reason = data_available(f"DELETE FROM {pg_table} RETURNING id", 0, postgres_url, "/")
    assert not ok and "read-only" in reason
    user = postgres_url.split("//")[1].split("@")[0]
    ok, reason = data_available("SELECT 1", 1, f"postgresql://{user}:hunter2secret@127.0.0.1:5432/no_such_database_here", "/")
    assert not ok and "no_such_database_here" in reason and "hunter2secret" not in reason


def test_conditions_hold_names_the_first_that_does_not(counted_db: Path, tmp_path: Path) -> None:
    conditions = [
        {"type": "data_available", "check": "SELECT COUNT(*) FROM new_data", "threshold": 100},
        {"type": "time_window", "start": "22:00", "end": "06:00", "timezone": "Europe/Oslo"},
    ]
    asked: list[str | None] = []

    def connection_for(name: str | None) -> str:
        asked.append(name)
        return "data/app.db"

    night, noon = utc(2024, 1, 15, 23), utc(2024, 1, 15, 12)
    ok, reason = conditions_hold(conditions, now=night, zone="UTC", root=str(tmp_path), connection_for=connection_for)
    assert ok and asked == [None] and "150 >= 100" in reason
    ok, reason = conditions_hold(conditions, now=noon, zone="UTC", root=str(tmp_path), connection_for=connection_for)
    assert not ok and reason == "time_window: 13:00 Europe/Oslo is outside 22:00-06:00"
    assert asked == [None], "the free time window is checked first: no query at noon"


# -- webhooks -----------------------------------------------------------------------------------------------


def test_a_webhook_request_proves_the_secret_by_bearer_or_signature() -> None:
    body = b'{"id": 1}'
    signature = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify({"Authorization": "Bearer s3cret"}, body, "s3cret")
    assert verify({"authorization": "bearer s3cret"}, body, "s3cret")
    assert verify({"X-Sleipnir-Signature": f"sha256={signature}"}, body, "s3cret")
    assert verify({"x-sleipnir-signature": f"sha256={signature.upper()}"}, body, "s3cret")
    assert not verify({}, body, "s3cret")
    assert not verify({"Authorization": "Bearer wrong"}, body, "s3cret")
    assert not verify({"Authorization": "Basic s3cret"}, body, "s3cret")
    assert not verify({"X-Sleipnir-Signature": f"sha256={signature}"}, body + b" ", "s3cret")
    assert not verify({"X-Sleipnir-Signature": signature}, body, "s3cret")
    assert not verify({"Authorization": "Bearer "}, body, ""), "no secret set: nothing is accepted"


def test_webhook_bodies() -> None:
    assert webhook_rows(b'{"id": 1}') == [{"id": 1}]
    assert webhook_rows(b'[{"id": 1}, {"id": 2}]') == [{"id": 1}, {"id": 2}]
    for body, message in [
        (b"{oops", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"42", "not int"),
        (b"[]", "empty array"),
        (b'[{"id": 1}, "two"]', "item 1 of the array is str"),
    ]:
        with pytest.raises(WebhookBodyError, match=message):
            webhook_rows(body)


# -- file triggers ------------------------------------------------------------------------------------------


def test_file_globs() -> None:
    flat = FileGlob.under("inbox/*.json", "/srv/ws")
    assert flat.pattern == "/srv/ws/inbox/*.json" and flat.base == Path("/srv/ws/inbox") and not flat.recursive
    assert flat.matches("/srv/ws/inbox/a.json") and not flat.matches("/srv/ws/inbox/sub/a.json")
    assert not flat.matches("/srv/ws/inbox/a.jsonl")
    deep = FileGlob.under("/data/**/*.csv", "/srv/ws")
    assert deep.base == Path("/data") and deep.recursive
    assert deep.matches("/data/a.csv") and deep.matches("/data/x/y/a.csv") and not deep.matches("/other/a.csv")
    classes = FileGlob.under("in/batch_[0-9]?.jsonl", "/w")
    assert classes.matches("/w/in/batch_12.jsonl") and not classes.matches("/w/in/batch_x2.jsonl")
    assert FileGlob.under("in/[!.]*.txt", "/w").matches("/w/in/a.txt")
    assert not FileGlob.under("in/[!.]*.txt", "/w").matches("/w/in/.a.txt")


def test_the_trigger_state_survives_a_reopen(tmp_path: Path) -> None:
    state = TriggerState(".sleipnir/state.db", str(tmp_path))
    assert state.file("inbox", "/x/a.json") is None and state.handled_until("nightly") is None
    state.mark_file("inbox", "/x/a.json", size=10, mtime=1.5, status="started", run_id="r1")
    state.mark_file("inbox", "/x/a.json", size=10, mtime=1.5, status="done", run_id="r1")
    state.set_handled_until("nightly", utc(2024, 5, 1, 9))
    state.close()
    again = TriggerState(".sleipnir/state.db", str(tmp_path))
    record = again.file("inbox", "/x/a.json")
    assert record is not None and (record.size, record.mtime, record.status, record.run_id) == (10, 1.5, "done", "r1")
    assert again.file("other_job", "/x/a.json") is None
    assert again.handled_until("nightly") == utc(2024, 5, 1, 9)
    again.close()


def test_the_trigger_state_lives_in_postgresql_too(postgres_url: str) -> None:
    state = TriggerState(postgres_url)
    job = f"job_{datetime.now(UTC).timestamp()}"
    try:
        state.mark_file(job, "/in/a.json", size=3, mtime=2.0, status="done", run_id=None)
        state.set_handled_until(job, utc(2024, 5, 1, 9, 30))
        record = state.file(job, "/in/a.json")
        assert record is not None and record.status == "done"
        assert state.handled_until(job) == utc(2024, 5, 1, 9, 30)
    finally:
        with state._transaction() as cursor:
            cursor.execute("DELETE FROM sleipnir_trigger_files WHERE job = %s", [job])
            cursor.execute("DELETE FROM sleipnir_schedule WHERE job = %s", [job])
        state.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_claim_given_back_goes_to_the_next_replica_to_ask(
    tmp_path: Path, store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release` gives back a fire time serve's stop left unrun: held by this process, or claimed by no one.
    `released` lists it, and the next replica to `claim` it gets it; a claim another replica holds stays its."""
    url = str(tmp_path / "state.db") if store == "sqlite" else request.getfixturevalue("postgres_url")
    state = TriggerState(url, str(tmp_path))
    job = f"job_{datetime.now(UTC).timestamp()}"
    ran, queued, theirs = (utc(2024, 5, 1, 9, minute).isoformat() for minute in (0, 1, 2))
    try:
        assert state.claim("schedule", job, ran)
        state.release("schedule", job, ran)
        state.release("schedule", job, queued)
        assert state.released("schedule", job) == [ran, queued]
        assert state.claim("schedule", job, ran), "given back to anyone, this process too"
        assert state.released("schedule", job) == [queued]

        real = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: real + 1)  # another replica, alive on this host
        assert state.claim("schedule", job, queued) and state.claim("schedule", job, theirs)
        monkeypatch.setattr(os, "getpid", lambda: real)
        state.release("schedule", job, theirs)
        assert state.released("schedule", job) == []
        assert not state.claim("schedule", job, theirs) and not state.claim("schedule", job, queued)
    finally:
        with state._transaction() as cursor:
            cursor.execute(state._sql("DELETE FROM sleipnir_claims WHERE job = ?"), [job])
        state.close()
