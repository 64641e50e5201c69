"""`--format json`: a versioned, stable document for tools. Version 1."""

from __future__ import annotations

import json
from typing import Any

from ..checker import CheckResult
from ..diagnostics import Diagnostic, Label

FORMAT_VERSION = 1


def render(result: CheckResult, color: bool) -> str:
    del color
    report = {
        "version": FORMAT_VERSION,
        "tool": "sleipnir",
        "ok": result.ok,
        "summary": {
            "documents": len(result.workspace.documents),
            "errors": result.errors,
            "warnings": result.warnings,
        },
        "diagnostics": [diagnostic_json(d) for d in result.diagnostics],
    }
    return json.dumps(report, indent=2, ensure_ascii=False)


def diagnostic_json(diagnostic: Diagnostic) -> dict[str, Any]:
    """One diagnostic as JSON; also used by other machine formats' tests."""
    return {
        "code": diagnostic.code,
        "severity": diagnostic.severity.value,
        "message": diagnostic.message,
        "file": diagnostic.path,
        "span": _label(diagnostic.primary)["span"] if diagnostic.primary else None,
        "label": diagnostic.primary.text if diagnostic.primary else None,
        "secondary": [_label(label) for label in diagnostic.secondary],
        "notes": list(diagnostic.notes),
        "help": diagnostic.help,
    }


def _label(label: Label) -> dict[str, Any]:
    span = label.span
    return {
        "span": {
            "file": span.file,
            "line": span.line,
            "column": span.column,
            "end_line": span.end_line,
            "end_column": span.end_column,
        },
        "text": label.text,
    }
