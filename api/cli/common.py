"""What every command shares: exit codes, the guard that turns an internal error into one line, and colour."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
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


def use_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never" or "NO_COLOR" in os.environ:
        return False
    return sys.stdout.isatty()
