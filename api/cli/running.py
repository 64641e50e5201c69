"""What `sleipnir run-job` does once it runs: compile, run with a progress bar and a summary, choose the exit code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ..compiler.estimate import estimate
from ..compiler.ir import JobStep, Plan, Sink
from ..compiler.ir.common import workspace_paths_of
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
from .common import EXIT_USAGE, NORMAL, QUIET, VERBOSE, echo, use_color
from .console import (
    FAILURES_SHOWN,
    LiveProgress,
    cost_of,
    failure_lines,
    one_line,
    result_data,
    stderr_console,
    summary,
    summary_line,
)
from .run import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


def run_command(
    *,
    target: str,
    mode: str = NORMAL,
    color: str = "auto",
    results: list[dict[str, Any]] | None = None,
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
    console = stderr_console(color)
    if compiled.diagnostics and (mode != QUIET or not compiled.ok):
        colored = use_color(color, sys.stderr)
        echo(RENDERERS["human"](compiled.report, colored), err=True, color=colored)
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
    jobs = {n.id: n.plan for n in plan.nodes if isinstance(n, JobStep)} if plan.kind == "pipeline" else {"": plan}
    if as_json and (writer := _writes_to_stdout(jobs)):
        click.echo(
            f"error[usage]: --json prints the result on stdout, where `{writer}` writes its output "
            "(output without `path`, `table` or `endpoint`); give the output a path, or drop --json",
            err=True,
        )
        return EXIT_USAGE
    live = LiveProgress(console, plan.name, mode)
    alerts: list[str] = []
    operations = {entry: Operations(job, settings, environ, verbose=mode == VERBOSE) for entry, job in jobs.items()}
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
                if mode != QUIET:
                    console.print(line)
    assert result is not None
    _show(console, result, alerts, plan.root, mode)
    if results is not None:
        results.append(result_data(result, plan.root))
    elif as_json:
        sys.stdout.write(json.dumps(result_data(result, plan.root), indent=2, default=str) + "\n")
    runs = list(result.jobs.values()) if isinstance(result, PipelineResult) else [result]
    return _exit_code(runs, result)


def _show(console: Console, result: RunResult | PipelineResult, alerts: list[str], root: str, mode: str) -> None:
    """What a person reads once the run is over: alerts, then per job the summary (a table, or one line with
    -q), its message, and one line per failed item."""
    for alert in alerts[:FAILURES_SHOWN]:
        console.print(f"[red]alert:[/] {escape(one_line(alert))}")
    runs = list(result.jobs.values()) if isinstance(result, PipelineResult) else [result]
    for run in runs:
        console.print(summary_line(run, root) if mode == QUIET else summary(run, root))
        if run.message and (mode != QUIET or not run.ok):
            console.print(f"[red]{run.status}:[/] {escape(run.message)}" if not run.ok else escape(run.message))
        for line in failure_lines(run):
            console.print(line, no_wrap=True, overflow="ellipsis")  # one line each, cut to fit a terminal
    if isinstance(result, PipelineResult) and result.skipped:
        console.print(f"[yellow]not started (a dependency failed):[/] {', '.join(result.skipped)}")


def _writes_to_stdout(jobs: Mapping[str, Plan]) -> str | None:
    """The name of a job among `jobs` whose output goes to stdout, if any."""
    return next((job.name for job in jobs.values() if any(isinstance(n, Sink) and n.destination == "stdout" for n in job.nodes)), None)


def _dry_run(plan: Plan, options: RunOptions) -> int:
    """What a run would call, read from the source and the ledger, with its estimated cost; nothing is called."""
    if plan.kind != "job":
        return EXIT_OK
    try:
        found = asyncio.run(JobRun(plan, options).survey())
    except (SourceError, ProviderError, DatabaseError, MissingSecret, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_FAILED
    cost = estimate(plan, to_call=found.to_call).cost
    click.echo("\n" + found.describe())
    click.echo("estimated cost " + (f"${cost:.4f}" if cost is not None else "unknown (a model has no price)"))
    return EXIT_OK


class Operations:
    """What a run does besides its items: the job's log, its alerts and its metrics export."""

    def __init__(self, plan: Plan, manifest: Mapping[str, Any], environ: Mapping[str, str], *, verbose: bool = False) -> None:
        self.plan = plan
        logging_settings = dict(plan.settings.get("logging") or {})
        if logging_settings.get("destination") in ("stdout", "stderr", None):
            # `run-job` owns the terminal: the progress bar, the notices and the summary say what the records
            # would, and stdout carries the job's output or --json. The records are shown with -v, on stderr.
            logging_settings["destination"] = "stderr" if verbose else "none"
        self.logger = configure(
            logging_settings,
            echo=verbose,
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
