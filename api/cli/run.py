"""`sleipnir run-job` (and `run`): compile, then run with a progress bar and a summary, and choose the exit code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from ..compiler.estimate import estimate
from ..compiler.ir import JobStep, Plan
from ..compiler.ir.common import workspace_paths_of
from ..compiler.lower import DEFAULT_LOGGING
from ..compiler.planner import plan as compile_plan
from ..compiler.render import RENDERERS
from ..compiler.render.plan_text import render_plan
from ..runtime.engine.job import Hooks, JobRun, RunOptions, RunResult, chain_hooks
from ..runtime.engine.pipeline import PipelineResult, run_pipeline
from ..runtime.engine.state import ClusterOptions
from ..runtime.io import SourceError
from ..runtime.io.dbconn import DatabaseError
from ..runtime.providers.base import ProviderError
from ..runtime.secrets import MissingSecret
from ..runtime.serve.alerts import AlertDispatcher
from ..runtime.serve.logs import configure, log_hooks, secrets_in
from ..runtime.serve.metrics import export_after_run
from .common import F, guarded, skip_teardown
from .console import LiveProgress, cost_of, result_data, stderr_console, summary

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130



def _run_options(function: F) -> F:
    for option in reversed(
        (
            click.argument("target"),
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
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."),
            click.option("--engine", type=click.Choice(["local", "dask"]), help="Run on this engine (overrides execution.engine)."),
            click.option("--scheduler", metavar="ADDRESS", help="The dask engine's scheduler (tcp://host:8786); none: a local cluster."),
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
    failed or passed its execution.timeout, 2 on a usage or internal error.
    """
    _exit(run_command(**options))


@click.command("run")
@_run_options
@guarded
def run_alias(**options: Any) -> None:
    """Same as `run-job`."""
    _exit(run_command(**options))


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


def run_command(
    *,
    target: str,
    input_path: str | None,
    profile: str | None,
    params: tuple[str, ...],
    param_files: tuple[str, ...],
    dry_run: bool,
    limit: int | None,
    fresh: bool,
    keep_stale: bool,
    retry_failed: bool,
    cache: bool,
    as_json: bool,
    grace: float = 5.0,
    engine: str | None = None,
    scheduler: str | None = None,
) -> int:
    """The whole command; returns the exit code."""
    compiled = compile_plan(target, profile=profile, params=params, param_files=param_files)
    console = stderr_console()
    if compiled.diagnostics:
        click.echo(RENDERERS["human"](compiled.report, False), err=True)
    if not compiled.ok:
        return EXIT_FAILED
    if len(compiled.plans) != 1:
        click.echo(f"error: `{target}` holds {len(compiled.plans)} jobs and pipelines; name one of them", err=True)
        return EXIT_FAILED
    plan = compiled.plans[0]
    if input_path is not None and not os.path.isfile(input_path):
        click.echo(f"error[io-error]: {input_path}: no such file", err=True)
        return EXIT_FAILED
    manifest = compiled.check.workspace.manifest
    settings = manifest.body if manifest is not None else {}
    environ = dict(os.environ)
    options = RunOptions(
        input_path=os.path.abspath(input_path) if input_path else None,
        limit=limit,
        fresh=fresh,
        keep_stale=keep_stale,
        retry_failed=retry_failed,
        cache=cache,
        state=settings.get("state"),
        environ=environ,
        grace=grace,
        engine=engine,
        cluster=ClusterOptions.of(settings, environ, scheduler),
    )
    if dry_run:
        click.echo(render_plan(plan, estimate=estimate(plan), now=datetime.now(UTC)))
        return _dry_run(plan, options)
    live = LiveProgress(console, plan.name)
    alerts: list[str] = []
    jobs = {n.id: n.plan for n in plan.nodes if isinstance(n, JobStep)} if plan.kind == "pipeline" else {"": plan}
    operations = {entry: Operations(job, settings, environ) for entry, job in jobs.items()}
    hooks = {entry: ops.hooks(live.hooks(alerts)) for entry, ops in operations.items()}
    options = dataclasses.replace(options, hooks=hooks.get("", Hooks()), handle_signals=True)
    result: RunResult | PipelineResult | None = None
    try:
        if plan.kind == "pipeline":
            result = asyncio.run(run_pipeline(plan, options, job_hooks=hooks))
        else:
            result = asyncio.run(JobRun(plan, options).run())
    finally:
        live.stop()
        finished = result.jobs if isinstance(result, PipelineResult) else {"": result}
        for entry, ops in operations.items():
            for line in ops.finish(finished.get(entry)):
                console.print(line)
    assert result is not None
    for alert in alerts[:20]:
        console.print(f"[red]alert:[/] {alert}")
    runs = list(result.jobs.values()) if isinstance(result, PipelineResult) else [result]
    for run in runs:
        console.print(summary(run, plan.root))
        if run.message:
            console.print(f"[red]{run.status}:[/] {run.message}" if not run.ok else run.message)
        for failure in run.errors[:5]:
            console.print(f"  [red]{failure.stage}[/] {failure.key}: {failure.error}")
    if isinstance(result, PipelineResult) and result.skipped:
        console.print(f"[yellow]not started (a dependency failed):[/] {', '.join(result.skipped)}")
    if as_json:
        sys.stdout.write(json.dumps(result_data(result, plan.root), indent=2, default=str) + "\n")
    return _exit_code(runs, result)


def _dry_run(plan: Plan, options: RunOptions) -> int:
    """What a run would call, read from the source and the ledger, with its estimated cost; nothing is called."""
    if plan.kind != "job":
        return EXIT_OK
    try:
        found = asyncio.run(JobRun(plan, options).survey())
    except (SourceError, ProviderError, DatabaseError, MissingSecret, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_FAILED
    cost = estimate(plan, count_items=lambda _node, _root: found.to_call).cost
    click.echo(
        f"\nwould call {found.to_call} of {found.total} items: {found.new} new, {found.stale} stale, "
        f"{found.failed} failed before; {found.done} already done"
    )
    click.echo("estimated cost " + (f"${cost:.4f}" if cost is not None else "unknown (a model has no price)"))
    return EXIT_OK


class Operations:
    """What a run does besides its items: the job's log, its alerts and its metrics export."""

    def __init__(self, plan: Plan, manifest: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.plan = plan
        logging_settings = dict(plan.settings.get("logging") or {})
        if logging_settings == DEFAULT_LOGGING and sys.stderr.isatty():
            # A job that configures no logging, run by a person: the progress bar and the summary say it all,
            # so the log keeps to warnings rather than repeating them on the same terminal.
            logging_settings["level"] = "WARNING"
        self.logger = configure(
            logging_settings,
            job=plan.name,
            root=plan.root,
            secrets=secrets_in(plan, environ),
            environ=environ,
            paths=workspace_paths_of(plan),
        )
        self.alerts = AlertDispatcher(manifest, plan.root, environ, logger=self.logger)

    def hooks(self, display: Hooks) -> Hooks:
        plan = self.plan
        rules = plan.settings.get("alerts") or ()
        return chain_hooks(display, log_hooks(self.logger), self.alerts.hooks(plan.name, rules, metrics=self.with_cost))

    def with_cost(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {**metrics, "cost": cost_of(metrics.get("tokens_by_model") or {}, self.plan.root)}

    def finish(self, run: RunResult | None) -> list[str]:
        """Export the run's metrics and wait for its alerts; lines to show the person running it."""
        lines: list[str] = []
        if run is not None:
            metrics = self.with_cost(run.metrics)
            exported = export_after_run(
                self.plan.settings.get("monitoring") or {},
                root=self.plan.root,
                job=run.job,
                status=run.status,
                metrics=metrics,
                cost=metrics["cost"],
            )
            if exported:
                lines.append(f"metrics: {exported}")
        sent = self.alerts.drain(timeout=30)
        self.alerts.close()
        lines.extend(f"[red]alert sent:[/] {entry}" for entry in sent)
        return lines


def _exit_code(runs: list[RunResult], result: Any) -> int:
    if any(run.status == "interrupted" for run in runs):
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED
