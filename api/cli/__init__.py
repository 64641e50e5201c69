"""The `sleipnir` command line: a thin facade over the compiler and the runtime.

Commands load what they use: `COMMANDS` maps each command to the module that defines it, and a module is
imported only when its command runs (as pip's `commands/__init__.py` does), so `sleipnir --help` and
`sleipnir check` never import the runtime, an HTTP stack or a database driver. One module per family:
`check.py` (check, schema), `plan.py` (plan, create-job-from-template), `run.py` (run-job, run; the run itself
in `running.py`), `serve.py` (serve, trigger), `runs.py` (runs), `view.py` (view), `init.py` (init), `listing.py` (list).
The group itself, and click, are in `root.py`: `entry` first lets `quick.py` answer a repeated `check` from its
snapshot, which imports neither.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    from .root import main

__all__ = ["COMMANDS", "entry", "interrupted", "main"]


class Command(NamedTuple):
    module: str
    attribute: str
    summary: str
    """The line `sleipnir --help` shows, kept here so that listing the commands imports none of them."""


COMMANDS = {
    "check": Command("check", "check", "Validate jobs, templates, pipelines, stacks and prompts."),
    "create-job-from-template": Command("plan", "create_job_from_template", "Make a job from TEMPLATE: a template's name (its newest version), `name@1.0.0`, or a template file."),
    "init": Command("init", "init", "Make a new workspace in FOLDER: a manifest, one job and its data, and editor schemas."),
    "list": Command("listing", "list_command", "List the workspace's jobs, pipelines, prompts, templates and stacks: names, files, versions, tags."),
    "lsp": Command("lsp", "lsp", "Run the language server on stdin and stdout, for editors (see spec/editors.md)."),
    "plan": Command("plan", "plan", "Show exactly what would run, with every value resolved and where it came from."),
    "run": Command("run", "run_alias", "Same as `run-job`."),
    "run-job": Command("run", "run_job", "Run a job (or pipeline) by name or file: stream its items through its prompts to its output."),
    "runs": Command("runs", "runs_command", "List the recent runs of JOB (or of every job): status, duration, items, tokens and cost; or show RUN_ID."),
    "schema": Command("check", "schema", "Print or write Sleipnir's JSON Schemas (draft-07), for editors and other tools."),
    "serve": Command("serve", "serve_command", "Run every job and pipeline of WORKSPACE that has a schedule or triggers, until SIGTERM or Ctrl-C."),
    "trigger": Command("serve", "trigger_command", "Start one run of JOB by hand, the way `serve` starts a triggered run: its `conditions` are checked first."),
    "view": Command("view", "view_command", "Browse the runs in a web page: each run's items, their inputs, outputs and errors, and two runs compared."),
}


def __getattr__(name: str) -> Any:
    if name != "main":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .root import main

    return main


def interrupted() -> NoReturn:
    """Ctrl-C before a command handles it itself (while it loads, or outside a run): one line and the shell's
    exit code for SIGINT, 130, never a traceback."""
    sys.stderr.write("error: interrupted\n")
    raise SystemExit(130)


def entry() -> None:
    """The `sleipnir` console script and `python -m sleipnir`."""
    try:
        from .quick import replay_check

        replay_check(sys.argv[1:])  # ends the process when the check's snapshot answers it
        from .common import run
        from .root import main

        # One name however it is started (`python -m sleipnir` too): usage lines and `_SLEIPNIR_COMPLETE` use it.
        run(lambda: main(prog_name="sleipnir"))
    except KeyboardInterrupt:
        interrupted()
