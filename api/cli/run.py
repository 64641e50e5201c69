"""`sleipnir run-job` (and `run`): the commands and their options. What a run does is in `running.py`, imported
only when a run starts, so `run-job --help` and the shell completion of job names import no runtime."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from .common import NORMAL, QUIET, VERBOSE, F, color_option, guarded, skip_teardown
from .listing import RUNNABLE, complete_names, select_option, selected

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def _run_options(function: F) -> F:
    for option in reversed(
        (
            click.argument("target", required=False, shell_complete=complete_names(RUNNABLE)),
            select_option(RUNNABLE),
            click.option("--input", "input_path", type=click.Path(dir_okay=False), help="Read the items from this file instead of the job's source."),
            click.option("--profile", metavar="NAME", help="Apply this profile."),
            click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a value; repeatable."),
            click.option("--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of overrides."),
            click.option("--dry-run", is_flag=True, help="Print the plan and what a run would call, and stop: nothing is called."),
            click.option("--limit", type=click.IntRange(min=1), help="Run only the first N items (a sample run)."),
            click.option("--fresh", is_flag=True, help="Forget earlier runs of this job (and their answers) and redo everything."),
            click.option("--keep-stale", is_flag=True, help="Keep the results of items whose work changed; do only new items."),
            click.option("--retry-failed", is_flag=True, help="Re-run only the items that failed before."),
            click.option("--cache", is_flag=True, help="Reuse answers of identical earlier calls (never errors)."),
            click.option(
                "--json",
                "as_json",
                is_flag=True,
                help="Print the result as JSON on stdout, and nothing else there (a JSON array with --select).",
            ),
            click.option("--engine", type=click.Choice(["local", "dask"]), help="Run on this engine (overrides execution.engine)."),
            click.option("--scheduler", metavar="ADDRESS", help="The dask engine's scheduler (tcp://host:8786); none: a local cluster."),
            click.option("-q", "--quiet", is_flag=True, help="Print only the summary line and errors."),
            click.option("-v", "--verbose", is_flag=True, help="Also print the job's log records, on stderr."),
            color_option,
            click.option(
                "--grace",
                type=click.FloatRange(min=0),
                default=5.0,
                show_default=True,
                metavar="SECONDS",
                help="After Ctrl-C or SIGTERM, how long the calls in flight may finish before they are cancelled.",
            ),
        )
    ):
        function = option(function)
    return function


@click.command("run-job")
@_run_options
@guarded
def run_job(**options: Any) -> None:
    """Run a job (or pipeline) by name or file: stream its items through its prompts to its output.

    A rerun does only what is not done yet; --fresh starts over. Ctrl-C or SIGTERM stops it: the calls in flight
    get --grace seconds to finish, what is done is written and published, and it exits 130 (a second signal
    exits at once): run the same command again to resume. Exits 0 when every item succeeded, 1 when the run
    failed or passed its execution.timeout, 2 on a usage or internal error. --select (instead of TARGET) runs
    each job and pipeline it picks, one after the other.
    """
    _exit(run_selected(**options))


@click.command("run")
@_run_options
@guarded
def run_alias(**options: Any) -> None:
    """Same as `run-job`."""
    _exit(run_selected(**options))


def _exit(code: int) -> None:
    """Exit with `code`. A run leaves the process at once: everything it wrote is closed and synced by now (sinks,
    the ledger, the metrics textfile; `logging.shutdown` flushes the logs), and the interpreter's own teardown of
    a run's objects took a second on a loaded machine (measured), which a stop within its grace period cannot
    afford and no run needs. Called in-process (tests), only a stop does so; otherwise the process entry point
    (`common.run`) ends the process once the exit code is known."""
    if code != EXIT_INTERRUPTED:
        skip_teardown()
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_selected(*, target: str | None, selectors: tuple[str, ...], quiet: bool, verbose: bool, **options: Any) -> int:
    """`run-job TARGET`, or `run-job --select ...`: each picked job and pipeline in turn; the worst exit code."""
    if quiet and verbose:
        raise click.UsageError("give -q or -v, not both")
    mode = QUIET if quiet else VERBOSE if verbose else NORMAL
    if target and selectors:
        raise click.UsageError("give TARGET or --select, not both")
    if not target and not selectors:
        raise click.UsageError("give TARGET (a job or pipeline name, or a file) or --select")
    if options["dry_run"] and options["as_json"]:
        raise click.UsageError("--dry-run prints the plan as text; for its JSON, `sleipnir plan --format json`")
    from .running import run_command

    if target:
        return run_command(target=target, mode=mode, **options)
    results: list[dict[str, Any]] = []
    codes = []
    for entry in selected(selectors, RUNNABLE):
        before = len(results)
        codes.append(run_command(target=entry.name, mode=mode, **{**options, "as_json": False}, results=results))
        if len(results) == before:  # it did not start: say so in its place, the reasons are on stderr
            results.append({entry.kind: entry.name, "status": "not_started", "message": "see the errors on stderr"})
        if codes[-1] == EXIT_INTERRUPTED:
            break
    if options["as_json"]:
        sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    return EXIT_INTERRUPTED if EXIT_INTERRUPTED in codes else max(codes)
