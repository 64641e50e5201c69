"""The built-in sources: files (jsonl, json, csv), databases (SQLite, PostgreSQL) and HTTP APIs (in `api.py`),
and `make_source`, which builds the source of a plan's `Source` node.

Every source streams. A jsonl or csv file is read a line at a time; a json array is decoded one element at a
time from a growing buffer (memory stays near the largest element, not the file); a database query is read
with `fetchmany` (a server-side cursor on PostgreSQL); an API is read a page at a time. A row that cannot be
read becomes a `RowError` in its place, so row numbers stay stable: `RowError.index` is the position of the
entry among everything the source yields, counting from 0, exactly like a good row's.

Sources are looked up by the node's `source` name: the built-ins first, then the `sleipnir.sources`
entry-point group, whose entries name a factory called as `factory(node, *, context)`.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg.rows

from ...compiler import ir
from ...compiler.ir.common import FORMATS, suffix_format, suggestion_help
from ..secrets import MissingSecret, reveal
from . import IOContext, Row, RowError, Source, SourceError
from .dbconn import (
    DatabaseError,
    DatabaseURL,
    connect_postgresql,
    connect_sqlite,
    mask_secrets,
    parse_database_url,
    plain_value,
    postgresql_query,
    read_json,
)

__all__ = [
    "BUILTIN_SOURCES",
    "FORMATS",
    "DatabaseSource",
    "FileSource",
    "SourceFactory",
    "api_source",
    "database_of",
    "database_source",
    "file_format",
    "file_source",
    "load_factory",
    "make_source",
    "read_rows",
]


"""File formats by suffix, the compiler's table (it fills in `format` from it); any other suffix reads as jsonl."""
RAW_LIMIT = 4096
"""How much of an unreadable row a `RowError` keeps, in characters."""
_JSON_CHUNK = 1 << 16

Entry = Row | RowError


class SourceFactory(Protocol):
    """What a `sleipnir.sources` entry point names."""

    def __call__(self, node: ir.Source, *, context: IOContext) -> Source: ...


# -- files ------------------------------------------------------------------------------------------------


def file_format(path: str | Path, given: object = None) -> str:
    """The format of a data file: `given` when set, else from the suffix (jsonl for an unknown one)."""
    fmt = str(given) if given else suffix_format(str(path))
    if fmt not in ("jsonl", "json", "csv"):
        raise ValueError(f"unknown file format {fmt!r} (use jsonl, json or csv)")
    return fmt


@dataclass(frozen=True, slots=True)
class Start:
    """Where reading a jsonl or csv file starts (a partition of it, `partitions.py`): the byte offset of a row's
    first line, that line's number (from 1) and the row's number (from 0)."""

    offset: int = 0
    line: int = 1
    index: int = 0


def read_rows(path: Path, fmt: str, *, shown: str, start: Start | None = None) -> Generator[Entry, None, None]:
    """Every row of a data file, streamed, from `start` (a jsonl or csv file); `shown` is the path as messages
    print it. Raises `SourceError` when the file is missing or cannot be read at all."""
    if not path.is_file():
        raise SourceError(f"input file not found: {shown}" + ("" if shown == str(path) else f" ({path})"))
    readers: dict[str, Callable[[Path, str, Start], Iterator[Entry]]] = {
        "jsonl": _jsonl_rows,
        "json": lambda path, shown, _start: _json_rows(path, shown),
        "csv": _csv_rows,
    }
    try:
        yield from readers[fmt](path, shown, start or Start())
    except OSError as exc:
        raise SourceError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(f"{shown}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _jsonl_rows(path: Path, shown: str, start: Start) -> Iterator[Entry]:
    index = start.index
    with path.open("rb") as lines:
        lines.seek(start.offset)
        for number, data in enumerate(lines, start=start.line):
            if number == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]
            if not data.strip():
                continue
            try:
                value = read_json(data)
            except UnicodeDecodeError as exc:
                yield _row_error(index, data.decode("utf-8", "replace"), f"{shown}:{number}: not UTF-8: {exc.reason}")
            except json.JSONDecodeError as exc:
                text = data.decode("utf-8", "replace").rstrip("\r\n")
                yield _row_error(index, text, f"{shown}:{number}: invalid JSON: {exc.msg} at column {exc.colno}")
            else:
                yield value if type(value) is dict else _not_an_object(index, value, f"{shown}:{number}")
            index += 1


def _json_rows(path: Path, shown: str) -> Iterator[Entry]:
    reader = _JsonArray(path, shown)
    try:
        yield from reader.elements()
    finally:
        reader.close()


class _JsonArray:
    """Decodes a top-level JSON array one element at a time. The buffer holds the unread rest of the current
    chunk and grows (doubling) only while one element does not fit, so memory follows the largest element.
    A syntax error ends the file (no later element can be found reliably): it is a `SourceError`."""

    def __init__(self, path: Path, shown: str) -> None:
        self.shown = shown
        self.file = path.open(encoding="utf-8-sig")
        self.decoder = json.JSONDecoder()
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.lines_before = 0
        """Newlines in the text already dropped from the buffer, for line numbers."""

    def close(self) -> None:
        self.file.close()

    def elements(self) -> Iterator[Entry]:
        if self._next_char() != "[":
            self._fail("expected a JSON array of objects")
        self.pos += 1
        index = 0
        if self._next_char() == "]":
            self.pos += 1
        else:
            while True:
                self._next_char()
                line = self._line()
                value = self._value()
                yield value if type(value) is dict else _not_an_object(index, value, f"{self.shown}:{line}")
                index += 1
                char = self._next_char()
                self.pos += 1
                if char == "]":
                    break
                if char != ",":
                    self.pos -= 1
                    self._fail("expected `,` or `]` after an element")
                self._compact()
        if self._next_char() != "":
            self._fail("unexpected text after the array")

    def _value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    self.pos = exc.pos
                    self._fail(f"invalid JSON: {exc.msg}")
                self._read()
                continue
            # A number that ends the buffer may continue in the next chunk: read on before trusting it.
            if end == len(self.buffer) and not self.eof:
                self._read()
                continue
            self.pos = end
            return value

    def _next_char(self) -> str:
        """The next non-space character, without consuming it; "" at the end of the file."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if self.eof:
                return ""
            self._read()

    def _read(self) -> None:
        self._compact()
        chunk = self.file.read(max(_JSON_CHUNK, len(self.buffer)))
        self.eof = not chunk
        self.buffer += chunk

    def _compact(self) -> None:
        if self.pos > _JSON_CHUNK:
            self.lines_before += self.buffer.count("\n", 0, self.pos)
            self.buffer = self.buffer[self.pos :]
            self.pos = 0

    def _line(self) -> int:
        return self.lines_before + self.buffer.count("\n", 0, self.pos) + 1

    def _fail(self, message: str) -> None:
        line_start = self.buffer.rfind("\n", 0, self.pos) + 1
        column = self.pos - line_start + 1
        raise SourceError(f"{self.shown}:{self._line()}:{column}: {message}")


def _csv_rows(path: Path, shown: str, start: Start) -> Iterator[Entry]:
    index = start.index
    with path.open(encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, strict=True)  # as the partitioner reads: a broken quote is that row's error
        try:
            header = next(reader, None)
            if header is None:
                return
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise SourceError(f"{shown}:1: the header names {', '.join(duplicated)} more than once")
            skipped = 0
            if start.offset:
                # A partition: on to its first row (a utf-8 text file's position is its byte offset).
                text.seek(start.offset)
                skipped = start.line - 1 - reader.line_num
            while True:
                first = reader.line_num + skipped + 1  # the line the next row starts on
                try:
                    fields = next(reader, None)
                except csv.Error as exc:
                    yield _row_error(index, "", f"{shown}:{first}: {_CSV_PROBLEMS.get(str(exc), str(exc))}")
                    index += 1
                    continue
                if fields is None:
                    return
                if not fields:
                    continue
                if len(fields) != len(header):
                    raw = io.StringIO()
                    csv.writer(raw, lineterminator="").writerow(fields)
                    message = f"{shown}:{reader.line_num + skipped}: {len(fields)} fields where the header has {len(header)}"
                    yield _row_error(index, raw.getvalue(), message)
                else:
                    yield dict(zip(header, fields, strict=True))
                index += 1
        except UnicodeDecodeError as exc:
            raise SourceError(f"{shown}:{reader.line_num + 1}: not UTF-8 ({exc.reason})") from exc


_CSV_PROBLEMS = {"unexpected end of data": "a quoted field that starts in this row is never closed: the rest of the file would be inside it"}


def _row_error(index: int, raw: str, message: str) -> RowError:
    return RowError(index=index, raw=raw[:RAW_LIMIT], message=message)


def _not_an_object(index: int, value: Any, place: str) -> RowError:
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
    return _row_error(index, json.dumps(value, ensure_ascii=False), f"{place}: expected a JSON object, got {kind}")


class _Streaming:
    """A source whose `batches` generator holds what it reads (a file, a cursor, a client): `close` ends the
    generator, so that its cleanup runs now, on the caller's thread, not whenever it is garbage-collected."""

    _reading: Generator[list[Entry], None, None] | None = None

    def batches(self, batch_size: int) -> Iterator[list[Entry]]:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self.close()
        self._reading = self._batches(batch_size)
        return self._reading

    def _batches(self, batch_size: int) -> Generator[list[Entry], None, None]:
        raise NotImplementedError

    def close(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.close()


class FileSource(_Streaming):
    """Rows of a jsonl, json or csv file, streamed."""

    def __init__(self, *, path: Path, format: str, shown: str, start: Start | None = None) -> None:
        self.path = path
        self.format = format
        self.shown = shown
        self.start = start

    def _batches(self, batch_size: int) -> Generator[list[Entry], None, None]:
        yield from _chunked(read_rows(self.path, self.format, shown=self.shown, start=self.start), batch_size)


E = TypeVar("E")


def _chunked(entries: Iterable[E], size: int) -> Iterator[list[E]]:
    iterator = iter(entries)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# -- databases --------------------------------------------------------------------------------------------


def database_of(node: ir.Source | ir.Sink, context: IOContext, error: type[Exception]) -> DatabaseURL:
    """The database a database source or sink node names, checked against its kind (`sqlite`, `postgresql`
    or `database`, which is either). Raises `error`."""
    name = str(node.options.get("connection") or "default")
    kind = node.source if isinstance(node, ir.Source) else node.destination
    try:
        database = parse_database_url(context.connection(name), root=context.root, known=context.connections)
    except DatabaseError as exc:
        raise error(str(exc)) from exc
    if kind in ("sqlite", "postgresql") and kind != database.kind:
        raise error(f"{kind} {node.id}: connection {name!r} is a {database.kind} database ({database.display})")
    return database


class DatabaseSource(_Streaming):
    """The rows of a query, read `batch_size` at a time: `fetchmany` on SQLite (opened read-only), a
    server-side cursor on PostgreSQL (in a read-only transaction). Values are converted so rows serialise
    as JSON (`dbconn.plain_value`)."""

    def __init__(
        self,
        *,
        database: DatabaseURL,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        bound: tuple[Any, ...] | None = None,
    ) -> None:
        """`parameters` bind `:name` placeholders; `bound` (a query the compiler bound, already in the driver's
        placeholder style) binds `?` or `%s` by position."""
        self.database = database
        self.query = query
        self.parameters: Mapping[str, Any] | tuple[Any, ...] = (
            bound
            if bound is not None
            else {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()}
        )

    # -- key ranges (the `dask` engine's partitions of a database source) ----------------------------------

    def key_bounds(self, key: str, size: int) -> tuple[list[tuple[Any, int]], int] | None:
        """Where key ranges of about `size` rows end: each boundary key with the number of rows whose key is at
        most it (ties never straddle a boundary), and the rows in all; found by the database in one window
        query over the keys. None when the rows cannot be ranged by `key` (a row without it, no such column)."""
        inner = self._inner()
        column = _identifier(key)
        counted = f"SELECT count(*), count({column}) FROM ({inner}) AS sleipnir_q"
        ranked = (
            f"SELECT {column} AS k, row_number() OVER (ORDER BY {column}) AS n, count(*) OVER (ORDER BY {column}) AS c "
            f"FROM ({inner}) AS sleipnir_q WHERE {column} IS NOT NULL"
        )
        every = int(size)  # `n = n / every * every`: no `%`, which a bound PostgreSQL query reads as a placeholder
        bounds = f"SELECT k, c FROM ({ranked}) AS sleipnir_b WHERE n = n / {every} * {every} ORDER BY n"
        try:
            (rows, keyed), *_ = self._fetch(counted)
            if rows != keyed:
                return None
            found: list[tuple[Any, int]] = []
            for value, upto in self._fetch(bounds):
                if found and found[-1][0] == value:
                    found.pop()  # a key repeated past a boundary: its rows all go below the next one
                found.append((value, int(upto)))
        except (DatabaseError, sqlite3.Error, psycopg.Error):
            return None
        return [(value, upto) for value, upto in found if upto < rows], int(rows)

    def keyed(self, key: str, after: Any, upto: Any) -> DatabaseSource:
        """The rows whose `key` is above `after` and at most `upto` (None: no bound that side), in key order:
        a keyset page, which an index on the key makes cheap and which rows added meanwhile do not shift."""
        column = _identifier(key)
        conditions: list[str] = []
        values: list[Any] = []
        for operator, bound in ((">", after), ("<=", upto)):
            if bound is not None:
                conditions.append(f"{column} {operator} {self._placeholder(len(values))}")
                values.append(bound)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._over(f"SELECT * FROM ({self._inner()}) AS sleipnir_q{where} ORDER BY {column}", values)

    def keys(self, key: str) -> Iterator[str | None]:
        """The rows' keys as a reader takes them (`str` of the value; None for a row without one), in the query's
        order, read alone (one column of the query)."""
        column = self._over(f"SELECT {_identifier(key)} AS k FROM ({self._inner()}) AS sleipnir_q")
        try:
            for batch in column.batches(10_000):
                for row in batch:
                    value = plain_value(row["k"]) if isinstance(row, dict) else None
                    yield None if value is None else str(value)
        finally:
            column.close()

    def _over(self, query: str, values: list[Any] | None = None) -> DatabaseSource:
        """A source of `query`, written over this one's (`_inner`), with its parameters and `values` bound to
        the placeholders `_placeholder` gave."""
        if isinstance(self.parameters, tuple):
            return DatabaseSource(database=self.database, query=query, bound=(*self.parameters, *(values or ())))
        named = {f"sleipnir_bound_{i}": value for i, value in enumerate(values or ())}
        return DatabaseSource(database=self.database, query=query, parameters={**self.parameters, **named})

    def _inner(self) -> str:
        """The query as a subquery: its last statement terminator dropped, on lines of its own (a trailing comment)."""
        return "\n" + _TERMINATED.sub("", self.query.strip()) + "\n"

    def _placeholder(self, number: int) -> str:
        if isinstance(self.parameters, tuple):
            return "?" if self.database.kind == "sqlite" else "%s"
        return f":sleipnir_bound_{number}"

    def _fetch(self, query: str) -> list[tuple[Any, ...]]:
        """All rows of `query` (over this source's query, with its parameters)."""
        if self.database.kind == "sqlite":
            assert self.database.path is not None
            connection = connect_sqlite(self.database.path, read_only=True)
            try:
                return list(connection.execute(query, self.parameters).fetchall())
            finally:
                connection.close()
        text = query if isinstance(self.parameters, tuple) else postgresql_query(query)
        with connect_postgresql(self.database.url, read_only=True) as server:
            return list(server.execute(text.encode(), self.parameters).fetchall())

    def _batches(self, batch_size: int) -> Generator[list[Entry], None, None]:
        read = self._sqlite if self.database.kind == "sqlite" else self._postgresql
        try:
            yield from read(batch_size)
        except DatabaseError as exc:
            raise SourceError(str(exc)) from exc
        except (sqlite3.Error, psycopg.Error) as exc:
            message = mask_secrets(str(exc).strip(), self.database.url)
            raise SourceError(f"query failed on {self.database.display}: {message}") from exc

    def _sqlite(self, batch_size: int) -> Iterator[list[Entry]]:
        assert self.database.path is not None
        connection = connect_sqlite(self.database.path, read_only=True)
        try:
            cursor = connection.execute(self.query, self.parameters)
            if cursor.description is None:
                raise SourceError(f"the query on {self.database.display} returns no rows (is it a SELECT?)")
            names = [column[0] for column in cursor.description]
            while rows := cursor.fetchmany(batch_size):
                yield [{name: plain_value(value) for name, value in zip(names, row, strict=True)} for row in rows]
        finally:
            connection.close()

    def _postgresql(self, batch_size: int) -> Iterator[list[Entry]]:
        name = f"sleipnir_source_{uuid.uuid4().hex[:12]}"
        with (
            connect_postgresql(self.database.url, read_only=True) as connection,
            connection.cursor(name=name, row_factory=psycopg.rows.dict_row) as cursor,
        ):
            cursor.itersize = batch_size
            query = self.query if isinstance(self.parameters, tuple) else postgresql_query(self.query)
            cursor.execute(query, self.parameters)
            while rows := cursor.fetchmany(batch_size):
                yield [{key: plain_value(value) for key, value in row.items()} for row in rows]


_TERMINATED = re.compile(r";(?:\s|--[^\n]*|/\*.*?\*/)*$", re.DOTALL)
"""A statement's terminator and any comments after it."""


def _identifier(name: str) -> str:
    """`name` as a quoted SQL identifier (SQLite and PostgreSQL alike)."""
    return '"' + name.replace('"', '""') + '"'


# -- the factory ------------------------------------------------------------------------------------------

F = TypeVar("F")


def load_factory(group: str, name: str, builtins: Mapping[str, F], error: type[Exception], what: str) -> F:
    """The factory for `name`: a built-in, else the entry point of that name in `group`. Raises `error`
    naming the known kinds (and the closest one) for an unknown name, or when the plugin fails to load."""
    if name in builtins:
        return builtins[name]
    found = entry_points(group=group, name=name)
    for point in found:
        try:
            factory: F = point.load()
        except Exception as exc:
            raise error(f"the {what} plugin {name!r} ({point.value}) failed to load: {exc}") from exc
        return factory
    known = sorted(set(builtins) | {point.name for point in entry_points(group=group)})
    hint = suggestion_help(name, known)
    raise error(f"unknown {what} {name!r} (known: {', '.join(known)})" + (f"; {hint}" if hint else ""))


def file_source(node: ir.Source, *, context: IOContext) -> Source:
    path = node.options.get("path")
    if not isinstance(path, str) or not path:
        raise SourceError(f"file source {node.id}: no path")
    context.inside(path, SourceError)
    return FileSource(path=_under(context.root, path), format=_format(path, node.options.get("format")), shown=path)


def _format(path: str, given: object) -> str:
    try:
        return file_format(path, given)
    except ValueError as exc:
        raise SourceError(f"{path}: {exc}") from exc


def _under(root: str, path: str) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else Path(root, resolved)


def database_source(node: ir.Source, *, context: IOContext) -> Source:
    query = node.options.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SourceError(f"database source {node.id}: no query")
    database = database_of(node, context, SourceError)
    if "bound" in node.options:
        dialect = node.options.get("dialect")
        if dialect != database.kind:
            raise SourceError(
                f"database source {node.id}: the query was bound for {dialect}, but the connection is a "
                f"{database.kind} database ({database.display}); plan it again"
            )
        try:
            revealed = (reveal(value, context.environ) for value in node.options["bound"])
            bound = tuple(list(v) if isinstance(v, tuple) else v for v in revealed)
        except MissingSecret as exc:
            raise SourceError(f"database source {node.id}: {exc}") from exc
        return DatabaseSource(database=database, query=query, bound=bound)
    parameters = node.options.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise SourceError(f"database source {node.id}: parameters must be a mapping")
    return DatabaseSource(database=database, query=query, parameters=parameters)


def api_source(node: ir.Source, *, context: IOContext) -> Source:
    """The HTTP API source (`api.py`), imported when a job reads an API: httpx is not small."""
    from .api import api_source as make

    return make(node, context=context)


BUILTIN_SOURCES: dict[str, SourceFactory] = {
    "file": file_source,
    "database": database_source,
    "sqlite": database_source,
    "postgresql": database_source,
    "api": api_source,
}


def make_source(node: ir.Source, *, context: IOContext, input_path: str | None = None) -> Source:
    """The source for `node`. `input_path` (`--input FILE`) replaces the node's own source; it is a command-line
    path, so a relative one is relative to the current folder, and its format comes from its suffix. A node
    whose source is `run_input` needs it. Raises `SourceError`."""
    if input_path is not None:
        path = Path(os.path.abspath(Path(input_path).expanduser()))
        return FileSource(path=path, format=_format(input_path, None), shown=input_path)
    if node.source == "run_input":
        raise SourceError("this job has no input; pass --input FILE")
    factory = load_factory("sleipnir.sources", node.source, BUILTIN_SOURCES, SourceError, "source")
    return factory(node, context=context)

