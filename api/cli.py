"""The `sleipnir` command line: a thin facade over the compiler (and, later, the runtime)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .compiler import schemas
from .compiler.checker import check as run_check
from .compiler.outline import outline, render_text
from .compiler.render import RENDERERS

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
@click.argument("kind", required=False, type=click.Choice(schemas.ALL))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write `<kind>.schema.json` files into this folder instead of printing.",
)
@_guarded
def schema(kind: str | None, output: Path | None) -> None:
    """Print or write Sleipnir's JSON Schemas (draft-07), for editors and other tools.

    KIND is a document kind, `workspace` (sleipnir.yaml) or `sleipnir` (any document). With KIND and no
    --output, prints that schema; with --output, writes the chosen schema, or all of them, into the folder.
    """
    if output is None:
        if kind is None:
            click.echo("\n".join(schemas.ALL))
        else:
            click.echo(schemas.render(kind), nl=False)
        return
    for target in schemas.write(output, [kind] if kind else schemas.ALL):
        click.echo(str(target))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@_guarded
def plan(paths: tuple[str, ...], output_format: str, color: str) -> None:
    """Show what would run: every job's source, prompts with the versions chosen, stack steps and sink.

    The documents are checked first; any error is printed and nothing is planned (exit 1).
    """
    result = run_check(paths, strict=False)
    if result.errors:
        click.echo(RENDERERS["human"](result, _use_color(color)), err=True)
        sys.exit(EXIT_PROBLEMS)
    planned = outline(result)
    click.echo(json.dumps(planned, indent=2) if output_format == "json" else render_text(planned))
