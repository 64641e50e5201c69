"""`sleipnir runs`: the run history from the ledger, after real runs of real jobs on the offline `mock` provider.

Workspaces are built in tmp_path; runs go through `JobExecutor`, so the ledger is the one the runtime writes
(SQLite under `.sleipnir/`, a `state:` path, or PostgreSQL at 127.0.0.1:5432). The command object is invoked
with click's CliRunner.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from test_sources import postgres_url

from sleipnir import JobExecutor
from sleipnir.cli.runs import runs_command
from sleipnir.runtime.engine.history import History
from sleipnir.runtime.engine.job import RunResult
from sleipnir.runtime.engine.ledger import Ledger
from sleipnir.runtime.io.dbconn import parse_database_url

__all__ = ["history_workspace", "mock_job", "postgres_url", "run_job"]

MOCK_PRICE = "mock: {input: 1000, output: 2000}\n"
"""A workspace price for the mock model, so that runs have a cost to show (the stdlib's is 0)."""

FIELDS = {
    "run_id", "job", "status", "started_at", "finished_at", "duration_seconds", "items_succeeded", "items_skipped",
    "items_failed", "retries", "prompt_tokens", "completion_tokens", "tokens", "cost", "plan_id",
}  # fmt: skip


def mock_job(name: str, extra: str = "") -> str:
    """A job classifying `data/<name>.jsonl` with the stdlib `classifier` on the `mock` model."""
    return f"""\
job:
  name: {name}
  input:
    path: data/{name}.jsonl
    key: id
  prompts:
    - name: classifier
      version: 1.0.0
      model: mock
  output:
    path: out/{name}.jsonl
{textwrap.indent(textwrap.dedent(extra), "  ")}"""


def history_workspace(root: Path, jobs: dict[str, str], manifest: str = "name: history\n") -> Path:
    """`root` with a sleipnir.yaml, a price for `mock`, and `jobs` (name -> job text) with two input rows each."""
    files = {"sleipnir.yaml": manifest, "prices.yaml": MOCK_PRICE}
    for name, text in jobs.items():
        files[f"jobs/{name}.yaml"] = text
        files[f"data/{name}.jsonl"] = '{"id": "r1", "text": "great product"}\n{"id": "r2", "text": "awful"}\n'
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def run_job(workspace: Path, name: str, **options: Any) -> RunResult:
    result = JobExecutor(name, workspace=workspace, environ={}, **options).run()
    assert isinstance(result, RunResult)
    return result


def runs(*args: str) -> Result:
    return CliRunner().invoke(runs_command, list(args), catch_exceptions=False)


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[RunResult]]:
    """A workspace (the current folder) and its runs, oldest first: alpha succeeds twice, beta fails once."""
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha"), "beta": mock_job("beta")})
    (ws / "data" / "beta.jsonl").write_text('{"id": "b1", "text": "fine"}\nnot json\n', encoding="utf-8")
    monkeypatch.chdir(ws)
    results = [run_job(ws, "alpha"), run_job(ws, "beta"), run_job(ws, "alpha", fresh=True)]
    assert [r.status for r in results] == ["succeeded", "failed", "succeeded"]
    return ws, results


def test_the_table_lists_every_run_newest_first(history: tuple[Path, list[RunResult]]) -> None:
    _, results = history
    shown = runs()
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    for word in ("run", "job", "status", "started", "duration", "ok", "skipped", "failed", "tokens", "cost"):
        assert word in lines[1]
    rows = [line for line in lines if any(r.run_id in line for r in results)]
    assert [next(r.run_id for r in results if r.run_id in row) for row in rows] == [r.run_id for r in reversed(results)]
    assert "alpha" in rows[0] and "succeeded" in rows[0]
    assert "beta" in rows[1] and "failed" in rows[1]
    # 2 items ok, 0 skipped, 0 failed, the tokens, and the cost at the workspace's price for `mock`.
    alpha = results[0].metrics
    cost = alpha["prompt_tokens"] / 1e6 * 1000 + alpha["completion_tokens"] / 1e6 * 2000
    assert f"{alpha['token_usage']:,}" in rows[2] and f"${cost:,.4f}" in rows[2]


def test_json_has_every_field(history: tuple[Path, list[RunResult]]) -> None:
    _, results = history
    shown = runs("--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert [run["run_id"] for run in data] == [r.run_id for r in reversed(results)]
    assert all(set(run) == FIELDS for run in data)
    newest, failed = data[0], data[1]
    metrics = results[2].metrics
    assert newest["job"] == "alpha" and newest["status"] == "succeeded"
    assert (newest["items_succeeded"], newest["items_skipped"], newest["items_failed"]) == (2, 0, 0)
    assert newest["prompt_tokens"] == metrics["prompt_tokens"] > 0
    assert newest["tokens"] == metrics["token_usage"]
    assert newest["cost"] == pytest.approx(metrics["prompt_tokens"] / 1e3 + metrics["completion_tokens"] / 500)
    assert newest["duration_seconds"] == pytest.approx(metrics["execution_time"])
    assert newest["plan_id"] == results[2].plan_id
    started = datetime.fromisoformat(newest["started_at"])
    assert started.tzinfo is not None and started <= datetime.fromisoformat(newest["finished_at"])
    assert failed["job"] == "beta" and failed["status"] == "failed" and failed["items_failed"] == 1


def test_job_filter_and_limit(history: tuple[Path, list[RunResult]]) -> None:
    _, results = history
    beta = json.loads(runs("beta", "--json").stdout)
    assert [run["run_id"] for run in beta] == [results[1].run_id]
    table = runs("beta").stdout
    assert "beta" in table and "alpha" not in table
    newest = json.loads(runs("alpha", "--limit", "1", "--json").stdout)
    assert [run["run_id"] for run in newest] == [results[2].run_id]
    unknown = runs("alpah")
    assert unknown.exit_code == 1 and "no job with runs and no run named `alpah`; did you mean `alpha`?" in unknown.stderr
    assert runs("gamma", "--json").exit_code == 1
    assert runs("--limit", "0").exit_code == 2


def test_workspace_option_from_another_folder(
    history: tuple[Path, list[RunResult]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, results = history
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert "no runs yet" in runs().stdout
    data = json.loads(runs("--workspace", str(ws / "jobs"), "--json").stdout)
    assert len(data) == len(results)


def test_a_missing_ledger_is_a_message_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")})
    monkeypatch.chdir(ws)
    shown = runs()
    assert shown.exit_code == 0
    assert "no runs yet: there is no run ledger at .sleipnir/state.db" in shown.stdout
    as_json = runs("--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == [] and "no runs yet" in as_json.stderr
    assert not (ws / ".sleipnir").exists(), "listing must not create a ledger"


def test_the_manifest_state_path_is_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = "name: history\nstate: history/ledger.db\n"
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")}, manifest)
    monkeypatch.chdir(ws)
    assert "history/ledger.db" in runs().stdout
    result = run_job(ws, "alpha")
    assert (ws / "history" / "ledger.db").is_file()
    assert [run["run_id"] for run in json.loads(runs("--json").stdout)] == [result.run_id]


@pytest.fixture
def pg_job(postgres_url: str) -> Iterator[str]:
    """A job name of its own, so that the shared `test` database's other runs stay out; its rows are removed."""
    name = f"pg_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        plans = connection.execute("SELECT plan_id FROM sleipnir_runs WHERE job = %s", [name]).fetchall()
        connection.execute("DELETE FROM sleipnir_results WHERE run_id IN (SELECT run_id FROM sleipnir_runs WHERE job = %s)", [name])
        connection.execute("DELETE FROM sleipnir_items WHERE plan_id = ANY(%s)", [[p for (p,) in plans]])
        connection.execute("DELETE FROM sleipnir_runs WHERE job = %s", [name])


def test_a_postgresql_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, pg_job: str) -> None:
    ws = history_workspace(tmp_path / "ws", {pg_job: mock_job(pg_job)}, f"name: history\nstate: {postgres_url}\n")
    monkeypatch.chdir(ws)
    result = run_job(ws, pg_job)
    data = json.loads(runs(pg_job, "--json").stdout)
    assert [(run["run_id"], run["status"], run["items_succeeded"]) for run in data] == [(result.run_id, "succeeded", 2)]
    assert pg_job in runs(pg_job).stdout
    detail = json.loads(runs(result.run_id, "--json").stdout)
    assert detail["items"] == {"succeeded": 2} and [o["key"] for o in detail["outputs"]] == ["r1", "r2"]
    history = History(parse_database_url(postgres_url, root=str(ws)))
    try:
        assert [item.key for item in history.items(result.run_id, search="AWFUL")] == ["r2"]
        assert history.items(result.run_id, search="100%") == []
        assert [item.key for item in history.items(result.run_id, status="succeeded", limit=1, offset=1)] == ["r2"]
    finally:
        history.close()


def test_a_run_that_never_finished_shows_as_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")})
    monkeypatch.chdir(ws)
    ledger = Ledger(".sleipnir/state.db", str(ws))
    ledger.start_run("killedrun0000000", "plan", "alpha")  # what a SIGKILLed run leaves behind
    ledger.close()
    (row,) = json.loads(runs("--json").stdout)
    assert (row["status"], row["finished_at"], row["duration_seconds"], row["cost"]) == ("running", None, None, None)
    line = next(line for line in runs().stdout.splitlines() if "killedrun" in line)
    assert "running" in line and " - " in line


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("name: history\nstate: [a, b]\n", "sleipnir.yaml:2:8: `state` must be a path or a PostgreSQL URL"),
        ("name: history\nstate: {\n", "sleipnir.yaml:3:1: invalid YAML"),
    ],
)
def test_a_bad_manifest_is_one_located_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: str, expected: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sleipnir.yaml").write_text(manifest, encoding="utf-8")
    monkeypatch.chdir(ws)
    shown = runs()
    assert shown.exit_code == 1
    assert shown.stderr.startswith(f"error: {expected}"), shown.stderr
    assert "Traceback" not in shown.output


def test_an_unreadable_ledger_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")})
    (ws / ".sleipnir").mkdir()
    (ws / ".sleipnir" / "state.db").write_bytes(b"this is not a database, just text" * 100)
    monkeypatch.chdir(ws)
    shown = runs()
    assert shown.exit_code == 1 and shown.stderr.startswith("error: cannot open the run ledger .sleipnir/state.db")


SKIPPING = """\
error_handling:
  on_input_error:
    strategy: skip
"""


def test_a_run_id_shows_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run made by `run-job` is found by its id (or the start of it): its plan, counts, cost, every failure with
    its reason, and its first outputs."""
    ws = history_workspace(tmp_path / "ws", {"gamma": mock_job("gamma", SKIPPING)})
    (ws / "data" / "gamma.jsonl").write_text('{"id": "g1", "text": "fine"}\nnot json\n', encoding="utf-8")
    monkeypatch.chdir(ws)
    result = run_job(ws, "gamma")
    assert result.status == "succeeded"
    shown = runs(result.run_id)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert f"run {result.run_id} of gamma: succeeded" in text
    assert result.plan_id in text and "1 ok, 1 skipped, 0 failed" in text and "cost $" in text
    assert "row 1  skipped: data/gamma.jsonl:2: invalid JSON" in text
    assert "g1  {" in text and "classifier" in text.split("outputs:")[1]
    detail = json.loads(runs(result.run_id[:8], "--json").stdout)
    assert detail["run_id"] == result.run_id and detail["items"] == {"succeeded": 1, "skipped": 1}
    assert detail["failures"] == [
        {"key": "row 1", "status": "skipped", "attempts": 0, "error": "data/gamma.jsonl:2: invalid JSON: Expecting value at column 1"}
    ]
    [output] = detail["outputs"]
    assert output["key"] == "g1" and set(output["output"]) == {"classifier"}
    typo = runs(result.run_id[:-1] + "x")
    assert typo.exit_code == 1 and f"did you mean `{result.run_id}`?" in typo.stderr


def test_reading_history_never_writes_the_store(history: tuple[Path, list[RunResult]]) -> None:
    ws, results = history
    state = ws / ".sleipnir" / "state.db"
    state.chmod(0o444)
    try:
        assert runs(results[0].run_id).exit_code == 0
        assert runs().exit_code == 0
    finally:
        state.chmod(0o644)
