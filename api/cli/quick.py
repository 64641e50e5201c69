"""`sleipnir check` again, answered from its snapshot (`compiler/snapshot.py`) before click is imported.

An editor, a pre-commit hook or a person after a save runs the same check again and again; when nothing it reads
has changed in a way that could change its answer, the answer is the one it printed last time, and the process
that prints it need not import click (a third of a warm check's CPU), the checks or a schema validator. Only the
plain forms are answered here, `check [PATHS] [--format F] [--color C]` in either option spelling; `--strict`
(whose checks read the environment), `--no-cache`, `--select`, `--watch`, `--help`, anything unusual, and every
check the snapshot cannot answer go to click, which runs the check and writes the snapshot (`remember`).
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

COLOR_CHOICES = ("auto", "always", "never")


def replay_check(argv: Sequence[str]) -> None:
    """Print the answer of `sleipnir <argv>` and end the process, when `argv` is a plain check and its
    snapshot answers it; else return, having printed nothing."""
    plain = plain_check(argv)
    if plain is None or codecs.lookup(getattr(sys.stdout, "encoding", None) or "ascii").name != "utf-8":
        return  # click writes to a stream of another encoding in its own way
    paths, output_format, color = plain
    try:
        command = check_command(paths, output_format, color_wanted(color) and output_format == "human")
    except OSError:  # the current folder is gone
        return
    from ..compiler.snapshot import replay

    answer = replay(paths, command)
    if answer is None:
        return
    output, code = answer
    try:
        sys.stdout.write(output + "\n")
        sys.stdout.flush()
    except OSError as error:  # as `common.guarded` says it: a reader gone is quiet, a full device is one line
        if not isinstance(error, BrokenPipeError):
            sys.stderr.write(refusal(error) + "\n")
            sys.stderr.flush()
        os._exit(1)
    os._exit(code)  # as `check` does (`common.skip_teardown`): nothing is left to free or flush


def refusal(error: OSError) -> str:
    """The one line for what the machine refused (a path that cannot be made or written, a full device): every
    command's (`common.guarded`), and a replayed check's, which runs before click is imported."""
    where = f"{error.filename}: " if error.filename else ""
    return f"error: {where}{error.strerror or error}"


def plain_check(argv: Sequence[str]) -> tuple[list[str], str, str] | None:
    """The paths, format and colour choice of `argv` when it is `check [PATHS] [--format F] [--color C]`, as
    click would parse it; None for anything else."""
    if not argv or argv[0] != "check" or "_SLEIPNIR_COMPLETE" in os.environ:
        return None
    paths: list[str] = []
    options = {"--format": "human", "--color": "auto"}
    rest = iter(argv[1:])
    for argument in rest:
        if argument and not argument.startswith("-"):
            paths.append(argument)
            continue
        name, equals, value = argument.partition("=")
        if name not in options:
            return None
        if not equals:
            value = next(rest, "")
        if not value or value.startswith("-"):
            return None
        options[name] = value
    if options["--color"] not in COLOR_CHOICES:
        return None
    return paths, options["--format"], options["--color"]


def check_command(paths: Sequence[str], output_format: str, colored: bool) -> dict[str, Any]:
    """What a check's printed answer depends on besides the files it reads: where it runs, what it was given
    and how it prints (`--strict` is never remembered)."""
    return {"cwd": os.getcwd(), "paths": list(paths), "format": output_format, "colored": colored}


def color_wanted(choice: str, stream: TextIO | None = None) -> bool:
    """Whether `--color choice` colours what goes to `stream` (stdout by default): `always` and `never` say so;
    `auto` takes NO_COLOR, then FORCE_COLOR (set and not empty or 0), then whether `stream` is a terminal."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
