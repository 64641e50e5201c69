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


class _Teardown:
    """Whether the process may end without the interpreter's teardown (see `skip_teardown`)."""

    skip = False


def skip_teardown() -> None:
    """Ask `run` to end the process with `os._exit` once the command has returned and its output is flushed.

    Freeing a large check's nodes one by one at exit cost 250 ms of CPU, a quarter of a cold check of 2,000
    jobs (mypy's `hard_exit` does the same for the same reason). Only for commands that have written all they
    write; in-process callers of `main` (tests, the Python API) are not affected.
    """
    _Teardown.skip = True


def run(main: Callable[[], Any]) -> None:
    """Run the command line `main`; end the process without teardown when the command asked to."""
    try:
        main()
    except SystemExit as done:
        if not _Teardown.skip:
            raise
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a closed pipe (`| head`): what was written is what the reader wanted
                code = code or 1
        os._exit(code)

