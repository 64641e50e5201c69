"""Two `sleipnir serve` replicas sharing one PostgreSQL state store: every fire time of a schedule and every new
file runs exactly once, on whichever replica claims it first (a unique claim row in the store); when one
replica is killed, the other keeps firing.

Real processes, a real PostgreSQL store at 127.0.0.1:5432 (the test fails, never skips, without it), simulated
clocks running 60 times as fast as real time (each replica's starts when it does, so they disagree by a few
simulated minutes: the claims, not the clocks, keep each fire time to one run).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from test_run_process import make_workspace, process_env
from test_serve import Serve, scheduled, write_rows
from test_sources import postgres_url

from sleipnir.runtime.serve.schedule import CronSchedule

__all__ = ["postgres_url"]

START = "2024-03-30T12:00:30+00:00"
STARTING = re.compile(r"starting \((schedule|file) ([^)]+)\)")
SKIPPED = re.compile(r"skipped the run due (\S+): the previous run is still going")


def job(name: str, extra: str) -> str:
    """serve's scheduled job, writing each run's rows to a file of its own (runs on two replicas may overlap)."""
    return scheduled(name, extra).replace(f"path: out/{name}.jsonl", f"path: out/{name}/${{run.id}}.jsonl")


def started_runs(serve: Serve, name: str) -> list[tuple[str, str]]:
    """(kind, fire time or file) of each run `serve` started of job `name`, from its log."""
    found = []
    for line in serve.stderr().splitlines():
        if name in line and (match := STARTING.search(line)):
            found.append((match.group(1), match.group(2)))
    return found


@pytest.mark.parametrize(
    ("speed", "cron", "drops", "after"),
    [
        (60, "* * * * *", 12, timedelta(minutes=3)),
        pytest.param(1440, "*/15 * * * *", 40, timedelta(hours=1), marks=pytest.mark.soak, id="a-simulated-day"),
    ],
)
def test_two_replicas_run_each_fire_time_and_each_file_once_and_one_carries_on_alone(
    tmp_path: Path, postgres_url: str, speed: int, cron: str, drops: int, after: timedelta, request: pytest.FixtureRequest
) -> None:
    """A few simulated minutes by default; with `pytest -m soak`, a simulated day (a clock 1,440 times as fast)
    with a file dropped every second."""
    if request.node.get_closest_marker("soak") and "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the simulated day runs only with -m soak")
    every = cron
    tag = uuid.uuid4().hex[:6]
    cron, files = f"cron_{tag}", f"files_{tag}"
    ws = make_workspace(
        tmp_path / "ws",
        {
            f"jobs/{cron}.yaml": job(cron, f'schedule:\n  cron: "{every}"\n  catchup: none\n'),
            f"jobs/{files}.yaml": job(files, "triggers:\n  - type: file_created\n    path: drop/*.jsonl\n").replace(
                "  input:\n    path: data/items.jsonl\n", ""
            ),
        },
        manifest=f"name: replicas\nstate: {postgres_url}\n",
    )
    write_rows(ws / "data" / "items.jsonl", ["i1"])
    env = process_env(SLEIPNIR_CLOCK=f"fast:{speed}", SLEIPNIR_CLOCK_START=START)
    stale = _stale_claims(postgres_url, cron, files)
    replicas = [Serve(ws, env, tmp_path / "a"), Serve(ws, env, tmp_path / "b")]
    try:
        # The claims of fire times and files long done go at the start; those still needed stay.
        replicas[0].wait_for(lambda: not _claim_keys(postgres_url, cron, files) & stale["pruned"], "the stale claims pruned")
        assert stale["kept"] <= _claim_keys(postgres_url, cron, files)
        assert any("pruned" in r.stderr() for r in replicas)
        dropped = []
        for step in range(drops):
            target = ws / "drop" / f"f{step:02d}.jsonl"
            staged = ws / f".f{step:02d}.part"
            write_rows(staged, [f"f{step}"])
            staged.replace(target)
            dropped.append(str(target))
            time.sleep(1.0)

        def now(serve: Serve) -> datetime:
            return datetime.fromisoformat(serve.http.get("/healthz").json()["now"])

        views = [r.http.get("/healthz").json()["replica"] for r in replicas]
        assert views[0]["pid"] != views[1]["pid"] and all(v["pid"] == r.process.pid for v, r in zip(views, replicas, strict=True))
        # Both replicas wanted the same fire times: the one whose clock leads claims them first.
        assert any("is another replica's" in r.stderr() for r in replicas), "the replicas contend for fire times"
        leader = max(replicas, key=lambda r: len(started_runs(r, cron)))
        leader_pid = leader.process.pid
        leader.close()  # SIGKILL: its claims stay, its process is gone
        killed_at = max(datetime.fromisoformat(f) for r in replicas for k, f in started_runs(r, cron) if k == "schedule")
        survivor = next(r for r in replicas if r is not leader)
        survivor.wait_for(
            lambda: any(datetime.fromisoformat(f) > killed_at + after for k, f in started_runs(survivor, cron) if k == "schedule"),
            "fire times after the other replica died",
        )
        survivor.wait_for(lambda: len(_finished_runs(postgres_url, files)) == len(dropped), "every file's run")
        end = now(survivor)
        assert survivor.stop() == 0
        fired = [f for r in replicas for k, f in started_runs(r, cron) if k == "schedule"]
        assert len(fired) == len(set(fired)), "no fire time twice"
        first = min(datetime.fromisoformat(f) for f in fired)
        schedule = CronSchedule(cron=every, timezone="UTC")
        due = list(itertools.takewhile(lambda t: t <= end - after / 3, schedule.fires(first - timedelta(seconds=1))))
        # A run that outlasts the interval to the next fire time (0.625 s of real time in the simulated day) skips
        # it, as `overlap: skip` says, and the log says so: such a fire time is not a lost one, but skips stay rare.
        skipped = {f for r in replicas for f in SKIPPED.findall(r.stderr())}
        assert len(skipped) <= len(due) // 10, f"fire times skipped for overlap: {sorted(skipped)}"
        missed = {t.isoformat() for t in due} - set(fired) - skipped
        # A fire time is never taken over (`TriggerState.claim`): one the leader claimed and was killed before it
        # started is lost by design, and only the next one after its last start can be such.
        held = _claim_holders(postgres_url, cron)
        lost = {m for m in missed if held.get(m) == leader_pid}
        assert all(datetime.fromisoformat(m) > killed_at for m in lost) and len(lost) <= 1, f"lost with the leader: {sorted(lost)}"
        missed -= lost
        said = [line for r in replicas for line in r.stderr().splitlines() if any(m in line for m in missed)]
        assert not missed, f"every fire time once, the killed replica's next ones too: missed {sorted(missed)}; {said}"
        seen = [f for r in replicas for k, f in started_runs(r, files) if k == "file"]
        assert sorted(seen) == sorted(dropped), "each file once, on one replica"
        outputs = [json.loads(p.read_text())["id"] for p in (ws / "out" / files).glob("*.jsonl")]
        assert sorted(outputs) == sorted(f"f{i}" for i in range(drops))
        assert stale["kept"] <= _claim_keys(postgres_url, cron, files), "a claim still needed is kept"
    finally:
        for replica in replicas:
            replica.close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            for name in (cron, files):
                for table in ("sleipnir_runs", "sleipnir_claims", "sleipnir_schedule", "sleipnir_trigger_files"):
                    connection.execute(f"DELETE FROM {table} WHERE job = %s".encode(), [name])


def test_a_replica_makes_up_at_its_next_fire_time_what_a_stopped_replica_gave_back(tmp_path: Path, postgres_url: str) -> None:
    """A replica that stops gives back the fire times it left unrun (`TriggerState.release`, as its drain does);
    a replica still serving makes them up at the job's next fire time (`catchup: all`), each once."""
    from sleipnir.runtime.serve.triggers import TriggerState

    name = f"cron_{uuid.uuid4().hex[:6]}"
    ws = make_workspace(
        tmp_path / "ws",
        {f"jobs/{name}.yaml": job(name, 'schedule:\n  cron: "* * * * *"\n  catchup: all\n')},
        manifest=f"name: replicas\nstate: {postgres_url}\n",
    )
    write_rows(ws / "data" / "items.jsonl", ["i1"])
    serve = Serve(ws, process_env(SLEIPNIR_CLOCK="fast:60", SLEIPNIR_CLOCK_START=START), tmp_path / "serve")
    stopped = TriggerState(postgres_url)
    try:
        serve.wait_for(lambda: bool(started_runs(serve, name)), "a first fire time")
        given_back = [(datetime.fromisoformat(START) - timedelta(minutes=m)).isoformat() for m in (5, 4)]
        for fire in given_back:
            stopped.release("schedule", name, fire)
        serve.wait_for(lambda: all(f"starting (catch-up of {fire})" in serve.stderr() for fire in given_back), "the fire times made up")
        serve.wait_for(lambda: not stopped.released("schedule", name), "the claims taken")
        assert serve.stop() == 0
        assert f"making up 2 runs a stop left unrun: {', '.join(given_back)}" in serve.stderr()
        made_up = [line for line in serve.stderr().splitlines() if "starting (catch-up of" in line]
        assert len(made_up) == 2, "each once"
    finally:
        serve.close()
        with stopped._transaction() as cursor:
            for table in ("sleipnir_runs", "sleipnir_claims", "sleipnir_schedule"):
                cursor.execute(f"DELETE FROM {table} WHERE job = %s", [name])
        stopped.close()


def _finished_runs(url: str, job: str) -> list[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT run_id FROM sleipnir_runs WHERE job = %s AND status <> 'running'", [job]).fetchall()
    return [str(r[0]) for r in rows]


def _stale_claims(url: str, cron: str, files: str) -> dict[str, set[tuple[str, str]]]:
    """Claims a store holds before the replicas start: fire times 4 days before the clocks start (pruned: 3 days
    is the retention), one 2 days before (kept), a file whose run ended long ago (pruned), one whose run is still
    `started` (kept: a replica resumes it)."""
    start = datetime.fromisoformat(START)
    old = [(start - timedelta(days=4, minutes=m)).isoformat() for m in (0, 1)]
    recent = (start - timedelta(days=2)).isoformat()
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in (
            "CREATE TABLE IF NOT EXISTS sleipnir_claims (kind TEXT NOT NULL, job TEXT NOT NULL, claim_key TEXT NOT NULL, "
            "host TEXT NOT NULL, pid INTEGER NOT NULL, claimed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, job, claim_key))",
            "CREATE TABLE IF NOT EXISTS sleipnir_trigger_files (job TEXT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL, "
            "mtime DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, run_id TEXT, updated_at DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (job, path))",
        ):
            connection.execute(statement.encode())
        for key in [*old, recent]:
            connection.execute("INSERT INTO sleipnir_claims VALUES ('schedule', %s, %s, 'gone', 1, 0)", [cron, key])
        for path, status in (("/gone/done.jsonl", "done"), ("/gone/started.jsonl", "started")):
            connection.execute("INSERT INTO sleipnir_claims VALUES ('file', %s, %s, 'gone', 1, 0)", [files, f"{path}|5|1.0"])
            connection.execute("INSERT INTO sleipnir_trigger_files VALUES (%s, %s, 5, 1.0, %s, NULL, 0)", [files, path, status])
    return {
        "pruned": {("schedule", k) for k in old} | {("file", "/gone/done.jsonl|5|1.0")},
        "kept": {("schedule", recent), ("file", "/gone/started.jsonl|5|1.0")},
    }


def _claim_holders(url: str, job: str) -> dict[str, int]:
    """The pid holding each of `job`'s claims, by claim key."""
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT claim_key, pid FROM sleipnir_claims WHERE job = %s", [job]).fetchall()
    return {str(key): int(pid) for key, pid in rows}


def _claim_keys(url: str, cron: str, files: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT kind, claim_key FROM sleipnir_claims WHERE job IN (%s, %s)", [cron, files]).fetchall()
    return {(str(kind), str(key)) for kind, key in rows}


def test_a_fire_times_claim_stays_until_its_schedule_moved_a_retention_past_it(tmp_path: Path) -> None:
    from sleipnir.runtime.serve.triggers import TriggerState

    state = TriggerState(str(tmp_path / "state.db"), str(tmp_path))
    now = datetime.fromisoformat(START)
    fires = [now - timedelta(days=d) for d in (10, 6, 2)]
    try:
        for fire in fires:
            assert state.claim("schedule", "j", fire.isoformat())
        # Claimed just now (by a replica making up a downtime, say): kept, however old the fire times.
        assert state.prune_claims(now, timedelta(days=1)) == 0
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as connection, connection:
            connection.execute("UPDATE sleipnir_claims SET claimed_at = 0")
        # The schedule last handled 8 days ago (serve down, or the schedule off): a catch-up may ask for what
        # came after, and a replica a little behind for a little before; only the 10-day-old claim is past it.
        state.set_handled_until("j", now - timedelta(days=8))
        assert state.prune_claims(now, timedelta(days=1)) == 1
        state.set_handled_until("j", now)
        assert state.prune_claims(now, timedelta(days=3)) == 1, "6 days old, and the schedule moved on"
        assert state.prune_claims(now, timedelta(days=3)) == 0
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as connection:
            keys = [k for (k,) in connection.execute("SELECT claim_key FROM sleipnir_claims")]
        assert keys == [fires[2].isoformat()]
    finally:
        state.close()
