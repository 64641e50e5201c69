"""The `sleipnir` command line: a thin facade over the compiler (and, later, the runtime)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from ..compiler import generation, plan_schema, schemas
from ..compiler.checker import check as run_check
from ..compiler.diagnostics import Diagnostics
from ..compiler.estimate import estimate
from ..compiler.ir import Plan, to_json
from ..compiler.planner import plan as compile_plan
from ..compiler.render import RENDERERS
from ..compiler.render.plan_graph import render_dot, render_mermaid
from ..compiler.render.plan_text import render_plan
from ..runtime.io.counting import counter_for
from . import run as running
from .runs import runs_command
from .serve import serve_command, trigger_command

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(command: F) -> F:
    """No input, however broken, gives a traceback: an internal error is one line, the traceback only with --debug."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as error:
            context = click.get_current_context(silent=True)
            debug = bool(context and context.find_root().params.get("debug"))
            if debug:
                traceback.print_exc()
            click.echo(
                f"error[internal-error]: {type(error).__name__}: {error}"
                + ("" if debug else " (run with --debug for the traceback)"),
                err=True,
            )
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def _use_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never" or "NO_COLOR" in os.environ:
        return False
    return sys.stdout.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sleipnir", prog_name="sleipnir")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
def main(debug: bool) -> None:
    """Sleipnir: jobs of LLM prompts, described as code, compiled and run."""
    del debug


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(RENDERERS)),
    default="human",
    show_default=True,
    help="How to print the diagnostics.",
)
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option(
    "--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True
)
@_guarded
def check(paths: tuple[str, ...], output_format: str, strict: bool, color: str) -> None:
    """Validate jobs, templates, pipelines, stacks and prompts.

    PATHS are files or folders; with none, the workspace containing the current folder is checked.
    Exits 0 when clean, 1 when problems are found, 2 on a usage or internal error.
    """
    result = run_check(paths, strict=strict)
    text = RENDERERS[output_format](result, _use_color(color) and output_format == "human")
    click.echo(text)
    sys.exit(EXIT_OK if result.ok else EXIT_PROBLEMS)


@main.command()
@click.argument("kind", required=False, type=click.Choice((*schemas.ALL, plan_schema.NAME)))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write `<kind>.schema.json` files into this folder instead of printing.",
)
@_guarded
def schema(kind: str | None, output: Path | None) -> None:
    """Print or write Sleipnir's JSON Schemas (draft-07), for editors and other tools.

    KIND is a document kind, `workspace` (sleipnir.yaml), `sleipnir` (any document) or `plan` (the JSON of
    `sleipnir plan --format json`). With KIND and no --output, prints that schema; with --output, writes the
    chosen schema, or all of them, into the folder.
    """
    if output is None:
        if kind is None:
            click.echo("\n".join((*schemas.ALL, plan_schema.NAME)))
        else:
            click.echo(plan_schema.render() if kind == plan_schema.NAME else schemas.render(kind), nl=False)
        return
    documents = [k for k in ([kind] if kind else schemas.ALL) if k != plan_schema.NAME]
    written = schemas.write(output, documents)
    if kind in (None, plan_schema.NAME):
        written.append(plan_schema.write(str(output)))
    for target in written:
        click.echo(str(target))


PLAN_FORMATS = ("text", "json", "dot", "mermaid")


@main.command()
@click.argument("target", required=False)
@click.option("--profile", metavar="NAME", help="Apply this profile (default: SLEIPNIR_PROFILE, then sleipnir.yaml).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a value; repeatable.")
@click.option(
    "--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of overrides; repeatable."
)
@click.option("--format", "output_format", type=click.Choice(PLAN_FORMATS), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan here, not to stdout.")
@click.option("--estimate", "count_rows", is_flag=True, help="Count a database source's rows with COUNT(*).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@_guarded
def plan(
    target: str | None,
    profile: str | None,
    params: tuple[str, ...],
    param_files: tuple[str, ...],
    output_format: str,
    out: Path | None,
    count_rows: bool,
    color: str,
) -> None:
    """Show exactly what would run, with every value resolved and where it came from.

    TARGET is a job or pipeline name (`name@1.0.0` for a version), a file, or a folder (every job and pipeline
    in it); without it, the workspace around the current folder. `--format json` prints the plan the runtime
    runs (for several targets, a JSON array); `dot` and `mermaid` draw its graph. Exits 0 when planned, 1 on a
    problem in the documents or the overrides (printed, and nothing is planned), 2 on a usage or internal error.
    """
    result = compile_plan(target, profile=profile, params=params, param_files=param_files)
    if result.diagnostics:
        click.echo(RENDERERS["human"](result.report, _use_color(color)), err=True)
    if not result.ok:
        sys.exit(EXIT_PROBLEMS)
    text = _plan_text(result.plans, output_format, count_rows, color=_use_color(color) and out is None)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    sink = Diagnostics()
    if not generation.write(out, text if text.endswith("\n") else text + "\n", force=True, sink=sink):
        for problem in sink:
            click.echo(f"error[{problem.code}]: {problem.path}: {problem.message}", err=True)
        sys.exit(EXIT_PROBLEMS)


def _plan_text(plans: tuple[Plan, ...], output_format: str, count_rows: bool, *, color: bool) -> str:
    if output_format == "json":
        if len(plans) == 1:
            return to_json(plans[0])
        return "[\n" + ",\n".join(to_json(p).rstrip("\n") for p in plans) + "\n]\n"
    if output_format in ("dot", "mermaid"):
        draw = render_dot if output_format == "dot" else render_mermaid
        return "\n".join(draw(p) for p in plans)
    now = datetime.now(UTC)
    blocks = []
    for planned in plans:
        counter = counter_for(planned) if count_rows else None
        blocks.append(render_plan(planned, estimate=estimate(planned, count_items=counter), now=now, color=color))
    return "\n\n".join(blocks)


def _run_options(function: F) -> F:
    for option in reversed(
        (
            click.argument("target"),
            click.option("--input", "input_path", type=click.Path(dir_okay=False), help="Read the items from this file instead of the job's source."),
            click.option("--profile", metavar="NAME", help="Apply this profile."),
            click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a value; repeatable."),
            click.option("--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of overrides."),
            click.option("--dry-run", is_flag=True, help="Print the plan and stop: nothing is called."),
            click.option("--limit", type=click.IntRange(min=1), help="Run only the first N items (a sample run)."),
            click.option("--fresh", is_flag=True, help="Forget earlier runs of this plan and start over."),
            click.option("--retry-failed", is_flag=True, help="Re-run only the items that failed before."),
            click.option("--cache", is_flag=True, help="Reuse answers of identical earlier calls (never errors)."),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."),
        )
    ):
        function = option(function)
    return function


@main.command("run-job")
@_run_options
@_guarded
def run_job(**options: Any) -> None:
    """Run a job (or pipeline) by name or file: stream its items through its prompts to its output.

    A rerun does only what is not done yet; --fresh starts over. Ctrl-C or SIGTERM lets the calls in flight
    finish, writes what is done and exits non-zero: run the same command again to resume. Exits 0 when every
    item succeeded, 1 when the run failed or was stopped (130 on Ctrl-C), 2 on a usage or internal error.
    """
    sys.exit(running.run_command(**options))


@main.command("run")
@_run_options
@_guarded
def run_alias(**options: Any) -> None:
    """Same as `run-job`."""
    sys.exit(running.run_command(**options))


@main.command("create-job-from-template")
@click.argument("template")
@click.option("--name", required=True, metavar="NAME", help="The job's name, and the value of `${job_name}`.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Set a parameter; repeatable.")
@click.option(
    "--param-file", "param_files", multiple=True, type=click.Path(), help="A YAML mapping of parameters; repeatable."
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the job here, not to stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Find templates in this workspace (default: the one around the current folder) and the stdlib.",
)
@_guarded
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

    A `--param` wins over every `--param-file`; later ones win over earlier ones. Exits 0 when the job is
    made, 1 on a problem (nothing is written then), 2 on a usage or internal error.
    """
    made = generation.generate(
        template,
        name=name,
        params=params,
        param_files=param_files,
        workspace=workspace,
        output=output,
        force=force,
    )
    if made.result.diagnostics:
        click.echo(RENDERERS["human"](made.result, _use_color("auto")), err=True)
    if made.text is None:
        sys.exit(EXIT_PROBLEMS)
    if output is None:
        click.echo(made.text, nl=False)


main.add_command(runs_command)
main.add_command(serve_command)
main.add_command(trigger_command)
