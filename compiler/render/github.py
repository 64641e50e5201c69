"""`--format github`: GitHub Actions workflow commands, one annotation per diagnostic.

`::error file=F,line=L,col=C,endLine=..,endColumn=..,title=sleipnir[code]::message`; GitHub shows each on the
line it names in the pull request. Help and notes follow the message on lines of their own.
"""

from __future__ import annotations

from ..checker import CheckResult
from ..codes import Severity
from ..diagnostics import Diagnostic

_COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}


def render(result: CheckResult, color: bool) -> str:
    del color
    return "\n".join(annotation(d) for d in result.diagnostics)


def annotation(diagnostic: Diagnostic) -> str:
    """One diagnostic as a workflow command."""
    properties: list[tuple[str, str]] = []
    path = diagnostic.path
    if path:
        properties.append(("file", path.replace("\\", "/")))
    if diagnostic.primary:
        span = diagnostic.primary.span
        properties += [
            ("line", str(span.line)),
            ("col", str(span.column)),
            ("endLine", str(span.end_line)),
            ("endColumn", str(span.end_column)),
        ]
    properties.append(("title", f"sleipnir[{diagnostic.code}]"))
    fields = ",".join(f"{name}={escape_property(value)}" for name, value in properties)
    return f"::{_COMMANDS[diagnostic.severity]} {fields}::{escape_data(message(diagnostic))}"


def message(diagnostic: Diagnostic) -> str:
    """The message with the label, notes and help, one per line."""
    lines = [diagnostic.message]
    for label in diagnostic.secondary:
        lines.append(f"{label.span}: {label.text}" if label.text else str(label.span))
    lines += [f"note: {note}" for note in diagnostic.notes]
    if diagnostic.help:
        lines.append(f"help: {diagnostic.help}")
    return "\n".join(lines)


def escape_data(text: str) -> str:
    """Escape a command's message: `%`, carriage return and newline."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value: as a message, plus `:` and `,`, which separate properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
