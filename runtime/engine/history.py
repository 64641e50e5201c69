"""Reading the run ledger's history without writing it: runs, and each run's items with their inputs, outputs
and errors (`sleipnir_results`). `sleipnir runs` and `sleipnir view` read through `History`.

The store is opened read-only (SQLite `mode=ro`, a read-only PostgreSQL session), so reading never creates a
store, a table or a lock. A store written before items were kept by run has no `sleipnir_results`: its runs
show, with no items.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..io.dbconn import DatabaseURL, connect_postgresql, connect_sqlite
from .ledger import RunRecord, run_record

__all__ = ["READ_ERRORS", "History", "ItemResult", "duration_text"]

READ_ERRORS = (sqlite3.Error, psycopg.Error)
"""What a read may raise besides `DatabaseError` (a store another version wrote, a server gone)."""
_RUN_COLUMNS = "run_id, plan_id, job, started_at, finished_at, status, summary"
_ITEM_COLUMNS = "item_key, status, attempts, error, input, output"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of one run: its input row, what its calls made (call -> output), or why it failed."""

    key: str
    status: str
    attempts: int
    error: str | None
    input: Any
    output: Any


class History:
    """A read-only view of the run ledger at `database` (as `parse_database_url` reads the workspace's `state:`).
    Raises `DatabaseError` when it cannot be opened."""

    def __init__(self, database: DatabaseURL) -> None:
        self._postgres = database.kind == "postgresql"
        if self._postgres:
            self._connection: Any = connect_postgresql(database.url, autocommit=True, read_only=True)
        else:
            assert database.path is not None
            self._connection = connect_sqlite(Path(database.path), read_only=True)
        self._has_results = self._table("sleipnir_results")
        self._has_runs = self._table("sleipnir_runs")

    def close(self) -> None:
        self._connection.close()

    def _rows(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql.replace("?", "%s") if self._postgres else sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def _table(self, name: str) -> bool:
        if self._postgres:
            return bool(self._rows("SELECT to_regclass(?) IS NOT NULL", [name])[0][0])
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]))

    # -- runs ---------------------------------------------------------------------------------------------

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest runs, of one job or of all."""
        if not self._has_runs:
            return []
        where, args = ("WHERE job = ?", [job]) if job else ("", [])
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM sleipnir_runs {where} ORDER BY started_at DESC LIMIT ?", [*args, limit])
        return [run_record(row) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        if not self._has_runs:
            return None
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM sleipnir_runs WHERE run_id = ?", [run_id])
        return run_record(rows[0]) if rows else None

    def names(self) -> tuple[list[str], list[str]]:
        """Every job with a run, and every run id: what a name given to `runs` may have meant."""
        if not self._has_runs:
            return [], []
        jobs = [str(row[0]) for row in self._rows("SELECT DISTINCT job FROM sleipnir_runs ORDER BY job", [])]
        ids = [str(row[0]) for row in self._rows("SELECT run_id FROM sleipnir_runs ORDER BY started_at DESC", [])]
        return jobs, ids

    # -- a run's items ------------------------------------------------------------------------------------

    def counts(self, run_id: str) -> dict[str, int]:
        """Items of the run by status."""
        if not self._has_results:
            return {}
        rows = self._rows("SELECT status, COUNT(*) FROM sleipnir_results WHERE run_id = ? GROUP BY status", [run_id])
        return {str(status): int(count) for status, count in rows}

    def items(
        self,
        run_id: str,
        *,
        status: str | None = None,
        search: str | None = None,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ItemResult]:
        """The run's items in key order (of code points, as Python orders strings): of one status, holding `search`
        (case-insensitive) in the key, the input, the output or the error, and with keys after `after`."""
        if not self._has_results:
            return []
        key = 'item_key COLLATE "C"' if self._postgres else "item_key"
        where, args = ["run_id = ?"], [run_id]
        if after is not None:
            where.append(f"{key} > ?")
            args.append(after)
        if status:
            where.append("status = ?")
            args.append(status)
        if search:
            like = "ILIKE" if self._postgres else "LIKE"
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(" + " OR ".join(f"{c} {like} ? ESCAPE '\\'" for c in ("item_key", "input", "output", "error")) + ")")
            args.extend([pattern] * 4)
        sql = f"SELECT {_ITEM_COLUMNS} FROM sleipnir_results WHERE {' AND '.join(where)} ORDER BY {key} LIMIT ? OFFSET ?"
        return [_item(row) for row in self._rows(sql, [*args, limit, offset])]


def _item(row: tuple[Any, ...]) -> ItemResult:
    key, status, attempts, error, given, output = row
    return ItemResult(
        key=str(key),
        status=str(status),
        attempts=int(attempts),
        error=None if error is None else str(error),
        input=None if given is None else json.loads(given),
        output=None if output is None else json.loads(output),
    )


def duration_text(seconds: float | None) -> str:
    """A run's duration for people: `0.42s`, `3m 05s`, `2h 07m`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h {minute:02d}m"
