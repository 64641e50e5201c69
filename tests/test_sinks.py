"""Sinks against real parts: files in tmp_path (with a real SIGKILL), SQLite, PostgreSQL at 127.0.0.1:5432 and
an HTTP server on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_sources import Reply, Server, http_server, pg_table, postgres_url, sink_node, source_node

from sleipnir.runtime.io import IOContext, SinkError, api
from sleipnir.runtime.io.sinks import FileSink, make_sink
from sleipnir.runtime.io.sources import make_source

__all__ = ["http_server", "pg_table", "postgres_url"]  # fixtures shared with test_sources


def file_sink(tmp_path: Path, path: str = "out/results.jsonl", mode: str = "replace", **options: Any) -> Any:
    return make_sink(sink_node("file", mode, path=path, **options), key_field="id", context=IOContext(root=str(tmp_path)))


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- files --------------------------------------------------------------------------------------------------


def test_file_sink_spools_batches_and_publishes_atomically_on_complete(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    sink = file_sink(tmp_path)
    assert sink.open(resume=False) == set()
    sink.write([{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"}])
    sink.write([{"id": 3, "label": "pos", "nested": {"a": [1]}}])
    assert not target.exists()
    assert len((tmp_path / "out" / ".results.jsonl.partial").read_text().splitlines()) == 3
    sink.close(complete=True)
    assert lines(target) == [{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"}, {"id": 3, "label": "pos", "nested": {"a": [1]}}]
    assert leftovers(target.parent) == []


def test_a_file_sink_whose_path_is_a_folder_refuses_at_open_before_any_row(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    sink = file_sink(tmp_path, path="out")
    with pytest.raises(SinkError, match=r"cannot write out: it is a folder; give the output a file's path \(such as out/results\.jsonl\)"):
        sink.open(resume=False)
    assert list((tmp_path / "out").iterdir()) == [], "nothing written beside it"


@pytest.mark.parametrize("redone", [False, True])
def test_absorbed_partition_spools_publish_by_one_rename_unless_a_partition_left_rows_of_an_earlier_run(
    tmp_path: Path, redone: bool
) -> None:
    """The dask engine's driver gathers the partitions' spools; a partition redone after a kill may have left a
    row its last run wrote again, which its line count (more than the rows that run wrote) gives away."""
    parts = [[{"id": 1}, {"id": 2}], [{"id": 3, "run": "last"}]]
    for number, rows in enumerate(parts):
        sink = file_sink(tmp_path)
        sink.use_partition_spool(number)
        sink.open(resume=False)
        if redone and number == 1:
            sink.write([{"id": 3, "run": "earlier"}])
        sink.write(rows)
        sink.close(complete=False)
    driver = file_sink(tmp_path)
    driver.open(resume=False)
    spool = tmp_path / "out" / ".results.jsonl.partial"
    driver.absorb(driver.partition_spools(), {0: 2, 1: 1})
    inode = spool.stat().st_ino
    driver.close(complete=True)
    target = tmp_path / "out" / "results.jsonl"
    assert lines(target) == [{"id": 1}, {"id": 2}, {"id": 3, "run": "last"}]
    assert (target.stat().st_ino == inode) is not redone, "one rename when each key is there once, else the merge"
    assert leftovers(target.parent) == []


def test_gathering_fails_when_a_partition_wrote_rows_to_a_spool_the_driver_does_not_find(tmp_path: Path) -> None:
    """A worker whose spool is not where the driver looks (a machine of its own): the run fails, naming the
    partition, and publishes nothing, rather than a file without that partition's rows."""
    sink = file_sink(tmp_path)
    sink.use_partition_spool(0)
    sink.open(resume=False)
    sink.write([{"id": 1}])
    sink.close(complete=False)
    driver = file_sink(tmp_path)
    driver.open(resume=False)
    with pytest.raises(SinkError, match=r"partition 1 wrote rows .* every worker and the driver share"):
        driver.absorb(driver.partition_spools(), {0: 1, 1: 2, 2: 0})
    driver.close(complete=False)
    assert not (tmp_path / "out" / "results.jsonl").exists()
    assert leftovers(tmp_path / "out") == [".results.jsonl.partial", ".results.jsonl.partial.000000"]


def test_a_run_that_stops_before_completing_leaves_the_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    target.parent.mkdir()
    target.write_text('{"id": "old"}\n')
    sink = file_sink(tmp_path)
    sink.open(resume=False)
    sink.write([{"id": "new"}])
    sink.close(complete=False)
    assert target.read_text() == '{"id": "old"}\n'
    assert leftovers(target.parent) == [".results.jsonl.partial"]


def test_resume_repairs_a_torn_last_line_and_no_row_is_written_twice(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    sink = file_sink(tmp_path)
    sink.open(resume=False)
    sink.write([{"id": i} for i in range(3)])
    sink.close(complete=False)
    with (target.parent / ".results.jsonl.partial").open("ab") as spool:
        spool.write(b'{"id": 3}\n{"id": 4, "lab')  # a batch torn by a crash: its write never returned
    resumed = file_sink(tmp_path)
    assert resumed.open(resume=True) == {"0", "1", "2", "3"}
    # The runtime writes only keys the sink did not return (runtime/io/__init__.py), and the spool is published as it is.
    resumed.write([{"id": 4}, {"id": 5}])
    resumed.close(complete=True)
    assert lines(target) == [{"id": 0}, {"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}]


@pytest.mark.parametrize("mode", ["replace", "upsert"])
def test_a_key_an_earlier_resume_spooled_twice_is_published_once(tmp_path: Path, mode: str) -> None:
    """Run 1 spools k1 and is killed before recording it; run 2 writes k1 again (from its recorded answers) and is
    killed; run 3 writes only new keys. The spool holds k1 twice from runs before this one: the publish merges."""
    target = tmp_path / "out" / "results.jsonl"
    first = file_sink(tmp_path, mode=mode)
    first.open(resume=False)
    first.write([{"id": 1, "run": 1}])
    first.close(complete=False)
    second = file_sink(tmp_path, mode=mode)
    second.open(resume=True)
    second.write([{"id": 1, "run": 2}])
    second.close(complete=False)
    third = file_sink(tmp_path, mode=mode)
    assert third.open(resume=True) == {"1"}
    third.write([{"id": 2, "run": 3}])
    third.close(complete=True)
    assert lines(target) == [{"id": 1, "run": 2}, {"id": 2, "run": 3}]
    assert leftovers(target.parent) == []


def test_a_killed_writer_resumes_with_no_row_lost_or_doubled(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text('{"id": "before"}\n')
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from sleipnir.runtime.io.sinks import FileSink
        sink = FileSink(target=Path(sys.argv[1]), format="jsonl", mode="replace", key_field="id", shown="r")
        sink.open(resume=False)
        batch = 0
        while True:
            sink.write([{"id": f"{batch}-{i}", "text": "x" * 2000} for i in range(50)])
            print(batch, flush=True)
            batch += 1
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert writer.stdout is not None
    while int(writer.stdout.readline()) < 5:
        pass
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert target.read_text() == '{"id": "before"}\n'
    sink = FileSink(target=target, format="jsonl", mode="replace", key_field="id", shown="r")
    held = sink.open(resume=True)
    assert {f"{b}-{i}" for b in range(6) for i in range(50)} <= held
    wanted = {f"{b}-{i}" for b in range(12) for i in range(50)}
    sink.write([{"id": key, "text": "y"} for key in sorted(wanted - held)])
    sink.close(complete=True)
    keys = [row["id"] for row in lines(target)]
    assert sorted(keys) == sorted(wanted)
    assert leftovers(tmp_path) == []


def test_resuming_a_completed_replace_run_keeps_its_rows(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    first = file_sink(tmp_path)
    first.open(resume=False)
    first.write([{"id": 1}, {"id": 2}])
    first.close(complete=True)
    again = file_sink(tmp_path)
    assert again.open(resume=True) == {"1", "2"}
    again.close(complete=True)
    assert lines(target) == [{"id": 1}, {"id": 2}]
    fresh = file_sink(tmp_path)
    assert fresh.open(resume=False) == set()
    fresh.write([{"id": 3}])
    fresh.close(complete=True)
    assert lines(target) == [{"id": 3}]


def test_append_and_upsert_modes(tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.jsonl"
    target.parent.mkdir()
    target.write_text('{"id": 1, "v": "old"}\n{"id": 2, "v": "old"}\n')
    appending = file_sink(tmp_path, mode="append")
    appending.open(resume=False)
    appending.write([{"id": 2, "v": "new"}, {"id": 3, "v": "new"}])
    appending.close(complete=True)
    assert [(r["id"], r["v"]) for r in lines(target)] == [(1, "old"), (2, "old"), (2, "new"), (3, "new")]
    target.write_text('{"id": 1, "v": "old"}\n{"id": 2, "v": "old"}\n{"note": "no key"}\n')
    upserting = file_sink(tmp_path, mode="upsert")
    upserting.open(resume=False)
    upserting.write([{"id": 3, "v": "new"}, {"id": 1, "v": "new"}])
    upserting.close(complete=True)
    assert lines(target) == [{"id": 1, "v": "new"}, {"id": 2, "v": "old"}, {"note": "no key"}, {"id": 3, "v": "new"}]


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_with_no_target_yet_append_and_upsert_publish_the_spool_by_one_rename(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "out" / "results.jsonl"
    sink = file_sink(tmp_path, mode=mode)
    sink.open(resume=False)
    sink.write([{"id": 2, "v": "a"}, {"note": "no key"}])
    sink.write([{"id": 1, "v": "b"}])
    inode = (tmp_path / "out" / ".results.jsonl.partial").stat().st_ino
    sink.close(complete=True)
    assert lines(target) == [{"id": 2, "v": "a"}, {"note": "no key"}, {"id": 1, "v": "b"}]
    assert target.stat().st_ino == inode, "the spool became the target: nothing was read and written again"
    assert leftovers(target.parent) == []


def test_a_publish_interrupted_after_its_commit_point_is_finished_once(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "results.jsonl"
    target.write_text('{"id": 1}\n')
    # The state a crash leaves between renaming the spool (the commit point) and replacing the target.
    (folder / ".results.jsonl.tmp").write_text('{"id": 1}\n{"id": 2}\n')
    (folder / ".results.jsonl.publishing").write_text('{"id": 2}\n')
    sink = file_sink(tmp_path, mode="append")
    assert sink.open(resume=True) == set()
    sink.close(complete=True)
    assert lines(target) == [{"id": 1}, {"id": 2}]
    assert leftovers(folder) == []
    # A temp file left before the commit point is not a publish: it is dropped.
    (folder / ".results.jsonl.tmp").write_text("garbage")
    stopped = file_sink(tmp_path, mode="append")
    stopped.open(resume=False)
    stopped.close(complete=False)
    assert lines(target) == [{"id": 1}, {"id": 2}] and leftovers(folder) == [".results.jsonl.partial"]


def test_csv_and_json_targets(tmp_path: Path) -> None:
    sink = file_sink(tmp_path, path="out/r.csv")
    sink.open(resume=False)
    sink.write([{"id": 1, "label": "pos"}, {"id": 2, "scores": {"a": 1}, "label": None, "ok": True}])
    sink.close(complete=True)
    with (tmp_path / "out" / "r.csv").open(newline="") as text:
        assert list(csv.reader(text)) == [["id", "label", "scores", "ok"], ["1", "pos", "", ""], ["2", "", '{"a": 1}', "true"]]
    upsert = file_sink(tmp_path, path="out/r.csv", mode="upsert")
    upsert.open(resume=False)
    upsert.write([{"id": 2, "label": "neg"}])
    upsert.close(complete=True)
    with (tmp_path / "out" / "r.csv").open(newline="") as text:
        assert list(csv.DictReader(text))[1] == {"id": "2", "label": "neg", "scores": "", "ok": ""}
    array = file_sink(tmp_path, path="out/r.json")
    array.open(resume=False)
    array.write([{"id": 1, "text": "é"}, {"id": 2}])
    array.close(complete=True)
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == [{"id": 1, "text": "é"}, {"id": 2}]
    empty = file_sink(tmp_path, path="out/e.json")
    empty.open(resume=False)
    empty.close(complete=True)
    assert json.loads((tmp_path / "out" / "e.json").read_text()) == []


def test_stdout_sink_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink(sink_node("stdout", "append"), key_field="id", context=IOContext(root="."))
    assert sink.open(resume=True) == set()
    sink.write([{"id": 1, "x": "é"}, {"id": 2}])
    sink.close(complete=True)
    assert capsys.readouterr().out == '{"id": 1, "x": "é"}\n{"id": 2}\n'


def test_unknown_destinations_and_modes_are_sink_errors(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"unknown sink 'databse' \(known: api, database, file, postgresql, sqlite, stdout.*`database`"):
        make_sink(sink_node("databse"), key_field="id", context=IOContext(root="."))
    with pytest.raises(SinkError, match="unknown mode 'merge'"):
        file_sink(tmp_path, mode="merge")


# -- databases ----------------------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str
    context: IOContext
    table: str
    query: Callable[[str], list[tuple[Any, ...]]]

    def sink(self, mode: str = "upsert", table: str | None = None) -> Any:
        node = sink_node(self.kind, mode, connection="db", table=table or self.table)
        return make_sink(node, key_field="item_key", context=self.context)

    def rows(self) -> list[tuple[Any, ...]]:
        return self.query(f'SELECT * FROM "{self.table}" ORDER BY item_key')

    def columns(self) -> list[str]:
        if self.kind == "sqlite":
            return [row[1] for row in self.query(f"PRAGMA table_info(\"{self.table}\")")]
        sql = f"SELECT column_name FROM information_schema.columns WHERE table_name = '{self.table}' ORDER BY ordinal_position"
        return [row[0] for row in self.query(sql)]

    def exists(self, table: str) -> bool:
        if self.kind == "sqlite":
            return bool(self.query(f"SELECT 1 FROM sqlite_master WHERE name = '{table}'"))
        return bool(self.query(f"SELECT 1 FROM information_schema.tables WHERE table_name = '{table}'"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "state" / "results.db"
        path.parent.mkdir()

        def query_sqlite(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as connection:
                rows = connection.execute(sql).fetchall()
            connection.close()
            return rows

        yield Database("sqlite", IOContext(root=str(tmp_path), connections={"db": "sqlite:///state/results.db"}), "results", query_sqlite)
        return
    yield postgresql_database(request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table"))


def postgresql_database(url: str, table: str) -> Database:
    def query_postgresql(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as connection:
            cursor = connection.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    return Database("postgresql", IOContext(root=".", connections={"db": url}), table, query_postgresql)


def test_database_sink_creates_the_table_adds_columns_and_upserts(database: Database) -> None:
    sink = database.sink()
    assert sink.open(resume=False) == set()
    sink.write([{"item_key": "a", "n": 1, "tags": ["x"]}])
    sink.write([{"item_key": "b", "n": 2.5, "ok": True, "note": "it's 100%"}, {"item_key": "a", "n": 5}])
    sink.close(complete=True)
    assert database.columns() == ["item_key", "n", "tags", "ok", "note"]
    if database.kind == "sqlite":
        expected = [("a", 5, None, None, None), ("b", 2.5, None, 1, "it's 100%")]
    else:
        expected = [("a", "5", None, None, None), ("b", "2.5", None, "true", "it's 100%")]
    assert database.rows() == expected
    rerun = database.sink()
    assert rerun.open(resume=True) == set()
    rerun.write([{"item_key": "a", "n": 5, "tags": ["y"]}])
    rerun.close(complete=True)
    assert len(database.rows()) == 2 and database.rows()[0][2] == '["y"]'


def test_database_replace_publishes_exactly_the_run_in_one_transaction(database: Database) -> None:
    first = database.sink("replace")
    first.open(resume=False)
    first.write([{"item_key": "x", "v": "old"}, {"item_key": "y", "v": "old"}])
    first.close(complete=True)
    run = database.sink("replace")
    run.open(resume=False)
    run.write([{"item_key": "a", "v": "new"}, {"item_key": "b", "v": "new", "w": "extra"}])
    run.close(complete=False)  # a stop: the table still holds the last complete run
    assert [row[0] for row in database.rows()] == ["x", "y"]
    resumed = database.sink("replace")
    assert resumed.open(resume=True) == {"a", "b"}
    resumed.write([{"item_key": "c", "v": "new"}])
    resumed.close(complete=True)
    assert [(row[0], row[1]) for row in database.rows()] == [("a", "new"), ("b", "new"), ("c", "new")]
    assert not database.exists(f"{database.table}__sleipnir_partial")
    again = database.sink("replace")
    assert again.open(resume=True) == {"a", "b", "c"}
    again.close(complete=True)
    assert [row[0] for row in database.rows()] == ["a", "b", "c"]


def test_database_sink_rejects_bad_tables(database: Database) -> None:
    with pytest.raises(SinkError, match=r"'results; DROP TABLE x' is not a table name"):
        database.sink(table="results; DROP TABLE x")
    # A table already there that cannot take the upserts is refused when the sink opens (which then holds no
    # connection): before any call is made. A unique index over two columns will not do either.
    table = f'"{database.table}"'
    for statements, refusal in (
        ([f"CREATE TABLE {table} (other TEXT)"], f"table {database.table} has no column 'item_key'"),
        (
            [f"DROP TABLE {table}", f"CREATE TABLE {table} (item_key TEXT, other TEXT)"],
            f"table {database.table}: column 'item_key' is neither its primary key nor unique",
        ),
        ([f'CREATE UNIQUE INDEX "{database.table}_pair" ON {table} (item_key, other)'], "neither its primary key nor unique"),
    ):
        for statement in statements:
            database.query(statement)
        with pytest.raises(SinkError, match=refusal):
            database.sink().open(resume=False)
    # A unique index on the key alone will do, as a primary key does.
    database.query(f'CREATE UNIQUE INDEX "{database.table}_key" ON {table} (item_key)')
    sink = database.sink()
    assert sink.open(resume=False) == set()
    sink.write([{"item_key": "a", "other": "x"}, {"item_key": "a", "other": "y"}])
    sink.close(complete=True)
    assert database.rows() == [("a", "y")]


def test_postgresql_sink_quotes_names_and_binds_values(postgres_url: str, pg_table: str) -> None:
    database = postgresql_database(postgres_url, pg_table)
    sink = database.sink(table=f"public.{database.table}")
    sink.open(resume=False)
    sink.write([{"item_key": "k'1", 'we"ird %col': "100% 'quoted'", "doc": {"a": 1}}])
    sink.close(complete=True)
    assert database.rows() == [("k'1", "100% 'quoted'", '{"a": 1}')]
    assert database.columns() == ["item_key", 'we"ird %col', "doc"]


def test_sqlite_sink_writes_while_a_source_streams_from_the_same_file(tmp_path: Path) -> None:
    context = IOContext(root=str(tmp_path), connections={"default": "app.db"})
    with sqlite3.connect(tmp_path / "app.db") as connection:
        connection.execute("CREATE TABLE reviews (review_id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO reviews VALUES (?, ?)", [(i, f"r{i}") for i in range(300)])
    connection.close()
    sink = make_sink(sink_node("database", "upsert", connection="default", table="scores"), key_field="review_id", context=context)
    sink.open(resume=False)
    source = make_source(source_node("database", connection="default", query="SELECT * FROM reviews"), context=context)
    for batch in source.batches(100):
        sink.write([{"review_id": row["review_id"], "score": 1} for row in batch if isinstance(row, dict)])
    source.close()
    sink.close(complete=True)
    with sqlite3.connect(tmp_path / "app.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM scores").fetchone() == (300,)
    connection.close()


# -- HTTP APIs ----------------------------------------------------------------------------------------------


def api_sink(server: Server, method: str = "POST") -> Any:
    node = sink_node("api", "append", endpoint=server.url + "/results", method=method)
    return make_sink(node, key_field="id", context=IOContext(root="."))


def test_api_sink_sends_each_batch_as_one_json_array_with_retries(http_server: Server) -> None:
    http_server.script = {"/results": [Reply(503, {}, {"Retry-After": "0"}), Reply(body={"ok": True})]}
    sink = api_sink(http_server, "PUT")
    assert sink.open(resume=True) == set()
    sink.write([{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"}])
    sink.write([{"id": 3, "label": "pos"}])
    sink.write([])
    sink.close(complete=True)
    assert [(r.method, json.loads(r.body)) for r in http_server.requests] == [
        ("PUT", [{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"}]),
        ("PUT", [{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"}]),
        ("PUT", [{"id": 3, "label": "pos"}]),
    ]
    assert http_server.requests[0].headers["Content-Type"] == "application/json"


def test_api_sink_waits_a_429s_retry_after_then_sends_the_batch_once(http_server: Server) -> None:
    http_server.script = {"/results": [Reply(429, {}, {"Retry-After": "1"}), Reply(body={"ok": True})]}
    sink = api_sink(http_server)
    sink.open(resume=False)
    began = time.monotonic()
    sink.write([{"id": 1}])
    assert time.monotonic() - began >= 0.9, "the sink waits the second the server asked for"
    sink.close(complete=True)
    assert [json.loads(r.body) for r in http_server.requests] == [[{"id": 1}], [{"id": 1}]]


def test_api_sink_errors(http_server: Server) -> None:
    http_server.script = {"/results": [Reply(400, {"error": "bad row"})]}
    sink = api_sink(http_server)
    sink.open(resume=False)
    with pytest.raises(SinkError, match=r"POST .*/results: HTTP 400 Bad Request"):
        sink.write([{"id": 1}])
    assert len(http_server.requests) == 1
    http_server.script = {"/results": [Reply(502, {}, {"Retry-After": "0"})]}
    with pytest.raises(SinkError, match=r"HTTP 502 Bad Gateway \(after 5 attempts\)"):
        sink.write([{"id": 1}])
    assert len(http_server.requests) == 1 + api.HTTP_ATTEMPTS
    sink.close(complete=False)


def test_api_sink_retries_a_refused_connection_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "HTTP_BACKOFF", (0.01, 0.02))
    node = sink_node("api", "append", endpoint=f"http://127.0.0.1:1/{uuid.uuid4().hex}")
    sink = make_sink(node, key_field="id", context=IOContext(root="."))
    sink.open(resume=False)
    with pytest.raises(SinkError, match=r"ConnectError.*\(after 5 attempts\)"):
        sink.write([{"id": 1}])
    sink.close(complete=False)
