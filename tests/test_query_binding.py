"""`${...}` in a database query is bound as a driver parameter, never pasted: on real SQLite and PostgreSQL, for
any string, the query returns exactly the rows whose column equals it (spec/substitutions.md)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_sources import postgres_url, read_all

from sleipnir.compiler.checker import check
from sleipnir.compiler.ir import Secret, Source
from sleipnir.compiler.ir.expressions import Region
from sleipnir.compiler.overrides import Override
from sleipnir.compiler.planner import plan
from sleipnir.compiler.sqlquery import Hole, QueryError, bind
from sleipnir.runtime.io import IOContext
from sleipnir.runtime.io.sources import make_source

__all__ = ["postgres_url"]

REPRODUCERS = ("x' UNION ALL SELECT k, v FROM secret_table --", "x' OR '1'='1")
PROMPT = "prompt:\n  name: echo\n  version: 1.0.0\n  description: echo\n  template:\n    user: '{{ v }}'\n"
ROWS = [("1", "eu"), ("2", "us"), ("3", "x' OR '1'='1"), ("4", "it's; -- /* */ 100%"), ("5", "ünï ☃")]


def job(query: str, *, source: str = "database", connection: str | None = None) -> str:
    where = f"\n    connection: {connection}" if connection else ""
    return (
        f"job:\n  name: q\n  params:\n    region: eu\n    table: items\n  input:\n    source: {source}{where}\n"
        f"    query: {json.dumps(query)}\n  prompts:\n    - name: echo\n      version: 1.0.0\n      model: mock\n"
    )


def workspace(root: Path, query: str, *, manifest: str = "", **kwargs: Any) -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    (root / "sleipnir.yaml").write_text(f"name: binding\ndatabase: data.db\nfallback_provider: mock\n{manifest}")
    (root / "prompts" / "echo.yaml").write_text(PROMPT)
    (root / "jobs" / "q.yaml").write_text(job(query, **kwargs))
    return root


def fill_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE items (k TEXT, region TEXT)")
        connection.execute("CREATE TABLE secret_table (k TEXT, v TEXT)")
        connection.executemany("INSERT INTO items VALUES (?, ?)", ROWS)
        connection.execute("INSERT INTO secret_table VALUES ('password', 'hunter2')")
    connection.close()


def source_of(root: Path, region: str, connections: dict[str, str] | None = None, **params: Any) -> tuple[Source, IOContext]:
    overrides = [Override(key="region", value=region, origin="test")]
    overrides += [Override(key=k, value=v, origin="test") for k, v in params.items()]
    result = plan("q", workspace=str(root), overrides=overrides, environ={})
    assert result.ok, [d.message for d in result.diagnostics]
    node = result.plans[0].node("input")
    assert isinstance(node, Source)
    known = {c.name: c.url for c in result.plans[0].resources.connections if isinstance(c.url, str)}
    return node, IOContext(root=str(root), connections={**known, **(connections or {})})


def rows(root: Path, region: str, connections: dict[str, str] | None = None) -> list[Any]:
    node, context = source_of(root, region, connections)
    return read_all(make_source(node, context=context))


# -- the binder -----------------------------------------------------------------------------------------------


def holes(text: str, **values: Any) -> list[str | Hole]:
    """`text` with `{name}` marks as holes of the given values."""
    parts: list[str | Hole] = []
    for number, chunk in enumerate(text.split("{")):
        if number:
            name, _, chunk = chunk.partition("}")
            parts.append(Hole(name=name, value=values[name], region=Region(start=0, end=1)))
        parts.append(chunk)
    return parts


@pytest.mark.parametrize(
    ("text", "values", "sqlite", "postgresql", "bound"),
    [
        ("WHERE r = '{r}'", {"r": "eu"}, "WHERE r = ?", "WHERE r = %s", ("eu",)),
        ("WHERE id > {m}", {"m": "10"}, "WHERE id > ?", "WHERE id > %s", (10,)),
        ("WHERE id > {m}", {"m": 10}, "WHERE id > ?", "WHERE id > %s", (10,)),
        ("LIKE 'a{r}%'", {"r": "b"}, "LIKE ('a' || ? || '%')", "LIKE ('a' || %s || '%%')", ("b",)),
        ("SELECT * FROM {t} x", {"t": "s.items"}, "SELECT * FROM s.items x", "SELECT * FROM s.items x", ()),
        ('SELECT "{c}" FROM t', {"c": "name"}, 'SELECT "name" FROM t', 'SELECT "name" FROM t', ()),
        ("SELECT {s}.t", {"s": "public"}, "SELECT public.t", "SELECT public.t", ()),
        ("ORDER BY {c}", {"c": "k"}, "ORDER BY k", "ORDER BY k", ()),
        ("x -- {r}\n = :p", {"r": "'"}, "x -- \n = ?", "x -- \n = %s", (5,)),
        ("a::int = '{r}'", {"r": "1"}, "a::int = ?", "a::int = %s", ("1",)),
        ("d = '{m}' AND f = {m}", {"m": {"k": [1]}}, "d = ? AND f = ?", "d = %s AND f = %s", ('{"k": [1]}',) * 2),
        ("b = '{t}' AND c = {t}", {"t": True}, "b = ? AND c = ?", "b = %s AND c = %s", ("true", True)),
    ],
)
def test_each_substitution_is_bound_or_checked_as_an_identifier(
    text: str, values: dict[str, Any], sqlite: str, postgresql: str, bound: tuple[Any, ...]
) -> None:
    query = bind(holes(text, **values), {"p": 5})
    assert query.render("sqlite") == (sqlite, bound)
    assert query.render("postgresql") == (postgresql, bound)


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("SELECT * FROM {t}", {"t": "items; DROP TABLE x"}, "is not a table or column name"),
        ("SELECT * FROM {t}", {"t": "1abc"}, "is not a table or column name"),
        ('SELECT "{c}"', {"c": 'a"b'}, "is not a table or column name"),
        ("SELECT * FROM {t}", {"t": Secret(ref="${T}", names=("T",), digest=None)}, "its value is a secret"),
        ("SELECT $$a{r}$$", {"r": "x"}, "dollar-quoted"),
        ("WHERE a = '{r}' AND b = :missing", {"r": "x"}, "`:missing` is not in the input's `parameters`"),
    ],
)
def test_a_substitution_that_cannot_be_bound_safely_is_an_error(text: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        bind(holes(text, **values), {})


# -- SQLite ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = workspace(tmp_path_factory.mktemp("sqlite"), "SELECT k, region FROM ${table} WHERE region = '${region}'")
    fill_sqlite(root / "data.db")
    return root


@pytest.mark.parametrize("attack", REPRODUCERS)
def test_injection_reproducers_return_no_extra_rows_on_sqlite(sqlite_workspace: Path, attack: str) -> None:
    assert rows(sqlite_workspace, attack) == [{"k": str(k), "region": r} for k, r in ROWS if r == attack]
    assert rows(sqlite_workspace, "eu") == [{"k": "1", "region": "eu"}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(), present=st.booleans())
def test_any_string_selects_exactly_its_rows_on_sqlite(sqlite_workspace: Path, value: str, present: bool) -> None:
    assume("${" not in value)
    path = sqlite_workspace / "data.db"
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM items WHERE k = 'probe'")
        if present:
            connection.execute("INSERT INTO items VALUES ('probe', ?)", (value,))
    connection.close()
    expected = [{"k": k, "region": r} for k, r in [*ROWS, *([("probe", value)] if present else [])] if r == value]
    assert sorted(rows(sqlite_workspace, value), key=str) == sorted(expected, key=str)


def test_an_identifier_that_breaks_the_rule_fails_planning_at_its_column(sqlite_workspace: Path) -> None:
    result = plan(
        "q", workspace=str(sqlite_workspace), overrides=[Override(key="table", value="items; --", origin="--param")]
    )
    [error] = [d for d in result.diagnostics if d.code == "unsafe-substitution"]
    assert not result.plans and error.primary is not None
    assert (error.primary.span.line, error.primary.span.column) == (8, 35)  # the `${table}` in `    query: "SELECT k, region FROM ${table}..."`


def test_run_job_with_the_reproducer_reads_no_other_table(sqlite_workspace: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        # The job has no output (stdout), which --json keeps for the result alone: the rows go to a file.
        [sys.executable, "-m", "sleipnir", "run-job", "q", "--param", f"region={REPRODUCERS[0]}",
         "--param", "output.path=out/q.jsonl", "--json"],
        cwd=sqlite_workspace, capture_output=True, text=True, check=False,
    )
    assert "hunter2" not in out.stdout + out.stderr
    assert json.loads(out.stdout)["metrics"]["items_processed"] == 0


def test_plan_shows_placeholders_and_bound_values_and_hides_secret_ones(tmp_path: Path) -> None:
    root = workspace(tmp_path, "SELECT k FROM items WHERE region = '${region}' AND k <> '${ITEM_TOKEN:-x}'")
    fill_sqlite(root / "data.db")
    result = plan("q", workspace=str(root), environ={"ITEM_TOKEN": "tok-planted-7"})
    node = result.plans[0].node("input")
    assert isinstance(node, Source)
    assert node.options["query"] == "SELECT k FROM items WHERE region = ? AND k <> ?"
    assert node.options["bound"][0] == "eu" and isinstance(node.options["bound"][1], Secret)
    shown = subprocess.run(
        [sys.executable, "-m", "sleipnir", "plan", "q"], cwd=root, capture_output=True, text=True, check=False,
        env={"PATH": "", "ITEM_TOKEN": "tok-planted-7"},
    ).stdout
    assert "region = ? AND k <> ?" in shown and "tok-planted-7" not in shown and "sensitive" in shown
    context = IOContext(root=str(root), environ={"ITEM_TOKEN": "2"}, connections={"default": "data.db"})
    source = make_source(node, context=context)
    assert read_all(source) == [{"k": "1"}]


def test_a_query_whose_database_kind_is_hidden_must_name_it(tmp_path: Path) -> None:
    manifest = "connections:\n  hidden: ${DATABASE_URL}\n"
    root = workspace(tmp_path, "SELECT 1 WHERE 'a' = '${region}'", manifest=manifest, connection="hidden")
    result = plan("q", workspace=str(root), environ={"DATABASE_URL": "sqlite:///data.db"})
    assert [d.code for d in result.diagnostics if d.severity == "error"] == ["unsafe-substitution"]
    (root / "jobs" / "q.yaml").write_text(job("SELECT 1 AS one WHERE 'a' = '${region}'", source="sqlite", connection="hidden"))
    assert plan("q", workspace=str(root), environ={"DATABASE_URL": "sqlite:///data.db"}).ok


# -- PostgreSQL -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_workspace(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[tuple[Path, str]]:
    table = f"sleipnir_q_{uuid.uuid4().hex[:10]}"
    secret = f"{table}_secret"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (k text, region text)".encode())
        connection.execute(f"CREATE TABLE {secret} (k text, v text)".encode())
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)".encode(), ROWS)
        connection.execute(f"INSERT INTO {secret} VALUES ('password', 'hunter2')".encode())
    query = f"SELECT k, region FROM {table} WHERE region = '${{region}}'"
    root = workspace(tmp_path_factory.mktemp("pg"), query, manifest=f"connections:\n  pg: {postgres_url}\n", connection="pg")
    yield root, table
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}, {secret}".encode())


@pytest.mark.parametrize("attack", REPRODUCERS)
def test_injection_reproducers_return_no_extra_rows_on_postgresql(
    pg_workspace: tuple[Path, str], postgres_url: str, attack: str
) -> None:
    root, table = pg_workspace
    attack = attack.replace("secret_table", f"{table}_secret")
    found = rows(root, attack, {"pg": postgres_url})
    assert found == [{"k": k, "region": r} for k, r in ROWS if r == attack]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))), present=st.booleans())
def test_any_string_selects_exactly_its_rows_on_postgresql(
    pg_workspace: tuple[Path, str], postgres_url: str, value: str, present: bool
) -> None:
    assume("${" not in value)
    root, table = pg_workspace
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DELETE FROM {table} WHERE k = 'probe'".encode())
        if present:
            connection.execute(f"INSERT INTO {table} VALUES ('probe', %s)".encode(), (value,))
    expected = [{"k": k, "region": r} for k, r in [*ROWS, *([("probe", value)] if present else [])] if r == value]
    assert sorted(rows(root, value, {"pg": postgres_url}), key=str) == sorted(expected, key=str)


def test_check_fails_on_a_known_identifier_value_that_breaks_the_rule(tmp_path: Path) -> None:
    root = workspace(tmp_path, "SELECT * FROM ${table} WHERE region = '${region}'")
    text = (root / "jobs" / "q.yaml").read_text().replace("table: items", "table: 'items --'")
    (root / "jobs" / "q.yaml").write_text(text)
    result = check([str(root)])
    [error] = [d for d in result.diagnostics if d.severity == "error"]
    assert error.code == "unsafe-substitution" and "'items --' is not a table or column name" in error.message
    assert error.primary is not None and (error.primary.span.line, error.primary.span.column) == (8, 27)
    (root / "jobs" / "q.yaml").write_text(text.replace("'${region}'", "$t$ ${region} $t$").replace("'items --'", "items"))
    assert [d.code for d in check([str(root)]).diagnostics] == ["unsafe-substitution"]
    (root / "jobs" / "q.yaml").write_text(text.replace("'items --'", "${TABLE}"))
    assert check([str(root)]).ok
