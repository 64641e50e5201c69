"""Counting a database source's rows for `sleipnir plan --estimate`: a `COUNT(*)` over the source's query.

This is the runtime's side of the estimate: the compiler knows no databases, so the CLI hands it this counter.
The query is wrapped, never edited (`SELECT COUNT(*) FROM (<query>) AS items`), and its `:name` parameters are
bound, never formatted in.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from ..compiler.expressions import parse_substitutions, resolve
from ..compiler.ir import Plan, Secret, Source


def connection_url(plan: Plan, name: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL (or SQLite path) of connection `name` of `plan`; a secret is resolved from the environment now."""
    environ = os.environ if environ is None else environ
    for connection in plan.resources.connections:
        if connection.name == name:
            url = connection.url
            if isinstance(url, Secret):
                return resolve(parse_substitutions(url.ref), environ.get)
            return url
    return name


def sqlite_path(url: str, root: str) -> Path | None:
    """The file of a SQLite URL or path, relative to the workspace root; None for other databases."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return Path(root, path) if not Path(path).is_absolute() else Path(path)


def counter_for(plan: Plan, environ: Mapping[str, str] | None = None) -> Callable[[Source, str], int | None]:
    """An item counter for `compiler.estimate`: database sources are counted with `COUNT(*)`."""

    def count(source: Source, root: str) -> int | None:
        query = source.options.get("query")
        if source.source not in ("database", "sqlite", "postgresql") or not isinstance(query, str):
            return None
        url = connection_url(plan, str(source.options.get("connection", "default")), environ)
        parameters: dict[str, Any] = dict(source.options.get("parameters") or {})
        wrapped = f"SELECT COUNT(*) FROM ({query.rstrip().rstrip(';')}) AS items"
        path = sqlite_path(url, root)
        if path is not None:
            if not path.exists():
                return None
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as database:
                row = database.execute(wrapped, parameters).fetchone()
            return int(row[0])
        return _count_postgresql(url, wrapped, parameters)

    return count


def _count_postgresql(url: str, query: str, parameters: dict[str, Any]) -> int | None:
    # psycopg binds `%(name)s`; the job's `:name` placeholders are rewritten to that form, values stay bound.
    bound = re.sub(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)", r"%(\1)s", query.replace("%", "%%"))
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(bound.encode(), parameters)
        row = cursor.fetchone()
    return int(row[0]) if row else None
