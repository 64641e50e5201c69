"""`sleipnir run-job` and `sleipnir run` through click's CliRunner (and, for the README flow, a subprocess):
retries against the LLM server's real faults, pipelines in DAG order, and the command's options.

Workspaces are built in tmp_path with test_run_process.py's helpers; the LLM server is a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from llm_server import LLMServer
from test_run_process import llm, make_workspace, process_env, scoring_job, server, sleipnir, write_items

from sleipnir.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "sentiment_analysis"
__all__ = ["llm", "server"]  # fixtures shared with test_run_process

LLM_LATENCY = 0.0
"""The reply latency of the LLM server for this module's tests (the `llm` fixture reads it)."""


def invoke(args: list[str], at: LLMServer | None = None) -> Result:
    """`sleipnir ARGS` in-process, in the current folder, with `LLM_URL` at `at` and no OpenAI settings."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("OPENAI_", "SLEIPNIR_"))}
    env = {**unset, **process_env(at)}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def json_of(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace (the current folder) with the job `score` over 20 items at the LLM server."""
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=4, batch_size=5)})
    write_items(ws / "data" / "items.jsonl", 20)
    monkeypatch.chdir(ws)
    return ws


# -- retries against real faults ----------------------------------------------------------------------------

RATE_LIMIT = "rate_limit:\n  requests_per_minute: 6000\n"
RETRY = """\
error_handling:
  on_prompt_failure:
    strategy: retry
    max_retries: {retries}
    backoff: fixed
    initial_delay: 0.01
    jitter: false
"""


def _one_item_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retries: int, *, rate_limit: bool = True) -> Path:
    # A configured rate limit is not needed for a quick retry after a 429 (see the test below); it paces only.
    job = scoring_job("one", execution=RATE_LIMIT if rate_limit else "", extra=RETRY.format(retries=retries))
    ws = make_workspace(tmp_path / "ws", {"jobs/one.yaml": job})
    write_items(ws / "data" / "items.jsonl", 1)
    monkeypatch.chdir(ws)
    return ws


FAULTS = {
    "429 Retry-After 0.2": {"kind": "429", "retry_after": 0.2},
    "500": {"kind": "500"},
    "bad_json": {"kind": "bad_json"},
    "schema_invalid": {"kind": "schema_invalid"},
    "drop": {"kind": "drop"},
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_fault_is_retried_and_the_item_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer, fault: dict[str, Any]
) -> None:
    ws = _one_item_job(tmp_path, monkeypatch, retries=3)
    server.add_faults(fault)
    result = invoke(["run-job", "one", "--json"], server)
    assert result.exit_code == 0, result.stderr
    metrics = json_of(result)["metrics"]
    assert (metrics["items_processed"], metrics["retries"], metrics["calls"]) == (1, 1, 2)
    assert server.requests(0)["count"] == 2
    if "retry_after" in fault:
        assert metrics["execution_time"] >= 0.2  # the server's Retry-After, not the 0.01 s backoff
    [row] = rows_of(ws / "out" / "scores.jsonl")
    assert row["id"] == "k000" and row["scorer"]["label"] in ("good", "bad")


def test_every_fault_in_a_row_is_retried_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer) -> None:
    _one_item_job(tmp_path, monkeypatch, retries=5)
    server.add_faults(*FAULTS.values())
    result = invoke(["run-job", "one", "--json"], server)
    assert result.exit_code == 0, result.stderr
    metrics = json_of(result)["metrics"]
    assert (metrics["items_processed"], metrics["retries"], metrics["calls"]) == (1, 5, 6)
    assert "retries" in result.stderr  # the summary table


def test_retries_spent_fail_the_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer) -> None:
    ws = _one_item_job(tmp_path, monkeypatch, retries=1)
    server.add_faults({"kind": "500", "count": 2})
    result = invoke(["run-job", "one", "--json"], server)
    assert result.exit_code == 1
    data = json_of(result)
    assert data["status"] == "failed"
    assert (data["metrics"]["items_failed"], data["metrics"]["retries"], data["metrics"]["calls"]) == (1, 1, 2)
    [error] = data["errors"]
    assert (error["key"], error["attempts"]) == ("k000", 2)
    assert "500" in error["error"]
    assert "item k000 failed" in result.stderr
    assert not (ws / "out" / "scores.jsonl").exists()


def test_a_429_on_a_quiet_provider_does_not_stall_the_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer) -> None:
    ws = _one_item_job(tmp_path, monkeypatch, retries=3, rate_limit=False)
    server.add_faults({"kind": "429", "retry_after": 0.2})
    # The run needs ~1 s (start-up and the 0.2 s the server asked for). A stalled retry waits out the limiter's
    # quiet minute; 20 s tells the two apart even on a loaded 2-core machine, where start-up alone took 4 s.
    done = subprocess.run(
        [sys.executable, "-m", "sleipnir", "run-job", "one", "--json"],
        cwd=ws, env=process_env(server), capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0
    assert json.loads(done.stdout)["metrics"]["retries"] == 1


# -- malformed input rows -----------------------------------------------------------------------------------


def _bad_rows_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str) -> Path:
    extra = f"error_handling:\n  on_input_error:\n    strategy: {strategy}\n"
    job = scoring_job("rows", "path: out/rows.jsonl\ndead_letter: out/dead.jsonl", extra=extra).replace(
        "endpoint: ${LLM_URL}", "model: mock"
    )
    ws = make_workspace(tmp_path / "ws", {"jobs/rows.yaml": job})
    (ws / "data").mkdir()
    (ws / "data" / "items.jsonl").write_text('{"id": "a1", "text": "fine"}\n{not json\n{"id": "a3", "text": "fine"}\n')
    monkeypatch.chdir(ws)
    return ws


def test_a_malformed_row_under_fail_stops_the_run_naming_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _bad_rows_job(tmp_path, monkeypatch, "fail")
    result = invoke(["run-job", "rows", "--json"])
    assert result.exit_code == 1
    data = json_of(result)
    assert data["message"].startswith("item row 1 failed (input): data/items.jsonl:2: invalid JSON")
    assert not (ws / "out" / "rows.jsonl").exists()


def test_a_malformed_row_under_skip_is_dead_lettered_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _bad_rows_job(tmp_path, monkeypatch, "skip")
    first = invoke(["run-job", "rows", "--json"])
    assert first.exit_code == 0, first.stderr
    assert (json_of(first)["metrics"]["items_processed"], json_of(first)["metrics"]["items_skipped"]) == (2, 1)
    [dead] = [json.loads(line) for line in (ws / "out" / "dead.jsonl").read_text().splitlines()]
    assert (dead["key"], dead["stage"], dead["input"]) == ("row 1", "input", {"raw": "{not json"})
    again = invoke(["run-job", "rows", "--json"])
    assert json_of(again)["metrics"]["items_already_done"] == 3
    assert len((ws / "out" / "dead.jsonl").read_text().splitlines()) == 1


# -- pipelines ----------------------------------------------------------------------------------------------


def _mock_job(name: str, source: str, target: str) -> str:
    return f"""\
        job:
          name: {name}
          input:
            path: {source}
            key: id
            keep: [text]
          prompts:
            - name: scorer
              version: 1.0.0
              model: mock
          output:
            path: {target}
        """


DIAMOND = """\
    pipeline:
      name: diamond
      jobs:
        - id: collector
          name: collector
        - id: a
          name: branch_a
          depends_on: [collector]
        - id: b
          name: branch_b
          depends_on: [collector]
        - id: aggregator
          name: aggregator
          depends_on: [a, b]
    """


def _runs(ws: Path) -> dict[str, list[tuple[float, float]]]:
    """Job -> (started, finished) of each recorded run, from the workspace ledger."""
    with sqlite3.connect(ws / ".sleipnir" / "state.db") as connection:
        rows = connection.execute("SELECT job, started_at, finished_at FROM sleipnir_runs ORDER BY started_at").fetchall()
    connection.close()
    runs: dict[str, list[tuple[float, float]]] = {}
    for job, started, finished in rows:
        runs.setdefault(job, []).append((started, finished))
    return runs


def test_a_diamond_pipeline_runs_in_order_and_a_failure_stops_only_its_dependents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = {
        "jobs/collector.yaml": _mock_job("collector", "data/items.jsonl", "out/collected.jsonl"),
        "jobs/branch_a.yaml": _mock_job("branch_a", "out/collected.jsonl", "out/a.jsonl"),
        "jobs/branch_b.yaml": _mock_job("branch_b", "out/collected.jsonl", "out/b.jsonl"),
        "jobs/aggregator.yaml": _mock_job("aggregator", "out/b.jsonl", "out/aggregated.jsonl"),
        "pipelines/diamond.yaml": DIAMOND,
    }
    ws = make_workspace(tmp_path / "ws", jobs)
    keys = write_items(ws / "data" / "items.jsonl", 6)
    monkeypatch.chdir(ws)

    result = invoke(["run-job", "diamond", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json_of(result)
    assert (data["status"], data["failed"], data["skipped"]) == ("succeeded", [], [])
    assert sorted(data["jobs"]) == ["a", "aggregator", "b", "collector"]
    for name in ("collected", "a", "b", "aggregated"):
        assert sorted(row["id"] for row in rows_of(ws / "out" / f"{name}.jsonl")) == keys
    [(_, collected)] = _runs(ws)["collector"]
    [(a_started, a_finished)] = _runs(ws)["branch_a"]
    [(b_started, b_finished)] = _runs(ws)["branch_b"]
    [(aggregated, _)] = _runs(ws)["aggregator"]
    assert collected <= a_started and collected <= b_started
    assert max(a_finished, b_finished) <= aggregated

    # Job `a` now reads a file that is not there: `b` still runs, `aggregator` is not started.
    (ws / "jobs" / "branch_a.yaml").write_text(jobs["jobs/branch_a.yaml"].replace("out/collected.jsonl", "data/missing.jsonl"))
    result = invoke(["run-job", "diamond", "--fresh", "--json"])
    assert result.exit_code == 1
    data = json_of(result)
    assert (data["status"], data["failed"], data["skipped"]) == ("failed", ["a"], ["aggregator"])
    assert data["jobs"]["b"]["status"] == "succeeded"
    assert data["jobs"]["b"]["metrics"]["items_processed"] == 6
    assert "input file not found: data/missing.jsonl" in data["jobs"]["a"]["message"]
    assert "not started (a dependency failed): aggregator" in result.stderr
    assert len(_runs(ws)["aggregator"]) == 1
    assert len(_runs(ws)["branch_b"]) == 2


# -- the command's options ----------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_calls_nothing(scoring: Path, server: LLMServer) -> None:
    result = invoke(["run-job", "score", "--dry-run"], server)
    assert result.exit_code == 0, result.stderr
    assert "job score" in result.stdout
    assert "prompt scorer@1.0.0" in result.stdout
    assert "20 items" in result.stdout
    assert server.requests(0)["count"] == 0
    assert not (scoring / "out").exists()
    assert not (scoring / ".sleipnir").exists()


def test_input_replaces_the_source(scoring: Path, server: LLMServer) -> None:
    others = write_items(scoring.parent / "other.jsonl", 3, prefix="x")
    result = invoke(["run-job", "score", "--input", "../other.jsonl", "--json"], server)
    assert result.exit_code == 0, result.stderr
    assert json_of(result)["metrics"]["items_processed"] == 3
    assert sorted(row["id"] for row in rows_of(scoring / "out" / "scores.jsonl")) == others


def test_input_after_a_run_of_the_jobs_own_source_processes_the_custom_rows(scoring: Path, server: LLMServer) -> None:
    assert invoke(["run-job", "score"], server).exit_code == 0
    custom = scoring.parent / "custom.jsonl"
    custom.write_text("".join(json.dumps({"id": f"k{i:03d}", "text": "a different text"}) + "\n" for i in range(3)))
    result = invoke(["run-job", "score", "--input", str(custom), "--json"], server)
    assert result.exit_code == 0, result.stderr
    assert json_of(result)["metrics"]["items_processed"] == 3
    # The output accumulates by item key: the custom rows replace theirs, the others stay.
    assert [row["id"] for row in rows_of(scoring / "out" / "scores.jsonl")] == [f"k{i:03d}" for i in range(20)]


def test_a_missing_input_file_is_an_error_without_a_traceback(scoring: Path, server: LLMServer) -> None:
    result = invoke(["run-job", "score", "--input", "nowhere.jsonl"], server)
    assert result.exit_code == 1
    assert "nowhere.jsonl: no such file" in result.stderr
    assert "Traceback" not in result.output
    assert server.requests(0)["count"] == 0


def test_limit_runs_the_first_items_only(scoring: Path, server: LLMServer) -> None:
    result = invoke(["run-job", "score", "--limit", "5", "--json"], server)
    assert result.exit_code == 0, result.stderr
    assert json_of(result)["metrics"]["items_processed"] == 5
    assert server.requests(0)["count"] == 5
    assert [row["id"] for row in rows_of(scoring / "out" / "scores.jsonl")] == [f"k{i:03d}" for i in range(5)]


def test_json_prints_a_machine_readable_result(scoring: Path, server: LLMServer) -> None:
    result = invoke(["run-job", "score", "--json"], server)
    assert result.exit_code == 0, result.stderr
    data = json_of(result)  # stdout is the JSON and nothing else
    assert data["job"] == "score" and data["status"] == "succeeded" and data["errors"] == []
    assert len(data["plan_id"]) == 64 and data["run_id"]
    metrics = data["metrics"]
    assert metrics["items_processed"] == 20 and metrics["success_rate"] == 1.0
    assert metrics["calls"] == 20 and metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0
    assert metrics["tokens_by_model"]["gpt-4o-mini"]["prompt"] == metrics["prompt_tokens"]
    assert metrics["cost"] > 0


def test_run_is_the_same_command_as_run_job(scoring: Path, server: LLMServer) -> None:
    first = invoke(["run", "score", "--json"], server)
    assert first.exit_code == 0, first.stderr
    second = invoke(["run-job", "score", "--json"], server)
    assert second.exit_code == 0, second.stderr
    assert json_of(first)["plan_id"] == json_of(second)["plan_id"]
    assert json_of(first)["metrics"]["items_processed"] == 20
    assert json_of(second)["metrics"]["items_already_done"] == 20  # one ledger: `run-job` resumed `run`
    assert server.requests(0)["count"] == 20
    assert invoke(["run", "--help"]).stdout.count("--retry-failed") == 1


def test_an_unknown_job_is_a_diagnostic(scoring: Path) -> None:
    result = invoke(["run-job", "no_such_job"])
    assert result.exit_code == 1
    assert "error[unknown-target]: no job or pipeline named `no_such_job`" in result.stderr
    assert "jobs and pipelines here: score" in result.stderr
    assert "Traceback" not in result.output


def test_a_job_writing_to_stdout_prints_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/show.yaml": scoring_job("show", "destination: stdout")})
    keys = write_items(ws / "data" / "items.jsonl", 7)
    monkeypatch.chdir(ws)
    result = invoke(["run-job", "show"], server)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["id"] for row in rows) == keys
    assert all(row["scorer"]["label"] in ("good", "bad") for row in rows)


# -- the README's example -----------------------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """examples/sentiment_analysis copied to tmp_path (without its state), its database made as the README says."""
    copy = tmp_path / "examples" / "sentiment_analysis"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".sleipnir"))
    made = subprocess.run(
        [sys.executable, "examples/sentiment_analysis/make_database.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    return copy


def _results(example: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(example / ".sleipnir" / "reviews.db") as connection:
        rows = connection.execute("SELECT review_id, sentiment_analyzer FROM sentiment_results ORDER BY review_id").fetchall()
    connection.close()
    return rows


def test_the_readme_example_runs_offline_on_the_mock_provider(example: Path) -> None:
    env = process_env()
    del env["LLM_URL"]
    done = sleipnir(["run-job", "examples/sentiment_analysis/jobs/sentiment_analysis_job.yaml"], example.parent.parent, env)
    assert done.returncode == 0, done.stderr
    assert "note: no API key for provider `openai`" in done.stderr
    assert "offline `mock` provider" in done.stderr
    results = _results(example)
    assert [key for key, _ in results] == [f"R{i:03d}" for i in range(1, 21)]
    assert all(json.loads(text)["label"] in ("positive", "negative", "neutral", "mixed") for _, text in results)


def test_the_readme_example_calls_the_endpoint_when_a_key_is_set(example: Path) -> None:
    with LLMServer(api_key="sk-test-readme") as server:
        env = process_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test-readme")
        del env["LLM_URL"]
        done = sleipnir(["run-job", "examples/sentiment_analysis/jobs/sentiment_analysis_job.yaml", "--json"], example.parent.parent, env)
        assert done.returncode == 0, done.stderr
        assert server.requests(0)["count"] == 20  # with the right key: a wrong one gets 401 and fails the run
    data = json.loads(done.stdout)
    assert data["notices"] == [] and "mock" not in done.stderr
    assert data["metrics"]["tokens_by_model"].keys() == {"gpt-4"}
    assert len(_results(example)) == 20
