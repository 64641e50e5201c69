"""The `dask` engine: a job's input in partitions on a Dask cluster (a local one of 2 worker processes here),
with the same result as a local run; a worker killed mid-run costs no row and few calls.

- the same job, with the mock provider, over 20,000 rows (2,000 by default; 20,000 with `-m heavy`), run local
  and on a 2-worker local cluster, gives the same rows, keys and outputs in a file sink and in a PostgreSQL table;
- a worker process killed at a random moment (1 trial by default, 5 with `-m heavy`; the loopback LLM server
  answering slowly so that the kill lands mid-run): every row exactly once, and calls <= rows + that worker's
  concurrency;
- the driver killed mid-run is resumed by the next run;
- two runs of one partition at once (Dask may start a partition twice) call each item once: the partition's
  lease in the state store (PostgreSQL and SQLite);
- each worker has its share of a configured rate limit, and a 429's pause reaches every worker;
- the partitions of a jsonl and a csv file start where their rows do, with the rows' numbers; an API's are runs
  of its pages, which each partition reads alone (the loopback HTTP server of `test_sources`);
- `engine:` in sleipnir.yaml, a job's `execution.engine` and `--engine` choose the engine, in that order of
  precedence; a scheduler needs a PostgreSQL state store.

Real parts throughout: `python -m sleipnir` processes, a real LocalCluster, real files, PostgreSQL at
127.0.0.1:5432 (the tests fail, never skip, without it) and the loopback LLM server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from llm_server import LLMServer
from test_run import GATHERING_JOBS, workspace
from test_run_process import (
    llm,
    make_workspace,
    process_env,
    result_of,
    scoring_job,
    server,
    sleipnir,
    started,
    write_items,
)
from test_sources import Reply, Server, http_server, pg_table, postgres_url, read_all, source_node

from sleipnir.compiler.planner import plan as compile_plan
from sleipnir.runtime.distributed.worker import run_partition
from sleipnir.runtime.engine.job import JobRun, RunOptions
from sleipnir.runtime.engine.ledger import Ledger
from sleipnir.runtime.engine.state import ClusterOptions, Hooks
from sleipnir.runtime.io import IOContext, SourceError
from sleipnir.runtime.io.partitions import partition_source, split_input
from sleipnir.runtime.io.sources import RowError, make_source

__all__ = ["http_server", "llm", "pg_table", "postgres_url", "server"]

LLM_LATENCY = 0.05


def mock_job(name: str, output: str, *, concurrency: int = 100) -> str:
    """A job scoring each row of data/items.jsonl with the `mock` provider."""
    return scoring_job(name, output, concurrency=concurrency, batch_size=100).replace(
        "      endpoint: ${LLM_URL}", "      provider: mock"
    )


def file_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def table_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY id'.encode()).fetchall()


def run_ok(args: list[str], ws: Path, env: dict[str, str]) -> dict[str, Any]:
    done = sleipnir([*args, "--json"], ws, env)
    assert done.returncode == 0, done.stderr[-3000:]
    return result_of(done.stdout)


# -- the same result, local and on a cluster ------------------------------------------------------------------


def heavy_only(request: pytest.FixtureRequest) -> None:
    """Full-size runs take minutes on 2 cores: they run with `pytest -m heavy`, a smaller one by default."""
    if request.node.get_closest_marker("heavy") and "heavy" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the full-size run goes with -m heavy")


@pytest.mark.parametrize("rows", [2_000, pytest.param(20_000, marks=pytest.mark.heavy)])
def test_local_and_a_two_worker_cluster_give_the_same_rows_in_a_file_and_a_postgresql_table(
    tmp_path: Path, postgres_url: str, pg_table: str, rows: int, request: pytest.FixtureRequest
) -> None:
    heavy_only(request)
    tables = [pg_table, f"{pg_table}_dask"]
    jobs = {
        "jobs/to_file.yaml": mock_job("to_file", "path: out/scores.jsonl"),
        **{
            f"jobs/to_table{i}.yaml": mock_job(f"to_table{i}", f"destination: database\nconnection: warehouse\ntable: {t}")
            for i, t in enumerate(tables)
        },
    }
    # The full-size run takes the default partitions (of at least 50 rounds of the job's concurrency: 4 of 5,000
    # rows); the smaller one is cut smaller, so that both workers run several partitions.
    sizing = "" if rows >= 20_000 else "dask:\n  partition_size: 250\n"
    ws = make_workspace(tmp_path / "ws", jobs, manifest=f"name: dask_same\n{sizing}connections:\n  warehouse: {postgres_url}\n")
    keys = write_items(ws / "data" / "items.jsonl", rows)
    env = process_env()
    try:
        local = run_ok(["run-job", "to_file"], ws, env)
        local_rows = file_rows(ws / "out" / "scores.jsonl")
        cluster = run_ok(["run-job", "to_file", "--engine", "dask", "--fresh"], ws, env)
        assert file_rows(ws / "out" / "scores.jsonl") == local_rows
        assert [r["id"] for r in local_rows] == keys
        assert cluster["metrics"]["items_processed"] == local["metrics"]["items_processed"] == rows
        assert not list((ws / "out").glob(".scores.jsonl.partial*")), "the partitions' spools are gathered"
        # The partitions record their items under the run, as a local run does: `sleipnir runs RUN_ID` has them.
        for done in (local, cluster):
            detail = run_ok(["runs", done["run_id"]], ws, env)
            assert detail["items"] == {"succeeded": rows}, detail["items"]

        run_ok(["run-job", "to_table0"], ws, env)
        run_ok(["run-job", "to_table1", "--engine", "dask"], ws, env)
        local_table, cluster_table = (table_rows(postgres_url, t) for t in tables)
        assert [r[0] for r in local_table] == sorted(keys)
        assert cluster_table == local_table
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP TABLE IF EXISTS "{tables[1]}"'.encode())


def test_a_file_sink_named_by_the_run_id_gets_every_partitions_rows(tmp_path: Path) -> None:
    """`${run.id}` in an output path is the driver's run id in every partition: the spools are where the driver
    gathers them (they were named by each partition's own id, and the published file was empty)."""
    jobs = {"jobs/named.yaml": mock_job("named", "path: out/${run.id}.jsonl")}
    ws = make_workspace(tmp_path / "ws", jobs, manifest="name: named\ndask:\n  partition_size: 200\n")
    keys = write_items(ws / "data" / "items.jsonl", 600)
    done = run_ok(["run-job", "named", "--engine", "dask"], ws, process_env())
    assert [r["id"] for r in file_rows(ws / "out" / f"{done['run_id']}.jsonl")] == keys
    assert [p.name for p in (ws / "out").iterdir()] == [f"{done['run_id']}.jsonl"]


def test_a_running_partition_reports_its_progress_to_the_driver(tmp_path: Path, server: LLMServer) -> None:
    """A partition of many items shows what it did while it runs (a Dask event every `WATCH_SECONDS`), not only
    when it ends; its final counts replace what it reported, so nothing is counted twice."""
    rows = 400
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=10)})
    write_items(ws / "data" / "items.jsonl", rows)
    env = process_env(server)
    plan = compile_plan(str(ws / "jobs" / "score.yaml"), environ=env).plans[0]
    seen: list[tuple[int, int]] = []
    hooks = Hooks(on_progress=lambda progress: seen.append((progress.succeeded, progress.calls)))
    one = ClusterOptions(partition_size=rows)  # one partition: the driver hears nothing else until it ends
    result = asyncio.run(JobRun(plan, RunOptions(engine="dask", cluster=one, environ=env, hooks=hooks)).run())
    assert result.ok and result.progress.succeeded == rows == result.progress.calls
    assert any(0 < succeeded < rows for succeeded, _ in seen), seen
    assert all(succeeded <= rows and calls <= rows for succeeded, calls in seen), seen


# -- a worker killed ------------------------------------------------------------------------------------------


def _worker_pids(driver: int) -> list[int]:
    """The local cluster's worker processes: the driver's children that multiprocessing spawned (its nannies
    live in the driver)."""
    found = []
    for task in Path(f"/proc/{driver}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


@pytest.mark.parametrize("trial", [0, *(pytest.param(t, marks=pytest.mark.heavy) for t in range(1, 5))])
def test_a_worker_killed_at_a_random_moment_costs_no_row_and_at_most_its_concurrency_in_calls(
    tmp_path: Path, server: LLMServer, trial: int, request: pytest.FixtureRequest
) -> None:
    heavy_only(request)
    rows, concurrency = 600, 20
    manifest = "name: dask_kill\ndask:\n  partition_size: 150\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=concurrency)}, manifest)
    keys = write_items(ws / "data" / "items.jsonl", rows)
    env = process_env(server)
    random.seed(trial)
    with started(["run-job", "score", "--engine", "dask", "--json"], ws, env, tmp_path / "logs") as driver:
        deadline = time.monotonic() + 120
        while int(server.requests(0)["count"]) < 40 + random.randrange(200):
            assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "logs" / "stderr").read_text()[-3000:]
            time.sleep(0.01)
        workers = _worker_pids(driver.pid)
        assert len(workers) == 2, workers
        os.kill(random.choice(workers), signal.SIGKILL)
        assert driver.wait(timeout=150) == 0, (tmp_path / "logs" / "stderr").read_text()[-3000:]
    written = [r["id"] for r in file_rows(ws / "out" / "scores.jsonl")]
    assert written == keys, "every row exactly once, in input order"
    calls = int(server.requests(0)["count"])
    # A worker's bound (job.PARTITION_BOUND): its calls in flight plus its answers not yet committed (spec/run.md).
    assert rows <= calls <= rows + concurrency, calls


def test_the_driver_killed_mid_run_is_resumed_by_the_next_run(tmp_path: Path, server: LLMServer) -> None:
    rows, concurrency = 600, 20
    manifest = "name: dask_driver\ndask:\n  partition_size: 150\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=concurrency)}, manifest)
    keys = write_items(ws / "data" / "items.jsonl", rows)
    env = process_env(server)
    with started(["run-job", "score", "--engine", "dask"], ws, env, tmp_path / "logs") as driver:
        while int(server.requests(0)["count"]) < 150:
            assert driver.poll() is None, (tmp_path / "logs" / "stderr").read_text()[-3000:]
            time.sleep(0.01)
        workers = _worker_pids(driver.pid)
        driver.kill()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "the local cluster's workers outlive their driver"
        time.sleep(0.05)
    done = run_ok(["run-job", "score", "--engine", "dask"], ws, env)
    assert done["metrics"]["items_already_done"] > 0
    assert [r["id"] for r in file_rows(ws / "out" / "scores.jsonl")] == keys
    calls = int(server.requests(0)["count"])
    # The kill cost each of the 2 workers at most its concurrency (job.PARTITION_BOUND: its calls in flight, and
    # answers that arrived in the last few milliseconds, not yet committed).
    assert rows <= calls <= rows + 2 * concurrency, calls


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_two_runs_of_one_partition_at_once_call_each_item_once(tmp_path: Path, server: LLMServer, postgres_url: str, store: str) -> None:
    """Dask may run a partition twice at once (a worker presumed dead that still runs it, a task retried): two
    worker processes run the same partition against one state store, the second started while the first calls;
    the partition's lease makes the second wait, and it finds every item done. (Without the lease: 556 calls.)"""
    rows = 300
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=4)})
    keys = write_items(ws / "data" / "items.jsonl", rows)
    plan = compile_plan(str(ws / "jobs" / "score.yaml")).plans[0]
    node = next(n for n in plan.nodes if type(n).__name__ == "Source")
    [partition] = split_input(node, IOContext(root=plan.root), input_path=None, total=rows, size=rows, key_field="id")  # type: ignore[arg-type]
    partition = dataclasses.replace(partition, key_field="id")
    scope = uuid.uuid4().hex[:12]
    settings = {"state": postgres_url if store == "postgresql" else ".sleipnir/state.db", "scope": scope}
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        first = pool.submit(run_partition, plan, settings, partition)
        deadline = time.monotonic() + 60
        while int(server.requests(0)["count"]) < 20:
            assert not first.done() and time.monotonic() < deadline, first.result() if first.done() else "no calls"
            time.sleep(0.01)
        second = pool.submit(run_partition, plan, settings, partition)
        done = [first.result(timeout=120), second.result(timeout=120)]
    try:
        assert int(server.requests(0)["count"]) == rows, "each item called once"
        assert [d["stop"] for d in done] == [None, None], done
        assert done[0]["counts"]["succeeded"] == rows and done[1]["counts"]["already_done"] == rows
        assert done[1]["counts"]["calls"] == 0
        assert any("ran here after that run ended" in notice for notice in done[1]["notices"]), done[1]["notices"]
        [spool] = (ws / "out").glob(".scores.jsonl.partial.*")
        assert [r["id"] for r in file_rows(spool)] == keys, "its rows written once"
    finally:
        if store == "postgresql":
            ledger = Ledger(postgres_url)
            ledger.reset(f"job:score:{scope}")
            ledger.close()


# -- rate limits across the cluster ----------------------------------------------------------------------------


def test_each_worker_has_its_share_of_a_configured_rate_limit(tmp_path: Path) -> None:
    rows = 200
    job = scoring_job("score", concurrency=20, execution="rate_limit:\n  requests_per_minute: 1200\n")
    manifest = "name: dask_share\ndask:\n  partition_size: 50\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job}, manifest)
    write_items(ws / "data" / "items.jsonl", rows)
    # The server allows what the job is configured for, 20 requests a second: 2 workers each taking the
    # whole limit would send 40 and get 429s back.
    with LLMServer(latency=0.0, rpm=1200, burst=20) as limited:
        done = run_ok(["run-job", "score", "--engine", "dask"], ws, process_env(limited))
        statuses = limited.requests(0)["statuses"]
    assert done["metrics"]["items_processed"] == rows
    # A few 429s come from the bursts a partition's new limiter starts with; twice the rate would be refused
    # about half the time.
    assert int(statuses.get("429", 0)) <= rows // 10, statuses


def test_a_429_pause_is_published_to_every_worker(tmp_path: Path, server: LLMServer) -> None:
    rows = 1000
    manifest = "name: dask_pause\ndask:\n  partition_size: 250\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", concurrency=5)}, manifest)
    keys = write_items(ws / "data" / "items.jsonl", rows)
    with started(["run-job", "score", "--engine", "dask", "--json"], ws, process_env(server), tmp_path / "logs") as driver:
        while int(server.requests(0)["count"]) < 60:
            assert driver.poll() is None, (tmp_path / "logs" / "stderr").read_text()[-3000:]
            time.sleep(0.01)
        server.add_faults({"kind": "429", "retry_after": 4})
        while "429" not in server.requests(0)["statuses"]:
            time.sleep(0.01)
        time.sleep(0.8)  # the worker's limiter pauses; the others take the pause on within a watch period
        before = int(server.requests(0)["count"])
        time.sleep(1.5)
        during = int(server.requests(0)["count"]) - before
        assert driver.wait(timeout=120) == 0, (tmp_path / "logs" / "stderr").read_text()[-3000:]
    # Unpaused, the other worker alone would send about 5 / 50 ms = 100 requests a second.
    assert during <= 10, during
    assert [r["id"] for r in file_rows(ws / "out" / "scores.jsonl")] == keys


# -- gathering -----------------------------------------------------------------------------------------------


def test_reduce_and_fan_in_gather_every_partitions_outputs_from_the_state_store(tmp_path: Path) -> None:
    job = GATHERING_JOBS
    root = workspace(tmp_path, job, rows=40)
    (root / "sleipnir.yaml").write_text("name: dask_gather\ndask:\n  partition_size: 10\n")
    env = process_env()
    reduced = run_ok(["run-job", "reduced", "--engine", "dask"], root, env)
    fanned = run_ok(["run-job", "fanned", "--engine", "dask"], root, env)
    [summary] = file_rows(root / "out" / "reduced.jsonl")
    assert "reduce" in summary and reduced["metrics"]["calls"] == 40 + 1, "4 partitions' 40 items, then one reduce"
    [merged] = file_rows(root / "out" / "fanned.jsonl")
    assert "fan_in" in merged and fanned["metrics"]["calls"] == 5 + 1, "one call per group of stars, then the merge"


def test_a_pipelines_independent_jobs_run_at_once_on_one_shared_cluster(tmp_path: Path, server: LLMServer) -> None:
    jobs = {f"jobs/{n}.yaml": scoring_job(n, f"path: out/{n}.jsonl", concurrency=10) for n in ("left", "right")}
    jobs["pipelines/both.yaml"] = "pipeline:\n  name: both\n  jobs:\n    - id: l\n      name: left\n    - id: r\n      name: right\n"
    ws = make_workspace(tmp_path / "ws", jobs, manifest="name: dask_pipeline\ndask:\n  partition_size: 50\n")
    keys = write_items(ws / "data" / "items.jsonl", 300)
    done = sleipnir(["run-job", "both", "--engine", "dask"], ws, process_env(server))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("left", "right"):
        assert [r["id"] for r in file_rows(ws / "out" / f"{name}.jsonl")] == keys
    with contextlib.closing(sqlite3.connect(ws / ".sleipnir" / "state.db")) as connection:
        spans = dict(
            (job, (start, end))
            for job, start, end in connection.execute("SELECT job, started_at, finished_at FROM sleipnir_runs")
        )
    (left_start, left_end), (right_start, right_end) = spans["left"], spans["right"]
    assert left_start < right_end and right_start < left_end, "the two jobs ran at the same time"


# -- choosing the engine and the cluster ------------------------------------------------------------------------


def test_a_scheduler_needs_a_postgresql_store_and_an_unreachable_one_fails_clearly(tmp_path: Path, postgres_url: str) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": mock_job("score", "path: out/scores.jsonl")})
    write_items(ws / "data" / "items.jsonl", 10)
    env = process_env(SLEIPNIR_DASK_SCHEDULER="tcp://127.0.0.1:9")
    refused = sleipnir(["run-job", "score", "--engine", "dask"], ws, env)
    assert refused.returncode == 1 and "needs a PostgreSQL state store" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    (ws / "sleipnir.yaml").write_text(f"name: runs\nstate: {postgres_url}\n")
    unreachable = sleipnir(["run-job", "score", "--engine", "dask"], ws, env)
    assert unreachable.returncode == 1, unreachable.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in " ".join((unreachable.stdout + unreachable.stderr).split())
    assert "Traceback" not in unreachable.stderr


def test_engine_precedence_is_the_command_line_then_the_job_then_the_manifest(tmp_path: Path) -> None:
    on_dask = mock_job("score", "path: out/scores.jsonl").replace("  execution:\n", "  execution:\n    engine: dask\n")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": on_dask}, manifest="name: runs\nengine: local\n")
    compiled = compile_plan(str(ws / "jobs" / "score.yaml"))
    assert compiled.ok and compiled.plans[0].settings["execution"]["engine"] == "dask", "the job's over the manifest's"
    (ws / "jobs" / "score.yaml").write_text(mock_job("score", "path: out/scores.jsonl"))
    (ws / "sleipnir.yaml").write_text("name: runs\nengine: dask\n")
    compiled = compile_plan(str(ws / "jobs" / "score.yaml"))
    assert compiled.ok and compiled.plans[0].settings["execution"]["engine"] == "dask", "the manifest's by default"
    write_items(ws / "data" / "items.jsonl", 10)
    # The command line's over both: a SQLite store with a scheduler would refuse on the dask engine.
    env = process_env(SLEIPNIR_DASK_SCHEDULER="tcp://127.0.0.1:9")
    local = run_ok(["run-job", "score", "--engine", "local"], ws, env)
    assert local["metrics"]["items_processed"] == 10


# -- partitions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_partitions_start_where_their_rows_do(tmp_path: Path, fmt: str) -> None:
    job = mock_job("score", "path: out/scores.jsonl").replace("data/items.jsonl", f"data/items.{fmt}")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    (ws / "data").mkdir()
    if fmt == "jsonl":
        (ws / "data" / "items.jsonl").write_text("".join(f'{{"id": "k{i}", "text": "t{i}"}}\n' + ("\n" if i % 7 == 0 else "") for i in range(103)))
    else:
        quoted = '"two\nlines"'
        (ws / "data" / "items.csv").write_text("id,text\n" + "".join(f"k{i},{quoted if i % 5 == 0 else f't{i}'}\n" for i in range(103)))
    node, context = _score_source(ws)
    parts = split_input(node, context, input_path=None, total=None, size=10)  # type: ignore[arg-type]
    assert [(p.first, p.stop) for p in parts] == [(i, min(103, i + 10)) for i in range(0, 103, 10)]
    seen = [row["id"] for rows in _read_partitions(node, context, parts) for row in rows]
    assert seen == [f"k{i}" for i in range(103)]


def test_csv_partitions_find_the_rows_and_the_broken_rows_the_whole_file_reader_finds(tmp_path: Path) -> None:
    """The partitioner and the worker's reader read CSV alike (strictly): a row with text after a closing quote is
    one row error in its place, and the rows after it are the same rows, whichever partition reads them."""
    job = mock_job("score", "path: out/scores.jsonl").replace("data/items.jsonl", "data/items.csv")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    (ws / "data").mkdir()
    rows = [f'k{i},"t"{i}' if i in (7, 23) else f"k{i},t{i}" for i in range(40)]
    (ws / "data" / "items.csv").write_text("id,text\n" + "\n".join(rows) + "\n")
    node, context = _score_source(ws)
    parts = split_input(node, context, input_path=None, total=None, size=10)  # type: ignore[arg-type]
    seen = [getattr(row, "message", None) or row["id"] for rows in _read_partitions(node, context, parts) for row in rows]
    expected = [f"k{i}" for i in range(40)]
    expected[7], expected[23] = (f"items.csv:{line}: ',' expected after '\"'" for line in (9, 25))
    assert [e.rpartition("/")[2] for e in seen] == expected


def _database(kind: str, tmp_path: Path, url: str, table: str) -> dict[str, str]:
    """A `reviews`-like table of 103 rows keyed by `review_id`, where key 40 is repeated (ties across what would
    be a boundary) and odd rows are in `en`; the connections mapping for it."""
    rows = [(i, f"review {i}", "en" if i % 2 else "fr") for i in range(103)] + [(40, "review 40 again", "fr")]
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "reviews.db")) as connection, connection:
            connection.execute(f"CREATE TABLE {table} (review_id INTEGER, body TEXT, lang TEXT)")
            connection.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
        return {"default": "sqlite:///reviews.db"}
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (review_id INTEGER, body TEXT, lang TEXT)".encode())
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)".encode(), rows)
    return {"default": url}


def _score_source(ws: Path) -> tuple[Any, IOContext]:
    """The source node of the workspace's `score` job, planned clean, and the context its partitions are read in."""
    compiled = compile_plan(str(ws / "jobs" / "score.yaml"))
    assert compiled.ok, compiled.report
    plan = compiled.plans[0]
    return next(n for n in plan.nodes if type(n).__name__ == "Source"), IOContext(root=plan.root)


def _read_partitions(node: Any, context: IOContext, parts: list[Any]) -> list[list[Any]]:
    seen = []
    for part in parts:
        source = partition_source(node, context, input_path=None, partition=part)
        seen.append([row for batch in source.batches(7) for row in batch])
        source.close()
    return seen


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_source_is_split_into_key_ranges_that_read_the_querys_rows_in_key_order(
    tmp_path: Path, postgres_url: str, pg_table: str, kind: str
) -> None:
    context = IOContext(root=str(tmp_path), connections=_database(kind, tmp_path, postgres_url, pg_table))
    placeholder = "?" if kind == "sqlite" else "%s"
    queries = {
        # named parameters, a `%` in a literal, a trailing semicolon and comment (the query becomes a subquery)
        "named": {"query": f"SELECT * FROM {pg_table} WHERE body LIKE '%review%' AND review_id >= :low ORDER BY review_id; -- all", "parameters": {"low": 3}},
        # a query the compiler bound, its values by position in the driver's own placeholder style
        "bound": {"query": f"SELECT * FROM {pg_table} WHERE review_id >= {placeholder} ORDER BY review_id", "bound": (3,), "dialect": kind},
    }
    for options in queries.values():
        node = source_node("database", connection="default", **options)
        whole = read_all(make_source(node, context=context))
        assert len(whole) == 101
        parts = split_input(node, context, input_path=None, total=len(whole), size=10, key_field="review_id")
        assert all(p.keys is not None for p in parts), "key ranges, not row numbers"
        assert parts[0].keys[0] is None and parts[-1].keys[1] is None, "open at both ends"  # type: ignore[index]
        seen = _read_partitions(node, context, parts)
        assert [r["review_id"] for rows in seen for r in rows] == sorted(r["review_id"] for r in whole)
        assert [len(rows) for rows in seen] == [p.size for p in parts], "each range has the rows its numbers say"
        assert [p.first for p in parts[1:]] == [p.stop for p in parts[:-1]] and parts[-1].stop == 101
        [tied] = [rows for rows in seen if any(r["review_id"] == 40 for r in rows)]
        assert sum(r["review_id"] == 40 for r in tied) == 2, "a repeated key's rows stay in one range"

    # A row without the key is keyed by its number, which only the row-number split keeps; the driver reads the
    # keys alone, and the repeat of key 40 (the table's last row) is passed over where partition 0 has it. A
    # partition with a repeat ends before a row keyed by its number.
    nulls = source_node("database", connection="default", query=f"SELECT * FROM {pg_table} UNION ALL SELECT NULL, 'none', 'en'")
    parts = split_input(nulls, context, input_path=None, total=105, size=50, key_field="review_id")
    assert [(p.first, p.stop, p.keys, p.repeats) for p in parts] == [
        (0, 50, None, ()),
        (50, 100, None, ()),
        (100, 104, None, (103,)),
        (104, 105, None, ()),
    ]
    seen = _read_partitions(nulls, context, parts)
    assert [len(rows) for rows in seen] == [50, 50, 3, 1] and seen[3][0]["review_id"] is None



@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_source_run_in_key_ranges_gives_a_local_runs_rows(tmp_path: Path, postgres_url: str, pg_table: str, kind: str) -> None:
    job = mock_job("score", "path: out/scores.jsonl").replace(
        "    path: data/items.jsonl\n    key: id\n",
        f'    source: database\n    connection: warehouse\n    query: "SELECT review_id AS id, body AS text FROM {pg_table} '
        "WHERE body NOT LIKE '%again' ORDER BY review_id\"\n    key: id\n",
    )
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job}, "name: dask_keys\ndask:\n  partition_size: 20\n")
    connections = _database(kind, ws, postgres_url, pg_table)
    (ws / "sleipnir.yaml").write_text(f"name: dask_keys\ndask:\n  partition_size: 20\nconnections:\n  warehouse: {connections['default']}\n")
    env = process_env()
    local = run_ok(["run-job", "score"], ws, env)
    local_rows = file_rows(ws / "out" / "scores.jsonl")
    cluster = run_ok(["run-job", "score", "--engine", "dask", "--fresh"], ws, env)
    assert file_rows(ws / "out" / "scores.jsonl") == local_rows
    assert [r["id"] for r in local_rows] == list(range(103))
    assert cluster["metrics"]["items_processed"] == local["metrics"]["items_processed"] == 103


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_key_repeated_in_a_later_partition_is_passed_over_there_and_a_row_without_a_key_is_not_shifted(
    tmp_path: Path, fmt: str
) -> None:
    job = mock_job("score", "path: out/scores.jsonl").replace("data/items.jsonl", f"data/items.{fmt}")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    # Keys k0..k29; row 12 repeats k3, row 13 has no key, row 15 repeats k14 within its own partition, row 25
    # repeats k11 and row 27 repeats k0.
    keys: list[str | None] = [f"k{i}" for i in range(30)]
    keys[12], keys[13], keys[15], keys[25], keys[27] = "k3", None, "k14", "k11", "k0"
    rows = [({"id": key} if key is not None else {}) | {"text": f"t{i}"} for i, key in enumerate(keys)]
    (ws / "data").mkdir()
    if fmt == "jsonl":
        (ws / "data" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (ws / "data" / "items.csv").write_text("\ufeffid,text\n" + "".join(f"{r.get('id', '')},{r['text']}\n" for r in rows))
    node, context = _score_source(ws)
    parts = split_input(node, context, input_path=None, total=None, size=10, key_field="id")  # type: ignore[arg-type]
    found = [(p.first, p.stop, p.repeats) for p in parts]
    if fmt == "csv":
        # A csv's empty field is a key, "", not a missing one: no cut before row 13.
        assert found == [(0, 10, ()), (10, 20, (12,)), (20, 30, (25, 27))]
    else:
        assert found == [(0, 10, ()), (10, 13, (12,)), (13, 23, ()), (23, 30, (25, 27))]
    seen = _read_partitions(node, context, parts)
    wanted = [k if fmt == "jsonl" or k is not None else "" for i, k in enumerate(keys) if i not in (12, 25, 27)]
    assert [r.get("id") for rows in seen for r in rows] == wanted


def test_a_dask_run_over_repeated_keys_does_each_key_once_as_a_local_run_does(tmp_path: Path) -> None:
    manifest = "name: dask_repeats\ndask:\n  partition_size: 50\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": mock_job("score", "path: out/scores.jsonl")}, manifest)
    write_items(ws / "data" / "items.jsonl", 200)
    lines = (ws / "data" / "items.jsonl").read_text().splitlines()
    # Each of the first 20 keys again, in the last partitions, with other text (a local run keeps the first).
    again = [json.dumps({"id": json.loads(line)["id"], "text": "repeated"}) for line in lines[:20]]
    (ws / "data" / "items.jsonl").write_text("\n".join(lines[:120] + again[:10] + lines[120:] + again[10:]) + "\n")
    env = process_env()
    local = run_ok(["run-job", "score"], ws, env)
    local_rows = file_rows(ws / "out" / "scores.jsonl")
    cluster = run_ok(["run-job", "score", "--engine", "dask", "--fresh"], ws, env)
    assert file_rows(ws / "out" / "scores.jsonl") == local_rows and len(local_rows) == 200
    for name in ("items_processed", "items_already_done", "calls"):
        assert cluster["metrics"][name] == local["metrics"][name], name
    assert local["metrics"]["items_already_done"] == 20 and local["metrics"]["calls"] == 200


def _api_pages(server: Server, sizes: list[int], odd: tuple[int, ...] = ()) -> list[Any]:
    """Pages of `sizes` rows at /items, /items?page=2, ... (the next one named in each body); the elements
    numbered in `odd` are not objects. Returns the elements in order."""
    elements: list[Any] = []
    for number, size in enumerate(sizes, start=1):
        items = [{"id": f"a{len(elements) + i:03d}", "text": f"row {len(elements) + i}"} for i in range(size)]
        items = ["not an object" if len(elements) + i in odd else item for i, item in enumerate(items)]
        following = f"/items?page={number + 1}" if number < len(sizes) else None
        server.script["/items" if number == 1 else f"/items?page={number}"] = [Reply(body={"data": items, "next": following})]
        elements.extend(items)
    return elements


def test_an_api_source_is_split_into_runs_of_pages_that_each_partition_reads_alone(http_server: Server) -> None:
    sizes = [10, 10, 0, 10, 7, 10, 10, 3]
    elements = _api_pages(http_server, sizes, odd=(23, 33))
    node = source_node("api", endpoint=http_server.url + "/items")
    context = IOContext(root=".")
    parts = split_input(node, context, input_path=None, total=None, size=25, key_field="id")
    assert len(http_server.requests) == len(sizes), "the driver read each page once"
    assert [(p.first, p.stop, p.skip, len(p.pages)) for p in parts] == [(0, 25, 0, 4), (25, 50, 5, 4), (50, 60, 3, 2)]
    assert [rows for _, rows in parts[1].pages] == [10, 7, 10, 10]
    # Without a partition size the driver asks for about 4 a worker: the rows are counted as the pages are listed.
    spread = split_input(node, context, input_path=None, total=None, size=5, key_field="id", spread=4)
    assert [(p.first, p.stop) for p in spread] == [(0, 15), (15, 30), (30, 45), (45, 60)]
    del http_server.requests[:]
    seen = _read_partitions(node, context, parts)
    assert len(http_server.requests) == sum(len(p.pages) for p in parts), "each partition GETs its own pages alone"
    whole = read_all(make_source(node, context=context))
    assert [r if isinstance(r, dict) else r.index for rows in seen for r in rows] == [
        r if isinstance(r, dict) else r.index for r in whole
    ] and len(whole) == len(elements) == 60
    assert [(n, r.index) for n, rows in enumerate(seen) for r in rows if isinstance(r, RowError)] == [(0, 23), (1, 33)], (
        "a partition's rows keep the source's numbers"
    )

    # A page that no longer holds the rows it held when the pages were listed fails the partition.
    _api_pages(http_server, [10, 12, 0, 10, 7, 10, 10, 3])
    with pytest.raises(SourceError, match=r"page=2: the page has 12 rows, 10 when the run began"):
        _read_partitions(node, context, parts[:1])


def test_an_api_source_run_in_runs_of_pages_gives_a_local_runs_rows(tmp_path: Path, http_server: Server) -> None:
    _api_pages(http_server, [30] * 10 + [17])
    job = mock_job("score", "path: out/scores.jsonl").replace(
        "    path: data/items.jsonl\n", f"    source: api\n    endpoint: {http_server.url}/items\n"
    )
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job}, "name: dask_api\ndask:\n  partition_size: 50\n")
    env = process_env()
    local = run_ok(["run-job", "score"], ws, env)
    local_rows = file_rows(ws / "out" / "scores.jsonl")
    del http_server.requests[:]
    cluster = run_ok(["run-job", "score", "--engine", "dask", "--fresh"], ws, env)
    assert file_rows(ws / "out" / "scores.jsonl") == local_rows and len(local_rows) == 317
    assert cluster["metrics"]["items_processed"] == local["metrics"]["items_processed"] == 317
    # The driver's pass, then each of the 7 partitions' pages: 1 to 3 of the 11 (a page split between two
    # partitions is read by both), not every page before its rows as a split by row numbers would.
    pages = [r.path for r in http_server.requests]
    assert len(pages) == 11 + 15, pages


# -- serve ----------------------------------------------------------------------------------------------------


def test_serve_fires_a_job_on_the_dask_engine(tmp_path: Path) -> None:
    from test_serve import Serve, finished, scheduled

    # One fire time in the test: 12:05, 4.5 simulated minutes after the clock starts (0.45 s at 600 times as
    # fast); the next is a simulated day (2.4 minutes) away.
    job = scheduled("nightly", 'schedule:\n  cron: "5 12 * * *"\n  catchup: none\nexecution:\n  engine: dask\n')
    ws = make_workspace(tmp_path / "ws", {"jobs/nightly.yaml": job}, manifest="name: dask_serve\ndask:\n  partition_size: 50\n")
    keys = write_items(ws / "data" / "items.jsonl", 300)
    for number, extra in enumerate([{}, {"SLEIPNIR_DASK_SCHEDULER": "tcp://127.0.0.1:9"}]):
        day = f"2024-03-{30 + number}T12:00:30+00:00"  # each serve its own day: a fire time is claimed once
        serve = Serve(ws, process_env(SLEIPNIR_CLOCK="fast:600", SLEIPNIR_CLOCK_START=day, **extra), tmp_path / f"logs{number}")
        try:
            serve.wait_for(lambda n=number: len(finished(ws, "nightly")) > n, "the scheduled run")
            assert serve.stop() == 0, serve.stderr()[-3000:]
        finally:
            serve.close()
        if number == 0:
            [ran] = finished(ws, "nightly")
            assert ran["status"] == "succeeded", ran
            assert ran["summary"]["items_processed"] == 300, ran["summary"]
            assert [r["id"] for r in file_rows(ws / "out" / "nightly.jsonl")] == keys
            assert not list((ws / "out").glob(".nightly.jsonl.partial*")), "the partitions' spools are gathered"
    refused = finished(ws, "nightly")[1]
    # The run went to the dask engine: with a scheduler named, the engine refuses the workspace's SQLite store.
    assert refused["status"] == "failed" and "needs a PostgreSQL state store" in refused["summary"]["message"], refused


def test_the_local_clusters_workers_run_without_dasks_sampling_profiler() -> None:
    import asyncio

    import dask.config

    from sleipnir.runtime.distributed.driver import open_client
    from sleipnir.runtime.engine.state import ClusterOptions

    async def settings() -> dict[str, Any]:
        async with open_client(ClusterOptions()) as client:
            return dict(await client.run(lambda: dask.config.get("distributed.worker.profile.enabled")))

    found = asyncio.run(settings())
    assert len(found) == 2 and set(found.values()) == {False}, found
    assert dask.config.get("distributed.worker.profile.enabled") is True, "the driver's own settings are left alone"
