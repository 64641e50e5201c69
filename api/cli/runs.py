"""`sleipnir runs [JOB | RUN_ID]`: the recent runs kept in the run ledger, as a table or as JSON, or one run in
full (its plan, timings, counts, cost, failures with their reasons and its first outputs).

The ledger is the workspace's `state:` (`.sleipnir/state.db` by default), found around the current folder or
`--workspace`; `run-job`, `serve` and `trigger` all record there. It is read through `History`, read-only:
listing never creates a ledger. With none yet, the command says so and exits 0; a name that is neither a job
with runs nor a run id exits 1 with the names it may have meant.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from ..compiler.documents import MANIFEST_NAMES
from ..compiler.workspace import display_path, find_root
from ..runtime.engine.history import READ_ERRORS, History, ItemResult, duration_text
from ..runtime.engine.job import DEFAULT_STATE
from ..runtime.engine.ledger import RunRecord
from ..runtime.io.dbconn import DatabaseError, DatabaseURL, mask_secrets, mask_url, parse_database_url
from .common import guarded
from .console import cost_of

__all__ = ["LedgerProblem", "ledger_database", "open_history", "run_data", "run_detail", "runs_command", "workspace_root"]

EXIT_PROBLEMS = 1
FIRST_OUTPUTS = 5
"""Outputs `runs RUN_ID` shows (every item: `sleipnir view`)."""
FIRST_FAILURES = 50
"""Failures `runs RUN_ID` shows."""
_STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan"}


class LedgerProblem(Exception):
    """A problem to report as one line, exit 1."""


@click.command("runs")
@click.argument("name", metavar="[JOB | RUN_ID]", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The workspace folder (default: the one around the current folder).",
)
@guarded
def runs_command(name: str | None, limit: int, as_json: bool, workspace: Path | None) -> None:
    """List the recent runs of JOB (or of every job): status, duration, items, tokens and cost; or show RUN_ID."""
    root = workspace_root(workspace)
    try:
        with open_history(root) as history:
            if history is None:
                where = display_path(ledger_database(root).path or Path(DEFAULT_STATE))
                if as_json:
                    click.echo("[]")
                click.echo(f"no runs yet: there is no run ledger at {where} (the first run makes it)", err=as_json)
                return
            run = _find_run(history, name) if name else None
            if run is not None:
                detail = run_detail(history, run, str(root))
                click.echo(json.dumps(detail, indent=2, ensure_ascii=False) if as_json else _detail_text(detail))
                return
            records = history.runs(name, limit)
            if name and not records:
                jobs, ids = history.names()
                raise LedgerProblem(f"no job with runs and no run named `{name}`{_did_you_mean(name, jobs + ids)}")
    except LedgerProblem as problem:
        click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_PROBLEMS)
    data = [run_data(record, str(root)) for record in records]
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not data:
        click.echo("no runs yet")
    else:
        _print_table(data)


def workspace_root(workspace: Path | None) -> Path:
    """The workspace around `workspace` (or the current folder), or that folder when none is around it."""
    start = workspace if workspace is not None else Path.cwd()
    return find_root(start.absolute()) or start.absolute()


def ledger_database(root: Path) -> DatabaseURL:
    """Where the workspace's run ledger is (`state:` in its manifest, else the default); a `LedgerProblem` when
    the manifest cannot be read or names no usable store."""
    return _database(_state_url(root), root)


@contextmanager
def open_history(root: Path) -> Iterator[History | None]:
    """The workspace's run ledger, read-only; None when its SQLite file does not exist yet. Problems opening or
    reading it are `LedgerProblem`s, their passwords masked."""
    url = _state_url(root)
    database = _database(url, root)
    if database.path is not None and not database.path.is_file():
        yield None
        return
    try:
        history = History(database)
    except (DatabaseError, *READ_ERRORS, OSError) as error:
        raise LedgerProblem(f"cannot open the run ledger {mask_url(url)}: {mask_secrets(str(error).strip(), url)}") from None
    try:
        yield history
    except READ_ERRORS as error:
        raise LedgerProblem(f"cannot read the run ledger {mask_url(url)}: {mask_secrets(str(error).strip(), url)}") from None
    finally:
        history.close()


def _find_run(history: History, name: str) -> RunRecord | None:
    """The run `name` names: its id, or the start of exactly one id (at least 6 characters)."""
    run = history.run(name)
    if run is not None or len(name) < 6:
        return run
    _, ids = history.names()
    matches = [run_id for run_id in ids if run_id.startswith(name)]
    return history.run(matches[0]) if len(matches) == 1 else None


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(f'`{n}`' for n in close)}?" if close else ""


def run_detail(history: History, record: RunRecord, root: str, outputs: int = FIRST_OUTPUTS) -> dict[str, Any]:
    """One run in full: `run_data`, the run's message, its items by status, every failure and its first outputs."""
    data = run_data(record, root)
    message = record.summary.get("message")
    failures = [
        item
        for status in ("failed", "skipped")
        for item in history.items(record.run_id, status=status, limit=FIRST_FAILURES)
    ]
    return {
        **data,
        "message": message if isinstance(message, str) else None,
        "items": history.counts(record.run_id),
        "failures": [{"key": i.key, "status": i.status, "attempts": i.attempts, "error": i.error} for i in failures][
            :FIRST_FAILURES
        ],
        "outputs": [_output(i) for i in history.items(record.run_id, status="succeeded", limit=outputs)],
    }


def _output(item: ItemResult) -> dict[str, Any]:
    return {"key": item.key, "output": item.output}


def _detail_text(detail: dict[str, Any]) -> str:
    cost = "unknown" if detail["cost"] is None else f"${detail['cost']:,.4f}"
    finished = (detail["finished_at"] or "-").replace("T", " ")[:19]
    lines = [
        f"run {detail['run_id']} of {detail['job']}: {detail['status']}",
        f"  plan      {detail['plan_id']}",
        f"  started   {detail['started_at'].replace('T', ' ')[:19]}   finished {finished}   "
        f"took {duration_text(detail['duration_seconds'])}",
        f"  items     {detail['items_succeeded']:,} ok, {detail['items_skipped']:,} skipped, "
        f"{detail['items_failed']:,} failed, {detail['retries']:,} retries",
        f"  tokens    {detail['prompt_tokens']:,} prompt + {detail['completion_tokens']:,} completion   cost {cost}",
    ]
    if detail["message"]:
        lines.append(f"  message   {detail['message']}")
    if detail["failures"]:
        total = detail["items"].get("failed", 0) + detail["items"].get("skipped", 0)
        lines.append(f"failures ({total:,}):")
        lines.extend(f"  {f['key']}  {f['status']}: {f['error']}" for f in detail["failures"])
    if detail["outputs"]:
        shown, total = len(detail["outputs"]), detail["items"].get("succeeded", 0)
        lines.append(f"outputs (the first {shown} of {total:,}):" if total > shown else "outputs:")
        lines.extend(f"  {o['key']}  {json.dumps(o['output'], ensure_ascii=False)}" for o in detail["outputs"])
    lines.append("every item: sleipnir view")
    return "\n".join(lines)


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
    """The workspace's `state:`, or the default; a manifest that cannot be read is a `LedgerProblem`."""
    manifest = next((root / name for name in MANIFEST_NAMES if (root / name).is_file()), None)
    if manifest is None:
        return DEFAULT_STATE
    shown = display_path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8")
        body = yaml.safe_load(text)
    except OSError as error:
        raise LedgerProblem(f"{shown}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise LedgerProblem(f"{shown}: not UTF-8 text") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
        raise LedgerProblem(f"{place}: invalid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise LedgerProblem(f"{shown}: invalid YAML: {error}") from None
    state = body.get("state") if isinstance(body, dict) else None
    if state is None:
        return DEFAULT_STATE
    if not isinstance(state, str) or not state.strip():
        raise LedgerProblem(f"{_place_of_state(text, shown)}: `state` must be a path or a PostgreSQL URL")
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
        raise LedgerProblem(f"the run ledger: {error}") from None


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
            duration_text(run["duration_seconds"]),
            f"{run['items_succeeded']:,}",
            f"{run['items_skipped']:,}",
            f"{run['items_failed']:,}",
            f"{run['tokens']:,}",
            "unknown" if run["cost"] is None else f"${run['cost']:,.4f}",
        )
    console.print(table)


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
