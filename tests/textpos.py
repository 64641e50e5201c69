"""Shared test helpers: where a piece of text is, and where a diagnostic points."""

from __future__ import annotations

from sleipnir.compiler.diagnostics import Diagnostic


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
