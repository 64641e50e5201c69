"""What every command shares: exit codes, the guard that turns an internal error into one line, and colour."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TextIO, TypeVar

import click

from . import interrupted
from .quick import COLOR_CHOICES, color_wanted, refusal

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
QUIET, NORMAL, VERBOSE = "quiet", "normal", "verbose"
"""How much a run shows on stderr (spec/cli.md#output): `-q` the summary line and errors; by default also the
progress bar (on a terminal), each notice once and the summary table; `-v` also the job's log records."""

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
            interrupted()
        except BrokenPipeError:  # the reader stopped (`| head`): what it read is what it wanted
            _drop_stdout()
            sys.exit(EXIT_PROBLEMS)
        except OSError as error:
            # The machine said no (a path that cannot be made or written, a full disk): the user's to fix, not an
            # internal error. Whatever stdout still holds is dropped, so that the exit does not fail on it again.
            if _debugging():
                traceback.print_exc()
            _drop_stdout()
            click.echo(refusal(error), err=True)
            sys.exit(EXIT_PROBLEMS)
        except Exception as error:
            debug = _debugging()
            if debug:
                traceback.print_exc()
            click.echo(
                f"error[internal-error]: {type(error).__name__}: {error}"
                + ("" if debug else " (run with --debug for the traceback)"),
                err=True,
            )
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def _debugging() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("debug"))


def _drop_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for it goes nowhere, and the exit's flush succeeds."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no real file behind stdout (a test's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def color_option(function: F) -> F:
    """`--color auto|always|never`, the same on every command (and on `sleipnir` itself, for all of them)."""
    return click.option(
        "--color",
        type=click.Choice(COLOR_CHOICES),
        default="auto",
        show_default=True,
        help="Colour the output: always, never, or auto (when writing to a terminal; FORCE_COLOR and NO_COLOR "
        "in the environment decide otherwise).",
    )(function)


def use_color(choice: str = "auto", stream: TextIO | None = None) -> bool:
    """Whether to colour what goes to `stream` (stdout by default).

    `--color always|never` wins; `auto` takes `sleipnir --color`, then NO_COLOR, then FORCE_COLOR (set and not
    empty or 0), then whether `stream` is a terminal."""
    if choice == "auto":
        context = click.get_current_context(silent=True)
        choice = str(context.find_root().params.get("color") or "auto") if context is not None else "auto"
    return color_wanted(choice, stream)


def echo(text: str, *, color: bool, err: bool = False, nl: bool = True) -> None:
    """`click.echo` that keeps the colours it was given (click strips them when the stream is not a terminal,
    which undid `--color always` and FORCE_COLOR) and strips them when colour is off."""
    click.echo(text, err=err, nl=nl, color=color)


class _Teardown:
    """Whether the process may end without the interpreter's teardown, and what it keeps (see `skip_teardown`)."""

    skip = False
    made: tuple[object, ...] = ()


def skip_teardown(*made: object) -> None:
    """Ask `run` to end the process with `os._exit` once the command has returned and its output is flushed;
    `made` (what the command made) is kept until then, not freed when the command returns.

    Freeing a large check's nodes one by one at exit cost 250 ms of CPU, a quarter of a cold check of 2,000
    jobs (mypy's `hard_exit` does the same for the same reason), and freeing a 2,000-job pipeline's plans when
    `plan` returned about 10 ms. Only for commands that have written all they write; in-process callers of
    `main` (tests, the Python API) are not affected, but for the last command's `made`, kept until the next.
    """
    _Teardown.skip = True
    _Teardown.made = made


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

