"""`sleipnir check` and `sleipnir schema`: the compiler's front end, for CI and editors."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from ..compiler import schemas
from ..compiler.checker import CheckResult, check_some, gc_paused, index_workspace
from ..compiler.checker import check as run_check
from ..compiler.diagnostics import Diagnostic, Diagnostics
from ..compiler.render import RENDERERS
from ..compiler.selection import KINDS
from ..compiler.snapshot import remember
from .common import EXIT_OK, EXIT_PROBLEMS, color_option, echo, guarded, skip_teardown, use_color
from .listing import select_option
from .quick import check_command

PLAN_SCHEMA = "plan"
"""`compiler.plan_schema.NAME`, written out so that `check` never imports the plan's schema builder."""


@click.command()
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
@color_option
@click.option(
    "--no-cache",
    is_flag=True,
    help="Check every file afresh; neither read nor write the workspace's .sleipnir/cache/.",
)
@click.option("--watch", is_flag=True, help="Check again whenever a file changes; print only what changed.")
@select_option(KINDS)
@guarded
def check(
    paths: tuple[str, ...],
    output_format: str,
    strict: bool,
    color: str,
    no_cache: bool,
    watch: bool,
    selectors: tuple[str, ...],
) -> None:
    """Validate jobs, templates, pipelines, stacks and prompts.

    PATHS are files or folders; with none, the workspace containing the current folder is checked. A cache
    in the workspace's .sleipnir/cache/ spares re-checking what did not change (the answer is the same).
    With --select, only the files of the selected documents, of what they use, and sleipnir.yaml are checked.
    Exits 0 when clean, 1 when problems are found, 2 on a usage or internal error.
    """
    if watch and selectors:
        raise click.UsageError("--watch checks every file it is given; give it paths rather than --select")
    if watch:
        from ..watch import watch_check  # watchfiles is imported only for --watch

        colored = use_color(color)
        sys.exit(
            watch_check(
                paths, strict=strict, cache=not no_cache, color=colored, echo=lambda text: echo(text, color=colored)
            )
        )
    index = None
    if selectors:
        result = _check_selected(paths, selectors, strict, not no_cache)
    elif no_cache:
        result = run_check(paths, strict=strict)
    else:
        sink = Diagnostics()
        with gc_paused():
            index = index_workspace(paths, sink, cache=True)
            result = check_some(index, index.checked, sink.items, strict=strict)
    if output_format == "human":  # for the person reading; CI's annotations and SARIF results stay as they were
        result = without_manifest_noted(result)
    skip_teardown()
    colored = use_color(color) and output_format == "human"
    text = RENDERERS[output_format](result, colored)
    echo(text, color=colored)
    code = EXIT_OK if result.ok else EXIT_PROBLEMS
    if index is not None and not strict:  # the next plain check of the same files prints this again (quick.py)
        output = text if colored else click.unstyle(text)  # what `echo` wrote
        remember(index, result, check_command(paths, output_format, colored), output, code)
    sys.exit(code)


def without_manifest_noted(result: CheckResult) -> CheckResult:
    """`result` with a note, once, when no `sleipnir.yaml` was found and a folder was taken as the workspace."""
    folder = result.workspace.folder
    if result.workspace.root is not None or folder is None:
        return result
    from ..compiler.workspace import display_path

    sink = Diagnostics()
    sink.emit(
        "no-manifest",
        f"no sleipnir.yaml found; treating {display_path(folder)} as the workspace",
        None,
        help="`sleipnir init` writes a workspace with a sleipnir.yaml (see spec/workspace.md)",
    )
    noted = sorted((*sink.items, *result.diagnostics), key=Diagnostic.sort_key)
    return replace(result, diagnostics=tuple(noted))


def _check_selected(paths: tuple[str, ...], selectors: tuple[str, ...], strict: bool, cache: bool) -> CheckResult:
    from ..compiler.selection import check_chosen
    from .listing import selected

    sink = Diagnostics()
    with gc_paused():
        index = index_workspace(paths, sink, cache=cache)
        return check_chosen(index, selected(selectors, KINDS, index), sink.items, strict=strict)


@click.command()
@click.argument("kind", required=False, type=click.Choice((*schemas.ALL, PLAN_SCHEMA)))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write `<kind>.schema.json` files into this folder instead of printing.",
)
@click.option("--catalog", is_flag=True, help="Print a SchemaStore-style catalog of the schemas (JSON).")
@guarded
def schema(kind: str | None, output: Path | None, catalog: bool) -> None:
    """Print or write Sleipnir's JSON Schemas (draft-07), for editors and other tools.

    KIND is a document kind, `workspace` (sleipnir.yaml), `sleipnir` (any document) or `plan` (the JSON of
    `sleipnir plan --format json`). With KIND and no --output, prints that schema; with --output, writes the
    chosen schema, or all of them, into the folder. --catalog prints the catalog entries SchemaStore would list.
    """
    if catalog:
        if kind is not None or output is not None:
            raise click.UsageError("--catalog takes no KIND and no --output")
        click.echo(json.dumps(schemas.catalog(), indent=2, ensure_ascii=False))
        return
    from ..compiler import plan_schema  # builds from the plan's classes: imported only for this command

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
