"""Run semantics a user can trust, with real processes against the LLM server (tests/llm_server.py):

- a rerun redoes exactly what changed (the model, a row), and names the prompts that changed;
- outputs accumulate by item key across runs over other inputs;
- a provider without a key stops the run before any call, unless the endpoint is explicitly keyless;
- a job without an input runs its prompts once;
- a second run of the same job while one is going refuses, with a clear message;
- SIGKILL at a random moment, ten times, then resume: every row once in a file, a SQLite table and a PostgreSQL
  table, and no more calls than rows plus twice the concurrency (answers are durable as they arrive).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from llm_server import LLMServer
from test_run_process import (
    llm,
    make_workspace,
    pg_table,
    postgres_url,
    process_env,
    result_of,
    scoring_job,
    server,
    sleipnir,
    started,
    write_items,
)

__all__ = ["llm", "pg_table", "postgres_url", "server"]

LLM_LATENCY = 0.01


def rows_in(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def calls(server: LLMServer) -> int:
    return int(server.requests(0)["count"])


# -- staleness ------------------------------------------------------------------------------------------------


def test_a_rerun_redoes_exactly_what_changed(tmp_path: Path, server: LLMServer) -> None:
    job = scoring_job("score", extra="")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    items = ws / "data" / "items.jsonl"
    write_items(items, 50)
    env = process_env(server)

    first = sleipnir(["run-job", "score", "--json"], ws, env)
    assert first.returncode == 0, first.stderr
    assert calls(server) == 50

    again = sleipnir(["run-job", "score", "--json"], ws, env)
    assert again.returncode == 0, again.stderr
    assert calls(server) == 50, "an unchanged rerun calls nothing"
    assert result_of(again.stdout)["metrics"]["items_already_done"] == 50

    # The model changes in the YAML: every item's work changed.
    (ws / "jobs" / "score.yaml").write_text(job.replace("      endpoint:", "      model: gpt-4.1-mini\n      endpoint:"))
    changed = sleipnir(["run-job", "score", "--json"], ws, env)
    assert changed.returncode == 0, changed.stderr
    assert calls(server) == 100
    bodies = server.requests(50)["bodies"]
    assert {body["model"] for body in bodies} == {"gpt-4.1-mini"}
    metrics = result_of(changed.stdout)["metrics"]
    assert (metrics["items_stale"], metrics["items_processed"], metrics["changed_prompts"]) == (50, 50, ["scorer"])
    assert "changed since the last run: scorer" in changed.stderr

    # Five rows are edited: five calls.
    lines = items.read_text().splitlines()
    for i in (3, 9, 20, 31, 44):
        row = json.loads(lines[i])
        lines[i] = json.dumps({**row, "text": row["text"] + " (edited)"})
    items.write_text("\n".join(lines) + "\n")
    edited = sleipnir(["run-job", "score", "--json"], ws, env)
    assert edited.returncode == 0, edited.stderr
    assert calls(server) == 105
    assert result_of(edited.stdout)["metrics"]["items_stale"] == 5
    assert len(rows_in(ws / "out" / "scores.jsonl")) == 50

    # --keep-stale keeps the old results after a change; --fresh redoes everything.
    (ws / "jobs" / "score.yaml").write_text(job)
    kept = sleipnir(["run-job", "score", "--keep-stale", "--json"], ws, env)
    assert kept.returncode == 0, kept.stderr
    assert calls(server) == 105
    fresh = sleipnir(["run-job", "score", "--fresh", "--json"], ws, env)
    assert fresh.returncode == 0, fresh.stderr
    assert calls(server) == 155


def test_dry_run_says_what_a_run_would_call_before_spending_anything(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score")})
    items = ws / "data" / "items.jsonl"
    write_items(items, 12)
    env = process_env(server)
    assert sleipnir(["run-job", "score", "--limit", "8"], ws, env).returncode == 0
    assert calls(server) == 8
    dry = sleipnir(["run-job", "score", "--dry-run"], ws, env)
    assert dry.returncode == 0, dry.stderr
    assert "would call 4 of 12 items: 4 new, 0 stale, 0 failed before; 8 already done" in dry.stdout
    assert "estimated cost" in dry.stdout
    assert calls(server) == 8


# -- outputs accumulate ---------------------------------------------------------------------------------------


def test_runs_over_other_inputs_accumulate_in_the_file(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score")})
    write_items(ws / "data" / "items.jsonl", 1)
    a = write_items(tmp_path / "a.jsonl", 10, prefix="a")
    b = write_items(tmp_path / "b.jsonl", 10, prefix="b")
    env = process_env(server)
    for path in ("a.jsonl", "b.jsonl"):
        done = sleipnir(["run-job", "score", "--input", str(tmp_path / path)], ws, env)
        assert done.returncode == 0, done.stderr
    assert sorted(str(row["id"]) for row in rows_in(ws / "out" / "scores.jsonl")) == sorted(a + b)


def test_an_output_path_can_keep_runs_apart(tmp_path: Path, server: LLMServer) -> None:
    output = "path: out/${trigger.file_stem}/${run.date}.jsonl"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", output)})
    write_items(ws / "data" / "items.jsonl", 1)
    write_items(tmp_path / "monday.jsonl", 3)
    env = process_env(server)
    assert sleipnir(["check", "--strict"], ws, env).returncode == 0
    before = time.strftime("%Y-%m-%d", time.gmtime())
    done = sleipnir(["run-job", "score", "--input", str(tmp_path / "monday.jsonl")], ws, env)
    assert done.returncode == 0, done.stderr
    [written] = (ws / "out" / "monday").glob("*.jsonl")
    # The run's date is taken when it starts: a run that crosses midnight (UTC) has the date before or after it.
    assert written.name in {f"{day}.jsonl" for day in (before, time.strftime("%Y-%m-%d", time.gmtime()))}
    assert len(rows_in(written)) == 3


# -- no key, no input -----------------------------------------------------------------------------------------

NO_KEY_JOB = """\
job:
  name: keyless
  input:
    path: data/items.jsonl
  prompts:
    - name: scorer
      version: 1.0.0
  output:
    path: out/keyless.jsonl
"""


def test_a_provider_without_a_key_stops_before_any_call(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/keyless.yaml": NO_KEY_JOB})
    write_items(ws / "data" / "items.jsonl", 5)
    env = process_env(server)
    done = sleipnir(["run-job", "keyless", "--json"], ws, env)
    assert done.returncode == 1
    assert "OPENAI_API_KEY" in done.stderr + done.stdout and "fallback_provider: mock" in done.stderr + done.stdout
    assert result_of(done.stdout)["metrics"]["calls"] == 0
    assert not (ws / "out" / "keyless.jsonl").exists()

    # An explicitly keyless endpoint (vLLM, Ollama) is the one exception.
    keyless = sleipnir(["run-job", "keyless", "--json"], ws, {**env, "OPENAI_BASE_URL": server.base_url})
    assert keyless.returncode == 0, keyless.stderr
    assert calls(server) == 5


REPORT_JOB = """\
job:
  name: daily_report
  schedule:
    cron: "0 9 * * *"
  prompts:
    - name: report_generator
      version: 1.0.0
      model: mock
  output:
    path: out/reports.jsonl
"""


def test_a_job_without_input_runs_its_prompts_once(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/report.yaml": REPORT_JOB})
    env = process_env()
    assert sleipnir(["check", "--strict"], ws, env).returncode == 0
    planned = sleipnir(["plan", "daily_report"], ws, env)
    assert planned.returncode == 0, planned.stderr
    assert "1 item (no input)" in planned.stdout
    for _ in range(2):
        done = sleipnir(["run-job", "daily_report", "--json"], ws, env)
        assert done.returncode == 0, done.stderr
        assert result_of(done.stdout)["metrics"]["items_processed"] == 1
    rows = rows_in(ws / "out" / "reports.jsonl")
    assert len(rows) == 2 and all("report_generator" in row for row in rows)
    assert len({row["run"] for row in rows}) == 2, "each run's item is keyed by its run id"


# -- two runs at once -----------------------------------------------------------------------------------------


def test_a_second_run_of_the_same_job_refuses_while_one_goes(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=2)})
    keys = write_items(ws / "data" / "items.jsonl", 40)
    env = process_env(server)
    # The second run must find the first one still going however long it takes to start (6 to 16 s on a loaded
    # machine, longer than the first run took): the first is stopped (SIGSTOP) until the second has answered.
    # It is stopped while its first two calls wait for their slow answers, so it is inside no transaction of the
    # state store that would hold the second one up.
    server.add_faults({"kind": "slow", "delay": 5, "count": 2})
    with started(["run-job", "score", "--json"], ws, env, tmp_path / "first") as first:
        deadline = time.monotonic() + 60
        while calls(server) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        try:
            second = sleipnir(["run-job", "score", "--json"], ws, env)
        finally:
            first.send_signal(signal.SIGCONT)
        first.wait(timeout=120)
    assert second.returncode == 1, second.stdout[-3000:]
    assert "another run of `score` over the same input is in progress" in second.stderr + second.stdout
    assert first.returncode == 0
    assert sorted(str(row["id"]) for row in rows_in(ws / "out" / "scores.jsonl")) == keys


# -- SIGKILL at random moments --------------------------------------------------------------------------------

ROWS, CONCURRENCY, TRIALS = 1000, 20, 10


def _trials(ws: Path, job: str, server: LLMServer, tmp_path: Path, written: Callable[[], list[str]], clear: Callable[[], None]) -> None:
    """`TRIALS` times: clear the output, run afresh, SIGKILL at a random moment (by calls made), resume to the end;
    then every row is there once, and the calls of the trial are at most rows + 2 x concurrency."""
    env = process_env(server)
    keys = write_items(ws / "data" / "items.jsonl", ROWS)
    for trial in range(TRIALS):
        clear()
        before = calls(server)
        moment = random.Random(trial).uniform(0.05, 0.95) * ROWS
        with started(["run-job", job, "--fresh", "--json"], ws, env, tmp_path / f"trial{trial}") as process:
            deadline = time.monotonic() + 60
            while calls(server) - before < moment and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)
            process.wait()
        resumed = sleipnir(["run-job", job, "--json"], ws, env)
        assert resumed.returncode == 0, resumed.stderr
        made = calls(server) - before
        assert made <= ROWS + 2 * CONCURRENCY, f"trial {trial}: {made} calls for {ROWS} rows"
        assert written() == keys, f"trial {trial}: not every row exactly once"


def _job(output: str, name: str = "score") -> str:
    return scoring_job(name, output, concurrency=CONCURRENCY, batch_size=50, strategy="parallel")


def test_sigkill_at_random_moments_then_resume_file(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": _job("path: out/scores.jsonl")})
    target = ws / "out" / "scores.jsonl"

    def written() -> list[str]:
        return sorted(str(row["id"]) for row in rows_in(target))

    _trials(ws, "score", server, tmp_path, written, lambda: target.unlink(missing_ok=True))


def test_sigkill_at_random_moments_then_resume_sqlite(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(
        tmp_path / "ws",
        {"jobs/score.yaml": _job("destination: database\ntable: scores\n")},
        manifest="name: runs\ndatabase: data/results.db\n",
    )
    database = ws / "data" / "results.db"

    def written() -> list[str]:
        with contextlib.closing(sqlite3.connect(database)) as connection:
            return sorted(str(k) for (k,) in connection.execute("SELECT id FROM scores"))

    def clear() -> None:
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("DROP TABLE IF EXISTS scores")
            connection.commit()

    _trials(ws, "score", server, tmp_path, written, clear)


def test_sigkill_at_random_moments_then_resume_postgresql(
    tmp_path: Path, server: LLMServer, postgres_url: str, pg_table: str
) -> None:
    # The ledger lives in the workspace; the job's name is its own, as its table is.
    name = pg_table.replace("sleipnir_t_", "score_")
    job = _job(f"destination: database\nconnection: warehouse\ntable: {pg_table}\n", name)
    ws = make_workspace(
        tmp_path / "ws", {"jobs/score.yaml": job}, manifest=f"name: runs\nconnections:\n  warehouse: {postgres_url}\n"
    )

    def written() -> list[str]:
        with psycopg.connect(postgres_url) as connection:
            return sorted(str(k) for (k,) in connection.execute(f'SELECT id FROM "{pg_table}"'.encode()))

    def clear() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP TABLE IF EXISTS "{pg_table}"'.encode())

    _trials(ws, name, server, tmp_path, written, clear)
