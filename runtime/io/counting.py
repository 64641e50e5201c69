"""Counting a database source's rows for `sleipnir plan --estimate`: a `COUNT(*)` over the source's query.

This is the runtime's side of the estimate: the compiler knows no databases, so the CLI hands it this counter.
The query is wrapped, never edited (`SELECT COUNT(*) FROM (<query>) AS items`), and its `:name` parameters (or
the values the compiler bound for its `${...}`) are bound, never formatted in. Connections are made as the sources
make them (`runtime/io/dbconn.py`), read-only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ...compiler.ir import Plan, Source
from ..secrets import reveal
from .dbconn import connect_postgresql, connect_sqlite, parse_database_url, postgresql_query


def connection_url(plan: Plan, name: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL (or SQLite path) of connection `name` of `plan`; a secret is resolved from the environment now."""
    environ = os.environ if environ is None else environ
    for connection in plan.resources.connections:
        if connection.name == name:
            return str(reveal(connection.url, environ))
    return name


def counter_for(plan: Plan, environ: Mapping[str, str] | None = None) -> Callable[[Source, str], int | None]:
    """An item counter for `compiler.estimate`: database sources are counted with `COUNT(*)`; a SQLite file
    that does not exist yet has no count."""

    def count(source: Source, root: str) -> int | None:
        query = source.options.get("query")
        if source.source not in ("database", "sqlite", "postgresql") or not isinstance(query, str):
            return None
        url = connection_url(plan, str(source.options.get("connection", "default")), environ)
        parameters: dict[str, Any] | tuple[Any, ...] = dict(source.options.get("parameters") or {})
        bound = "bound" in source.options
        if bound:
            # The compiler bound the query's substitutions: it is in the driver's style, values by position.
            parameters = tuple(reveal(v, os.environ if environ is None else environ) for v in source.options["bound"])
        wrapped = f"SELECT COUNT(*) FROM ({query.rstrip().rstrip(';')}) AS items"
        database = parse_database_url(url, root=root)
        if database.path is not None:
            if not database.path.exists():
                return None
            with contextlib.closing(connect_sqlite(database.path, read_only=True)) as connection:
                row = connection.execute(wrapped, parameters).fetchone()
            return int(row[0])
        with contextlib.closing(connect_postgresql(database.url, read_only=True)) as connection:
            text = wrapped if bound else postgresql_query(wrapped)
            found = connection.execute(text.encode(), parameters).fetchone()
            connection.rollback()
        return int(found[0]) if found else None

    return count

