"""The built-in sinks: files (jsonl, json, csv), stdout, databases (SQLite, PostgreSQL) and HTTP APIs (in
`api.py`), and `make_sink`, which builds the sink of a plan's `Sink` node.

Every row a sink is given carries the item key in `key_field`; keys are compared as text (`key_text`).

File sink. Batches are appended to a spool, `<dir>/.<name>.partial`, as JSON Lines, each batch flushed and
fsynced before `write` returns. The target is only written by `close(complete=True)`, as a whole: the rows
(per `mode`) go to `.<name>.tmp` in the target's folder, in the target's format, fsynced; the spool is renamed
to `.<name>.publishing` (the commit point); the temp file replaces the target (`os.replace`); the marker is
removed. `open` finishes a publish that a crash interrupted (the temp file still there means the replace had
not happened), so the target never holds half a run and an `append` is never applied twice. Within a spool
the last row of a key wins, so the target never holds a key twice from one run either.

- `replace`: the target becomes exactly the run's rows;
- `append`: the target's rows, then the run's;
- `upsert`: the target's rows, each replaced in place by the run's row of the same key, then the run's new keys.

`open(resume=True)` repairs a torn last line of the spool and returns its keys. With no spool (the last run
completed) a `replace` sink starts its spool as a copy of the target and returns those keys, so resuming a
finished run with nothing left to do publishes the same rows again, not an empty file; `append` and `upsert`
start empty (they keep the target's rows anyway). `open(resume=False)` always starts empty.

Database sink. The table is created if missing: the key column `TEXT PRIMARY KEY`, then a column per field
in first-seen order; later fields add columns. In SQLite the value columns have no declared type, so numbers
and booleans (as 0/1) stay numbers; in PostgreSQL they are `TEXT` (strings as they are, everything else as
JSON text). Nested values are JSON text in both. Each batch is one transaction of upserts on the key
(`INSERT ... ON CONFLICT (key) DO UPDATE`), so rewriting a row is harmless and a re-run never duplicates one.
An existing table is used as it is, typed columns included (values are bound and the server converts them); it
needs the key column with a unique constraint. SQLite databases are switched to WAL when a sink opens them, so
a source can stream from the same file while the sink commits: open the sink before reading the source.

- `upsert` and `append` (the same thing for a keyed table) write to the table directly; `open` returns no
  keys, whatever the resume, because the run ledger is the authority and rewriting is harmless.
- `replace` writes to a staging table `<table>__sleipnir_partial` and, at `close(complete=True)`, replaces the
  table's rows with the staged ones and drops the stage in one transaction: readers see the old rows or the
  new ones, never a mix. `open(resume=True)` keeps the stage and returns its keys; with no stage (the last run
  completed) it starts the stage as a copy of the table, as the file sink does.

API sink: see `api.py`.
"""

# Over 600 lines for now: the file and database sinks share the staging and publishing rules above, and each
# keeps its own recovery of an interrupted publish.

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import psycopg

from ...compiler import ir
from . import IOContext, Row, RowError, Sink, SinkError, SourceError
from .dbconn import (
    DatabaseError,
    DatabaseURL,
    connect_postgresql,
    connect_sqlite,
    json_text,
    mask_secrets,
    quote_identifier,
    quote_table,
)
from .sources import database_of, file_format, load_factory, read_rows

__all__ = [
    "BUILTIN_SINKS",
    "MODES",
    "DatabaseSink",
    "FileSink",
    "SinkFactory",
    "StdoutSink",
    "api_sink",
    "database_sink",
    "file_sink",
    "key_text",
    "make_sink",
    "stdout_sink",
]

MODES = ("replace", "append", "upsert")


class SinkFactory(Protocol):
    """What a `sleipnir.sinks` entry point names."""

    def __call__(self, node: ir.Sink, *, key_field: str, context: IOContext) -> Sink: ...


def key_text(value: Any) -> str:
    """An item key as sinks compare and return it: strings as they are, anything else as `str(value)`."""
    return value if type(value) is str else str(value)


# -- files ------------------------------------------------------------------------------------------------


class FileSink:
    """Rows spooled as JSON Lines and published atomically to a jsonl, json or csv file (see the module)."""

    local = True
    """Its writes are calls on local files, no round trip: a local run writes its batches from the event loop
    (`engine.writer`)."""

    def __init__(self, *, target: Path, format: str, mode: str, key_field: str, shown: str) -> None:
        self.target = target
        self.format = format
        self.mode = mode
        self.key_field = key_field
        self.shown = shown
        self.spool = target.with_name(f".{target.name}.partial")
        self.publishing = target.with_name(f".{target.name}.publishing")
        self.temp = target.with_name(f".{target.name}.tmp")
        self.published = target.with_name(f".{target.name}.published")
        """Marks a target that holds the spool's rows already (a stopped run published what it finished)."""
        self._handle: IO[bytes] | None = None
        self._spooled_keys: set[str] = set()
        self._repeated = False
        """A key was spooled twice (a killed run's item written again): publish through the merge, last wins."""

    def open(self, *, resume: bool) -> set[str]:
        if self.target.is_dir():  # found before any call is made, not when the run's rows are published
            raise SinkError(f"cannot write {self.shown}: it is a folder; give the output a file's path (such as {self.shown}/results.{self.format})")
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._recover()
            if resume and self.spool.exists():
                repair_torn_line(self.spool)
            elif resume and self.mode == "replace" and self.target.exists():
                self._seed()
            else:
                self.spool.write_bytes(b"")
                self.published.unlink(missing_ok=True)
            keys: set[str] = set()
            for key, _ in self._spooled():
                if key is not None:
                    # A key spooled twice already (a killed run wrote again a row its predecessor had spooled):
                    # the publish must merge, whatever this run writes.
                    self._repeated = self._repeated or key in keys
                    keys.add(key)
            self._spooled_keys = set(keys)
            self._handle = self.spool.open("ab")
        except OSError as exc:
            raise SinkError(f"cannot open {self.shown}: {exc.strerror or exc}") from exc
        return keys

    def partition_spools(self) -> list[Path]:
        """The spools the partitions of a `dask` run wrote (`use_partition_spool`), in partition order."""
        return sorted(self.spool.parent.glob(f"{self.spool.name}.*"))

    def use_partition_spool(self, number: int) -> None:
        """Spool to a file of partition `number`'s own (a worker of the `dask` engine); the driver `absorb`s it."""
        self.spool = self.spool.with_name(f"{self.spool.name}.{number:06d}")

    def absorb(self, parts: list[Path], written: Mapping[int, int] | None = None) -> None:
        """Append the partitions' spools to this one, in order, durably, then remove them. A key may now be
        spooled twice (a partition redone after a kill, or absorbed again after a crash here): the last wins.
        `written` is how many rows each partition's (last) run wrote, by number: when this spool was empty and
        each partition's spool has exactly that many lines, no earlier run of a partition left a row, each key
        is there once, and publishing stays one rename."""
        if self._handle is None:
            raise SinkError(f"{self.shown}: absorb before open")
        numbers = {int(p.suffix[1:]) for p in parts if p.suffix[1:].isdigit()}
        missing = sorted(n for n, count in (written or {}).items() if count and n not in numbers)
        if missing:
            # Rows a partition wrote where the driver does not find them (a worker on a machine of its own): the
            # run fails rather than publish without them.
            shown = ", ".join(str(n) for n in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise SinkError(
                f"cannot gather the partitions of {self.shown}: partition {shown} wrote rows to a spool beside "
                f"{self.spool.name} that is not in {self.spool.parent}; on a cluster, a file sink's folder must be "
                "one that every worker and the driver share"
            )
        try:
            once = written is not None and self._handle.tell() == 0
            for part in parts:
                repair_torn_line(part)
                lines = 0
                with part.open("rb") as spooled:
                    while chunk := spooled.read(1 << 20):
                        lines += chunk.count(b"\n")
                        self._handle.write(chunk)
                number = part.suffix.lstrip(".")
                once = once and written is not None and number.isdigit() and written.get(int(number)) == lines
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._repeated = self._repeated or (bool(parts) and not once)
            for part in parts:
                part.unlink()
        except OSError as exc:
            raise SinkError(f"cannot gather the partitions of {self.shown}: {exc.strerror or exc}") from exc

    def _seed(self) -> None:
        """Start the spool as a copy of the target, atomically, so that resuming a `replace` run that had
        already completed keeps what it published."""
        _write_file(self.temp, "jsonl", self._existing)
        os.replace(self.temp, self.spool)

    def _recover(self) -> None:
        """Finish a publish a crash interrupted; drop a temp file a crash left before the commit point."""
        if self.publishing.exists():
            if self.temp.exists():
                os.replace(self.temp, self.target)
                _sync_folder(self.target.parent)
            self.publishing.unlink()
        elif self.temp.exists():
            self.temp.unlink()

    def write(self, rows: list[Row]) -> None:
        if self._handle is None:
            raise SinkError(f"{self.shown}: write before open")
        if not rows:
            return
        try:
            data = "".join(json_text(row) + "\n" for row in rows).encode()
        except (TypeError, ValueError) as exc:
            raise SinkError(f"{self.shown}: a row cannot be written as JSON: {exc}") from exc
        if self._spooled_keys and not self._repeated:
            self._repeated = any(self._key(row) in self._spooled_keys for row in rows)
        start = self._handle.tell()
        try:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            # A batch that failed half-way (a full disk) must not leave a torn line for the next one to follow.
            with contextlib.suppress(OSError):
                self._handle.truncate(start)
            raise SinkError(f"cannot write {self.spool}: {exc.strerror or exc}") from exc

    def close(self, *, complete: bool) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.close()
            if complete:
                self._publish()
        except OSError as exc:
            raise SinkError(f"cannot publish {self.shown}: {exc.strerror or exc}") from exc

    def publish_finished(self) -> None:
        """After a stopped or timed-out run: put the rows it finished into the target now, merged by key with
        what the target holds (atomically: a temp file, then a rename). The spool stays, so that the resumed run
        goes on and its publish gives the target the mode's result, with no row twice."""
        if not self.spool.exists():
            return
        try:
            last = {key: offset for key, offset in self._spooled() if key is not None}
            if not last:
                return
            _write_file(self.temp, self.format, lambda: self._upserted(last))
            os.replace(self.temp, self.target)
            self.published.touch()
            _sync_folder(self.target.parent)
        except OSError as exc:
            raise SinkError(f"cannot publish {self.shown}: {exc.strerror or exc}") from exc

    def _publish(self) -> None:
        if self.published.exists() and self.mode == "append":
            # A stopped run already put some of this run's rows in the target: append the rest, once.
            self._merge(self._upserted)
            self.published.unlink()
            return
        self.published.unlink(missing_ok=True)
        if self.format == "jsonl" and not self._repeated and (self.mode == "replace" or not self.target.exists()):
            # The spool is already the target, line for line and fsynced: the runtime writes each key at most
            # once a run (runtime/io/__init__.py), so nothing needs reading again. One rename publishes it. With
            # no target yet, `append` and `upsert` make the run's rows as they are too (a first run, or a run
            # writing apart under `${run.id}`): reading, parsing and writing them again took 50 to 60 ms of a
            # 5,000-row run's end, 2% of its time at 50 ms latency.
            os.replace(self.spool, self.target)
            _sync_folder(self.target.parent)
            return
        self._merge({"replace": self._replaced, "append": self._appended, "upsert": self._upserted}[self.mode])

    def _merge(self, rows: Callable[[dict[str, int]], Iterator[Row]]) -> None:
        last = {key: offset for key, offset in self._spooled() if key is not None}
        _write_file(self.temp, self.format, lambda: rows(last))
        os.replace(self.spool, self.publishing)
        _sync_folder(self.target.parent)
        os.replace(self.temp, self.target)
        _sync_folder(self.target.parent)
        self.publishing.unlink()

    def _spooled(self) -> Iterator[tuple[str | None, int]]:
        """(key, offset) of each spooled row, in order; the key is None for a row without one."""
        with self.spool.open("rb") as spool:
            offset = 0
            for number, line in enumerate(spool, start=1):
                yield self._key(self._parse(line, number)), offset
                offset += len(line)

    def _key(self, row: Row) -> str | None:
        return key_text(row[self.key_field]) if self.key_field in row else None

    def _parse(self, line: bytes, number: int) -> Row:
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SinkError(f"{self.spool}:{number}: the spool is damaged ({exc}); start over with --fresh") from exc
        if type(row) is not dict:
            raise SinkError(f"{self.spool}:{number}: the spool is damaged (not an object); start over with --fresh")
        return row

    def _run_rows(self, last: dict[str, int], skip: set[str] | frozenset[str] = frozenset()) -> Iterator[Row]:
        """The spooled rows, the last of each key, in spool order; keys in `skip` left out."""
        with self.spool.open("rb") as spool:
            offset = 0
            for number, line in enumerate(spool, start=1):
                row = self._parse(line, number)
                key = self._key(row)
                if key is None or (last[key] == offset and key not in skip):
                    yield row
                offset += len(line)

    def _existing(self) -> Iterator[Row]:
        if not self.target.exists():
            return
        try:
            for entry in read_rows(self.target, self.format, shown=self.shown):
                if isinstance(entry, RowError):
                    raise SinkError(f"cannot {self.mode} into {self.shown}: {entry.message}")
                yield entry
        except SourceError as exc:
            raise SinkError(f"cannot {self.mode} into {self.shown}: {exc}") from exc

    def _replaced(self, last: dict[str, int]) -> Iterator[Row]:
        return self._run_rows(last)

    def _appended(self, last: dict[str, int]) -> Iterator[Row]:
        yield from self._existing()
        yield from self._run_rows(last)

    def _upserted(self, last: dict[str, int]) -> Iterator[Row]:
        replaced: set[str] = set()
        with self.spool.open("rb") as spool:
            for row in self._existing():
                key = self._key(row)
                if key is not None and key in last:
                    spool.seek(last[key])
                    yield self._parse(spool.readline(), 0)
                    replaced.add(key)
                else:
                    yield row
        yield from self._run_rows(last, skip=replaced)


def repair_torn_line(path: Path) -> None:
    """Cut a last line that has no newline: a batch the crash interrupted, whose `write` never returned."""
    with path.open("r+b") as spool:
        end = spool.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - 65536)
            spool.seek(start)
            newline = spool.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        if keep != end:
            spool.truncate(keep)
            spool.flush()
            os.fsync(spool.fileno())


def _write_file(path: Path, fmt: str, rows: Callable[[], Iterator[Row]]) -> None:
    """Write `rows()` to `path` in `fmt`, fsynced. csv reads the rows twice: the header is the union of the
    fields in first-seen order, and nested values (and non-strings) are JSON text."""
    with path.open("w", encoding="utf-8", newline="") as out:
        if fmt == "jsonl":
            for row in rows():
                out.write(json_text(row) + "\n")
        elif fmt == "json":
            out.write("[")
            for count, row in enumerate(rows()):
                out.write(("\n" if count == 0 else ",\n") + json_text(row))
            out.write("\n]\n")
        else:
            header = list(dict.fromkeys(field for row in rows() for field in row))
            writer = csv.writer(out)
            writer.writerow(header)
            for row in rows():
                writer.writerow([_cell(row.get(field)) for field in header])
        out.flush()
        os.fsync(out.fileno())


def _cell(value: Any) -> str:
    return value if type(value) is str else "" if value is None else json_text(value)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class StdoutSink:
    """Rows as JSON Lines on standard output, flushed per batch. Nothing to resume: `open` returns no keys."""

    def open(self, *, resume: bool) -> set[str]:
        return set()

    def write(self, rows: list[Row]) -> None:
        if rows:
            sys.stdout.write("".join(json_text(row) + "\n" for row in rows))
            sys.stdout.flush()

    def close(self, *, complete: bool) -> None:
        sys.stdout.flush()


# -- databases --------------------------------------------------------------------------------------------


class DatabaseSink:
    """Rows upserted into a SQLite or PostgreSQL table by key (see the module for modes and types)."""

    def __init__(self, *, database: DatabaseURL, table: str, mode: str, key_field: str) -> None:
        try:
            self.table = quote_table(table)
            self.stage = quote_table(_stage_name(table))
            self.key = quote_identifier(key_field)
        except DatabaseError as exc:
            raise SinkError(str(exc)) from exc
        self.database = database
        self.table_name = table
        self.mode = mode
        self.key_field = key_field
        self.sqlite = database.kind == "sqlite"
        self.into = self.stage if mode == "replace" else self.table
        self._connection: Any = None
        self._columns: dict[str, list[str]] = {}
        """Known columns per quoted table (the key first); cleared when a transaction fails."""

    def open(self, *, resume: bool) -> set[str]:
        try:
            return self._open(resume)
        except BaseException:
            connection, self._connection = self._connection, None  # a sink that did not open holds nothing
            if connection is not None:
                connection.close()
            raise

    def _open(self, resume: bool) -> set[str]:
        with self._errors("open"):
            if self.sqlite:
                assert self.database.path is not None
                self._connection = connect_sqlite(self.database.path)
            else:
                self._connection = connect_postgresql(self.database.url, autocommit=True)
            if self.mode != "replace":
                # A table already there must take the upserts: found before any call is made, not at the first write.
                if self._read_columns(self.table):
                    self._ensure(self.table, [])  # refuses a table without the key column; keeps its columns
                    if not self._unique_key(self.table):
                        raise SinkError(
                            f"table {self.table_name}: column {self.key_field!r} is neither its primary key nor unique, "
                            f"so rows cannot be upserted by it; add a unique index on it, or let Sleipnir create the table"
                        )
                return set()
            with self._transaction():
                if not (resume and self._read_columns(self.stage)):
                    self._execute(f"DROP TABLE IF EXISTS {self.stage}")
                    self._ensure(self.stage, [])
                    if resume and self._read_columns(self.table):
                        self._seed_stage()
                return {key_text(key) for (key,) in self._execute(f"SELECT {self.key} FROM {self.stage}")}
        return set()

    def prepare(self) -> None:
        """Create the table written to now (the `dask` engine's driver, before its workers write at once)."""
        with self._errors("create"), self._transaction():
            self._ensure(self.into, [])

    def _seed_stage(self) -> None:
        """Start the stage as a copy of the table, so that resuming a `replace` run that had already completed
        keeps what it published."""
        present = self._ensure(self.table, [])
        self._ensure(self.stage, present[1:])
        columns = ", ".join(quote_identifier(c) for c in present)
        self._execute(f"INSERT INTO {self.stage} ({columns}) SELECT {columns} FROM {self.table}")

    def write(self, rows: list[Row]) -> None:
        if self._connection is None:
            raise SinkError(f"table {self.table_name}: write before open")
        if not rows:
            return
        if any(self.key_field not in row for row in rows):
            raise SinkError(f"table {self.table_name}: a row has no {self.key_field!r} to key it by")
        fields = list(dict.fromkeys(f for row in rows for f in row if f != self.key_field))
        with self._errors("write to"), self._transaction():
            columns = self._ensure(self.into, fields)[1:]
            value = self._value
            self._executemany(
                self._upsert(self.into, columns),
                [(key_text(row[self.key_field]), *(value(row.get(c)) for c in columns)) for row in rows],
            )

    def close(self, *, complete: bool) -> None:
        if self._connection is None:
            return
        try:
            if complete:
                with self._errors("publish"), self._transaction():
                    if self.mode == "replace":
                        self._publish_stage()
                    else:
                        self._ensure(self.table, [])
        finally:
            connection, self._connection = self._connection, None
            connection.close()

    def _publish_stage(self) -> None:
        staged = self._read_columns(self.stage) or [self.key_field]
        columns = ", ".join(quote_identifier(c) for c in staged)
        self._ensure(self.table, [c for c in staged if c != self.key_field])
        self._execute(f"DELETE FROM {self.table}")
        self._execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {self.stage}")
        self._execute(f"DROP TABLE {self.stage}")
        self._columns.pop(self.stage, None)

    def _ensure(self, table: str, fields: list[str]) -> list[str]:
        """The columns of `table` (the key first), creating the table or adding columns for new `fields`."""
        columns = self._columns.get(table)
        if columns is None:
            columns = self._read_columns(table)
            if not columns:
                wanted = [self.key_field, *fields]
                self._check_names(wanted)
                value_type = "" if self.sqlite else " TEXT"
                definitions = [f"{self.key} TEXT PRIMARY KEY"] + [f"{quote_identifier(f)}{value_type}" for f in fields]
                self._execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(definitions)})")
                columns = wanted
            elif self.key_field not in columns:
                raise SinkError(f"table {self.table_name} has no column {self.key_field!r} for the item key")
            else:
                columns = [self.key_field, *(c for c in columns if c != self.key_field)]
            self._columns[table] = columns
        fold = str.lower if self.sqlite else str
        known = {fold(c) for c in columns}
        added: list[str] = []
        for field in fields:
            if fold(field) not in known:
                known.add(fold(field))
                added.append(field)
        if added:
            self._check_names(added)
            # PostgreSQL: IF NOT EXISTS, since several writers (the `dask` engine's workers) may add one at once.
            added_column = "ADD COLUMN" if self.sqlite else "ADD COLUMN IF NOT EXISTS"
            for field in added:
                self._execute(f"ALTER TABLE {table} {added_column} {quote_identifier(field)}{'' if self.sqlite else ' TEXT'}")
            columns.extend(added)
        return columns

    def _check_names(self, names: list[str]) -> None:
        for name in names:
            quote_identifier(name)
            if not self.sqlite and len(name.encode()) > 63:
                raise SinkError(f"field {name[:20]!r}... is longer than PostgreSQL's 63-byte column names")

    def _read_columns(self, table: str) -> list[str]:
        schema, _, name = _unquote(table).rpartition(".")
        if self.sqlite:
            query = "SELECT name FROM pragma_table_info(?, ?)"
            return [row[0] for row in self._execute(query, (name, schema or "main"))]
        query = (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = COALESCE(%s, current_schema())"
            " AND table_name = %s ORDER BY ordinal_position"
        )
        return [row[0] for row in self._execute(query, (schema or None, name))]

    def _unique_key(self, table: str) -> bool:
        """Whether the key column alone is `table`'s primary key or has a unique index of its own (no condition),
        which `ON CONFLICT (key)` needs."""
        schema, _, name = _unquote(table).rpartition(".")
        if self.sqlite:
            where = schema or "main"
            primary = [row[0] for row in self._execute("SELECT name FROM pragma_table_info(?, ?) WHERE pk > 0", (name, where))]
            if primary == [self.key_field]:
                return True
            for index, unique, partial in self._execute('SELECT name, "unique", partial FROM pragma_index_list(?, ?)', (name, where)):
                if unique and not partial:
                    columns = [row[0] for row in self._execute("SELECT name FROM pragma_index_info(?, ?)", (index, where))]
                    if columns == [self.key_field]:
                        return True
            return False
        query = (
            "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL "
            "AND a.attname = %s"
        )
        return bool(self._execute(query, (table, self.key_field)))

    def _upsert(self, table: str, columns: list[str]) -> str:
        names = [self.key, *map(quote_identifier, columns)]
        if not self.sqlite:
            # psycopg reads `%` in the text as a placeholder, even inside a quoted column name.
            names = [name.replace("%", "%%") for name in names]
        mark = "?" if self.sqlite else "%s"
        updates = ", ".join(f"{n} = excluded.{n}" for n in names[1:])
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))}) "
            f"ON CONFLICT ({self.key}) {action}"
        )

    def _value(self, value: Any) -> Any:
        kind = type(value)
        if value is None or kind is str:
            return value
        if self.sqlite and kind in (int, float, bool):
            return value
        return json_text(value)

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            return list(self._connection.execute(sql, parameters).fetchall())
        with self._connection.cursor() as cursor:
            cursor.execute(sql.encode(), parameters or None)
            return list(cursor.fetchall()) if cursor.description else []

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.sqlite:
            self._connection.executemany(sql, rows)
        else:
            with self._connection.cursor() as cursor:
                cursor.executemany(sql.encode(), rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            if self.sqlite:
                self._connection.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    if self._connection.in_transaction:
                        self._connection.execute("ROLLBACK")
                    raise
                self._connection.execute("COMMIT")
            else:
                with self._connection.transaction():
                    yield
        except BaseException:
            self._columns.clear()
            raise

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except DatabaseError as exc:
            raise SinkError(str(exc)) from exc
        except (sqlite3.Error, psycopg.Error) as exc:
            message = mask_secrets(str(exc).strip(), self.database.url)
            raise SinkError(f"cannot {doing} table {self.table_name} on {self.database.display}: {message}") from exc


def _stage_name(table: str) -> str:
    schema, dot, name = table.rpartition(".")
    staged = f"{name}__sleipnir_partial"
    if len(staged) > 63:
        staged = f"{name[:36]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}__sleipnir_partial"
    return f"{schema}{dot}{staged}"


def _unquote(table: str) -> str:
    """`"schema"."name"` back to `schema.name` (quote_table only quotes checked identifiers)."""
    return table.replace('"', "")


# -- the factory ------------------------------------------------------------------------------------------


def file_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    path = node.options.get("path")
    if not isinstance(path, str) or not path:
        raise SinkError(f"file output {node.id}: no path")
    try:
        fmt = file_format(path, node.options.get("format"))
    except ValueError as exc:
        raise SinkError(f"{path}: {exc}") from exc
    path = context.with_run_values(path)
    context.inside(path, SinkError)
    target = Path(path).expanduser()
    target = target if target.is_absolute() else Path(context.root, target)
    return FileSink(target=target, format=fmt, mode=_mode(node), key_field=key_field, shown=path)


def _mode(node: ir.Sink) -> str:
    if node.mode not in MODES:
        raise SinkError(f"output {node.id}: unknown mode {node.mode!r} (use {', '.join(MODES)})")
    return node.mode


def database_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    table = node.options.get("table")
    if not isinstance(table, str) or not table:
        raise SinkError(f"database output {node.id}: no table")
    database = database_of(node, context, SinkError)
    return DatabaseSink(database=database, table=table, mode=_mode(node), key_field=key_field)


def api_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    """The HTTP API sink (`api.py`), imported when a job writes to an API: httpx is not small."""
    from .api import api_sink as make

    return make(node, key_field=key_field, context=context)


def stdout_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    return StdoutSink()


BUILTIN_SINKS: dict[str, SinkFactory] = {
    "file": file_sink,
    "stdout": stdout_sink,
    "database": database_sink,
    "sqlite": database_sink,
    "postgresql": database_sink,
    "api": api_sink,
}


def make_sink(node: ir.Sink, *, key_field: str, context: IOContext) -> Sink:
    """The sink for `node`, keyed by `key_field`: a built-in by `node.destination`, else the entry point of that
    name in `sleipnir.sinks`. Relative paths are under `context.root`. Raises `SinkError`."""
    factory = load_factory("sleipnir.sinks", node.destination, BUILTIN_SINKS, SinkError, "sink")
    return factory(node, key_field=key_field, context=context)
