"""The full human format, after rustc: `error[code]: message`, `--> file:line:col`, the source line, carets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..checker import CheckResult
from ..codes import Severity
from ..diagnostics import Diagnostic, Label
from ..loader import SourceFile

_COLORS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.NOTE: "36"}


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text


def render(result: CheckResult, color: bool) -> str:
    style = _Style(color)
    blocks = [*render_each(result, result.diagnostics, color), summary(result, style)]
    return "\n".join(blocks)


def render_each(result: CheckResult, diagnostics: Iterable[Diagnostic], color: bool) -> list[str]:
    """Each of `diagnostics` (of `result`) in the full format, without the summary line."""
    style = _Style(color)
    return [_diagnostic(d, result.workspace.sources, style) for d in diagnostics]


def summary(result: CheckResult, style: _Style | None = None) -> str:
    style = style or _Style(False)
    files = result.workspace.checked_files
    documents = len(result.workspace.documents)
    if not result.diagnostics:
        return style(f"ok: {documents} {_plural(documents, 'document')} in {files} {_plural(files, 'file')}, no problems", "32")
    parts = []
    if result.errors:
        parts.append(f"{result.errors} {_plural(result.errors, 'error')}")
    if result.warnings:
        parts.append(f"{result.warnings} {_plural(result.warnings, 'warning')}")
    verdict = "failed" if not result.ok else "passed"
    text = f"{verdict}: {' and '.join(parts) or 'notes only'} in {documents} {_plural(documents, 'document')}"
    return style(text, "1;31" if not result.ok else "1;33")


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _diagnostic(diagnostic: Diagnostic, sources: Mapping[str, SourceFile], style: _Style) -> str:
    severity = diagnostic.severity
    color = _COLORS[severity]
    lines = [style(f"{severity.value}[{diagnostic.code}]", "1;" + color) + style(f": {diagnostic.message}", "1")]
    labels = [(diagnostic.primary, "^", color)] if diagnostic.primary else []
    labels += [(label, "-", "34") for label in diagnostic.secondary]
    width = max((len(str(label.span.line)) for label, _, _ in labels), default=1)
    gutter = " " * width
    if not labels and diagnostic.file:
        lines.append(f"{gutter}{style('-->', '34')} {diagnostic.file}")
    for index, (label, mark, label_color) in enumerate(labels):
        arrow = "-->" if index == 0 else ":::"
        lines.append(f"{gutter}{style(arrow, '34')} {label.span}")
        lines.extend(_snippet(label, sources.get(label.span.file), mark, style, label_color, width))
    for note in diagnostic.notes:
        lines.append(f"{gutter} {style('=', '34')} {style('note', '1')}: {note}")
    if diagnostic.help:
        lines.append(f"{gutter} {style('=', '34')} {style('help', '1')}: {diagnostic.help}")
    return "\n".join(lines) + "\n"


def _snippet(
    label: Label, source: SourceFile | None, mark: str, style: _Style, color: str, width: int
) -> list[str]:
    if source is None:
        return []
    span = label.span
    text = source.line(span.line).replace("\t", " ")
    if not text and span.line > len(source.text.splitlines()):
        return []
    end = span.end_column if span.end_line == span.line else len(text) + 1
    length = max(1, min(end, len(text) + 1) - span.column)
    bar = style("|", "34")
    underline = " " * (span.column - 1) + style(mark * length + (" " + label.text if label.text else ""), "1;" + color)
    number = style(str(span.line).rjust(width), "34")
    return [f"{' ' * width} {bar}", f"{number} {bar} {text}", f"{' ' * width} {bar} {underline}"]
