"""The runtime in process: items stream through prompts to the sink, with retries, strategies and resume."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sleipnir.compiler.ir import Plan
from sleipnir.compiler.planner import plan as compile_plan
from sleipnir.runtime.engine.job import Hooks, JobRun, RunOptions, RunResult
from sleipnir.runtime.engine.retries import Attempts, with_retries
from sleipnir.runtime.providers.base import ProviderError

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import LLMServer

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = yaml.safe_load((ROOT / "stdlib/prompts/sentiment_analyzer/2.1.0.yaml").read_text())["prompt"]["output"]["schema"]
CLEANER = yaml.safe_load((ROOT / "stdlib/prompts/text_cleaner/1.0.0.yaml").read_text())["prompt"]["output"]["schema"]


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer(latency=0.0) as running:
        yield running


@pytest.fixture
def llm(server: LLMServer) -> LLMServer:
    server.reset()
    return server


def workspace(tmp_path: Path, job: str, rows: int = 12) -> Path:
    (tmp_path / "sleipnir.yaml").write_text("name: run_tests\n", encoding="utf-8")
    (tmp_path / "job.yaml").write_text(textwrap.dedent(job).lstrip(), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    with (data / "reviews.jsonl").open("w", encoding="utf-8") as file:
        for number in range(rows):
            text = f"I love it, great value ({number})" if number % 2 else f"It broke, awful support ({number})"
            file.write(json.dumps({"review_id": f"r{number:03d}", "text": text, "stars": number % 5}) + "\n")
    return tmp_path


def compiled(root: Path, name: str = "job.yaml", **options: Any) -> Plan:
    result = compile_plan(str(root / name), environ={}, **options)
    assert result.ok, [d.message for d in result.diagnostics]
    [single] = result.plans
    return single


def run(plan: Plan, **options: Any) -> RunResult:
    options.setdefault("environ", {})
    return asyncio.run(JobRun(plan, RunOptions(**options)).run())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def job_at(server: LLMServer, *, prompts: str = "", extra: str = "") -> str:
    return f"""
    job:
      name: scored
      input:
        path: data/reviews.jsonl
        keep: [stars]
        batch_size: 4
      prompts:
        - name: sentiment_analyzer
          model: sentiment
          endpoint: {server.base_url}
          {prompts}
      output:
        path: out/scored.jsonl
      execution:
        concurrency: 3
      {extra}
    """


def test_items_stream_through_a_real_endpoint_to_the_sink(tmp_path: Path, llm: LLMServer) -> None:
    root = workspace(tmp_path, job_at(llm))
    collector = gc.get_threshold()
    result = run(compiled(root))
    assert result.ok, result.message
    assert gc.get_threshold() == collector and gc.get_freeze_count() == 0, "the run left the collector as it was"
    rows = lines(root / "out" / "scored.jsonl")
    assert [r["review_id"] for r in rows] == [f"r{n:03d}" for n in range(12)]
    assert all(set(r) == {"review_id", "stars", "sentiment_analyzer"} for r in rows)
    assert rows[1]["sentiment_analyzer"]["label"] in ("positive", "negative", "neutral", "mixed")
    assert llm.requests()["count"] == 12
    body = llm.requests(last=1)["bodies"][0]
    assert body["model"] == "sentiment" and body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "sentiment_analyzer"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert result.progress.prompt_tokens > 0 and result.metrics["success_rate"] == 1.0
    assert not list((root / "out").glob(".*partial*")), "the spool is gone once the run is published"


def test_sequential_batches_are_written_in_order_while_later_batches_are_already_called(tmp_path: Path, llm: LLMServer) -> None:
    # The first call is slow: batch 1 finishes last, yet the slots went on to the later batches meanwhile.
    llm.add_faults({"kind": "slow", "delay": 1.0})
    seen_while_slow: list[int] = []
    root = workspace(tmp_path, job_at(llm), rows=12)
    spool = root / "out" / ".scored.jsonl.partial"

    def on_progress(progress: Any) -> None:
        nothing_written = not spool.exists() or not spool.read_bytes()
        if nothing_written and progress.calls >= 8:
            seen_while_slow.append(progress.calls)

    result = run(compiled(root), hooks=Hooks(on_progress=on_progress), progress_every=0.05)
    assert result.ok, result.message
    assert [r["review_id"] for r in lines(root / "out" / "scored.jsonl")] == [f"r{n:03d}" for n in range(12)]
    assert seen_while_slow, "items of batches 2 and 3 were called before batch 1 was written"


def test_a_local_file_output_is_written_from_the_event_loop_up_to_its_batch_limit(
    tmp_path: Path, llm: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local run on a SQLite store writes a file output's batches, and records them, from the event loop; a batch
    # of more than INLINE_ROWS items goes to a worker thread, as every batch of other outputs and stores does.
    from sleipnir.runtime.engine import writer
    from sleipnir.runtime.engine.ledger import Ledger
    from sleipnir.runtime.io.sinks import FileSink

    monkeypatch.setattr(writer, "INLINE_ROWS", 4)
    written: list[tuple[int, bool]] = []
    recorded: list[tuple[int, bool]] = []
    write, record = FileSink.write, Ledger.record

    def spy_write(self: FileSink, rows: list[Any]) -> None:
        written.append((len(rows), threading.current_thread() is threading.main_thread()))
        write(self, rows)

    def spy_record(self: Ledger, plan_id: str, run_id: str, outcomes: Any) -> None:
        outcomes = list(outcomes)
        recorded.append((len(outcomes), threading.current_thread() is threading.main_thread()))
        record(self, plan_id, run_id, outcomes)

    monkeypatch.setattr(FileSink, "write", spy_write)
    monkeypatch.setattr(Ledger, "record", spy_record)
    root = workspace(tmp_path, job_at(llm).replace("batch_size: 4", "batch_size: 5"), rows=12)
    result = run(compiled(root))
    assert result.ok, result.message
    assert [r["review_id"] for r in lines(root / "out" / "scored.jsonl")] == [f"r{n:03d}" for n in range(12)]
    # Batches of 5, 5 and 2 items: the two over the limit from a thread, the last from the loop (the main thread).
    assert written == [(5, False), (5, False), (2, True)]
    assert recorded == written


def test_a_later_prompt_reads_an_earlier_output(tmp_path: Path, llm: LLMServer) -> None:
    job = f"""
    job:
      name: chained
      input:
        path: data/reviews.jsonl
      prompts:
        - name: text_cleaner
          model: cleaner
          endpoint: {llm.base_url}
        - name: sentiment_analyzer
          model: sentiment
          endpoint: {llm.base_url}
      output:
        path: out/chained.jsonl
    """
    root = workspace(tmp_path, job, rows=2)
    assert run(compiled(root)).ok
    bodies = llm.requests(last=4)["bodies"]
    cleaned = [b for b in bodies if b["model"] == "cleaner"]
    analysed = [b for b in bodies if b["model"] == "sentiment"]
    assert len(cleaned) == len(analysed) == 2
    answers = [json.loads(json.dumps(r)) for r in lines(root / "out" / "chained.jsonl")]
    for row in answers:
        text = row["text_cleaner"]["cleaned_text"]
        assert any(text in b["messages"][-1]["content"] for b in analysed), "sentiment reads text_cleaner.cleaned_text"


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "429", "retry_after": 0.1},
        {"kind": "500"},
        {"kind": "bad_json"},
        {"kind": "schema_invalid"},
        {"kind": "drop"},
    ],
    ids=lambda f: f["kind"],
)
def test_retryable_faults_are_retried(tmp_path: Path, llm: LLMServer, fault: dict[str, Any]) -> None:
    extra = "error_handling:\n        on_prompt_failure: {strategy: retry, max_retries: 2, initial_delay: 0.01}"
    root = workspace(tmp_path, job_at(llm, extra=extra), rows=3)
    llm.add_faults(fault)
    result = run(compiled(root))
    assert result.ok, result.message
    assert result.progress.retries == 1 and result.progress.succeeded == 3
    assert len(lines(root / "out" / "scored.jsonl")) == 3


def test_a_failure_that_is_not_retryable_stops_the_run_and_publishes_nothing(tmp_path: Path, llm: LLMServer) -> None:
    extra = "error_handling:\n        on_prompt_failure: {strategy: retry, max_retries: 3, initial_delay: 0.01}"
    root = workspace(tmp_path, job_at(llm, extra=extra), rows=6)
    llm.add_faults({"kind": "context_length"})
    result = run(compiled(root))
    assert result.status == "failed" and "context" in result.message
    assert result.progress.failed == 1 and result.progress.retries == 0
    assert not (root / "out" / "scored.jsonl").exists(), "a failed run leaves the target as it was"
    again = run(compiled(root))
    # The calls in flight when the item failed were let finish and written; the rest never started.
    assert again.ok and again.progress.already_done == result.progress.succeeded
    assert again.progress.already_done + again.progress.succeeded == 6
    assert sorted(r["review_id"] for r in lines(root / "out" / "scored.jsonl")) == [f"r{n:03d}" for n in range(6)]


def test_skip_sends_the_item_to_the_dead_letter_and_goes_on(tmp_path: Path, llm: LLMServer) -> None:
    extra = "error_handling:\n        on_prompt_failure: {strategy: skip}"
    root = workspace(tmp_path, job_at(llm, extra=extra), rows=4)
    llm.add_faults({"kind": "400"})  # a request the server refuses (not a refused key: that stops the run)
    result = run(compiled(root))
    assert result.ok and result.progress.skipped == 1 and result.progress.succeeded == 3
    [dead] = lines(root / ".sleipnir" / "dead_letter" / "scored.jsonl")
    assert dead["stage"] == "prompt" and dead["attempts"] == 1
    assert "400 from" in dead["error"]
    assert dead["input"]["review_id"] == dead["key"]
    assert len(lines(root / "out" / "scored.jsonl")) == 3


def test_a_rerun_does_only_what_is_not_done_and_fresh_starts_over(tmp_path: Path, llm: LLMServer) -> None:
    root = workspace(tmp_path, job_at(llm), rows=10)
    first = run(compiled(root), limit=4)
    assert first.ok and first.progress.succeeded == 4
    second = run(compiled(root))
    assert second.progress.already_done == 4 and second.progress.succeeded == 6
    assert sorted(r["review_id"] for r in lines(root / "out" / "scored.jsonl")) == [f"r{n:03d}" for n in range(10)]
    fresh = run(compiled(root), fresh=True)
    assert fresh.progress.succeeded == 10 and fresh.progress.already_done == 0
    assert len(lines(root / "out" / "scored.jsonl")) == 10, "no row twice"


def test_input_replaces_the_source_and_a_bad_row_is_an_input_error(tmp_path: Path, llm: LLMServer) -> None:
    extra = "error_handling:\n        on_input_error: {strategy: skip}"
    root = workspace(tmp_path, job_at(llm, extra=extra), rows=2)
    other = tmp_path / "other.jsonl"
    other.write_text('{"review_id": "x1", "text": "fine"}\nnot json\n{"review_id": "x2", "text": "ok"}\n', encoding="utf-8")
    result = run(compiled(root), input_path=str(other))
    assert result.ok and result.progress.succeeded == 2 and result.progress.skipped == 1
    assert [r["review_id"] for r in lines(root / "out" / "scored.jsonl")] == ["x1", "x2"]
    [dead] = lines(root / ".sleipnir" / "dead_letter" / "scored.jsonl")
    assert dead["stage"] == "input" and "other.jsonl:2" in dead["error"]


def test_a_stack_runs_its_steps_with_conditions_and_a_parallel_group(tmp_path: Path) -> None:
    job = """
    job:
      name: stacked
      input:
        path: data/reviews.jsonl
      stack: sentiment_analysis_stack
      profiles:
        offline:
          model: mock
      output:
        path: out/stacked.jsonl
    """
    root = workspace(tmp_path, job, rows=6)
    result = run(compiled(root, profile="offline"))
    assert result.ok, result.message
    rows = lines(root / "out" / "stacked.jsonl")
    for row in rows:
        steps = row["sentiment_analysis_stack"]
        assert {"clean", "sentiment", "summary"} <= set(steps)
        assert ("complaint" in steps) == (steps["sentiment"]["label"] == "negative")
        assert ("sentiment_check" in steps) == (steps["sentiment"]["confidence"] < 0.6)


GATHERING_JOBS = """
    job:
      name: reduced
      input:
        path: data/reviews.jsonl
      phases:
        - {name: map, prompt: item_processor, model: mock}
        - {name: reduce, prompt: aggregator, model: mock}
      output:
        path: out/reduced.jsonl
    ---
    job:
      name: fanned
      input:
        path: data/reviews.jsonl
      phases:
        - {name: fan_out, split_by: stars}
        - {name: process, prompt: category_analyzer, model: mock}
        - {name: fan_in, prompt: result_merger, model: mock}
      output:
        path: out/fanned.jsonl
    """

"""A map-reduce job and a fan-out/fan-in job over data/reviews.jsonl (also run on the dask engine)."""


def test_map_reduce_and_fan_out_fan_in_gather_every_output(tmp_path: Path) -> None:
    job = GATHERING_JOBS
    root = workspace(tmp_path, job, rows=10)
    result = compile_plan(str(root / "job.yaml"), environ={})
    assert result.ok
    reduced, fanned = (run(p) for p in result.plans)
    assert reduced.ok and fanned.ok, (reduced.message, fanned.message)
    [summary] = lines(root / "out" / "reduced.jsonl")
    assert "reduce" in summary and reduced.progress.calls == 11
    [merged] = lines(root / "out" / "fanned.jsonl")
    assert "fan_in" in merged and fanned.progress.calls == 5 + 1, "one call per group of stars, then the merge"


def test_the_whole_job_deadline_stops_the_run(tmp_path: Path) -> None:
    # 30 items one at a time at 0.2 s each need 6 s; the deadline is 2 s, long enough on a loaded machine for
    # some items to be done (and written) before it.
    with LLMServer(latency=0.2) as slow:
        extra = "execution:\n        concurrency: 1\n        timeout: 2"
        root = workspace(tmp_path, job_at(slow, extra=extra).replace("      execution:\n        concurrency: 3\n", ""), rows=30)
        result = run(compiled(root))
        served = slow.requests(last=0)
    assert result.status == "timed_out" and 0 < result.progress.succeeded < 30
    # The server counts the replies it sent after its latency, and the time from reading each request to its reply.
    assert served["answered"] >= result.progress.succeeded and served["answer_seconds"] >= 0.2 * served["answered"]
    assert len(lines(root / "out" / ".scored.jsonl.partial")) == result.progress.succeeded, "what was done is kept"


@pytest.mark.parametrize(("status", "check"), [(401, "API key"), (403, "API key"), (404, "model's name")])
def test_a_refused_key_or_a_missing_model_stops_the_run_whatever_the_strategy(
    tmp_path: Path, llm: LLMServer, status: int, check: str
) -> None:
    """No call of the run can get past a refused key or a model that is not there: under `skip`, the run stops at
    the first such reply instead of calling for every item and dead-lettering each. What finished is written, the
    rest is left for a resume, and the next run (the key fixed) does it."""
    extra = "error_handling:\n        on_prompt_failure: {strategy: skip}"
    root = workspace(tmp_path, job_at(llm, extra=extra).replace("concurrency: 3", "concurrency: 1"), rows=12)
    plan = compiled(root)
    first = run(plan, limit=2)  # two items done with the good key
    assert first.ok and first.progress.succeeded == 2
    llm.add_faults({"kind": str(status), "count": 100})
    result = run(plan)
    assert result.status == "failed" and result.progress.calls == 1, "one call at concurrency 1, then the stop"
    assert f"{status} from" in result.message and "no call of this run can succeed" in result.message and check in result.message
    assert result.progress.skipped == 0 and not (root / ".sleipnir" / "dead_letter" / "scored.jsonl").exists()
    assert result.metrics["items_left"] == 10
    llm.reset()
    again = run(plan)
    assert again.ok and again.progress.already_done == 2 and again.progress.succeeded == 10


def test_a_run_that_ends_on_an_unexpected_error_is_recorded_failed_never_left_running(tmp_path: Path, llm: LLMServer) -> None:
    import sqlite3

    def broken(**_: Any) -> None:
        raise RuntimeError("a hook broke")

    root = workspace(tmp_path, job_at(llm), rows=4)
    with pytest.raises(RuntimeError, match="a hook broke"):
        run(compiled(root), hooks=Hooks(on_progress=broken))
    with sqlite3.connect(root / ".sleipnir" / "state.db") as connection:
        [(status, summary)] = connection.execute("SELECT status, summary FROM sleipnir_runs").fetchall()
    connection.close()
    assert status == "failed" and "the run ended on an error: RuntimeError: a hook broke" in summary
    assert run(compiled(root)).ok, "the next run is not held back by the one that broke"


def test_a_cancelled_run_is_recorded_interrupted_and_the_next_run_completes_it(tmp_path: Path) -> None:
    """The caller cancels the run's task (as serve's second signal does): the record says `interrupted`, not
    `running` for good, and the next run does the rest."""
    import sqlite3

    with LLMServer(latency=0.3) as slow:
        root = workspace(tmp_path, job_at(slow), rows=30)
        plan = compiled(root)

        async def cancelled() -> None:
            task = asyncio.create_task(JobRun(plan, RunOptions(environ={})).run())
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        with sqlite3.connect(root / ".sleipnir" / "state.db") as connection:
            [(status,)] = connection.execute("SELECT status FROM sleipnir_runs").fetchall()
        connection.close()
        assert status == "interrupted"
        again = run(plan)
    assert again.ok and again.progress.already_done + again.progress.succeeded == 30
    assert sorted(r["review_id"] for r in lines(root / "out" / "scored.jsonl")) == [f"r{n:03d}" for n in range(30)]


def test_progress_hooks_are_called_with_counts(tmp_path: Path, llm: LLMServer) -> None:
    root = workspace(tmp_path, job_at(llm), rows=8)
    seen: list[int] = []
    events: list[str] = []
    hooks = Hooks(
        on_start=lambda **_: events.append("start"),
        on_progress=lambda *, progress: seen.append(progress.done),
        on_complete=lambda *, result: events.append("complete"),
    )
    result = run(compiled(root), hooks=hooks)
    assert result.ok and events == ["start", "complete"] and seen[-1] == 8
    assert result.progress.total == 8


def test_retries_count_retries_not_attempts_and_honour_retry_after() -> None:
    from sleipnir.compiler.ir import Retry

    waits: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ProviderError("busy", retryable=True, retry_after=5.0 if calls == 2 else None)
        return "ok"

    attempts = Attempts()
    policy = Retry(max_retries=3, initial_delay=1, factor=2, max_delay=60, jitter=False)
    assert asyncio.run(with_retries(policy, attempt, attempts, sleep=sleep)) == "ok"
    assert calls == 4 and attempts.count == 4
    assert waits == [1.0, 5.0, 4.0], "+1s, then Retry-After 5s over the planned 2s, then +4s"

    calls = 0
    failing = Retry(max_retries=1, initial_delay=1, jitter=False)

    async def always() -> str:
        nonlocal calls
        calls += 1
        raise ProviderError("down", retryable=True)

    with pytest.raises(ProviderError):
        asyncio.run(with_retries(failing, always, Attempts(), sleep=sleep))
    assert calls == 2, "max_retries counts retries: one retry is two attempts"


def test_the_response_cache_answers_identical_calls_and_never_keeps_errors(tmp_path: Path, llm: LLMServer) -> None:
    extra = "error_handling:\n        on_prompt_failure: {strategy: skip}"
    root = workspace(tmp_path, job_at(llm, extra=extra), rows=5)
    llm.add_faults({"kind": "500"})
    first = run(compiled(root), cache=True)
    assert first.progress.skipped == 1 and llm.requests()["count"] == 5
    again = run(compiled(root), cache=True, fresh=True)
    assert again.ok and again.progress.succeeded == 5
    assert llm.requests()["count"] == 6, "four answers came from the cache; the failed call was made again"


def test_on_complete_notify_fires_the_complete_event(tmp_path: Path, llm: LLMServer) -> None:
    root = workspace(tmp_path, job_at(llm).replace("path: out/scored.jsonl", "path: out/scored.jsonl\n        on_complete: notify"), rows=2)
    fired: list[str] = []
    result = run(compiled(root), hooks=Hooks(on_notify=lambda *, job, run_id, result: fired.append(job)))
    assert result.ok and fired == ["scored"]


def test_the_dead_letter_drops_a_torn_last_line_and_knows_its_keys(tmp_path: Path) -> None:
    from sleipnir.runtime.io.deadletter import DeadLetter

    path = tmp_path / "dead.jsonl"
    path.write_text('{"plan": "p", "key": "a"}\n{"plan": "other", "key": "b"}\n{"plan": "p", "ke', encoding="utf-8")
    letter = DeadLetter("dead.jsonl", str(tmp_path), plan_id="p", job="j")
    assert letter.open() == {"a"}
    assert path.read_text(encoding="utf-8").endswith('"b"}\n'), "the torn line is cut, whole lines are kept"
