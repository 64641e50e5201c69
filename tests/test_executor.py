"""The Python API, `JobExecutor` and `AsyncJobExecutor`: the seed's snippets as written, callbacks, `params=`,
`profile=`, `input=`, and `CompileError`. Real parts: the example workspace with its SQLite database, the mock
provider, and the LLM server subprocess."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from llm_server import LLMServer
from test_run_process import llm, make_workspace, scoring_job, server, write_items

import sleipnir
from sleipnir import AsyncJobExecutor, CompileError, JobExecutor
from sleipnir.runtime.engine.job import RunResult
from sleipnir.runtime.engine.pipeline import PipelineResult

REPO = Path(__file__).resolve().parent.parent
__all__ = ["llm", "server"]  # fixtures shared with test_run_process

LLM_LATENCY = 0.02
"""The reply latency of the LLM server for this module's tests (the `llm` fixture reads it)."""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor reads the process environment: no OpenAI key or endpoint of the caller's may leak in."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SLEIPNIR_PROFILE"):
        monkeypatch.delenv(name, raising=False)


MY_JOB = scoring_job(
    "my_job",
    "path: out/scores_${suffix}.jsonl",
    concurrency=4,
    batch_size=5,
    extra="""\
    params:
      suffix: plain
    profiles:
      offline:
        model: mock
    """,
)


@pytest.fixture
def my_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LLMServer) -> Path:
    """A workspace (the current folder) with `my_job`: 40 items scored at the LLM server."""
    ws = make_workspace(tmp_path / "ws", {"jobs/my_job.yaml": MY_JOB})
    write_items(ws / "data" / "items.jsonl", 40)
    monkeypatch.chdir(ws)
    return ws


def _keys(result: RunResult) -> list[str]:
    return sorted(str(row["id"]) for row in result.outputs)


# -- the seed's snippets ------------------------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/sentiment_analysis copied (without its state), its database made, as the current folder."""
    copy = tmp_path / "sentiment_analysis"
    shutil.copytree(REPO / "examples" / "sentiment_analysis", copy, ignore=shutil.ignore_patterns(".sleipnir"))
    made = subprocess.run([sys.executable, "make_database.py"], cwd=copy, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    monkeypatch.chdir(copy)
    return copy


def test_the_seed_snippet_runs_the_example(example: Path) -> None:
    from sleipnir import JobExecutor

    executor = JobExecutor("sentiment_analysis_job")
    results = executor.run()

    assert isinstance(results, RunResult) and results.ok
    assert results.errors == []
    assert sorted(row["review_id"] for row in results.outputs) == [f"R{i:03d}" for i in range(1, 21)]
    assert all(row["sentiment_analyzer"]["label"] in ("positive", "negative", "neutral", "mixed") for row in results.outputs)
    assert results.metrics["items_processed"] == 20 and results.metrics["success_rate"] == 1.0
    assert results.metrics["tokens_by_model"].keys() == {"mock"}
    assert any("offline `mock` provider" in notice for notice in results.notices)
    with sqlite3.connect(example / ".sleipnir" / "reviews.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM sentiment_results").fetchone() == (20,)
    connection.close()


def test_the_callbacks_snippet(my_job: Path) -> None:
    events: list[tuple[str, Any]] = []
    executor = JobExecutor("my_job")

    # Register callbacks
    executor.on("start", lambda: events.append(("start", None)))
    executor.on("progress", lambda p: events.append(("progress", p)))
    executor.on("complete", lambda r: events.append(("complete", r)))
    executor.on("error", lambda e: events.append(("error", e)))

    results = executor.run()

    assert isinstance(results, RunResult) and results.ok
    assert events[0] == ("start", None)
    assert events[-1] == ("complete", results)
    progress = [p for kind, p in events if kind == "progress"]
    assert progress and all(isinstance(p, float) for p in progress)
    assert progress == sorted(progress) and progress[-1] == 100
    assert [kind for kind, _ in events].count("error") == 0
    assert _keys(results) == [f"k{i:03d}" for i in range(40)]


def test_the_error_callback_gets_the_message(my_job: Path) -> None:
    (my_job / "data" / "items.jsonl").unlink()
    events: list[tuple[str, Any]] = []
    executor = JobExecutor("my_job")
    executor.on("error", lambda e: events.append(("error", e))).on("complete", lambda r: events.append(("complete", r)))
    results = executor.run()
    assert isinstance(results, RunResult) and results.status == "failed"
    assert events == [("error", "input file not found: data/items.jsonl (" + str(my_job / "data" / "items.jsonl") + ")")]
    assert results.message == events[0][1]


def test_a_callback_that_raises_is_logged_and_named_and_the_run_goes_on(my_job: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The caller's callback is not the run's: its error is logged with its traceback and named in the result's
    notices, and the run ends as it would have, recorded and published (before, it stayed `running`, unpublished)."""

    def broken(percent: float) -> None:
        raise ZeroDivisionError("division by zero")

    executor = JobExecutor("my_job").on("progress", broken)
    with caplog.at_level("ERROR", logger="sleipnir.executor"):
        results = executor.run()
    assert isinstance(results, RunResult) and results.ok
    assert "the 'progress' callback raised ZeroDivisionError: division by zero" in results.notices
    assert results.notices.count("the 'progress' callback raised ZeroDivisionError: division by zero") == 1
    assert any(record.exc_info and "callback" in record.getMessage() for record in caplog.records)
    assert _keys(results) == [f"k{i:03d}" for i in range(40)]
    with sqlite3.connect(my_job / ".sleipnir" / "state.db") as connection:
        statuses = [status for (status,) in connection.execute("SELECT status FROM sleipnir_runs")]
    connection.close()
    assert statuses == ["succeeded"]


def test_run_works_inside_a_running_event_loop_as_in_a_notebook(my_job: Path) -> None:
    """Jupyter runs cells inside an event loop, where `asyncio.run` refuses to start: `run()` then runs the job on
    a loop of its own in a thread, and waits for it."""

    async def cell() -> RunResult:
        result = JobExecutor("my_job").run()
        assert isinstance(result, RunResult)
        return result

    result = asyncio.run(cell())
    assert result.ok and _keys(result) == [f"k{i:03d}" for i in range(40)]


def test_a_workspace_that_does_not_exist_is_an_error_not_the_folder_around_it(my_job: Path, tmp_path: Path) -> None:
    """`workspace=` naming a folder that is not there: an error, never a job of the same name found elsewhere
    (the current folder holds `my_job` here; before, the missing folder's parent was searched, `/` at worst)."""
    with pytest.raises(CompileError) as raised:
        JobExecutor("my_job", workspace=str(tmp_path / "gone")).run()
    codes = [d.code for d in raised.value.diagnostics if d.severity == "error"]
    assert codes == ["io-error", "unknown-target"], codes


def test_an_unknown_event_is_refused(my_job: Path) -> None:
    with pytest.raises(ValueError, match="unknown event 'finish'"):
        JobExecutor("my_job").on("finish", print)


def test_the_async_snippet(my_job: Path) -> None:
    async def run_job() -> Any:
        executor = AsyncJobExecutor("my_job")
        results = await executor.run_async()
        return results

    results = asyncio.run(run_job())
    assert isinstance(results, RunResult) and results.ok
    assert _keys(results) == [f"k{i:03d}" for i in range(40)]
    assert sleipnir.AsyncJobExecutor is AsyncJobExecutor


# -- arguments ----------------------------------------------------------------------------------------------


def test_params_override_job_params_and_settings(my_job: Path, server: LLMServer) -> None:
    results = JobExecutor("my_job", params={"suffix": "custom", "temperature": 0.5}).run()
    assert isinstance(results, RunResult) and results.ok
    assert not (my_job / "out" / "scores_plain.jsonl").exists()
    assert len((my_job / "out" / "scores_custom.jsonl").read_text().splitlines()) == 40
    bodies = server.requests(40)["bodies"]
    assert len(bodies) == 40 and {body["temperature"] for body in bodies} == {0.5}


def test_profile_selects_the_profile(my_job: Path, server: LLMServer) -> None:
    results = JobExecutor("my_job", profile="offline").run()
    assert isinstance(results, RunResult) and results.ok
    assert results.metrics["tokens_by_model"].keys() == {"mock"}
    assert len(results.outputs) == 40
    assert server.requests(0)["count"] == 0


def test_input_replaces_the_source(my_job: Path, tmp_path: Path) -> None:
    others = write_items(tmp_path / "custom_data.jsonl", 4, prefix="c")
    results = JobExecutor("my_job", input=tmp_path / "custom_data.jsonl").run()
    assert isinstance(results, RunResult) and results.ok
    assert _keys(results) == others


def test_progress_reaches_100_with_input(my_job: Path, tmp_path: Path) -> None:
    write_items(tmp_path / "custom_data.jsonl", 4, prefix="c")
    progress: list[float | None] = []
    executor = JobExecutor("my_job", input=tmp_path / "custom_data.jsonl").on("progress", progress.append)
    assert executor.run().ok
    assert progress and progress[-1] == 100


def test_a_job_path_works_as_well_as_a_name(my_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = JobExecutor(str(my_job / "jobs" / "my_job.yaml"), limit=3).run()
    assert isinstance(results, RunResult) and results.ok
    assert _keys(results) == ["k000", "k001", "k002"]


def test_a_job_that_does_not_compile_raises_compile_error(my_job: Path) -> None:
    with pytest.raises(CompileError, match="no job or pipeline named `nothing_here`"):
        JobExecutor("nothing_here").plan()

    broken = MY_JOB.replace("name: my_job", "name: broken_job").replace("name: scorer", "name: scorrer")
    (my_job / "jobs" / "broken.yaml").write_text(broken)
    with pytest.raises(CompileError) as caught:
        JobExecutor("broken_job").run()
    text = str(caught.value)
    assert "error[unknown-prompt]" in text
    assert "jobs/broken.yaml:9:13" in text
    assert "scorer" in text  # the "did you mean"
    assert caught.value.diagnostics and caught.value.diagnostics[0].code == "unknown-prompt"


# -- found wanting ------------------------------------------------------------------------------------------


def test_the_executor_keeps_the_ledger_the_workspace_names(my_job: Path) -> None:
    (my_job / "sleipnir.yaml").write_text("name: runs\nstate: .sleipnir/ledger.db\n")
    results = JobExecutor("my_job").run()
    assert isinstance(results, RunResult) and results.ok
    assert (my_job / ".sleipnir" / "ledger.db").exists()


PAIR = """\
    pipeline:
      name: pair
      jobs:
        - id: first
          name: my_job
        - id: second
          name: my_job
          depends_on: [first]
    """


def test_a_pipeline_fires_start_and_complete_once(my_job: Path) -> None:
    (my_job / "pipelines").mkdir()
    (my_job / "pipelines" / "pair.yaml").write_text(textwrap.dedent(PAIR))
    events: list[tuple[str, Any]] = []
    executor = JobExecutor("pair").on("start", lambda: events.append(("start", None)))
    executor.on("complete", lambda r: events.append(("complete", r)))
    results = executor.run()
    assert isinstance(results, PipelineResult) and results.ok
    assert events == [("start", None), ("complete", results)]
