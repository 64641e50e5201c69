"""`sleipnir serve` and `sleipnir trigger`: the command-line faces of `sleipnir.runtime.serve.service`.

`serve_command` and `trigger_command` are click commands that `cli.py` registers on the `sleipnir` group.

A testing aid, read by both: `SLEIPNIR_CLOCK=fast:<factor>` runs the scheduler's clock `factor` times as fast
as real time, and `SLEIPNIR_CLOCK_START=<ISO 8601>` starts it at that instant, so a day of cron fire times
(or a daylight-saving change) can be watched in seconds. Production leaves both unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import click

from ..compiler.ir.common import suggestion_help
from ..compiler.selection import entries, workspace_index
from ..runtime.engine.job import RunResult
from ..runtime.engine.pipeline import PipelineResult
from ..runtime.serve.logs import Redactor, TextFormatter
from ..runtime.serve.service import Clock, FastClock, Service, SystemClock
from .common import color_option, guarded
from .console import cost_of, result_data, stderr_console, summary
from .listing import RUNNABLE, complete_names

__all__ = ["clock_from_environ", "serve_command", "trigger_command"]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Redacting(logging.Filter):
    """Hides the values of secret-looking environment variables in the service's own records."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redactor.text(record.getMessage()), ()
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record comes (a test runner may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_to_stderr() -> None:
    """The service's own records (`sleipnir.serve`) and the alert deliveries' on stderr, in the text form of
    job logs (`ts LEVEL job run_id event message`), unless a handler is set already. Each job's own records go
    where its `logging:` says."""
    for name in ("sleipnir.serve", "sleipnir.alerts"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = _Stderr(sys.stderr)
            handler.setFormatter(TextFormatter())
            handler.addFilter(_Redacting(Redactor(environ=os.environ)))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def clock_from_environ(environ: Mapping[str, str]) -> Clock:
    """The clock `serve` uses, a testing aid: `SLEIPNIR_CLOCK=fast:<factor>` runs simulated time `factor`
    times as fast; `SLEIPNIR_CLOCK_START=<ISO 8601>` starts it at that instant (UTC when it has no offset).
    Without either, the system clock. Raises ValueError for a value it cannot read."""
    spec = environ.get("SLEIPNIR_CLOCK", "").strip()
    start_text = environ.get("SLEIPNIR_CLOCK_START", "").strip()
    if not spec and not start_text:
        return SystemClock()
    factor = 1.0
    if spec:
        kind, _, value = spec.partition(":")
        if kind != "fast":
            raise ValueError(f"SLEIPNIR_CLOCK={spec!r}: write fast:<factor>, such as fast:60")
        try:
            factor = float(value)
        except ValueError:
            raise ValueError(f"SLEIPNIR_CLOCK={spec!r}: the factor must be a number, such as fast:60") from None
    start = None
    if start_text:
        try:
            start = datetime.fromisoformat(start_text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"SLEIPNIR_CLOCK_START={start_text!r} is not an ISO 8601 time") from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    return FastClock(start, factor)


def _clock() -> Clock:
    try:
        return clock_from_environ(os.environ)
    except ValueError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)


def _service(workspace: str, host: str = "127.0.0.1", port: int = 8080) -> Service:
    try:
        return Service(workspace, clock=_clock(), cost=cost_of, host=host, port=port)
    except ImportError as error:
        click.echo(f"error[internal-error]: serve needs a module that is not installed: {error}", err=True)
        sys.exit(EXIT_USAGE)


@click.command("serve")
@click.argument("workspace", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="The address the HTTP server listens on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Its port (0: any free port)."
)
@guarded
def serve_command(workspace: str, host: str, port: int) -> None:
    """Run every job and pipeline of WORKSPACE that has a schedule or triggers, until SIGTERM or Ctrl-C.

    Schedules fire on cron times in each job's timezone; `file_created` triggers watch their folders; webhooks,
    `/metrics` (Prometheus) and `/healthz` are served on HOST:PORT. Conditions are checked before every run.
    A change to the workspace's YAML files recompiles it (a change that does not compile keeps what runs).
    SIGTERM lets the running jobs stop gracefully, then exits 0. Exits 1 when the workspace does not compile
    (the diagnostics are printed) or the port cannot be taken, 2 on a usage error.
    """
    _log_to_stderr()
    service = _service(workspace, host=host, port=port)
    sys.exit(asyncio.run(service.serve()))


@click.command("trigger")
@click.argument("job", shell_complete=complete_names(RUNNABLE))
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False), help="The run's items, replacing the job's source.")
@click.option(
    "--workspace",
    default=".",
    show_default=True,
    type=click.Path(exists=True, file_okay=False),
    help="The workspace (or a folder inside it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@color_option
@guarded
def trigger_command(job: str, input_path: str | None, workspace: str, as_json: bool, color: str) -> None:
    """Start one run of JOB by hand, the way `serve` starts a triggered run: its `conditions` are checked first.

    Unlike `run-job`, a run that a condition holds back does not start: the reason is printed and the exit code
    is 1. Exits 0 when the run succeeded, 1 when it failed, was held back, or JOB is unknown or does not compile,
    130 when it was interrupted, 2 on a usage error.
    """
    _log_to_stderr()
    service = _service(workspace)
    try:
        # With --json, stdout is the result's alone: a job's log records meant for stdout go to stderr.
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            outcome = asyncio.run(service.trigger(job, input_path))
    except LookupError:
        click.echo(f"error[unknown-target]: no job or pipeline named `{job}` in {workspace}", err=True)
        names = [e.name for e in entries(workspace_index([workspace]), RUNNABLE, tags=False)]
        if (suggestion := suggestion_help(job, names)) is not None:
            click.echo(f"  = help: {suggestion}", err=True)
        elif names:
            click.echo(f"  = note: jobs and pipelines here: {', '.join(sorted(set(names)))}", err=True)
        sys.exit(EXIT_PROBLEMS)
    except ValueError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_PROBLEMS)
    if outcome.result is None:
        click.echo(f"{job}: held back: {outcome.reason}", err=True)
        sys.exit(EXIT_PROBLEMS)
    result = outcome.result
    runs: list[RunResult] = list(result.jobs.values()) if isinstance(result, PipelineResult) else [result]
    console = stderr_console(color)
    for run in runs:
        console.print(summary(run, service.root))
        if run.message:
            console.print(run.message, markup=False)
    if as_json:
        sys.stdout.write(json.dumps(result_data(result, service.root), indent=2, default=str) + "\n")
    if any(run.status == "interrupted" for run in runs):
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if result.ok else EXIT_PROBLEMS)
