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

from .compiler.checker import check as run_check
from .compiler.render import RENDERERS
from .compiler.schemas import SCHEMA_KINDS
from .compiler.schemas import load as load_schema

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
@click.argument("kind", required=False, type=click.Choice(SCHEMA_KINDS))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write `<kind>.schema.json` files into this folder instead of printing.",
)
@_guarded
def schema(kind: str | None, output: Path | None) -> None:
    """Print or write Sleipnir's JSON Schemas (draft-07), for editors and other tools.

    With no KIND and no --output, lists the kinds. With KIND, prints that schema. With --output, writes the
    chosen schema (or all of them) into the folder.
    """
    kinds = [kind] if kind else list(SCHEMA_KINDS)
    if output is None:
        if kind is None:
            click.echo("\n".join(SCHEMA_KINDS))
        else:
            click.echo(json.dumps(load_schema(kind), indent=2))
        return
    output.mkdir(parents=True, exist_ok=True)
    for name in kinds:
        target = output / f"{name}.schema.json"
        target.write_text(json.dumps(load_schema(name), indent=2) + "\n", encoding="utf-8")
        click.echo(str(target))
