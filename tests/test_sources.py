"""Sources against real parts: files in tmp_path, SQLite, PostgreSQL at 127.0.0.1:5432 and an HTTP server on
127.0.0.1. The PostgreSQL and HTTP fixtures here are shared with test_sinks.py."""

from __future__ import annotations

import datetime
import decimal
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sleipnir.compiler.ir import Sink as SinkNode
from sleipnir.compiler.ir import Source as SourceNode
from sleipnir.compiler.ir import frozen
from sleipnir.runtime.io import IOContext, RowError, SourceError, api, dbconn, sources
from sleipnir.runtime.io.dbconn import (
    DatabaseError,
    mask_secrets,
    mask_url,
    parse_database_url,
    postgresql_query,
)
from sleipnir.runtime.io.sources import make_source

# -- shared fixtures: PostgreSQL and an HTTP server ---------------------------------------------------------

POSTGRES_USERS = ("postgres", "root")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A working URL for the `test` database at 127.0.0.1:5432; the test FAILS (never skips) without one."""
    problems = []
    for user in POSTGRES_USERS:
        url = f"postgresql://{user}@127.0.0.1:5432/test"
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            problems.append(f"{url}: {str(exc).strip()}")
            continue
        return url
    pytest.fail("PostgreSQL is required at 127.0.0.1:5432 (database `test`) and is unreachable:\n" + "\n".join(problems))


@pytest.fixture
def pg_table(postgres_url: str) -> Iterator[str]:
    """A unique table name, dropped (with its staging table) after the test."""
    name = f"sleipnir_t_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{name}", "{name}__sleipnir_partial"'.encode())


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server:
    """A real HTTP server on 127.0.0.1: `script[path]` is a list of replies, served in turn (the last one
    repeats); every request is recorded."""

    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with server.lock:
                    server.requests.append(Request(self.command, self.path, dict(self.headers), body))
                    replies = server.script.get(self.path) or server.script.get(path) or [Reply(404, {"error": "no"})]
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value.replace("{base}", server.url))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


# -- helpers ------------------------------------------------------------------------------------------------


def source_node(source: str, **options: Any) -> SourceNode:
    return SourceNode(id="input", source=source, options=frozen(options))


def sink_node(destination: str, mode: str = "replace", **options: Any) -> SinkNode:
    return SinkNode(id="output", destination=destination, options=frozen(options), mode=mode, dead_letter="dl.jsonl")


def read_all(source: Any, batch_size: int = 100) -> list[Any]:
    try:
        return [entry for batch in source.batches(batch_size) for entry in batch]
    finally:
        source.close()


def file_rows(tmp_path: Path, name: str, text: str | bytes, batch_size: int = 100) -> list[Any]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return read_all(make_source(source_node("file", path=name), context=IOContext(root=str(tmp_path))), batch_size)


# -- files --------------------------------------------------------------------------------------------------


def test_jsonl_streams_rows_and_puts_a_row_error_in_place_of_each_bad_line(tmp_path: Path) -> None:
    text = '{"id": 1}\n\n{"id": 2,\n[1, 2]\n\ufeff\n{"id": "3", "text": "x"}\r\n'
    entries = file_rows(tmp_path, "in.jsonl", text)
    assert entries[0] == {"id": 1}
    assert isinstance(entries[1], RowError) and entries[1].index == 1
    assert entries[1].message.startswith("in.jsonl:3: invalid JSON:") and entries[1].raw == '{"id": 2,'
    assert isinstance(entries[2], RowError) and entries[2].message == "in.jsonl:4: expected a JSON object, got an array"
    assert isinstance(entries[3], RowError) and entries[3].index == 3  # a lone BOM mid-file is not JSON
    assert entries[4] == {"id": "3", "text": "x"}
    assert len(entries) == 5


def test_file_batches_are_at_most_the_batch_size(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(25)))
    source = make_source(source_node("file", path="in.jsonl"), context=IOContext(root=str(tmp_path)))
    sizes = [len(batch) for batch in source.batches(10)]
    source.close()
    assert sizes == [10, 10, 5]


def test_json_array_is_decoded_element_by_element_across_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"id": i, "score": i * 12345.678, "text": "é" * (i % 7), "nested": {"n": [i, i + 1]}} for i in range(300)]
    monkeypatch.setattr(sources, "_JSON_CHUNK", 7)  # numbers and strings split across reads
    assert file_rows(tmp_path, "in.json", json.dumps(rows, indent=2)) == rows
    assert file_rows(tmp_path, "empty.json", "  [ ]\n") == []


def test_json_array_element_that_is_not_an_object_is_a_row_error(tmp_path: Path) -> None:
    entries = file_rows(tmp_path, "in.json", '[\n  {"id": 1},\n  7,\n  {"id": 3}\n]')
    assert entries[0] == {"id": 1} and entries[2] == {"id": 3}
    assert isinstance(entries[1], RowError)
    assert (entries[1].index, entries[1].message) == (1, "in.json:3: expected a JSON object, got a number")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}', "in.json:1:1: expected a JSON array of objects"),
        ('[\n {"id": 1},\n {"id": 2\n]', "in.json:4:1: invalid JSON: Expecting ',' delimiter"),
        ('[{"id": 1} {"id": 2}]', "in.json:1:12: expected `,` or `]` after an element"),
        ('[{"id": 1}] x', "in.json:1:13: unexpected text after the array"),
    ],
)
def test_json_syntax_errors_end_the_source_with_the_place(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        file_rows(tmp_path, "in.json", text)


def test_csv_rows_and_rows_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    text = '\ufeffid,text\r\n1,hello\r\n2,"multi\nline, quoted"\r\n\r\n3\r\n4,a,b\r\n5,ok\r\n'
    entries = file_rows(tmp_path, "in.csv", text)
    assert entries[0] == {"id": "1", "text": "hello"}
    assert entries[1] == {"id": "2", "text": "multi\nline, quoted"}
    assert isinstance(entries[2], RowError) and entries[2].message == "in.csv:6: 1 fields where the header has 2"
    assert isinstance(entries[3], RowError) and entries[3].raw == "4,a,b" and entries[3].index == 3
    assert entries[4] == {"id": "5", "text": "ok"}


def test_a_csv_quote_never_closed_or_text_after_a_closing_quote_is_a_row_error_never_rows_swallowed(tmp_path: Path) -> None:
    """Python's csv reader would read a quote never closed to the end of the file, as one field, and join text
    after a closing quote to the field: rows lost or changed without a word. Read strictly, each is an error in
    its row, at the line it starts on."""
    entries = file_rows(tmp_path, "in.csv", 'id,text\n1,ok\n2,"x"y\n3,fine\n4,"open\n5,lost?\n')
    assert entries[0] == {"id": "1", "text": "ok"}
    assert isinstance(entries[1], RowError) and entries[1].message == "in.csv:3: ',' expected after '\"'"
    assert entries[2] == {"id": "3", "text": "fine"}
    assert isinstance(entries[3], RowError) and entries[3].message == (
        "in.csv:5: a quoted field that starts in this row is never closed: the rest of the file would be inside it"
    )
    assert len(entries) == 4


def test_csv_header_naming_a_column_twice_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"in\.csv:1: the header names a more than once"):
        file_rows(tmp_path, "in.csv", "a,b,a\n1,2,3\n")


def test_missing_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    source = make_source(source_node("file", path="data/none.jsonl"), context=IOContext(root=str(tmp_path)))
    with pytest.raises(SourceError, match=r"input file not found: data/none\.jsonl"):
        read_all(source)


def test_input_path_replaces_the_source_and_is_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "items.csv").write_text("id,x\n1,a\n")
    monkeypatch.chdir(tmp_path)
    node = source_node("run_input")
    assert read_all(make_source(node, context=IOContext(root="/elsewhere"), input_path="items.csv")) == [{"id": "1", "x": "a"}]
    with pytest.raises(SourceError, match=r"this job has no input; pass --input FILE"):
        make_source(node, context=IOContext(root=str(tmp_path)))


def test_unknown_source_names_the_known_kinds(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"unknown source 'fil' \(known: api, database, file, .*did you mean `file`"):
        make_source(source_node("fil"), context=IOContext(root=str(tmp_path)))


def test_a_third_party_source_comes_from_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "class Counting:\n"
        "    def __init__(self, n): self.n = n\n"
        "    def batches(self, size): yield [{'id': i} for i in range(self.n)]\n"
        "    def close(self): pass\n"
        "def make(node, *, context): return Counting(node.options['n'])\n"
    )
    info = tmp_path / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[sleipnir.sources]\ncounting = {module}:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = make_source(source_node("counting", n=3), context=IOContext(root=str(tmp_path)))
    assert read_all(source) == [{"id": 0}, {"id": 1}, {"id": 2}]


# -- SQLite -------------------------------------------------------------------------------------------------


def sqlite_db(path: Path, rows: int = 0) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE reviews (review_id INTEGER PRIMARY KEY, body TEXT, note TEXT, raw BLOB)")
        connection.executemany(
            "INSERT INTO reviews VALUES (?, ?, ?, ?)",
            [(i, f"review {i}", "it's 100% done" if i % 2 else "plain", b"\x01\xff") for i in range(rows)],
        )
    connection.close()


def test_sqlite_source_binds_parameters_and_streams_in_batches(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    sqlite_db(tmp_path / "data" / "reviews.db", rows=25)
    context = IOContext(root=str(tmp_path), connections={"default": "sqlite:///data/reviews.db"})
    # The value holds a quote and a `%`: formatted into the text it would break the SQL; bound, it matches.
    node = source_node(
        "database",
        connection="default",
        query="SELECT review_id, body, raw FROM reviews WHERE note = :note AND body LIKE '%review%' ORDER BY review_id",
        parameters={"note": "it's 100% done"},
    )
    source = make_source(node, context=context)
    batches = list(source.batches(5))
    source.close()
    assert [len(b) for b in batches] == [5, 5, 2]
    assert batches[0][0] == {"review_id": 1, "body": "review 1", "raw": "01ff"}
    assert [row["review_id"] for b in batches for row in b] == list(range(1, 25, 2))


def test_sqlite_source_is_read_only_and_reports_the_database_message(tmp_path: Path) -> None:
    sqlite_db(tmp_path / "r.db", rows=1)
    context = IOContext(root=str(tmp_path))
    writing = make_source(source_node("sqlite", connection="r.db", query="DELETE FROM reviews"), context=context)
    with pytest.raises(SourceError, match="readonly database"):
        read_all(writing)
    broken = make_source(source_node("sqlite", connection="r.db", query="SELECT nope FROM reviews"), context=context)
    with pytest.raises(SourceError, match=r"query failed on .*r.db: no such column: nope"):
        read_all(broken)
    missing = make_source(source_node("sqlite", connection="none.db", query="SELECT 1"), context=context)
    with pytest.raises(SourceError, match=r"SQLite database not found: .*none.db"):
        read_all(missing)


def test_database_kind_must_match_the_connection(tmp_path: Path) -> None:
    context = IOContext(root=str(tmp_path), connections={"prod": "postgresql://u:secretpw@db.example/x"})
    with pytest.raises(SourceError, match=r"sqlite input: connection 'prod' is a postgresql database \(postgresql://u:\*\*\*@"):
        make_source(source_node("sqlite", connection="prod", query="SELECT 1"), context=context)
    with pytest.raises(SourceError, match=r"unknown connection 'warehouse' \(connections: prod\)"):
        make_source(source_node("database", connection="warehouse", query="SELECT 1"), context=context)


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def test_postgresql_source_streams_through_a_server_side_cursor(postgres_url: str, pg_table: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {pg_table} (item_id INTEGER PRIMARY KEY, body TEXT)".encode())
        connection.execute(f"INSERT INTO {pg_table} SELECT i, 'row ' || i FROM generate_series(1, 10000) i".encode())
    node = source_node("postgresql", connection="pg", query=f"SELECT item_id, body FROM {pg_table} ORDER BY item_id")
    source = make_source(node, context=IOContext(root=".", connections={"pg": postgres_url}))
    batches = source.batches(500)
    first = next(batches)
    # The server holds the cursor: the session's last statement is a FETCH of one batch, not the whole query.
    with psycopg.connect(postgres_url) as watcher:
        statements = [row[0] for row in watcher.execute("SELECT query FROM pg_stat_activity WHERE state LIKE 'idle in%'")]
    assert any(s.startswith("FETCH FORWARD 500 FROM") for s in statements), statements
    rest = list(batches)
    source.close()
    assert all(isinstance(batch, list) and len(batch) <= 500 for batch in [first, *rest])
    assert len(rest) + 1 == 20
    assert first[0] == {"item_id": 1, "body": "row 1"} and rest[-1][-1] == {"item_id": 10000, "body": "row 10000"}


def test_closing_a_postgresql_source_early_releases_its_connection(postgres_url: str) -> None:
    name = f"early_{uuid.uuid4().hex[:8]}"
    context = IOContext(root=".", connections={"pg": f"{postgres_url}?application_name={name}"})
    source = make_source(source_node("postgresql", connection="pg", query="SELECT generate_series(1, 1000) AS i"), context=context)

    def sessions() -> int:
        with psycopg.connect(postgres_url) as watcher:
            row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
        return int(row[0]) if row else -1

    assert len(next(iter(source.batches(10)))) == 10
    assert sessions() == 1
    source.close()
    # The server drops a closed session's row on its own schedule: wait for it, boundedly.
    for _ in range(100):
        if sessions() == 0:
            break
        time.sleep(0.05)
    assert sessions() == 0


def test_postgresql_source_binds_values_and_converts_types(postgres_url: str) -> None:
    query = (
        "SELECT :note::text AS note, 'x%y' AS literal, 12.50::numeric AS price, 3::numeric AS whole, "
        "'2024-01-02 03:04:05+00'::timestamptz AS at, '2024-01-02'::date AS day, "
        "'6f1c2c1e-7d1a-4c4b-9a7e-5b9d0c3e2f10'::uuid AS uid, '\\x01ff'::bytea AS raw, "
        "'{\"a\": [1, 2]}'::jsonb AS doc WHERE :since::date < now() -- a comment with : and %"
    )
    node = source_node("postgresql", connection="pg", query=query, parameters={"note": "it's 100% done", "since": "2024-01-01"})
    [row] = read_all(make_source(node, context=IOContext(root=".", connections={"pg": postgres_url})))
    assert row == {
        "note": "it's 100% done",
        "literal": "x%y",
        "price": 12.5,
        "whole": 3,
        "at": "2024-01-02T03:04:05+00:00",
        "day": "2024-01-02",
        "uid": "6f1c2c1e-7d1a-4c4b-9a7e-5b9d0c3e2f10",
        "raw": "01ff",
        "doc": {"a": [1, 2]},
    }
    json.dumps(row)


def test_postgresql_errors_are_source_errors_without_the_password(postgres_url: str) -> None:
    broken = source_node("postgresql", connection="pg", query="SELECT nope FROM no_such_table")
    with pytest.raises(SourceError, match='relation "no_such_table" does not exist'):
        read_all(make_source(broken, context=IOContext(root=".", connections={"pg": postgres_url})))
    refused = IOContext(root=".", connections={"pg": "postgresql://postgres:hunter2secret@127.0.0.1:1/test"})
    with pytest.raises(SourceError) as caught:
        read_all(make_source(source_node("postgresql", connection="pg", query="SELECT 1"), context=refused))
    assert "hunter2secret" not in str(caught.value) and "postgresql://postgres:***@127.0.0.1:1/test" in str(caught.value)


# -- connections --------------------------------------------------------------------------------------------


def test_postgresql_placeholders_leave_literals_casts_and_comments_alone() -> None:
    query = "SELECT a::int, ':b', \"c:d\", $$:e %$$ FROM t WHERE x = :x AND y LIKE 'p%' /* :z */ -- :w %\n AND z = :z"
    assert postgresql_query(query) == (
        "SELECT a::int, ':b', \"c:d\", $$:e %%$$ FROM t WHERE x = %(x)s AND y LIKE 'p%%' /* :z */ -- :w %%\n AND z = %(z)s"
    )
    assert postgresql_query("SELECT 'it''s :not' || :yes") == "SELECT 'it''s :not' || %(yes)s"


def test_database_urls_and_masks(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert parse_database_url("sqlite:///data/r.db", root=root).path == tmp_path / "data" / "r.db"
    assert parse_database_url("sqlite:////abs/r.db", root=root).path == Path("/abs/r.db")
    assert parse_database_url("state/ledger.db", root=root).path == tmp_path / "state" / "ledger.db"
    pg = parse_database_url("postgresql+psycopg://u:pw@h:5/db?sslmode=require", root=root)
    assert (pg.kind, pg.url, pg.display) == ("postgresql", "postgresql://u:pw@h:5/db?sslmode=require", "postgresql://u:***@h:5/db?sslmode=require")
    with pytest.raises(DatabaseError, match=r"unsupported database URL scheme mysql://"):
        parse_database_url("mysql://u:pw@h/db", root=root)
    with pytest.raises(DatabaseError, match="unknown connection 'prod_db'"):
        parse_database_url("prod_db", root=root)
    assert mask_url("https://api.example/x?api_key=abc&page=2") == "https://api.example/x?api_key=***&page=2"
    assert mask_secrets('invalid dsn "postgresql://u:s3cret@h/db"', "postgresql://u:s3cret@h/db") == 'invalid dsn "postgresql://u:***@h/db"'


def test_plain_values_serialise() -> None:
    value = {
        "d": decimal.Decimal("1.25"),
        "n": [datetime.date(2024, 1, 2), datetime.timedelta(seconds=90)],
        "u": uuid.UUID(int=1),
        "b": memoryview(b"\x00\x10"),
    }
    assert dbconn.plain_value(value) == {"d": 1.25, "n": ["2024-01-02", 90.0], "u": str(uuid.UUID(int=1)), "b": "0010"}


# -- HTTP APIs ----------------------------------------------------------------------------------------------


def api_rows(server: Server, path: str, environ: dict[str, str] | None = None, batch_size: int = 100, **options: Any) -> list[Any]:
    node = source_node("api", endpoint=server.url + path, **options)
    return read_all(make_source(node, context=IOContext(root=".", environ=environ or {})), batch_size)


def test_api_source_follows_link_headers_with_a_bearer_token(http_server: Server) -> None:
    http_server.script = {
        "/items": [Reply(body=[{"id": 1}, {"id": 2}], headers={"Link": '<{base}/items/2>; rel="next"'})],
        "/items/2": [Reply(body=[{"id": 3}, "oops"], headers={"Link": '</items/3>; rel="next", </items>; rel="first"'})],
        "/items/3": [Reply(body=[{"id": 4}])],
    }
    entries = api_rows(http_server, "/items", {"API_TOKEN": "t0ken"}, batch_size=2, auth="bearer_token")
    assert [e if isinstance(e, dict) else e.index for e in entries] == [{"id": 1}, {"id": 2}, {"id": 3}, 3, {"id": 4}]
    assert isinstance(entries[3], RowError) and entries[3].message.endswith("item 3: expected a JSON object, got a string")
    assert {r.headers["Authorization"] for r in http_server.requests} == {"Bearer t0ken"}


def test_api_source_follows_next_in_the_body_and_retries_503_and_429(http_server: Server) -> None:
    http_server.script = {
        "/v1/reviews": [
            Reply(503, {"error": "busy"}, {"Retry-After": "0"}),
            Reply(body={"data": [{"id": "a"}], "next": "/v1/reviews?page=2"}),
        ],
        "/v1/reviews?page=2": [Reply(429, {}, {"retry-after-ms": "10"}), Reply(body={"results": [{"id": "b"}], "next": None})],
    }
    assert api_rows(http_server, "/v1/reviews", auth={"type": "header", "header": "X-Key", "token": "k"}) == [{"id": "a"}, {"id": "b"}]
    assert [r.path for r in http_server.requests] == ["/v1/reviews"] * 2 + ["/v1/reviews?page=2"] * 2
    assert http_server.requests[0].headers["X-Key"] == "k"


def test_api_source_waits_the_retry_after_it_is_given_in_either_form(
    http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "HTTP_BACKOFF", (0.01, 0.02))
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    http_server.script = {
        "/slow": [Reply(503, {}, {"Retry-After": soon.strftime("%a, %d %b %Y %H:%M:%S GMT")}), Reply(body=[{"id": 1}])],
        "/delta": [Reply(429, {}, {"Retry-After": "1"}), Reply(body=[{"id": 2}])],
        "/junk": [Reply(429, {}, {"Retry-After": "inf"}), Reply(body=[{"id": 3}])],
    }
    for path, row, least, most in (("/slow", 1, 0.9, 2.5), ("/delta", 2, 0.9, 1.8), ("/junk", 3, 0.0, 0.5)):
        began = time.monotonic()
        assert api_rows(http_server, path) == [{"id": row}]
        # An HTTP-date (whole seconds, so 1 to 2 s away) and delta-seconds are waited; `inf` is ignored for the
        # backoff of 0.01 s.
        assert least <= time.monotonic() - began <= most, path
    assert [r.path for r in http_server.requests] == ["/slow", "/slow", "/delta", "/delta", "/junk", "/junk"]


def test_api_source_gives_up_after_bounded_retries_and_fails_at_once_on_other_4xx(http_server: Server) -> None:
    http_server.script = {"/down": [Reply(500, {"e": 1}, {"Retry-After": "0"})], "/gone": [Reply(404, {"e": "gone"})]}
    with pytest.raises(SourceError, match=r"GET .*/down: HTTP 500 Internal Server Error \(after 5 attempts\)"):
        api_rows(http_server, "/down")
    assert len(http_server.requests) == api.HTTP_ATTEMPTS
    with pytest.raises(SourceError, match=r"HTTP 404 Not Found: \{\"e\": \"gone\"\}"):
        api_rows(http_server, "/gone")
    assert len(http_server.requests) == api.HTTP_ATTEMPTS + 1


def test_api_source_auth_problems_are_source_errors(http_server: Server) -> None:
    with pytest.raises(SourceError, match="bearer_token auth needs API_TOKEN or SLEIPNIR_API_TOKEN"):
        api_rows(http_server, "/x", auth="bearer_token")
    http_server.script = {"/x": [Reply(body={"items": [{"id": 1}]})]}
    assert api_rows(http_server, "/x", {"SLEIPNIR_API_TOKEN": "s"}, auth="bearer_token") == [{"id": 1}]
    assert api_rows(http_server, "/x", auth={"type": "basic", "username": "u", "password": "p"}) == [{"id": 1}]
    assert http_server.requests[-1].headers["Authorization"] == "Basic dTpw"
    with pytest.raises(SourceError, match="expected a JSON array, or an object with a data, items or results array"):
        http_server.script = {"/x": [Reply(body={"rows": []})]}
        api_rows(http_server, "/x")


def test_api_pages_that_loop_are_a_source_error(http_server: Server) -> None:
    http_server.script = {"/a": [Reply(body={"items": [{"id": 1}], "next": "/a"})]}
    with pytest.raises(SourceError, match="the pages loop back to an earlier page"):
        api_rows(http_server, "/a")

