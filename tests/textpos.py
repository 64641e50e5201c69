"""Shared test helpers: where a piece of text is, and where a diagnostic points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sleipnir.compiler.checker import CheckContext
from sleipnir.compiler.diagnostics import Diagnostic, Diagnostics
from sleipnir.compiler.registry import Registry
from sleipnir.compiler.workspace import load_workspace


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the `occurrence`-th `needle` in `text`."""
    offset = -1
    for _ in range(occurrence):
        offset = text.index(needle, offset + 1)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def where(diagnostic: Diagnostic) -> tuple[str, int, int]:
    """The code, line and column of a diagnostic with a span."""
    assert diagnostic.primary is not None
    return diagnostic.code, diagnostic.primary.span.line, diagnostic.primary.span.column


def run_check_alone(check: Callable[[CheckContext], None], path: Path) -> Diagnostics:
    """Run one semantic check on every document at `path`, schema-valid or not, without the other stages."""
    sink = Diagnostics()
    workspace = load_workspace([str(path)], sink)
    check(
        CheckContext(
            workspace=workspace,
            registry=Registry.build(workspace.documents),
            sink=sink,
            documents=list(workspace.documents),
        )
    )
    return sink
