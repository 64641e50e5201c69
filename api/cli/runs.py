"""`sleipnir runs [JOB]`: the recent runs kept in the run ledger, as a table or as JSON.

The ledger is the workspace's `state:` (`.sleipnir/state.db` by default), found around the current folder or
`--workspace`. Listing never creates a ledger: with none yet, the command says so and exits 0.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg
import yaml
from rich.console import Console
from rich.table import Table

from ..compiler.documents import MANIFEST_NAMES
from ..compiler.workspace import display_path, find_root
from ..runtime.engine.job import DEFAULT_STATE
from ..runtime.engine.ledger import Ledger, RunRecord
from ..runtime.io.dbconn import DatabaseError, DatabaseURL, mask_secrets, mask_url, parse_database_url
from .console import cost_of

__all__ = ["run_data", "runs_command"]

EXIT_PROBLEMS = 1
_STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan"}


class _Problem(Exception):
    """A problem to report as one line, exit 1."""


@click.command("runs")
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The workspace folder (default: the one around the current folder).",
)
def runs_command(job: str | None, limit: int, as_json: bool, workspace: Path | None) -> None:
    """List the recent runs of JOB (or of every job): status, duration, items, tokens and cost."""
    start = workspace if workspace is not None else Path.cwd()
    root = find_root(start.absolute()) or start.absolute()
    try:
        url = _state_url(root)
        database = _database(url, root)
        records = _read_runs(database, url, root, job, limit)
    except _Problem as problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_PROBLEMS)
    data = [run_data(record, str(root)) for record in records or ()]
    if as_json:
        click.echo(json.dumps(data, indent=2))
    if records is None:
        where = display_path(database.path) if database.path is not None else database.display
        click.echo(f"no runs yet: there is no run ledger at {where} (the first run makes it)", err=as_json)
    elif not data:
        click.echo(f"no runs of `{job}` yet" if job else "no runs yet", err=as_json)
    elif not as_json:
        _print_table(data)


def run_data(record: RunRecord, root: str) -> dict[str, Any]:
    """One ledger run as JSON-ready data: times as ISO 8601 in local time, counts from the run's summary."""
    summary = record.summary
    cost = summary.get("cost")
    if not isinstance(cost, int | float) and isinstance(summary.get("tokens_by_model"), dict):
        cost = _cost(summary["tokens_by_model"], root)
    duration = summary.get("execution_time")
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        duration = None if record.finished_at is None else max(0.0, record.finished_at - record.started_at)
    prompt, completion = _count(summary, "prompt_tokens"), _count(summary, "completion_tokens")
    return {
        "run_id": record.run_id,
        "job": record.job,
        "status": record.status,
        "started_at": _local(record.started_at),
        "finished_at": None if record.finished_at is None else _local(record.finished_at),
        "duration_seconds": duration,
        "items_succeeded": _count(summary, "items_processed"),
        "items_skipped": _count(summary, "items_skipped"),
        "items_failed": _count(summary, "items_failed"),
        "retries": _count(summary, "retries"),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
        "cost": cost if isinstance(cost, int | float) else None,
        "plan_id": record.plan_id,
    }


def _state_url(root: Path) -> str:
    """The workspace's `state:`, or the default; a manifest that cannot be read is a `_Problem`."""
    manifest = next((root / name for name in MANIFEST_NAMES if (root / name).is_file()), None)
    if manifest is None:
        return DEFAULT_STATE
    shown = display_path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8")
        body = yaml.safe_load(text)
    except OSError as error:
        raise _Problem(f"{shown}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _Problem(f"{shown}: not UTF-8 text") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        raise _Problem(f"{place}: invalid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise _Problem(f"{shown}: invalid YAML: {error}") from None
    state = body.get("state") if isinstance(body, dict) else None
    if state is None:
        return DEFAULT_STATE
    if not isinstance(state, str) or not state.strip():
        raise _Problem(f"{_place_of_state(text, shown)}: `state` must be a path or a PostgreSQL URL")
    return state


def _place_of_state(text: str, shown: str) -> str:
    """`file:line:column` of the `state:` value (the YAML already parsed, so composing it again succeeds)."""
    node = yaml.compose(text)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "state":
                return f"{shown}:{value.start_mark.line + 1}:{value.start_mark.column + 1}"
    return shown


def _database(url: str, root: Path) -> DatabaseURL:
    """Where the ledger is, read as `Ledger` reads it."""
    try:
        return parse_database_url(url, root=str(root))
    except DatabaseError as error:
        raise _Problem(f"the run ledger: {error}") from None


def _read_runs(database: DatabaseURL, url: str, root: Path, job: str | None, limit: int) -> list[RunRecord] | None:
    """The newest runs; None when the SQLite ledger does not exist yet (it is not created here)."""
    if database.path is not None and not database.path.is_file():
        return None
    try:
        ledger = Ledger(url, str(root))
    except (DatabaseError, psycopg.Error, sqlite3.Error, OSError) as error:
        raise _Problem(f"cannot open the run ledger {mask_url(url)}: {mask_secrets(str(error).strip(), url)}") from None
    try:
        return ledger.runs(job, limit)
    except (psycopg.Error, sqlite3.Error) as error:
        raise _Problem(f"cannot read the run ledger {mask_url(url)}: {mask_secrets(str(error).strip(), url)}") from None
    finally:
        ledger.close()


def _print_table(data: list[dict[str, Any]]) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped output is read by people and greps alike: never fold a row to fit 80 columns.
        console = Console(highlight=False, width=max(console.width, 200))
    table = Table(title_justify="left")
    for name in ("run", "job", "status", "started", "duration"):
        table.add_column(name, no_wrap=True)
    for name in ("ok", "skipped", "failed", "tokens", "cost"):
        table.add_column(name, justify="right", no_wrap=True)
    for run in data:
        style = _STATUS_STYLE.get(run["status"], "yellow")
        table.add_row(
            run["run_id"],
            run["job"],
            f"[{style}]{run['status']}[/]",
            run["started_at"].replace("T", " ")[:19],
            _duration(run["duration_seconds"]),
            f"{run['items_succeeded']:,}",
            f"{run['items_skipped']:,}",
            f"{run['items_failed']:,}",
            f"{run['tokens']:,}",
            "unknown" if run["cost"] is None else f"${run['cost']:,.4f}",
        )
    console.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h {minute:02d}m"


def _local(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _count(summary: dict[str, Any], key: str) -> int:
    value = summary.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _cost(tokens_by_model: dict[str, Any], root: str) -> float | None:
    try:
        return cost_of(tokens_by_model, root)
    except (KeyError, TypeError):  # a summary written by another version, without both token counts
        return None
