"""`sleipnir run-job` as a real process: SIGKILL at three moments and resume, a row whose record the kill cut
off, SIGTERM and SIGINT, a `fail` stop and `--retry-failed`, a `skip` into the dead letter, and PostgreSQL end to
end (source, sink and ledger).

Every test builds its own workspace in tmp_path and runs `python -m sleipnir` in it against the LLM server
subprocess (tests/llm_server.py): real processes, real signals, real files and databases. The workspace helpers
here are shared with test_run_cli.py and test_executor.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from llm_server import LLMServer
from test_sources import pg_table, postgres_url

__all__ = [
    "MARKER",
    "SCORE_SCHEMA",
    "llm",
    "make_workspace",
    "pg_table",
    "postgres_url",
    "process_env",
    "scoring_job",
    "server",
    "sleipnir",
    "write_items",
]

MARKER = "SCORER-MARKER"
"""Found in the scorer's system message: the LLM server answers it with `SCORE_SCHEMA`."""
SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["label", "score"],
    "properties": {
        "label": {"type": "string", "enum": ["good", "bad"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "additionalProperties": False,
}
SCORER = f"""\
prompt:
  name: scorer
  version: 1.0.0
  description: Label the sentiment of a text and score it.
  model:
    name: gpt-4o-mini
    temperature: 0
  variables:
    text: {{type: string, required: true}}
  template:
    system: "{MARKER}: label the sentiment of the text. Answer in JSON."
    user: "{{{{ text }}}}"
  output:
    format: json
    schema: {json.dumps(SCORE_SCHEMA)}
"""


# -- workspaces ---------------------------------------------------------------------------------------------


def make_workspace(root: Path, files: dict[str, str], manifest: str = "name: runs\n") -> Path:
    """`root` with a sleipnir.yaml, the `scorer` prompt module and `files` (path -> text, dedented)."""
    for name, text in {"sleipnir.yaml": manifest, "prompts/scorer.yaml": SCORER, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def write_items(path: Path, count: int, prefix: str = "k") -> list[str]:
    """`count` rows `{id, text}` as JSON Lines; returns their keys, sorted."""
    keys = [f"{prefix}{i:03d}" for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"id": key, "text": f"review {key}: {'great' if i % 2 else 'awful'} product"}) for i, key in enumerate(keys))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return keys


def scoring_job(
    name: str,
    output: str = "path: out/scores.jsonl",
    *,
    items: str = "data/items.jsonl",
    concurrency: int = 8,
    batch_size: int = 10,
    strategy: str = "sequential",
    execution: str = "",
    extra: str = "",
) -> str:
    """A job scoring each row of `items` with `scorer` at the LLM server (`${LLM_URL}`); `execution` is added
    to its `execution:` mapping, `extra` to the job."""
    return f"""\
job:
  name: {name}
  input:
    path: {items}
    key: id
    batch_size: {batch_size}
    batch_strategy: {strategy}
  prompts:
    - name: scorer
      version: 1.0.0
      endpoint: ${{LLM_URL}}
  output:
{textwrap.indent(textwrap.dedent(output), "    ")}
  execution:
    concurrency: {concurrency}
{textwrap.indent(textwrap.dedent(execution), "    ")}
{textwrap.indent(textwrap.dedent(extra), "  ")}"""


def process_env(server: LLMServer | None = None, **extra: str) -> dict[str, str]:
    """The environment for a run: no OpenAI or Sleipnir settings of the caller's, `LLM_URL` at `server`, and
    wide uncoloured output so that messages are not wrapped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLEIPNIR_"))}
    env.update(NO_COLOR="1", COLUMNS="250", LLM_URL=server.base_url if server else "http://127.0.0.1:9/v1")
    env.update(extra)
    return env


def sleipnir(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m sleipnir ARGS` in `cwd`, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "sleipnir", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@contextlib.contextmanager
def started(args: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m sleipnir ARGS` running in the background (output to files under `logs`); killed if the test
    leaves it running."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "sleipnir", *args], cwd=cwd, env=env, stdout=out, stderr=err)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_until(process: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    """Poll until `ready()`; fail if the process ends first (or, as a safety net, after a minute)."""
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after 60 s")
        time.sleep(0.005)


def spooled_keys(path: Path) -> list[str]:
    """The keys of the complete lines of a file sink's spool, in order (a torn last line is left out)."""
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_bytes().split(b"\n")[:-1]]


def ledger_keys(root: Path, status: str = "succeeded") -> list[str]:
    """The keys the workspace's SQLite ledger holds with `status`."""
    path = root / ".sleipnir" / "state.db"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
        try:
            rows = connection.execute("SELECT item_key FROM sleipnir_items WHERE status = ?", (status,)).fetchall()
        except sqlite3.OperationalError:  # the run has not made its tables yet
            return []
    return sorted(str(key) for (key,) in rows)


def result_of(stdout: str | bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stdout)
    return data


LLM_LATENCY = 0.05
"""The `llm` fixture's reply latency in this module; a module importing the fixtures may set its own."""


@pytest.fixture(scope="module")
def llm(request: pytest.FixtureRequest) -> Iterator[LLMServer]:
    """An LLM server for the module, answering after the module's `LLM_LATENCY` seconds."""
    with LLMServer(latency=getattr(request.module, "LLM_LATENCY", 0.0)) as server:
        yield server


@pytest.fixture
def server(llm: LLMServer, monkeypatch: pytest.MonkeyPatch) -> LLMServer:
    """The module's LLM server, reset, answering the scorer with schema-valid JSON; `LLM_URL` points at it
    (for the in-process API, which reads the process environment)."""
    llm.reset()
    monkeypatch.setenv("LLM_URL", llm.base_url)
    return llm


# -- SIGKILL and resume -------------------------------------------------------------------------------------

TARGET, SPOOL = Path("out/scores.jsonl"), Path("out/.scores.jsonl.partial")
"""Where `scoring_workspace`'s job publishes, and its file sink's spool, in the workspace."""


def scoring_workspace(tmp_path: Path, server: LLMServer, items: int) -> tuple[Path, list[str], dict[str, str]]:
    """A workspace whose job `score` scores `items` rows into `TARGET`: its root, the keys, a run's environment."""
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score")})
    return ws, write_items(ws / "data" / "items.jsonl", items), process_env(server)


def test_sigkill_three_times_then_resume_writes_every_key_once_to_a_file(tmp_path: Path, server: LLMServer) -> None:
    ws, keys, env = scoring_workspace(tmp_path, server, 300)
    target, spool = ws / TARGET, ws / SPOOL
    for moment, threshold in enumerate((30, 120, 210)):
        with started(["run-job", "score", "--json"], ws, env, tmp_path / f"run{moment}") as process:
            # Distinct keys: a row written again by a resume (see below) is one row.
            wait_until(process, lambda threshold=threshold: len(set(spooled_keys(spool))) >= threshold, f"{threshold} rows")
            process.kill()
            process.wait()
        assert process.returncode == -signal.SIGKILL
        written = spooled_keys(spool)
        # Nothing is published before the end; nothing recorded done is missing. (A row written just before
        # the kill, whose record the kill cut off, is written again by the resume from its recorded answers,
        # without a call; the publish keeps one row a key.)
        assert not target.exists()
        assert len(set(written)) >= threshold
        assert set(ledger_keys(ws)) <= set(written)
        if moment:
            assert "resuming" in (tmp_path / f"run{moment}" / "stderr").read_text()

    # The resume counts as done what the ledger holds, not what the spool holds: the last kill may have fallen
    # between a batch's write and its record (210 rows spooled, 200 recorded), and that batch is done again.
    recorded = ledger_keys(ws)
    finished = sleipnir(["run-job", "score", "--json"], ws, env)
    assert finished.returncode == 0, finished.stderr
    result = result_of(finished.stdout)
    assert result["status"] == "succeeded"
    assert any("resuming" in notice for notice in result["notices"])
    assert "resuming" in finished.stderr
    metrics = result["metrics"]
    assert (metrics["items_already_done"], metrics["items_processed"]) == (len(recorded), 300 - len(recorded))
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == keys
    assert all(row["scorer"]["label"] in ("good", "bad") for row in rows)
    assert not spool.exists()
    assert ledger_keys(ws) == keys


def test_a_row_whose_record_the_kill_cut_off_is_written_again_from_its_answers(tmp_path: Path, server: LLMServer) -> None:
    """A SIGKILL between a batch's write and its record leaves rows in the spool that the ledger does not have.
    Where the kill falls is chance, so the test makes that state certain: it removes the records of the last
    ten spooled rows. The resume counts as done only what the ledger holds, writes those rows again from their
    recorded answers without calling the server, and publishes every key once."""
    ws, keys, env = scoring_workspace(tmp_path, server, 60)
    target, spool = ws / TARGET, ws / SPOOL
    with started(["run-job", "score", "--json"], ws, env, tmp_path / "run") as process:
        wait_until(process, lambda: len(spooled_keys(spool)) >= 20, "20 rows")
        process.kill()
        process.wait()
    spooled = spooled_keys(spool)
    cut = spooled[-10:]
    with contextlib.closing(sqlite3.connect(ws / ".sleipnir" / "state.db", timeout=10)) as connection:
        connection.executemany("DELETE FROM sleipnir_items WHERE item_key = ?", [(key,) for key in cut])
        connection.commit()
    recorded = ledger_keys(ws)
    assert set(recorded) <= set(spooled) - set(cut)

    server.reset()
    finished = sleipnir(["run-job", "score", "--json"], ws, env)
    assert finished.returncode == 0, finished.stderr
    metrics = result_of(finished.stdout)["metrics"]
    assert (metrics["items_already_done"], metrics["items_processed"]) == (len(recorded), 60 - len(recorded))
    bodies = server.requests(100)["bodies"]
    called = {key for body in bodies for key in re.findall(r"review (k\d+):", body["messages"][-1]["content"])}
    assert len(called) == len(bodies) == 60 - metrics["answers_reused"] - len(recorded)
    assert not called & set(spooled)  # the rows that lost their record came from their recorded answers
    assert sorted(json.loads(line)["id"] for line in target.read_text().splitlines()) == keys
    assert ledger_keys(ws) == keys


def test_sigkill_three_times_then_resume_writes_every_key_once_to_a_sqlite_table(tmp_path: Path, server: LLMServer) -> None:
    output = "destination: database\ntable: scores\nmode: replace\n"
    ws = make_workspace(
        tmp_path / "ws",
        {"jobs/score.yaml": scoring_job("score", output, strategy="parallel")},
        manifest="name: runs\ndatabase: data/results.db\n",
    )
    keys = write_items(ws / "data" / "items.jsonl", 300)
    env = process_env(server)
    database = ws / "data" / "results.db"

    def tables() -> set[str]:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
            return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def staged() -> list[str]:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
            return [str(key) for (key,) in connection.execute('SELECT id FROM "scores__sleipnir_partial"')]

    for moment, threshold in enumerate((30, 120, 210)):
        with started(["run-job", "score"], ws, env, tmp_path / f"run{moment}") as process:
            wait_until(process, lambda threshold=threshold: len(ledger_keys(ws)) >= threshold, f"{threshold} items recorded")
            process.kill()
            process.wait()
        assert process.returncode == -signal.SIGKILL
        assert "scores" not in tables()  # `replace` publishes only at the end
        assert set(ledger_keys(ws)) <= set(staged())

    finished = sleipnir(["run-job", "score", "--json"], ws, env)
    assert finished.returncode == 0, finished.stderr
    result = result_of(finished.stdout)
    assert any("resuming" in notice for notice in result["notices"])
    assert result["metrics"]["items_already_done"] + result["metrics"]["items_processed"] == 300
    with contextlib.closing(sqlite3.connect(database)) as connection:
        ids = sorted(str(key) for (key,) in connection.execute("SELECT id FROM scores"))
        labels = {json.loads(text)["label"] for (text,) in connection.execute("SELECT scorer FROM scores")}
    assert ids == keys
    assert labels <= {"good", "bad"}
    assert "scores__sleipnir_partial" not in tables()


# -- SIGTERM and SIGINT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_calls_in_flight_publishes_what_is_done_and_the_rerun_finishes(
    tmp_path: Path, server: LLMServer, sig: signal.Signals
) -> None:
    ws, keys, env = scoring_workspace(tmp_path, server, 120)
    target, spool = ws / TARGET, ws / SPOOL
    with started(["run-job", "score", "--json"], ws, env, tmp_path / "run") as process:
        wait_until(process, lambda: len(spooled_keys(spool)) >= 30, "30 rows")
        process.send_signal(sig)
        process.wait(timeout=60)
    assert process.returncode == 130
    stopped = result_of((tmp_path / "run" / "stdout").read_bytes())
    assert stopped["status"] == "interrupted"
    assert sig.name in stopped["message"]
    written = spooled_keys(spool)
    assert len(written) == len(set(written)) < 120
    # The rows it finished are published: the target holds them now, and the summary says how many are left.
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == written
    assert stopped["metrics"]["items_left"] == 120 - len(written)
    # Drained: every call that was made has its row written and recorded; none was abandoned half-way.
    assert ledger_keys(ws) == sorted(written)
    assert server.requests(0)["count"] == len(written)

    finished = sleipnir(["run-job", "score", "--json"], ws, env)
    assert finished.returncode == 0, finished.stderr
    metrics = result_of(finished.stdout)["metrics"]
    assert (metrics["items_already_done"], metrics["items_processed"]) == (len(written), 120 - len(written))
    assert sorted(json.loads(line)["id"] for line in target.read_text().splitlines()) == keys
    assert server.requests(0)["count"] == 120  # nothing was called twice


# -- error strategies ---------------------------------------------------------------------------------------


def _fail_after(server: LLMServer, good: int) -> None:
    """The next `good` chat requests succeed, the one after gets OpenAI's context-length 400."""
    server.add_faults({"kind": "slow", "delay": 0, "count": good}, {"kind": "context_length"})


def test_fail_stops_without_publishing_and_retry_failed_redoes_only_the_failure(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=4)})
    keys = write_items(ws / "data" / "items.jsonl", 40)
    env = process_env(server)
    target = ws / "out" / "scores.jsonl"
    target.parent.mkdir()
    target.write_text('{"id": "earlier"}\n')
    _fail_after(server, 15)

    failed = sleipnir(["run-job", "score", "--json"], ws, env)
    assert failed.returncode == 1, failed.stderr
    result = result_of(failed.stdout)
    assert result["status"] == "failed"
    [error] = result["errors"]
    key = error["key"]
    assert f"item {key} failed" in result["message"]
    assert f"item {key} failed" in failed.stderr
    assert "context length" in error["error"]
    assert "Traceback" not in failed.stderr
    assert target.read_text() == '{"id": "earlier"}\n'  # the earlier output is untouched
    assert ledger_keys(ws, "failed") == [key]
    done = ledger_keys(ws)
    assert key not in done and 10 <= len(done) < 40
    calls = server.requests(0)["count"]

    retried = sleipnir(["run-job", "score", "--retry-failed", "--json"], ws, env)
    assert retried.returncode == 0, retried.stderr
    assert result_of(retried.stdout)["metrics"]["items_processed"] == 1
    assert server.requests(0)["count"] == calls + 1
    [body] = server.requests(1)["bodies"]
    assert key in json.dumps(body)
    assert ledger_keys(ws, "failed") == []
    assert ledger_keys(ws) == sorted([*done, key])

    rest = sleipnir(["run-job", "score", "--json"], ws, env)
    assert rest.returncode == 0, rest.stderr
    metrics = result_of(rest.stdout)["metrics"]
    assert metrics["items_processed"] == 40 - len(done) - 1
    assert server.requests(0)["count"] == calls + 1 + 40 - len(done) - 1
    # The run's rows are merged by key into what the output held before.
    assert sorted(json.loads(line)["id"] for line in target.read_text().splitlines()) == sorted(["earlier", *keys])


def test_retry_failed_does_not_publish_half_a_run(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=4)})
    write_items(ws / "data" / "items.jsonl", 40)
    env = process_env(server)
    target = ws / "out" / "scores.jsonl"
    target.parent.mkdir()
    target.write_text('{"id": "earlier"}\n')
    _fail_after(server, 15)
    assert sleipnir(["run-job", "score"], ws, env).returncode == 1
    assert sleipnir(["run-job", "score", "--retry-failed"], ws, env).returncode == 0
    assert len(ledger_keys(ws)) < 40  # items never tried are still to do ...
    assert target.read_text() == '{"id": "earlier"}\n'  # ... so the target must not be replaced yet


def test_skip_sends_the_item_to_the_dead_letter_and_the_run_succeeds(tmp_path: Path, server: LLMServer) -> None:
    extra = "error_handling:\n  on_prompt_failure:\n    strategy: skip\n"
    output = "path: out/scores.jsonl\ndead_letter: out/dead.jsonl\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", output, concurrency=4, extra=extra)})
    keys = write_items(ws / "data" / "items.jsonl", 20)
    env = process_env(server)
    _fail_after(server, 5)

    run = sleipnir(["run-job", "score", "--json"], ws, env)
    assert run.returncode == 0, run.stderr
    result = result_of(run.stdout)
    assert result["status"] == "succeeded"
    assert (result["metrics"]["items_skipped"], result["metrics"]["items_processed"]) == (1, 19)
    [error] = result["errors"]
    key = error["key"]
    [dead] = [json.loads(line) for line in (ws / "out" / "dead.jsonl").read_text().splitlines()]
    assert dead["key"] == key
    assert dead["job"] == "score" and dead["plan"] == result["plan_id"]
    assert dead["stage"] == "prompt"
    assert dead["input"] == {"id": key, "text": f"review {key}: {'great' if int(key[1:]) % 2 else 'awful'} product"}
    assert "context length" in dead["error"]
    assert dead["attempts"] == 1
    written = [json.loads(line)["id"] for line in (ws / "out" / "scores.jsonl").read_text().splitlines()]
    assert sorted(written) == [k for k in keys if k != key]
    assert ledger_keys(ws, "skipped") == [key]

    again = sleipnir(["run-job", "score", "--json"], ws, env)  # a skipped item is done: not redone
    assert result_of(again.stdout)["metrics"]["items_already_done"] == 20
    assert len((ws / "out" / "dead.jsonl").read_text().splitlines()) == 1


def test_a_run_in_which_every_item_was_skipped_exits_1_and_says_so(tmp_path: Path, server: LLMServer) -> None:
    extra = "error_handling:\n  on_prompt_failure:\n    strategy: skip\n"
    output = "path: out/scores.jsonl\ndead_letter: out/dead.jsonl\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", output, concurrency=4, extra=extra)})
    write_items(ws / "data" / "items.jsonl", 50)
    server.add_faults({"kind": "schema_invalid", "count": 50})

    run = sleipnir(["run-job", "score", "--json"], ws, process_env(server))
    assert run.returncode == 1, run.stderr
    result = result_of(run.stdout)
    assert result["status"] == "failed"
    assert result["message"] == "no item succeeded: all 50 were skipped, 50 to the dead letter"
    assert (result["metrics"]["items_skipped"], result["metrics"]["items_dead_lettered"]) == (50, 50)
    assert len((ws / "out" / "dead.jsonl").read_text().splitlines()) == 50
    assert "no item succeeded: all 50 were skipped" in run.stderr
    assert re.search(r"dead letter\s+│\s+50 \(out/dead.jsonl\)", run.stderr), run.stderr


def test_max_error_rate_fails_a_run_that_skipped_more_than_it_allows(tmp_path: Path, server: LLMServer) -> None:
    extra = "error_handling:\n  on_prompt_failure:\n    strategy: skip\n"
    job = scoring_job("score", concurrency=1, execution="max_error_rate: 0.1", extra=extra)
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    write_items(ws / "data" / "items.jsonl", 20)
    server.add_faults({"kind": "schema_invalid", "count": 3})  # 3 of 20 skipped: 15%, past 10%

    run = sleipnir(["run-job", "score", "--json"], ws, process_env(server))
    assert run.returncode == 1, run.stderr
    message = result_of(run.stdout)["message"]
    assert message.startswith("3 of 20 items were skipped (15.0%), more than execution.max_error_rate (10.0%)")

    server.reset()
    server.add_faults({"kind": "schema_invalid", "count": 1})  # 1 of 20: 5%, within it
    again = sleipnir(["run-job", "score", "--json", "--fresh"], ws, process_env(server))
    assert again.returncode == 0, again.stderr


# -- PostgreSQL end to end ----------------------------------------------------------------------------------


@pytest.fixture
def pg_source(postgres_url: str, pg_table: str) -> Iterator[str]:
    """A table of 12 reviews (8 in English) named after `pg_table`, dropped after the test."""
    name = f"{pg_table}_src"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE TABLE "{name}" (review_id TEXT PRIMARY KEY, body TEXT NOT NULL, lang TEXT NOT NULL)'.encode())
        with connection.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{name}" VALUES (%s, %s, %s)'.encode(),
                [(f"r{i:02d}", f"review {i} {'good' if i % 3 else 'bad'}", "de" if i % 3 == 0 else "en") for i in range(12)],
            )
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{name}"'.encode())


def test_postgresql_source_sink_and_ledger(
    tmp_path: Path, server: LLMServer, postgres_url: str, pg_table: str, pg_source: str
) -> None:
    # The ledger on PostgreSQL outlives the test: a job name of its own keeps this run's items apart.
    job_name = pg_table.replace("sleipnir_t_", "pg_scores_")
    manifest = f"name: warehouse_runs\nstate: {postgres_url}\nconnections:\n  warehouse: {postgres_url}\n"
    job = f"""\
        job:
          name: {job_name}
          input:
            source: database
            connection: warehouse
            query: "SELECT review_id, body AS text FROM {pg_source} WHERE lang = :lang ORDER BY review_id"
            parameters:
              lang: en
            key: review_id
            batch_size: 3
          prompts:
            - name: scorer
              version: 1.0.0
              endpoint: ${{LLM_URL}}
          output:
            destination: database
            connection: warehouse
            table: {pg_table}
            mode: upsert
        """
    ws = make_workspace(tmp_path / "ws", {"jobs/pg.yaml": job}, manifest=manifest)
    env = process_env(server)
    english = sorted(f"r{i:02d}" for i in range(12) if i % 3)

    def table_keys() -> list[str]:
        with psycopg.connect(postgres_url) as connection:
            return sorted(str(k) for (k,) in connection.execute(f'SELECT review_id FROM "{pg_table}"'.encode()))

    first = sleipnir(["run-job", job_name, "--json"], ws, env)
    assert first.returncode == 0, first.stderr
    plan_id = result_of(first.stdout)["plan_id"]
    scope = f"job:{job_name}"
    try:
        assert result_of(first.stdout)["metrics"]["items_processed"] == 8
        assert table_keys() == english  # the bound :lang read only the English rows
        assert server.requests(0)["count"] == 8
        assert not (ws / ".sleipnir" / "state.db").exists()  # the ledger is on PostgreSQL
        with psycopg.connect(postgres_url) as connection:
            recorded = connection.execute(
                "SELECT item_key, status FROM sleipnir_items WHERE plan_id = %s ORDER BY item_key", [scope]
            ).fetchall()
            scored = connection.execute(f'SELECT scorer FROM "{pg_table}"'.encode()).fetchall()
        assert recorded == [(key, "succeeded") for key in english]
        assert {json.loads(text)["label"] for (text,) in scored} <= {"good", "bad"}

        second = sleipnir(["run-job", job_name, "--json"], ws, env)
        assert second.returncode == 0, second.stderr
        metrics = result_of(second.stdout)["metrics"]
        assert (metrics["items_processed"], metrics["items_already_done"]) == (0, 8)
        assert server.requests(0)["count"] == 8
        assert table_keys() == english

        fresh = sleipnir(["run-job", job_name, "--fresh", "--json"], ws, env)
        assert fresh.returncode == 0, fresh.stderr
        assert result_of(fresh.stdout)["metrics"]["items_processed"] == 8
        assert server.requests(0)["count"] == 16
        assert table_keys() == english
        with psycopg.connect(postgres_url) as connection:
            runs = connection.execute("SELECT status FROM sleipnir_runs WHERE plan_id = %s", [plan_id]).fetchall()
        assert runs == [("succeeded",)] * 3
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            for table in ("sleipnir_items", "sleipnir_answers", "sleipnir_work"):
                connection.execute(f"DELETE FROM {table} WHERE plan_id = %s".encode(), [scope])
            connection.execute("DELETE FROM sleipnir_runs WHERE plan_id = %s", [plan_id])
