"""`sleipnir list`, the `--select` option of check, plan and run-job, and the shell completion of job names."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import click

from ..compiler.index import WorkspaceIndex
from ..compiler.selection import KINDS, TAG, Entry, entries, select, workspace_index

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

from .common import EXIT_OK, EXIT_PROBLEMS, F, color_option, echo, guarded, use_color

RUNNABLE = ("job", "pipeline")


Completer: TypeAlias = "Callable[[click.Context, click.Parameter, str], list[CompletionItem]]"


def complete_names(kinds: Sequence[str], *, tags: bool = False) -> Completer:
    """A click `shell_complete` for an argument naming a document of `kinds`: the names in the workspace around
    the current folder, read from its index (and check cache) without checking anything; with `tags`, also
    `tag:T` for the prompt modules' tags (only prompt modules are parsed for them)."""

    def complete(context: click.Context, parameter: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            index = workspace_index()
            if tags and incomplete.startswith(TAG):
                found = {f"{TAG}{t}" for e in entries(index, ("prompt",)) for t in e.tags}
            else:
                found = {e.name for e in entries(index, kinds, tags=False)}
        except Exception:  # completion must never print a traceback into the user's prompt
            return []
        from click.shell_completion import CompletionItem  # only when completing: not on every command

        return [CompletionItem(name) for name in sorted(found) if name.startswith(incomplete)]

    return complete


def select_option(kinds: Sequence[str]) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        return click.option(
            "--select",
            "selectors",
            multiple=True,
            metavar="NAME|GLOB|tag:T",
            shell_complete=complete_names(kinds, tags=True),
            help="Only these: a name, a glob over names (quote it), or tag:T (a prompt module's tag, and whatever "
            "uses that module); repeatable.",
        )(function)

    return decorate


def selected(selectors: Sequence[str], kinds: Sequence[str], index: WorkspaceIndex | None = None) -> list[Entry]:
    """The documents of `kinds` the selectors pick in the workspace; a selector that picks nothing is an error
    (with a did-you-mean), printed, and the command exits 1."""
    found = select(index or workspace_index(), selectors, kinds)
    for selector, suggestion in found.unmatched:
        what = " or ".join(f"{k}" for k in kinds) if len(kinds) < len(KINDS) else "document"
        echo(f"error[unknown-target]: --select {selector}: no {what} matches", err=True, color=False)
        if suggestion:
            echo(f"  = help: {suggestion}", err=True, color=False)
    if found.unmatched:
        echo("  = note: `sleipnir list` shows the names and tags there are", err=True, color=False)
        sys.exit(EXIT_PROBLEMS)
    return list(found.chosen)


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "name": entry.name,
        "version": entry.version,
        "file": entry.file,
        "line": entry.line,
        "tags": list(entry.tags),
        "stdlib": entry.stdlib,
    }


@click.command("list")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only documents of this kind; repeatable.")
@click.option("--select", "selectors", multiple=True, metavar="NAME|GLOB|tag:T", help="Only these; repeatable.")
@click.option("--stdlib", is_flag=True, help="Also the standard library's templates, prompts and stacks.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {kind, name, version, file, line, tags, stdlib}.")
@color_option
@guarded
def list_command(kinds: tuple[str, ...], selectors: tuple[str, ...], stdlib: bool, as_json: bool, color: str) -> None:
    """List the workspace's jobs, pipelines, prompts, templates and stacks: names, files, versions, tags.

    A job's tags are those of the prompt modules it uses (only prompt modules have `tags:`), so `--select
    tag:T` on check, plan and run-job picks what is listed here with T. Exits 0, or 1 when a --select picks
    nothing.
    """
    wanted = kinds or KINDS
    index = workspace_index()
    listed = entries(index, wanted, stdlib=stdlib)
    if selectors:
        keys = {(e.kind, e.name, e.version) for e in selected(selectors, wanted, index)}
        listed = [e for e in listed if (e.kind, e.name, e.version) in keys]
    if as_json:
        sys.stdout.write(json.dumps([_row(e) for e in listed], indent=2) + "\n")
        sys.exit(EXIT_OK)
    colored = use_color(color)
    lines = []
    width = max((len(e.name) + len(e.version or "") + 1 for e in listed), default=0)
    place_width = max((len(e.file) + len(str(e.line)) + 1 for e in listed), default=0)
    for entry in listed:
        named = entry.name + (f"@{entry.version}" if entry.version else "")
        place = f"{entry.file}:{entry.line}" if entry.line is not None else entry.file
        tags = f"  tags: {', '.join(entry.tags)}" if entry.tags else ""
        tags += "  (stdlib)" if entry.stdlib else ""
        kind = f"\x1b[1m{entry.kind:<8}\x1b[0m" if colored else f"{entry.kind:<8}"
        lines.append(f"{kind} {named:<{width}}  {place:<{place_width}}{tags}".rstrip())
    if lines:
        try:
            echo("\n".join(lines), color=colored)
        except BrokenPipeError:  # the reader stopped (`| head`): what it read is what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if not listed:
        echo("nothing here: no job, pipeline, prompt, template or stack (see `sleipnir init`)", err=True, color=False)
    sys.exit(EXIT_OK)
