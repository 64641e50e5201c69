"""The run ledger: what happened to every item of every job, so a run resumes where it stopped and a rerun
redoes what changed.

- Items are keyed by (scope, item key): the scope is the job (and the `--input` file, and serve's fire time).
  Each item's record keeps the fingerprint of the work that made it (its row and the calls it went through),
  so a rerun redoes the items whose fingerprint differs. A batch is recorded only after its sink wrote it.
- Answers are recorded as they arrive, each under (scope, item key, call) with the fingerprint of the request
  that got it (`record_answers`, grouped by the run into few transactions): a run that was killed re-calls only
  the calls that were in flight, and a rerun re-calls only the prompts whose requests changed.
- The work of each call (`work`, `set_work`) is kept per scope, so a rerun can name the prompts that changed.
- Runs are recorded too, for `sleipnir runs`; `lock` keeps two runs of one scope apart. Each run's items are
  kept by run (`sleipnir_results`: input, output or error), for `sleipnir runs RUN_ID` and `sleipnir view`
  (`history.py` reads them), so two runs of one job can be compared item by item.

Raises `dbconn.DatabaseError` (its message safe to print) when the store cannot be opened. The store is SQLite
under `.sleipnir/` by default (WAL, synchronous commits) and PostgreSQL when `sleipnir.yaml`
sets `state:` to a `postgresql://` URL. Calls are synchronous: the runtime makes them from a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import operator
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ...compiler.ir.common import mask_passwords
from ..io.dbconn import any_float, connect_postgresql, connect_sqlite, fast_json, parse_database_url

DONE = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
FINAL = (DONE, SKIPPED)
"""Outcomes a later run does not redo (unless `--fresh`); a failure is redone by `--retry-failed` or a rerun."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sleipnir_runs (
        run_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL, job TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION, status TEXT NOT NULL, summary TEXT)""",
    """CREATE TABLE IF NOT EXISTS sleipnir_items (
        plan_id TEXT NOT NULL, item_key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        error TEXT, output TEXT, run_id TEXT, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (plan_id, item_key))""",
    "CREATE INDEX IF NOT EXISTS sleipnir_runs_job ON sleipnir_runs (job, started_at)",
    """CREATE TABLE IF NOT EXISTS sleipnir_answers (
        plan_id TEXT NOT NULL, item_key TEXT NOT NULL, call_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
        output TEXT NOT NULL, recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (plan_id, item_key, call_id))""",
    """CREATE TABLE IF NOT EXISTS sleipnir_locks (
        plan_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, taken_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sleipnir_work (
        plan_id TEXT NOT NULL, call_id TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (plan_id, call_id))""",
    """CREATE TABLE IF NOT EXISTS sleipnir_results (
        run_id TEXT NOT NULL, item_key TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, error TEXT,
        input TEXT, output TEXT, recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, item_key))""",
)
_ADDED_COLUMNS = (("sleipnir_items", "fingerprint", "TEXT"),)
"""Columns added since the first release, added to an older store when it is opened."""
_BATCH = 500
"""Keys a lookup asks for at once (SQLite allows 999 bound values)."""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """What happened to one item in a run. Not frozen, as `Answer` and `ChatRequest`: one is made for every item,
    and a frozen dataclass's `__init__` (`object.__setattr__` for each field) costs three times a plain one's."""

    key: str
    status: str
    attempts: int = 1
    error: str | None = None
    output: Any = None
    """Kept only for items a later `reduce` or `fan_in` needs after a resume."""
    fingerprint: str | None = None
    """The work that made the outcome (see `Ledger`): a rerun redoes the item when it differs."""
    input: Any = None
    """The item's input row, kept with the run's results."""
    result: Any = None
    """What the item's calls made (call name -> output), kept with the run's results."""


@dataclass(slots=True, kw_only=True)
class Answer:
    """One call's validated answer for one item, and the fingerprint of the request that got it."""

    key: str
    call: str
    fingerprint: str
    output: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    run_id: str
    plan_id: str
    job: str
    started_at: float
    finished_at: float | None
    status: str
    summary: dict[str, Any]


class Ledger:
    """The state store. Thread-safe: one connection, guarded by a lock (on PostgreSQL, answers have one more)."""

    def __init__(self, url: str, root: str = ".") -> None:
        self.url = url
        self._lock = threading.Lock()
        # Connections are made as the sources and sinks make them: one reading of a URL, passwords masked.
        database = parse_database_url(url, root=root)
        self._postgres = database.kind == "postgresql"
        if self._postgres:
            self._pg = connect_postgresql(database.url)
            self._mark = "%s"
        else:
            assert database.path is not None
            self._sqlite = connect_sqlite(database.path)
            # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose the last commit),
            # and an item whose record is lost is done again on resume, its row replaced by key.
            self._sqlite.execute("PRAGMA synchronous=NORMAL")
            self._sqlite.execute("PRAGMA busy_timeout=10000")
            self._mark = "?"
        self._root = root
        self._database = database
        self._locks: list[str] = []
        """Scopes this ledger holds the SQLite run lock of."""
        self._answers_pg: Any = None
        """PostgreSQL: the connection answers are recorded through (`record_answers`), made when first needed."""
        self._answering = threading.Lock()
        with self._transaction() as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement)
            for table, column, kind in _ADDED_COLUMNS:
                self._add_column(cursor, table, column, kind)

    def _add_column(self, cursor: Any, table: str, column: str, kind: str) -> None:
        if self._postgres:
            # Only when it is missing: `ALTER TABLE` takes the table's exclusive lock even when the column is there,
            # and every run (every partition of a `dask` run) opens the store, while others write to it.
            cursor.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
                [table, column],
            )
            if cursor.fetchone() is None:
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
            return
        cursor.execute(f"PRAGMA table_info({table})")
        if column not in {str(row[1]) for row in cursor.fetchall()}:
            cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    # -- plumbing -----------------------------------------------------------------------------------------

    @property
    def postgres(self) -> bool:
        """Whether the store is PostgreSQL (else SQLite)."""
        return self._postgres

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def _sql(self, text: str) -> str:
        return text.replace("?", self._mark) if self._postgres else text

    def close(self) -> None:
        if self._locks:
            with contextlib.suppress(Exception), self._transaction() as cursor:  # a dead holder is taken over anyway
                for scope in self._locks:
                    cursor.execute("DELETE FROM sleipnir_locks WHERE plan_id = ? AND pid = ?", [scope, os.getpid()])
            self._locks = []
        with self._answering:
            if self._answers_pg is not None:
                self._answers_pg.close()
        with self._lock:
            (self._pg if self._postgres else self._sqlite).close()

    def lock(self, scope: str) -> bool:
        """Take the scope's run lock until `close` (False when another run holds it). PostgreSQL: a session
        advisory lock, let go when the connection ends. SQLite: a row naming this process, taken over when the
        process that wrote it is gone (a run killed however it was killed)."""
        if self._postgres:
            digest = hashlib.sha256(scope.encode()).digest()
            with self._transaction() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])
                row = cursor.fetchone()
            return bool(row and row[0])
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as cursor:
            cursor.execute("SELECT host, pid FROM sleipnir_locks WHERE plan_id = ?", [scope])
            holder = cursor.fetchone()
            if holder is not None and process_alive(str(holder[0]), int(holder[1]), host):
                return False
            cursor.execute(
                "INSERT INTO sleipnir_locks (plan_id, host, pid, taken_at) VALUES (?, ?, ?, ?) ON CONFLICT (plan_id) "
                "DO UPDATE SET host = excluded.host, pid = excluded.pid, taken_at = excluded.taken_at",
                [scope, host, pid, time.time()],
            )
        self._locks.append(scope)
        return True

    # -- items --------------------------------------------------------------------------------------------

    def statuses(self, plan_id: str, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """The recorded (status, fingerprint) of each of `keys` that has a record."""
        found: dict[str, tuple[str, str | None]] = {}
        for key, status, fingerprint in self._by_keys("item_key, status, fingerprint", "sleipnir_items", plan_id, keys):
            found[str(key)] = (str(status), None if fingerprint is None else str(fingerprint))
        return found

    def _by_keys(self, columns: str, table: str, plan_id: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with self._transaction() as cursor:
            for start in range(0, len(keys), _BATCH):
                chunk = list(keys[start : start + _BATCH])
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    self._sql(f"SELECT {columns} FROM {table} WHERE plan_id = ? AND item_key IN ({marks})"),
                    [plan_id, *chunk],
                )
                rows.extend(cursor.fetchall())
        return rows

    def record(self, plan_id: str, run_id: str, outcomes: Iterable[Outcome]) -> None:
        """Record outcomes in one transaction (an upsert: the newest outcome of an item wins)."""
        now = time.time()
        outcomes = list(outcomes)
        rows = [
            (plan_id, o.key, o.status, o.attempts, None if o.error is None else mask_passwords(o.error),
             None if o.output is None else _output_json(o.output), run_id, now, o.fingerprint)
            for o in outcomes
        ]
        if not rows:
            return
        results = [
            (run_id, o.key, o.status, o.attempts, row[4], _json(o.input), _made_json(o.result), now)
            for o, row in zip(outcomes, rows, strict=True)
        ]
        if self._postgres:
            with self._transaction() as cursor:
                cursor.execute(*_ITEMS.unnest(rows))
                cursor.execute(*_RESULTS.unnest(results))
            return
        with self._transaction() as cursor:
            for statement in (*_ITEMS.statements(rows), *_RESULTS.statements(results)):
                cursor.execute(*statement)

    def has_items(self, plan_id: str) -> bool:
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT 1 FROM sleipnir_items WHERE plan_id = ? LIMIT 1"), [plan_id])
            return cursor.fetchone() is not None

    def counts(self, plan_id: str) -> dict[str, int]:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("SELECT status, COUNT(*) FROM sleipnir_items WHERE plan_id = ? GROUP BY status"), [plan_id]
            )
            return {str(s): int(n) for s, n in cursor.fetchall()}

    def outputs(self, plan_id: str) -> Iterator[tuple[str, Any]]:
        """(key, output) of the succeeded items that kept their output, in key order."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT item_key, output FROM sleipnir_items WHERE plan_id = ? AND status = ? "
                    "AND output IS NOT NULL ORDER BY item_key"
                ),
                [plan_id, DONE],
            )
            rows = cursor.fetchall()
        for key, output in rows:
            yield str(key), json.loads(output)

    def reset(self, plan_id: str) -> None:
        """Forget every item and answer of `plan_id` (`--fresh`)."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM sleipnir_items WHERE plan_id = ?"), [plan_id])
            cursor.execute(self._sql("DELETE FROM sleipnir_answers WHERE plan_id = ?"), [plan_id])

    # -- answers and work ---------------------------------------------------------------------------------

    def record_answers(self, plan_id: str, answers: Sequence[Answer], *, rows: int = 16) -> None:
        """Record answers at once (the newest answer of a call wins).

        In SQLite a group of `rows` answers (the answer writer's group size) is one statement of that many rows,
        which SQLite makes its own transaction; other sizes are statements of the sizes `_Upsert` uses, in one
        transaction. On PostgreSQL they go through a connection of their own, in one statement (one round trip),
        whose commit does not wait for the server's disk (`synchronous_commit` off): it is durable once the server
        has it, so a killed run loses none, and only a crash of the database server itself can lose the answers of
        its last moments (the server writes them out within `wal_writer_delay`), which a resume calls again; an
        item's outcome, committed after its answers and synchronously, flushes them. Each wait for the server
        costs far more than the write in a busy process: the thread then waits for the interpreter lock (a
        20-answer group with another thread busy, measured: 8-10 ms with a synchronous commit, 0.5 ms without),
        and a `dask` worker's calls wait for the commits (`job.py`)."""
        if not answers:
            return
        now = time.time()
        table = [(plan_id, a.key, a.call, a.fingerprint, answer_json(a.output), now) for a in answers]
        if self._postgres:
            with self._answering:
                if self._answers_pg is None:
                    self._answers_pg = connect_postgresql(self._database.url, autocommit=True)
                    self._answers_pg.execute("SET synchronous_commit TO off")
                self._answers_pg.execute(*_ANSWERS.unnest(table))
            return
        statements = _ANSWERS.statements(table, first=rows)
        if len(statements) == 1:  # one statement is one transaction
            with self._lock:
                self._sqlite.execute(*statements[0])
            return
        with self._transaction() as cursor:
            for statement in statements:
                cursor.execute(*statement)

    def answers(self, plan_id: str, keys: Sequence[str]) -> dict[str, dict[str, tuple[str, Any]]]:
        """The recorded answers of `keys`: item key -> call id -> (request fingerprint, output)."""
        found: dict[str, dict[str, tuple[str, Any]]] = {}
        for key, call, fingerprint, output in self._by_keys(
            "item_key, call_id, fingerprint, output", "sleipnir_answers", plan_id, keys
        ):
            found.setdefault(str(key), {})[str(call)] = (str(fingerprint), json.loads(output))
        return found

    def has_answers(self, plan_id: str) -> bool:
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT 1 FROM sleipnir_answers WHERE plan_id = ? LIMIT 1"), [plan_id])
            return cursor.fetchone() is not None

    def work(self, plan_id: str) -> dict[str, str]:
        """The fingerprint of each call's work when the scope last ran: call id -> fingerprint."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT call_id, fingerprint FROM sleipnir_work WHERE plan_id = ?"), [plan_id])
            return {str(c): str(f) for c, f in cursor.fetchall()}

    def set_work(self, plan_id: str, work: Mapping[str, str]) -> None:
        with self._transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM sleipnir_work WHERE plan_id = ?"), [plan_id])
            cursor.executemany(
                self._sql("INSERT INTO sleipnir_work (plan_id, call_id, fingerprint) VALUES (?, ?, ?)"),
                [(plan_id, call, fingerprint) for call, fingerprint in sorted(work.items())],
            )

    # -- runs ---------------------------------------------------------------------------------------------

    def start_run(self, run_id: str, plan_id: str, job: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("INSERT INTO sleipnir_runs (run_id, plan_id, job, started_at, status) VALUES (?, ?, ?, ?, ?)"),
                [run_id, plan_id, job, time.time(), "running"],
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("UPDATE sleipnir_runs SET finished_at = ?, status = ?, summary = ? WHERE run_id = ?"),
                [time.time(), status, mask_passwords(json.dumps(summary, default=str)), run_id],
            )

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest runs, of one job or of all."""
        where, args = ("WHERE job = ?", [job]) if job else ("", [])
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT run_id, plan_id, job, started_at, finished_at, status, summary FROM sleipnir_runs "
                    f"{where} ORDER BY started_at DESC LIMIT ?"
                ),
                [*args, limit],
            )
            rows = cursor.fetchall()
        return [run_record(r) for r in rows]


@dataclass(frozen=True)
class _Upsert:
    """An upsert into `table` of rows of `columns` (a row's values in that order), replacing by `key`.

    SQLite gets rows in statements of several rows each (`statements`): the largest of `ROWS` (or of the
    caller's `first`) that fit, then smaller ones, so a batch of 100 is 4 statements. Each `sqlite3_step` lets
    go of the GIL and must win it back from the busy event loop, which can take a switch interval (5 ms): row
    by row (`executemany`), a batch asked for it once a row, and a thread writing to the store fell behind the
    loop (the answer writer's budget ran short); a statement of many rows also costs about a fifth less CPU a
    row. A few fixed sizes keep SQLite's statement cache small (one statement for each group size made peak
    RSS grow, 747d816). PostgreSQL gets all the rows in one statement (`unnest`)."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    shared: tuple[str, ...]
    """Columns whose value is the same in every row of a call (bound once a statement: `?1`, `?2`, ...)."""
    integers: tuple[str, ...] = ()
    """Columns of integers (the others are text, or shared): the types of PostgreSQL's arrays."""

    ROWS = (64, 16, 4, 1)

    def _upsert(self) -> tuple[str, str]:
        """The statement's head (`INSERT INTO ...`) and tail (`ON CONFLICT ... DO UPDATE ...`)."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in self.key)
        head = f"INSERT INTO {self.table} ({', '.join(self.columns)}) "
        return head, f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}"

    @functools.cached_property
    def _pickers(self) -> tuple[Callable[[Sequence[Any]], Any], Callable[[Sequence[Any]], Any], int]:
        """Of a full row: its shared values and its other values, each in column order by one `itemgetter` call
        (0.27 us a row of `_ITEMS`, against 0.42 for a list comprehension), and how many others there are."""
        shared = [i for i, c in enumerate(self.columns) if c in self.shared]
        others = [i for i, c in enumerate(self.columns) if c not in self.shared]
        assert len(shared) > 1 and len(others) > 1, "an itemgetter of one place gives the value, not a tuple"
        return operator.itemgetter(*shared), operator.itemgetter(*others), len(others)

    @functools.cache  # noqa: B019 (a few module-level instances, each with a few sizes)
    def statement(self, rows: int) -> str:
        """SQLite: the upsert of `rows` rows, bound as the shared values, then the other values of each row."""
        insert, upsert = self._upsert()
        # SQLite numbers each plain ? after the largest number before it: the shared values are ?1, ?2, ...
        each = [c for c in self.columns if c not in self.shared]
        picked, column = [], 0
        for name in self.columns:
            if name in self.shared:
                picked.append(f"?{self.shared.index(name) + 1}")
            else:
                column += 1
                picked.append(f"column{column}")
        values = ", ".join([f"({', '.join('?' * len(each))})"] * rows)
        return insert + f"SELECT {', '.join(picked)} FROM (VALUES {values}) WHERE true " + upsert

    @functools.cache  # noqa: B019
    def _unnested(self) -> str:
        insert, upsert = self._upsert()
        each = [c for c in self.columns if c not in self.shared]
        picked = ", ".join("%s" if c in self.shared else c for c in self.columns)
        arrays = ", ".join(f"%b::{'integer' if c in self.integers else 'text'}[]" for c in each)
        return insert + f"SELECT {picked} FROM unnest({arrays}) AS t ({', '.join(each)}) " + upsert

    def unnest(self, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """PostgreSQL: (statement, parameters) that upsert `rows` (full tuples of `columns`, as `statements` takes)
        in one statement: the shared values bound once, each other column as one array, in binary (`%b`: psycopg
        escapes each element of a text array by a regular expression calling back into Python at every quote).
        Measured against `executemany` (a statement a row, pipelined), batches of 100: 20.7 against 8.1 us of CPU
        an item in `Ledger.record`, and 13.0 against 5.1 us an answer with text arrays. Of rows with one key, the
        last is kept: a statement updates a row once."""
        places = [self.columns.index(c) for c in self.key]
        kept = list({tuple(row[i] for i in places): row for row in rows}.values())
        shared = [kept[0][i] for i, c in enumerate(self.columns) if c in self.shared]
        arrays = [[row[i] for row in kept] for i, c in enumerate(self.columns) if c not in self.shared]
        return self._unnested(), [*shared, *arrays]

    def statements(self, rows: Sequence[Sequence[Any]], *, first: int = 0) -> list[tuple[str, list[Any]]]:
        """(statement, parameters) for `rows`, full tuples of `columns` whose shared values are those of the
        first row: statements of `first` rows, then of each of `ROWS`, the largest that fit."""
        if not rows:
            return []
        shared_of, others_of, width = self._pickers
        shared = shared_of(rows[0])
        flat: list[Any] = []
        for row in rows:
            flat += others_of(row)
        made: list[tuple[str, list[Any]]] = []
        start = 0
        for size in sorted({first, *self.ROWS} - {0}, reverse=True):
            while len(rows) - start // width >= size:
                made.append((self.statement(size), [*shared, *flat[start : start + width * size]]))
                start += width * size
        return made


_ITEMS = _Upsert(
    "sleipnir_items",
    ("plan_id", "item_key", "status", "attempts", "error", "output", "run_id", "updated_at", "fingerprint"),
    key=("plan_id", "item_key"),
    shared=("plan_id", "run_id", "updated_at"),
    integers=("attempts",),
)
_RESULTS = _Upsert(
    "sleipnir_results",
    ("run_id", "item_key", "status", "attempts", "error", "input", "output", "recorded_at"),
    key=("run_id", "item_key"),
    shared=("run_id", "recorded_at"),
    integers=("attempts",),
)
_ANSWERS = _Upsert(
    "sleipnir_answers",
    ("plan_id", "item_key", "call_id", "fingerprint", "output", "recorded_at"),
    key=("plan_id", "item_key", "call_id"),
    shared=("plan_id", "recorded_at"),
)


def answer_json(value: Any) -> str:
    """An answer as JSON text that `json.loads` reads back as the same value: orjson (about 8 times faster than
    `json.dumps` on a structured answer, and the state store records every answer), except for what orjson
    refuses (integers beyond 64 bits, keys that are not strings, other types: `json.dumps` with `str`) or writes
    otherwise (a NaN or an infinity, which it writes as null: only text with a null is searched for them)."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, default=str)
    if b"null" in text and any_float(value, lambda number: not math.isfinite(number)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return text.decode()


class _Transaction:
    """A cursor inside one transaction, committed on success and rolled back on error, under the lock."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __enter__(self) -> Any:
        ledger = self.ledger
        ledger._lock.acquire()
        try:
            if ledger._postgres:
                self.cursor: Any = ledger._pg.cursor()
            else:
                self.cursor = ledger._sqlite.cursor()
                self.cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            ledger._lock.release()
            raise
        return self.cursor

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        ledger = self.ledger
        try:
            if ledger._postgres:
                if error is None:
                    ledger._pg.commit()
                else:
                    ledger._pg.rollback()
            else:
                self.cursor.execute("COMMIT" if error is None else "ROLLBACK")
            self.cursor.close()
        finally:
            ledger._lock.release()


def run_record(r: Sequence[Any]) -> RunRecord:
    """A `sleipnir_runs` row (run_id, plan_id, job, started_at, finished_at, status, summary) as a record."""
    return RunRecord(
        run_id=str(r[0]),
        plan_id=str(r[1]),
        job=str(r[2]),
        started_at=float(r[3]),
        finished_at=None if r[4] is None else float(r[4]),
        status=str(r[5]),
        summary=json.loads(r[6]) if r[6] else {},
    )


def _json(value: Any) -> str | None:
    """A value kept with the run's results, as JSON text with any URL's password masked. orjson's text when
    `json.loads` reads it back the same and it holds no URL (masking is a search of the text, which must see what
    `json.dumps` writes); else `json.dumps`'s."""
    if value is None:
        return None
    fast = fast_json(value)
    if fast is not None and b"://" not in fast:
        return fast.decode()
    return mask_passwords(json.dumps(value, ensure_ascii=False, default=str))


def _made_json(value: Any) -> str | None:
    """What an item's calls made, kept with the run's results: `answer_json`'s text (answers are read from JSON, so
    `_json`'s walk of the value is not needed to know orjson writes it alike), or `_json`'s where it holds a URL."""
    if value is None:
        return None
    text = answer_json(value)
    return text if "://" not in text else _json(value)


def _output_json(value: Any) -> str:
    """An item's output kept for a later `reduce` or `fan_in`: orjson's text when `json.loads` reads it back the
    same, else `json.dumps`'s."""
    fast = fast_json(value)
    return fast.decode() if fast is not None else json.dumps(value, ensure_ascii=False, default=str)


def process_alive(host: str, pid: int, here: str) -> bool:
    """Whether the process that took a lock still runs; one on another host is taken to."""
    if host != here:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
