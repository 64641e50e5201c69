"""`sleipnir plan` and `sleipnir create-job-from-template`: what would run, and new jobs from templates."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..compiler.diagnostics import Diagnostics
from ..compiler.ir import Plan, iter_json_bytes, to_json
from ..compiler.planner import PlanResult
from ..compiler.planner import plan as compile_plan
from ..compiler.render import RENDERERS
from ..compiler.workspace import display_path
from .common import EXIT_PROBLEMS, color_option, echo, guarded, skip_teardown, use_color
from .listing import RUNNABLE, complete_names, select_option, selected

PLAN_FORMATS = ("text", "json", "dot", "mermaid")


@click.command()
@click.argument("target", required=False, shell_complete=complete_names(RUNNABLE))
@click.option("--profile", metavar="NAME", help="Apply this profile (default: SLEIPNIR_PROFILE, then sleipnir.yaml).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a value; repeatable.")
@click.option(
    "--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of overrides; repeatable."
)
@click.option("--format", "output_format", type=click.Choice(PLAN_FORMATS), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan here, not to stdout.")
@click.option("--estimate", "count_rows", is_flag=True, help="Count a database source's rows with COUNT(*).")
@color_option
@click.option("--no-cache", is_flag=True, help="Check afresh; neither read nor write .sleipnir/cache/.")
@select_option(RUNNABLE)
@guarded
def plan(
    target: str | None,
    profile: str | None,
    params: tuple[str, ...],
    param_files: tuple[str, ...],
    output_format: str,
    out: Path | None,
    count_rows: bool,
    color: str,
    no_cache: bool,
    selectors: tuple[str, ...],
) -> None:
    """Show exactly what would run, with every value resolved and where it came from.

    TARGET is a job or pipeline name (`name@1.0.0` for a version), a file, or a folder (every job and pipeline
    in it); without it, the workspace around the current folder. `--format json` prints the plan the runtime
    runs (for several targets, a JSON array); `dot` and `mermaid` draw its graph. Exits 0 when planned, 1 on a
    problem in the documents or the overrides (printed, and nothing is planned), 2 on a usage or internal error.
    --select (instead of TARGET) plans each job and pipeline it picks, as if each were named.
    """
    if selectors and target:
        raise click.UsageError("give TARGET or --select, not both")
    if selectors:
        result = _plan_each(selectors, profile=profile, params=params, param_files=param_files, cache=not no_cache)
    else:
        result = compile_plan(target, profile=profile, params=params, param_files=param_files, cache=not no_cache)
    skip_teardown(result)
    if result.diagnostics:
        colored = use_color(color, sys.stderr)
        echo(RENDERERS["human"](result.report, colored), err=True, color=colored)
    if not result.ok:
        sys.exit(EXIT_PROBLEMS)
    if output_format == "json" and out is None:
        # Written as it is made, as bytes: a 2,000-job pipeline's JSON is never held whole, nor decoded to text.
        # A reader that stops (`| head`) ends it quietly, exit 1 (`guarded`).
        sys.stdout.flush()
        for piece in _json_pieces(result.plans):
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return
    colored = use_color(color) and out is None
    text = _plan_text(result.plans, output_format, count_rows, color=colored)
    if out is None:
        echo(text, nl=not text.endswith("\n"), color=colored)
        return
    from ..compiler import generation

    sink = Diagnostics()
    if not generation.write(out, text if text.endswith("\n") else text + "\n", force=True, sink=sink):
        for problem in sink:
            click.echo(f"error[{problem.code}]: {problem.path}: {problem.message}", err=True)
        sys.exit(EXIT_PROBLEMS)


def _plan_each(selectors: tuple[str, ...], **options: Any) -> PlanResult:
    """One plan per job and pipeline the selectors pick (each planned as if named), as one result."""
    results = [compile_plan(f"{e.name}", **options) for e in selected(selectors, RUNNABLE)]
    diagnostics = tuple(dict.fromkeys(d for r in results for d in r.diagnostics))
    plans = tuple(p for r in results for p in r.plans) if all(r.ok for r in results) else ()
    return dataclasses.replace(results[0], plans=plans, diagnostics=diagnostics)


def _json_pieces(plans: tuple[Plan, ...]) -> Iterator[bytes]:
    """The JSON of one plan, or a JSON array of several, in pieces of UTF-8."""
    if len(plans) == 1:
        yield from iter_json_bytes(plans[0])
        return
    yield b"[\n"
    for number, planned in enumerate(plans):
        yield ((",\n" if number else "") + to_json(planned).rstrip("\n")).encode()
    yield b"\n]\n"


def _plan_text(plans: tuple[Plan, ...], output_format: str, count_rows: bool, *, color: bool) -> str:
    if output_format == "json":
        return b"".join(_json_pieces(plans)).decode()
    if output_format in ("dot", "mermaid"):
        from ..compiler.render.plan_graph import render_dot, render_mermaid

        draw = render_dot if output_format == "dot" else render_mermaid
        return "\n".join(draw(p) for p in plans)
    # The text form's estimate and schedule (croniter) are imported only for it: `--format json` needs neither.
    from ..compiler.estimate import estimate
    from ..compiler.render.plan_text import render_plan

    now = datetime.now(UTC)
    blocks = []
    for planned in plans:
        counter, line, to_call = None, None, None
        if count_rows:
            from ..runtime.io.counting import counter_for  # `--estimate` counts rows in the database

            counter = counter_for(planned)
            to_call, line = _survey(planned)
        found = estimate(planned, count_items=counter, to_call=to_call)
        block = render_plan(planned, estimate=found, now=now, color=color)
        if line is not None:  # above the summary line, which stays last
            head, _, last = block.rstrip("\n").rpartition("\n")
            block = f"{head}\n{line}\n{last}" if head else f"{line}\n{last}"
        blocks.append(block)
    return "\n\n".join(blocks)


def _survey(planned: Plan) -> tuple[int | None, str | None]:
    """For a job, how many items a run would call, read from its source and the state store as `run-job
    --dry-run` does, and a line saying so (or why they could not be read); nothing for a pipeline."""
    if planned.kind != "job":
        return None, None
    import asyncio

    from ..runtime.engine.job import JobRun, RunOptions
    from ..runtime.io import SourceError
    from ..runtime.io.dbconn import DatabaseError
    from ..runtime.providers.base import ProviderError
    from ..runtime.secrets import MissingSecret

    try:
        found = asyncio.run(JobRun(planned, RunOptions(environ=dict(os.environ))).survey())
    except (SourceError, ProviderError, DatabaseError, MissingSecret, ValueError) as error:
        # An estimate never fails the plan: it says what it could not read.
        return None, f"what a run would call was not read ({error}): the estimate counts every item"
    return found.to_call, found.describe()


@click.command("create-job-from-template")
@click.argument("template")
@click.option("--name", required=True, metavar="NAME", help="The job's name, and the value of `${job_name}`.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Set a parameter; repeatable.")
@click.option(
    "--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of parameters; repeatable."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the job here (default: jobs/NAME.yaml in the workspace); `-` prints it instead.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Find templates in this workspace (default: the one around the current folder) and the stdlib.",
)
@guarded
def create_job_from_template(
    template: str,
    name: str,
    params: tuple[str, ...],
    param_files: tuple[str, ...],
    output: Path | None,
    force: bool,
    workspace: Path | None,
) -> None:
    """Make a job from TEMPLATE: a template's name (its newest version), `name@1.0.0`, or a template file.

    The job goes to jobs/NAME.yaml in the workspace unless --output says where (`-`: standard output); an
    existing file is overwritten only with --force. A `--param` wins over every `--param-file`; later ones win
    over earlier ones. Exits 0 when the job is made, 1 on a problem (nothing is written then), 2 on a usage or
    internal error.
    """
    from ..compiler import generation

    printed = output == Path("-")
    if output is None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise click.UsageError(f"`{name}` cannot be a file name: give --output FILE, or --output - to print")
        output = generation.default_output(generation.workspace_root(workspace), name)

    made = generation.generate(
        template,
        name=name,
        params=params,
        param_files=param_files,
        workspace=workspace,
        output=None if printed else output,
        force=force,
    )
    if made.result.diagnostics:
        colored = use_color("auto", sys.stderr)
        echo(RENDERERS["human"](made.result, colored), err=True, color=colored)
    if made.text is None:
        sys.exit(EXIT_PROBLEMS)
    if printed:
        click.echo(made.text, nl=False)
    else:
        click.echo(f"wrote {display_path(output)}", err=True)
