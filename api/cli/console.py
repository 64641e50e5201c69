"""What `sleipnir run-job` shows a person: a rich progress bar while it runs, a summary table at the end."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..compiler.estimate import Price, load_prices, price_of
from ..compiler.workspace import PRICES_FILE
from ..runtime.engine.job import Hooks, RunResult
from ..runtime.engine.job import Progress as RunProgress
from ..runtime.engine.pipeline import PipelineResult
from .common import NORMAL, QUIET, use_color

FAILURES_SHOWN = 20
REASON_WIDTH = 300


class LiveProgress:
    """Hooks that draw a progress bar on stderr (on a terminal): items done, items/s, ETA, tokens and failures;
    and print each notice once, above the bar."""

    def __init__(self, console: Console, label: str, mode: str = NORMAL) -> None:
        self.console = console
        self.mode = mode
        self.notices: set[str] = set()
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} items/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tokens"),
            TextColumn("{task.fields[failures]}"),
            console=console,
            transient=False,
            disable=mode == QUIET or not console.is_interactive,
        )
        self.task = self.bar.add_task(escape(label), total=None, rate="0", tokens="0", failures="")

    def hooks(self, alerts: list[str]) -> Hooks:
        return Hooks(
            on_start=lambda **_: self.bar.start(),
            on_progress=self.update,
            on_notice=lambda *, message: self.notice(message),
            on_alert=lambda **event: alerts.append(f"{event.get('stage')} {event.get('key')}: {event.get('error')}"),
            on_notify=lambda **event: self.notice(f"complete event: {event['job']} (output.on_complete: notify)"),
        )

    def notice(self, message: str) -> None:
        if self.mode == QUIET or message in self.notices:
            return
        self.notices.add(message)
        self.console.print(f"[yellow]note:[/] {escape(message)}")

    def update(self, *, progress: RunProgress) -> None:
        elapsed = max(1e-6, time.monotonic() - progress.started)
        failures = progress.failed + progress.skipped
        self.bar.update(
            self.task,
            total=progress.total,
            completed=progress.done + progress.already_done,
            rate=f"{progress.done / elapsed:,.1f}",
            tokens=f"{progress.prompt_tokens + progress.completion_tokens:,}",
            failures=f"[red]{failures} failed/skipped[/]" if failures else "",
        )

    def stop(self) -> None:
        self.bar.stop()


def one_line(text: str, width: int = REASON_WIDTH) -> str:
    """`text` on one line (its whitespace runs made single spaces), cut at `width` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def failure_lines(result: RunResult) -> list[str]:
    """One line per failed or skipped item (the first `FAILURES_SHOWN`): its key, the stage and the reason."""
    lines = [
        f"[red]failed[/] {escape(str(failure.key))} [dim]at[/] {escape(failure.stage)}: {escape(one_line(failure.error))}"
        for failure in result.errors[:FAILURES_SHOWN]
    ]
    more = max(len(result.errors), result.progress.failed + result.progress.skipped) - len(lines)
    if more > 0 and lines:
        lines.append(f"  … and {more:,} more (every one with --json)")
    return lines


def summary_line(result: RunResult, root: str) -> str:
    """The run in one line, for `-q`: status, items, tokens, cost and wall time."""
    p = result.progress
    cost = cost_of(result.metrics["tokens_by_model"], root)
    parts = [
        f"{p.succeeded:,} ok",
        *([f"{p.failed:,} failed"] if p.failed else []),
        *([f"{p.skipped:,} skipped"] if p.skipped else []),
        *([f"{p.already_done:,} already done"] if p.already_done else []),
        f"{p.prompt_tokens + p.completion_tokens:,} tokens",
        "cost unknown" if cost is None else f"${cost:,.4f}",
        f"{result.wall_time:,.2f}s",
    ]
    status = f"[green]{result.status}[/]" if result.ok else f"[red]{result.status}[/]"
    return f"{escape(result.job)}: {status}: {', '.join(parts)}"


def cost_of(tokens_by_model: Mapping[str, Any], root: str) -> float | None:
    """The estimated cost of a run's tokens at list prices (stdlib prices.yaml and the workspace's)."""
    workspace_prices = Path(root) / PRICES_FILE
    try:
        prices = _prices(root, workspace_prices.stat().st_mtime_ns if workspace_prices.exists() else None)
    except ValueError:
        return None
    total = 0.0
    for model, usage in tokens_by_model.items():
        price = price_of(prices, model)
        if price is None:
            return None
        total += price.cost(usage["prompt"], usage["completion"])
    return total


@functools.lru_cache(maxsize=16)
def _prices(root: str, version: int | None) -> dict[str, Price]:
    """The price table of `root`, read once per version of its `prices.yaml` (`sleipnir runs` prices every row,
    `serve` every run)."""
    return load_prices(root)


def summary(result: RunResult, root: str) -> Table:
    metrics = result.metrics
    p = result.progress
    table = Table(title=f"{result.job}: {result.status}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    cost = cost_of(metrics["tokens_by_model"], root)
    rows = [
        ("items ok", f"{p.succeeded:,}"),
        ("skipped", f"{p.skipped:,}"),
        ("dead letter", f"{p.dead_lettered:,}" + (f" ({result.dead_letter})" if p.dead_lettered else "")),
        ("failed", f"{p.failed:,}"),
        ("already done", f"{p.already_done:,}"),
        *([("redone (stale)", f"{p.stale:,}: {', '.join(result.changed_prompts) or 'their rows changed'}")] if p.stale else []),
        *([("answers reused", f"{p.reused:,}")] if p.reused else []),
        ("calls", f"{p.calls:,}"),
        ("retries", f"{p.retries:,}"),
        ("tokens", f"{p.prompt_tokens:,} prompt + {p.completion_tokens:,} completion"),
        ("estimated cost", "unknown" if cost is None else f"${cost:,.4f}"),
        ("wall time", f"{result.wall_time:,.2f}s"),
    ]
    if result.status in ("interrupted", "timed_out") or (result.status == "failed" and metrics["items_left"]):
        left = metrics["items_left"]
        rows.append(("left for a resume", f"{left:,}" if p.total is not None else "the rest of the source"))
    for provider, limit in sorted(metrics["rate_limits"].items()):
        if limit["rate_limited"] or limit["decreases"]:
            rate = limit["requests_per_minute"]
            rows.append((
                f"rate limits ({provider})",
                f"{limit['rate_limited']:,} x 429/503, {limit['decreases']} decreases, now "
                + ("unlimited" if rate is None else f"{rate:,.0f}/min"),
            ))
    for name, value in rows:
        table.add_row(name, value)
    return table


def result_data(result: RunResult | PipelineResult, root: str) -> dict[str, Any]:
    """The `--json` form of a run."""
    if isinstance(result, PipelineResult):
        return {
            "pipeline": result.name,
            "plan_id": result.plan_id,
            "status": result.status,
            "failed": result.failed,
            "skipped": result.skipped,
            "jobs": {entry: result_data(run, root) for entry, run in result.jobs.items()},
        }
    metrics = result.metrics
    return {
        "job": result.job,
        "run_id": result.run_id,
        "plan_id": result.plan_id,
        "status": result.status,
        "message": result.message,
        "metrics": {**metrics, "cost": cost_of(metrics["tokens_by_model"], root)},
        "errors": [{"key": e.key, "stage": e.stage, "error": e.error, "attempts": e.attempts} for e in result.errors[:100]],
        "notices": result.notices,
    }


NOT_A_TERMINAL_WIDTH = 100_000
"""The width of stderr when it is not a terminal: wide enough that no line is wrapped (rich's default, 80
columns, cut log files and CI output mid-sentence)."""


def stderr_console(color: str = "auto") -> Console:
    """The console on stderr: coloured as `--color`, FORCE_COLOR and NO_COLOR say (`common.use_color`), animated
    only on a terminal, and never wrapped when stderr is not a terminal."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    colored = use_color(color, sys.stderr)
    return Console(
        file=sys.stderr,
        highlight=False,
        force_terminal=tty or colored,
        force_interactive=tty,
        color_system="auto" if colored else None,
        no_color=not colored,
        width=None if tty else NOT_A_TERMINAL_WIDTH,
        soft_wrap=not tty,
    )
