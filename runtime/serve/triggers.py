"""What decides whether a scheduled or triggered run goes ahead, and what a trigger remembers.

- Run conditions (spec/schedules.md#conditions): `time_window_holds` and `data_available`, combined by
  `conditions_hold`, which says why a run is held back.
- Webhook authentication: `verify` accepts a bearer token or an HMAC-SHA256 signature of the body, compared in
  constant time; `webhook_rows` reads a body into rows or says what is wrong with it.
- File triggers: `FileGlob` says which folder to watch and which paths match, `new_files` watches it (with
  watchfiles) and `settled` waits until a writer is done; `TriggerState` (the run ledger's
  store, with two tables of its own) records every file processed, and the last fire time each schedule
  handled, so a restart neither processes a file again nor forgets a downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import functools
import hashlib
import hmac
import json
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from ...compiler.ir import Plan, Source
from ...compiler.ir.common import DEFAULT_DATABASE, secret_or_text
from ..engine.ledger import Ledger, process_alive
from ..io.dbconn import (
    DatabaseError,
    connect_postgresql,
    connect_sqlite,
    mask_secrets,
    parse_database_url,
    postgresql_query,
)
from ..secrets import MissingSecret, reveal

__all__ = [
    "FileGlob",
    "FileRecord",
    "TriggerState",
    "WebhookBodyError",
    "conditions_hold",
    "connection_for",
    "connections",
    "data_available",
    "new_files",
    "settled",
    "time_window_holds",
    "verify",
    "webhook_rows",
    "write_incoming",
]

SIGNATURE_HEADER = "X-Sleipnir-Signature"
DATABASE_SOURCES = ("database", "sqlite", "postgresql")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sleipnir_trigger_files (
        job TEXT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL, mtime DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL, run_id TEXT, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (job, path))""",
    """CREATE TABLE IF NOT EXISTS sleipnir_schedule (
        job TEXT PRIMARY KEY, handled_until DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sleipnir_claims (
        kind TEXT NOT NULL, job TEXT NOT NULL, claim_key TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, job, claim_key))""",
)


# -- conditions ---------------------------------------------------------------------------------------------


def _hhmm(text: str) -> clock_time:
    hours, _, minutes = str(text).partition(":")
    return clock_time(int(hours), int(minutes))


def time_window_holds(start: str, end: str, zone: str, now: datetime) -> bool:
    """Whether `now` (aware) is at or after `start` and before `end` (`HH:MM`) on the wall clock of `zone`; a
    window whose end is earlier than its start crosses midnight."""
    local = now.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
    opens, closes = _hhmm(start), _hhmm(end)
    if opens <= closes:
        return opens <= local < closes
    return local >= opens or local < closes


def data_available(check_sql: str, threshold: int, connection_url: str, root: str) -> tuple[bool, str]:
    """Run `check_sql` (one number) read-only on the database of `connection_url` (a PostgreSQL URL, or a
    SQLite URL or path under `root`); holds when the number is at least `threshold`. The reason says what was
    found, or what failed (with any password masked); a failure holds the run back."""
    try:
        database = parse_database_url(connection_url, root=root)
        if database.kind == "sqlite":
            assert database.path is not None
            with contextlib.closing(connect_sqlite(database.path, read_only=True)) as connection:
                row = connection.execute(check_sql).fetchone()
        else:
            # A read-only transaction (psycopg ignores `read_only` in autocommit mode), rolled back after.
            with contextlib.closing(connect_postgresql(database.url, read_only=True)) as connection:
                row = connection.execute(postgresql_query(check_sql).encode(), {}).fetchone()
                connection.rollback()
    except (DatabaseError, sqlite3.Error, psycopg.Error) as error:
        return False, "data_available: the check failed: " + mask_secrets(str(error).strip(), connection_url)
    if not row or row[0] is None:
        return False, "data_available: the check returned no number"
    value = row[0]
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        return False, f"data_available: the check returned {value!r}, not a number"
    count = float(value)
    shown = int(count) if count.is_integer() else count
    if count >= threshold:
        return True, f"data_available: {shown} >= {threshold}"
    return False, f"data_available: the check returned {shown}, below the threshold {threshold}"


def conditions_hold(
    conditions: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    zone: str,
    root: str,
    connection_for: Callable[[str | None], str],
) -> tuple[bool, str]:
    """Whether every condition of a job holds at `now`; the reason names the first that does not. `zone` is the
    schedule's (else UTC); `connection_for(name)` gives the URL of a condition's `connection`, or of the job's
    default one for None. Time windows are checked first: they cost nothing."""
    ordered = sorted(conditions, key=lambda c: c.get("type") != "time_window")
    reasons = []
    for condition in ordered:
        kind = condition.get("type")
        if kind == "time_window":
            window_zone = str(condition.get("timezone") or zone)
            start, end = str(condition["start"]), str(condition["end"])
            if not time_window_holds(start, end, window_zone, now):
                local = now.astimezone(ZoneInfo(window_zone)).strftime("%H:%M")
                return False, f"time_window: {local} {window_zone} is outside {start}-{end}"
            reasons.append(f"time_window: inside {start}-{end}")
        elif kind == "data_available":
            try:
                url = connection_for(condition.get("connection"))
            except (DatabaseError, KeyError, ValueError) as error:
                return False, f"data_available: {error}"
            threshold = int(condition.get("threshold", 1))
            ok, reason = data_available(str(condition["check"]), threshold, url, root)
            if not ok:
                return False, reason
            reasons.append(reason)
        else:
            return False, f"unknown condition type {kind!r}"
    return True, "; ".join(reasons) or "no conditions"


def connections(plan: Plan | None, manifest: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Connection name -> URL: the plan's (resolved when it was made) and the workspace's `connections`. A
    connection whose secret is not set now is left out (using it then fails, naming it)."""
    known: dict[str, str] = {}
    for connection in plan.resources.connections if plan else ():
        with contextlib.suppress(MissingSecret):
            known[connection.name] = str(reveal(connection.url, environ))
    for name, value in (manifest.get("connections") or {}).items():
        url = value.get("url") if isinstance(value, dict) else value
        with contextlib.suppress(MissingSecret):
            known.setdefault(name, str(reveal(secret_or_text(str(url), environ), environ)))
    return known


def connection_for(plan: Plan, name: str | None, manifest: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """The database a job's `data_available` check runs on: the condition's `connection` (a name or a URL),
    else the job's input connection, else the workspace database."""
    known = connections(plan, manifest, environ)
    if name:
        return known.get(name, name)
    source = next((n for n in plan.nodes if isinstance(n, Source)), None)
    given = source.options.get("connection") if source is not None and source.source in DATABASE_SOURCES else None
    if given:
        return known.get(str(given), str(given))
    if "default" in known:
        return known["default"]
    database = str(manifest.get("database") or DEFAULT_DATABASE)
    return str(reveal(secret_or_text(database, environ), environ))


# -- webhooks -----------------------------------------------------------------------------------------------


def verify(request_headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether a request proves it knows `secret`: `Authorization: Bearer <secret>`, or
    `X-Sleipnir-Signature: sha256=<hex HMAC-SHA256 of the body keyed by the secret>`. Header names are matched
    without regard to case; both comparisons take constant time."""
    if not secret:
        return False
    headers = {str(k).lower(): str(v) for k, v in request_headers.items()}
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token and hmac.compare_digest(token.strip().encode(), secret.encode()):
        return True
    signature = headers.get(SIGNATURE_HEADER.lower(), "").strip()
    if signature.lower().startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature[7:].strip().lower().encode(), expected.encode())
    return False


class WebhookBodyError(ValueError):
    """A webhook body that is not a JSON object or an array of objects; the message says what is wrong."""


WEBHOOK_DEPTH_LIMIT = 64
"""The deepest nesting of arrays and objects a webhook body may have; deeper is 400 (spec/operations.md)."""
WEBHOOK_ITEM_LIMIT = 10_000
"""The most items one webhook body may carry."""
_JSON_STRING = re.compile(rb'"(?:\\.|[^"\\])*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes, limit: int) -> int:
    """The nesting depth of the JSON text `body` (strings skipped), counted only up to `limit + 1`: the test runs
    before the parser, whose recursion a body nested 100,000 deep would exhaust."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", body)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def webhook_rows(body: bytes) -> list[dict[str, Any]]:
    """The rows a webhook body carries: one JSON object, or an array of objects, nested at most
    `WEBHOOK_DEPTH_LIMIT` deep, of at most `WEBHOOK_ITEM_LIMIT` items. Raises `WebhookBodyError`."""
    if json_depth(body, WEBHOOK_DEPTH_LIMIT) > WEBHOOK_DEPTH_LIMIT:
        raise WebhookBodyError(f"the body is nested deeper than {WEBHOOK_DEPTH_LIMIT} levels")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise WebhookBodyError(f"the body is not valid JSON: {error}") from error
    if isinstance(value, list) and len(value) > WEBHOOK_ITEM_LIMIT:
        raise WebhookBodyError(f"the body holds {len(value):,} items, more than {WEBHOOK_ITEM_LIMIT:,}")
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise WebhookBodyError(f"the body must be a JSON object or an array of objects, not {type(value).__name__}")
    if not value:
        raise WebhookBodyError("the body is an empty array: there is nothing to run")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise WebhookBodyError(f"item {index} of the array is {type(item).__name__}, not an object")
    return value


def write_incoming(root: str, job: str, rows: list[dict[str, Any]]) -> str:
    """A webhook body as a JSON Lines file under `<root>/.sleipnir/incoming/<job>/`, written whole or not at
    all (a temporary file, fsynced, renamed); returns its path."""
    folder = Path(root, ".sleipnir", "incoming", job)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
    temporary = folder / f".{target.name}.tmp"
    with temporary.open("w", encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    return str(target)


# -- file triggers ------------------------------------------------------------------------------------------


_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileGlob:
    """A `file_created` trigger's `path` glob, made absolute under the workspace root. `*` and `?` stay inside
    one folder, `**` spans folders, `[abc]` is a character class."""

    pattern: str

    @classmethod
    def under(cls, pattern: str, root: str) -> FileGlob:
        path = Path(pattern).expanduser()
        return cls(pattern=(path if path.is_absolute() else Path(root).resolve() / path).as_posix())

    @property
    def base(self) -> Path:
        """The deepest folder without wildcards: the one to watch."""
        parts = Path(self.pattern).parts
        fixed = []
        for part in parts[:-1]:
            if _MAGIC.search(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path("/")

    @property
    def recursive(self) -> bool:
        """Whether a match may be deeper than `base`'s own files."""
        return len(Path(self.pattern).parts) - len(self.base.parts) > 1

    def matches(self, path: str | Path) -> bool:
        return _glob_regex(self.pattern).fullmatch(Path(path).as_posix()) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", index + 2)) != -1:
            body = pattern[index + 1 : close]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            index = close + 1
            continue
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


_RELEASED = ("", 0)
"""The holder of a claim given back: no host, no process."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecord:
    """What the state store knows of one file a job's trigger saw."""

    size: int
    mtime: float
    status: str
    """`started` (its run began and has not ended: a restart resumes it), `done` or `held`."""
    run_id: str | None = None


class TriggerState(Ledger):
    """The run ledger's store (SQLite under `.sleipnir/`, or the workspace's `state:`), with the files each
    trigger processed and how far each schedule got. Synchronous and thread-safe, like `Ledger`."""

    def __init__(self, url: str, root: str = ".") -> None:
        super().__init__(url, root)
        with self._transaction() as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement)

    def file(self, job: str, path: str) -> FileRecord | None:
        """The record of `path` for `job`, if its trigger saw it before."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("SELECT size, mtime, status, run_id FROM sleipnir_trigger_files WHERE job = ? AND path = ?"),
                [job, path],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return FileRecord(size=int(row[0]), mtime=float(row[1]), status=str(row[2]), run_id=row[3])

    def mark_file(self, job: str, path: str, *, size: int, mtime: float, status: str, run_id: str | None) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO sleipnir_trigger_files (job, path, size, mtime, status, run_id, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, path) DO UPDATE SET size = excluded.size, "
                    "mtime = excluded.mtime, status = excluded.status, run_id = excluded.run_id, "
                    "updated_at = excluded.updated_at"
                ),
                [job, path, size, mtime, status, run_id, time.time()],
            )

    def claim(self, kind: str, job: str, key: str, *, take_over: bool = False) -> bool:
        """Claim one fire time (`schedule`) or one file's contents (`file`) of `job` for this process: True once,
        for the first replica of `serve` sharing the store to ask (a unique row). A claim given back (`release`)
        goes to the next to ask. With `take_over`, a claim whose process on this host is gone is taken over: a
        file a dead replica (or this `serve` before a restart) left unfinished is resumed. A fire time is never
        taken over: the others go on from their next fire times."""
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO sleipnir_claims (kind, job, claim_key, host, pid, claimed_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (kind, job, claim_key) DO NOTHING"
                ),
                [kind, job, key, host, pid, time.time()],
            )
            if cursor.rowcount == 1:
                return True
            cursor.execute(
                self._sql("SELECT host, pid FROM sleipnir_claims WHERE kind = ? AND job = ? AND claim_key = ?"),
                [kind, job, key],
            )
            holder = cursor.fetchone()
            if holder is None:
                return False
            who = (str(holder[0]), int(holder[1]))
            if who == (host, pid):
                return True
            if who != _RELEASED and (not take_over or process_alive(who[0], who[1], host)):
                return False
            cursor.execute(
                self._sql(
                    "UPDATE sleipnir_claims SET host = ?, pid = ?, claimed_at = ? WHERE kind = ? AND job = ? "
                    "AND claim_key = ? AND host = ? AND pid = ?"
                ),
                [host, pid, time.time(), kind, job, key, holder[0], holder[1]],
            )
            return bool(cursor.rowcount == 1)

    def release(self, kind: str, job: str, *keys: str) -> None:
        """Give back claims this process holds, or leave claims no one holds, for the next to ask (`claim`): fire
        times a stop left unrun, made up by the next replica to start or to fire the job (`released`). A claim
        another process holds stays its. One transaction."""
        here, now = (socket.gethostname(), os.getpid()), time.time()
        with self._transaction() as cursor:
            for key in keys:
                cursor.execute(
                    self._sql(
                        "UPDATE sleipnir_claims SET host = ?, pid = ?, claimed_at = ? WHERE kind = ? AND job = ? "
                        "AND claim_key = ? AND host = ? AND pid = ?"
                    ),
                    [*_RELEASED, now, kind, job, key, *here],
                )
                if cursor.rowcount == 0:
                    cursor.execute(
                        self._sql(
                            "INSERT INTO sleipnir_claims (kind, job, claim_key, host, pid, claimed_at) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, job, claim_key) DO NOTHING"
                        ),
                        [kind, job, key, *_RELEASED, now],
                    )

    def released(self, kind: str, job: str) -> list[str]:
        """The keys of `job`'s claims given back (`release`) and not claimed since."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("SELECT claim_key FROM sleipnir_claims WHERE kind = ? AND job = ? AND host = ? AND pid = ?"),
                [kind, job, *_RELEASED],
            )
            return sorted(str(key) for (key,) in cursor.fetchall())

    def prune_claims(self, now: datetime, retention: timedelta) -> int:
        """Delete the claims no replica will ask for again, and return how many. A fire time is asked for while
        it is due or made up after a downtime, never before the schedule's handled time (which replicas with
        clocks a little apart may set a little back): its claim goes once it is `retention` before that time
        (or before `now`, for a job with no schedule left). A file's contents are claimed after its record is
        read, and a record of a run that ended answers a replica that sees the file again before any claim: a
        claim `retention` old whose file's run ended goes. Either claim stays `retention` after it was made (a
        replica making up a long downtime's fire times, one at a time, may not have reached one another made
        up). `retention` is far longer than replicas' clocks disagree or a file takes to settle."""
        horizon, kept = now.timestamp(), retention.total_seconds()
        dropped = []
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT job, handled_until FROM sleipnir_schedule"))
            handled = {str(job): float(until) for job, until in cursor.fetchall()}
            cursor.execute(self._sql("SELECT job, path FROM sleipnir_trigger_files WHERE status <> 'started'"))
            ended = {(str(job), str(path)) for job, path in cursor.fetchall()}
            cursor.execute(self._sql("SELECT kind, job, claim_key, claimed_at FROM sleipnir_claims"))
            for kind, job, key, claimed_at in cursor.fetchall():
                if float(claimed_at) >= horizon - kept:
                    continue  # claimed lately: a catch-up of old fire times may still be going through its list
                if kind == "schedule":
                    with contextlib.suppress(ValueError):
                        if datetime.fromisoformat(str(key)).timestamp() < min(horizon, handled.get(str(job), math.inf)) - kept:
                            dropped.append((kind, job, key))
                elif (str(job), str(key).rsplit("|", 2)[0]) in ended:
                    dropped.append((kind, job, key))
            if dropped:
                cursor.executemany(self._sql("DELETE FROM sleipnir_claims WHERE kind = ? AND job = ? AND claim_key = ?"), dropped)
        return len(dropped)

    def handled_until(self, job: str) -> datetime | None:
        """The time up to which `job`'s schedule fire times were handled (run, skipped or held)."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT handled_until FROM sleipnir_schedule WHERE job = ?"), [job])
            row = cursor.fetchone()
        return None if row is None else datetime.fromtimestamp(float(row[0]), UTC)

    def set_handled_until(self, job: str, moment: datetime) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO sleipnir_schedule (job, handled_until) VALUES (?, ?) "
                    "ON CONFLICT (job) DO UPDATE SET handled_until = excluded.handled_until"
                ),
                [job, moment.timestamp()],
            )


async def settled(path: str, quiet: float = 0.2) -> tuple[int, float] | None:
    """The size and mtime of `path` once they stay the same for `quiet` seconds (a writer may still be
    writing); None when it is gone."""
    previous = None
    while True:
        try:
            stat = await asyncio.to_thread(os.stat, path)
        except OSError:
            return None
        current = (stat.st_size, stat.st_mtime)
        if current == previous:
            return current
        previous = current
        await asyncio.sleep(quiet)


async def new_files(glob: FileGlob, stop: asyncio.Event) -> AsyncIterator[str]:
    """The paths matching `glob`: those there now, then each one created (or moved in) until `stop` is set.
    A path may come more than once (the caller keeps the record of what it processed). The glob's base folder
    is created when it is missing."""
    from watchfiles import Change, awatch  # imported late: a compile or a one-off run never needs it

    await asyncio.to_thread(glob.base.mkdir, parents=True, exist_ok=True)

    def existing() -> list[str]:
        pattern = "**/*" if glob.recursive else "*"
        return sorted(str(p) for p in glob.base.glob(pattern) if p.is_file() and glob.matches(p))

    def wanted(change: Change, path: str) -> bool:
        return change == Change.added and glob.matches(path)

    for path in await asyncio.to_thread(existing):
        yield path
    scanned = False
    watch = awatch(
        glob.base, watch_filter=wanted, recursive=glob.recursive, stop_event=stop, rust_timeout=500,
        yield_on_timeout=True, step=50, debounce=400,
    )  # fmt: skip
    async for changes in watch:
        if not scanned:
            # The first yield (a timeout, or changes) comes once the watcher runs: scanning again then catches a
            # file created between the first scan and the start of the watch.
            scanned = True
            for path in await asyncio.to_thread(existing):
                yield path
        for _change, path in sorted(changes, key=lambda c: c[1]):
            yield path
