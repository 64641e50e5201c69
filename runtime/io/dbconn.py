"""Database connections shared by the database source, the database sink and the run ledger.

A connection is a URL or a SQLite path, as `sleipnir.yaml` and `--param` write it:

- `postgresql://user:password@host:5432/db` (or `postgres://`, or `postgresql+psycopg://`) is PostgreSQL,
  reached through psycopg 3;
- `sqlite:///data/reviews.db` is the SQLite file `data/reviews.db` under the workspace root, and
  `sqlite:////var/lib/x.db` (four slashes) an absolute one, as SQLAlchemy spells them;
- anything else with a `/`, a `.` or a `\\` in it is a SQLite file path, relative to the workspace root.

A bare word that names no configured connection is an error rather than a file called `prod_db`, and any other
scheme (`mysql://`) is an error naming the two supported ones. Messages never show a password: `mask_url` and
`mask_secrets` blank it wherever a URL might be echoed (psycopg repeats a malformed conninfo in its error).

Query text is never built from values. A job writes `:name` placeholders, which SQLite binds natively;
`postgresql_query` rewrites them into psycopg's `%(name)s` form outside string literals, quoted identifiers
and comments, leaving `::casts` alone and doubling a literal `%`.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg

try:
    import _json
except ImportError:  # an interpreter without json's C speedups
    _json = None  # type: ignore[assignment]

__all__ = [
    "DatabaseError",
    "DatabaseURL",
    "any_float",
    "connect_postgresql",
    "connect_sqlite",
    "fast_json",
    "json_text",
    "mask_secrets",
    "mask_url",
    "parse_database_url",
    "plain_value",
    "postgresql_query",
    "quote_identifier",
    "quote_table",
    "read_json",
]

MASK = "***"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_SENSITIVE_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "sig")


class DatabaseError(Exception):
    """A connection that cannot be made or a URL that cannot be understood; the message is safe to print."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseURL:
    """Where a connection leads, parsed once."""

    kind: str
    """`sqlite` or `postgresql`."""
    url: str
    """For PostgreSQL the conninfo URL psycopg takes (a `+driver` suffix dropped); for SQLite the file path."""
    path: Path | None = None
    """The SQLite file, absolute; None for PostgreSQL."""

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database kind {self.kind!r}")
        if (self.kind == "sqlite") != (self.path is not None):
            raise ValueError("a SQLite database has a path, and only it")

    @property
    def display(self) -> str:
        """The URL or path with any password blanked: safe in messages and logs."""
        return mask_url(self.url) if self.kind == "postgresql" else str(self.path)


def parse_database_url(url: str, *, root: str, known: Mapping[str, str] | None = None) -> DatabaseURL:
    """The database `url` (already looked up from its connection name) leads to; a relative SQLite path is
    under `root`. `known` (connection name -> URL) only improves the message for a bare unknown name.
    Raises `DatabaseError`."""
    text = url.strip()
    scheme_match = _SCHEME.match(text)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        base = scheme.split("+", 1)[0]
        if base in ("postgresql", "postgres"):
            return DatabaseURL(kind="postgresql", url="postgresql" + text[len(scheme) :])
        if base == "sqlite":
            rest = text[len(scheme_match.group(0)) :]
            # `sqlite:///rel/path` leaves `/rel/path` after the scheme: the host part is empty.
            path = rest[1:] if rest.startswith("/") else rest
            if not path:
                raise DatabaseError(f"the SQLite URL {text!r} names no file (write sqlite:///path/to/file.db)")
            return _sqlite(path, root)
        raise DatabaseError(
            f"unsupported database URL scheme {scheme}:// in {mask_url(text)} (use postgresql:// or sqlite:///)"
        )
    if not text:
        raise DatabaseError("the connection is empty")
    if _BARE_NAME.match(text):
        names = ", ".join(sorted(known)) if known else "none"
        raise DatabaseError(
            f"unknown connection {text!r} (connections: {names}); a SQLite file needs a suffix or a folder, "
            f"such as {text}.db"
        )
    return _sqlite(text, root)


def _sqlite(path: str, root: str) -> DatabaseURL:
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path(root, resolved)
    resolved = resolved.resolve()
    return DatabaseURL(kind="sqlite", url=str(resolved), path=resolved)


def mask_url(url: str) -> str:
    """`url` with the password of its user part, and any password-like query value, replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":" + MASK
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if any(s in k.lower() for s in _SENSITIVE_QUERY_KEYS) else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_secrets(text: str, url: str) -> str:
    """`text` (an error message) with `url` and its password blanked wherever they appear in it."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    try:
        parts = urlsplit(url)
        secrets = [parts.password or ""]
        secrets += [v for k, v in parse_qsl(parts.query) if any(s in k.lower() for s in _SENSITIVE_QUERY_KEYS)]
    except ValueError:
        return text
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


def connect_sqlite(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A SQLite connection usable from any one thread at a time, in autocommit mode (callers write
    `BEGIN IMMEDIATE` ... `COMMIT` themselves, so that DDL and DML share a transaction).

    Read-only opens the existing file with `mode=ro`. Otherwise the folders are created and the database is
    switched to WAL, so a source can stream from the same file while a sink or ledger commits. Raises
    `DatabaseError`."""
    try:
        if read_only:
            if not path.is_file():
                raise DatabaseError(f"SQLite database not found: {path}")
            connection = sqlite3.connect(
                f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            _switch_to_wal(connection)
    except (sqlite3.Error, OSError) as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc
    return connection


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """Switch a new database to WAL. The switch takes a lock that another process opening the same new file (a
    second job of a pipeline, a dask worker) may hold, and SQLite reports it as locked without waiting: try again
    for up to 30 s, reading the mode each time (the other process may have switched it meanwhile)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect_postgresql(url: str, *, autocommit: bool = False, read_only: bool = False) -> psycopg.Connection[Any]:
    """A psycopg connection to `url`; the error names the server with the password masked.
    Raises `DatabaseError`."""
    try:
        connection = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except (psycopg.Error, ValueError) as exc:
        raise DatabaseError(f"cannot connect to {mask_url(url)}: {mask_secrets(str(exc).strip(), url)}") from exc
    connection.read_only = read_only
    return connection


def postgresql_query(query: str) -> str:
    """`query` with `:name` placeholders in psycopg's `%(name)s` form and every `%` doubled; literals, quoted
    identifiers, comments and `::casts` are left as written. Bind with a mapping, even an empty one, so psycopg
    reads `%%` as `%`."""
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if char in "'\"":
            end = _closing_quote(query, i)
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif query.startswith("--", i):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif char == "$" and (dollar := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", query[i:])):
            tag = dollar.group(0)
            end = query.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif query.startswith("::", i):
            out.append("::")
            i += 2
        elif char == ":" and (name := re.match(r":([A-Za-z_][A-Za-z0-9_]*)", query[i:])):
            out.append(f"%({name.group(1)})s")
            i += len(name.group(0))
        elif char == "%":
            out.append("%%")
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _closing_quote(text: str, start: int) -> int:
    """The index after the quote closing the literal or identifier that opens at `start` (a doubled quote
    inside is an escaped one)."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def quote_identifier(name: str) -> str:
    """`name` as a quoted SQL identifier (a `"` inside doubled), for column names taken from row fields.
    Raises `DatabaseError` for an empty name or one with a NUL character."""
    if not name or "\x00" in name:
        raise DatabaseError(f"{name!r} cannot be a column name")
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """A table name checked as `name` or `schema.name` (letters, digits, underscores) and quoted.
    Raises `DatabaseError`."""
    if not _TABLE.match(name):
        raise DatabaseError(
            f"{name!r} is not a table name: use letters, digits and underscores, optionally schema-qualified"
        )
    return ".".join(quote_identifier(part) for part in name.split("."))


_PLAIN = frozenset({str, int, float, bool, type(None)})


def plain_value(value: Any) -> Any:
    """`value` as JSON can carry it: Decimal -> float (int when whole), date/time -> ISO 8601, UUID -> str,
    bytes -> hex, timedelta -> seconds; lists and mappings converted inside."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and value.is_finite() else float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    return str(value)


_TEXT = json.JSONEncoder(ensure_ascii=False, default=plain_value)
"""`json.dumps(value, ensure_ascii=False, default=plain_value)`, made once: `json.dumps` with any argument builds a
new encoder for every call."""
_ROW_TEXT = (
    _json.make_encoder(None, plain_value, _json.encode_basestring, None, ": ", ", ", False, False, True)
    if _json is not None
    else None
)
"""The C encoder `_TEXT.encode` builds on every call, with the same settings, built once: a sink's row costs 40%
less (a file sink encodes every row it writes). Without circular checking (nothing a run writes is circular;
should something be, `_TEXT` says so)."""


def json_text(value: Any) -> str:
    """`value` as compact-enough JSON text, non-JSON types converted by `plain_value`: exactly
    `json.dumps(value, ensure_ascii=False, default=plain_value)`."""
    if _ROW_TEXT is not None:
        try:
            return "".join(_ROW_TEXT(value, 0))
        except RecursionError:
            pass  # circular, or nested too deep: `json`'s own encoder raises its own error
    return _TEXT.encode(value)


def fast_json(value: Any, *, sort_keys: bool = False, floats: bool = True) -> bytes | None:
    """orjson's text of `value` (a fifth of the time of `json.dumps` or less), when `value` holds only what both
    write alike: dicts with string keys, lists, tuples, strings, booleans, None, integers of 64 bits and finite
    floats, each of exactly that type. Else None: `json.dumps` with `default=str` writes a datetime, an Enum or
    a NaN otherwise. The text is compact, and `json.loads` reads it back as it reads `json.dumps(value)`; with
    `floats=False` (None when a float is in `value`) it is byte for byte `json.dumps(value, separators=(",", ":"),
    ensure_ascii=False, sort_keys=sort_keys)`, since orjson writes `1e-7` where `json` writes `1e-07`."""
    try:
        if not _orjson_plain(value, floats):
            return None
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) if sort_keys else orjson.dumps(value)
    except (orjson.JSONEncodeError, RecursionError):  # a lone surrogate, a depth orjson refuses
        return None


def read_json(data: str | bytes) -> Any:
    """`json.loads(data)`: the same value, or the same error. By orjson (about a seventh of the time on a row),
    except what it refuses (a NaN, a lone surrogate, text that is not UTF-8, a number beyond a double) and a
    value with a float of 2**63 or more, which may have been an integer beyond 64 bits that orjson reads as a
    float; `json.loads` reads those. Rows from a source and a model's answers are read by it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
    return json.loads(data) if any_float(value, _beyond_64_bits) else value


def _beyond_64_bits(number: float) -> bool:
    return abs(number) >= 9.2e18


def any_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether a float somewhere in `value` (dicts and lists, at any depth) passes `test`."""
    kind = type(value)
    if kind is float:
        return test(value)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:  # noqa: SIM110 (a loop: `any()` over a generator costs twice the time, on every answer)
        if type(item) in _CONTAINERS and any_float(item, test):
            return True
    return False


_CONTAINERS = (dict, list, float)


def _orjson_plain(value: Any, floats: bool) -> bool:
    kind = type(value)
    if kind is dict:
        # A row's or an answer's values are mostly scalars: they are judged here, and only containers recursed
        # into (a call for every value cost as much again as the whole walk).
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if not -(2**63) <= item < 2**64:
                    return False
            elif kind is float:
                if not (floats and item - item == 0.0):  # finite: inf - inf and nan - nan are nan
                    return False
            elif not _orjson_plain(item, floats):
                return False
        return True
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-(2**63) <= value < 2**64)
    if kind is float:
        return floats and bool(value - value == 0.0)
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 (a loop: `all()` over a generator costs twice the time here)
            if not _orjson_plain(item, floats):
                return False
        return True
    return False
