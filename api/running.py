"""`sleipnir run-job`: compile, then run with a progress bar and a summary, and choose the exit code."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from .compiler.estimate import estimate
from .compiler.planner import plan as compile_plan
from .compiler.render import RENDERERS
from .compiler.render.plan_text import render_plan
from .console import LiveProgress, result_data, stderr_console, summary
from .runtime.pipeline import PipelineResult, run_pipeline
from .runtime.run import JobRun, RunOptions, RunResult

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


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
    retry_failed: bool,
    cache: bool,
    as_json: bool,
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
    if dry_run:
        click.echo(render_plan(plan, estimate=estimate(plan), now=datetime.now(UTC)))
        return EXIT_OK
    if input_path is not None and not os.path.isfile(input_path):
        click.echo(f"error[io-error]: {input_path}: no such file", err=True)
        return EXIT_FAILED
    manifest = compiled.check.workspace.manifest
    state = manifest.body.get("state") if manifest is not None else None
    live = LiveProgress(console, plan.name)
    alerts: list[str] = []
    options = RunOptions(
        input_path=os.path.abspath(input_path) if input_path else None,
        limit=limit,
        fresh=fresh,
        retry_failed=retry_failed,
        cache=cache,
        state=state,
        hooks=live.hooks(alerts),
        handle_signals=True,
    )
    try:
        result: RunResult | PipelineResult
        if plan.kind == "pipeline":
            result = asyncio.run(run_pipeline(plan, options))
        else:
            result = asyncio.run(JobRun(plan, options).run())
    finally:
        live.stop()
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


def _exit_code(runs: list[RunResult], result: Any) -> int:
    if any(run.status == "interrupted" for run in runs):
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED
