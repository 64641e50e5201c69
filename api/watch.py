"""`sleipnir check --watch`: check, then check again whenever a YAML file changes, printing only what changed.

The first check prints the full report. After each change it prints the diagnostics that are new, one line for
each that went away (`fixed: ...`), and the summary. The checks share one cache in memory (and on disk, unless
`--no-cache`), so a re-check after an edit re-reads only the changed files and re-runs only the checks whose
answers changed. watchfiles (a Rust file watcher) batches the events of one save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import click

from .compiler.cache import Cache
from .compiler.checker import CheckResult, check
from .compiler.diagnostics import Diagnostic
from .compiler.render.human import render, render_each, summary
from .compiler.workspace import YAML_SUFFIXES, find_root


def watch_check(
    paths: Sequence[str],
    *,
    strict: bool,
    cache: bool,
    color: bool,
    changes: Iterable[object] | None = None,
    echo: Callable[[str], None] = click.echo,
) -> int:
    """Check `paths`, then again after each batch of `changes` (by default, watchfiles on the paths) until
    interrupted. Returns the exit code of the last check."""
    targets = [Path(p) for p in paths] or [find_root(Path.cwd()) or Path.cwd()]
    root = find_root(targets[0]) if targets[0].exists() else None
    store: Cache | bool = Cache.at(root) if cache and root is not None else False
    result = check(paths, strict=strict, cache=store)
    echo(render(result, color))
    if changes is None:
        changes = _watch(targets)
    try:
        for _ in changes:
            before = result
            result = check(paths, strict=strict, cache=store)
            echo(_difference(before, result, color))
    except KeyboardInterrupt:
        pass
    return 0 if result.ok else 1


def _watch(targets: list[Path]) -> Iterable[object]:
    from watchfiles import watch

    def yaml_only(_: object, path: str) -> bool:
        return path.endswith(YAML_SUFFIXES) and "/.sleipnir/" not in path.replace("\\", "/")

    return watch(*targets, watch_filter=yaml_only, raise_interrupt=False)


def _difference(before: CheckResult, after: CheckResult, color: bool) -> str:
    """What changed between two checks: the new diagnostics in full, a line for each one that went away."""
    old, new = set(before.diagnostics), set(after.diagnostics)
    added = [d for d in after.diagnostics if d not in old]
    gone = [d for d in before.diagnostics if d not in new]
    lines = render_each(after, added, color)
    lines += [f"fixed: {_place(d)}: {d.severity}[{d.code}]: {d.message}" for d in gone]
    if not added and not gone:
        lines.append("no change in the diagnostics")
    lines.append(summary(after))
    return "\n".join(lines)


def _place(diagnostic: Diagnostic) -> str:
    return str(diagnostic.primary.span) if diagnostic.primary else diagnostic.path or "?"
