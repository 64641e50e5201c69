"""`--format sarif`: a SARIF 2.1.0 log, for code-scanning tools such as GitHub's.

One run; the driver lists every registered code as a rule (in registry order, so `ruleIndex` is stable), each with
a `helpUri` to its row in spec/diagnostics.md (an anchor named after the code) and a full description; each
diagnostic becomes a result with its primary location and its secondary labels as related locations.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from ..checker import CheckResult
from ..codes import CODES, Severity
from ..diagnostics import Diagnostic, Label
from ..span import Span

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/sleipnir/sleipnir/blob/main/spec/diagnostics.md"
"""Where a reader learns what the codes mean: the diagnostic code table in the spec."""
SOURCE_ROOT = "%SRCROOT%"
"""The base of relative artifact URIs: the folder `sleipnir check` ran in."""

_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}
_ARTICLE = {Severity.ERROR: "an", Severity.WARNING: "a", Severity.NOTE: "a"}
_RULE_INDEX = {name: index for index, name in enumerate(CODES)}


def render(result: CheckResult, color: bool) -> str:
    del color
    log = {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sleipnir",
                        "informationUri": INFORMATION_URI,
                        "version": _version(),
                        "rules": [_rule(name) for name in CODES],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": [_result(d) for d in result.diagnostics],
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)


def _version() -> str:
    from importlib import metadata  # 40 ms to import: only when SARIF is asked for

    try:
        return metadata.version("sleipnir")
    except metadata.PackageNotFoundError:  # pragma: no cover - a checkout that was never installed
        return "0.0.0"


def _rule(name: str) -> dict[str, Any]:
    code = CODES[name]
    return {
        "id": name,
        "shortDescription": {"text": code.summary},
        "fullDescription": {"text": full_description(name)},
        "helpUri": help_uri(name),
        "defaultConfiguration": {"level": _LEVELS[code.severity]},
    }


def help_uri(name: str) -> str:
    """Where code `name` is explained: its anchor in spec/diagnostics.md."""
    return f"{INFORMATION_URI}#{name}"


def full_description(name: str) -> str:
    code = CODES[name]
    return (
        f"{code.summary} Sleipnir reports `{name}` as {_ARTICLE[code.severity]} {_LEVELS[code.severity]} by default "
        "(`check --strict` fails on warnings too); each report names the place and, where it can, a fix."
    )


def _result(diagnostic: Diagnostic) -> dict[str, Any]:
    text = diagnostic.message
    if diagnostic.notes:
        text += "".join(f"\nnote: {note}" for note in diagnostic.notes)
    if diagnostic.help:
        text += f"\nhelp: {diagnostic.help}"
    result: dict[str, Any] = {
        "ruleId": diagnostic.code,
        "ruleIndex": _RULE_INDEX[diagnostic.code],
        "level": _LEVELS[diagnostic.severity],
        "message": {"text": text},
    }
    if diagnostic.primary:
        result["locations"] = [_location(diagnostic.primary)]
    elif diagnostic.path:
        result["locations"] = [{"physicalLocation": {"artifactLocation": artifact(diagnostic.path)}}]
    if diagnostic.secondary:
        result["relatedLocations"] = [
            {"id": index, **_location(label)} for index, label in enumerate(diagnostic.secondary)
        ]
    return result


def _location(label: Label) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": artifact(label.span.file), "region": region(label.span)}
    }
    if label.text:
        location["message"] = {"text": label.text}
    return location


def artifact(path: str) -> dict[str, str]:
    """A SARIF artifact location: a relative URI with forward slashes, or a `file:` URI for an absolute path."""
    posix = path.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        return {"uri": "file://" + ("" if posix.startswith("/") else "/") + quote(posix, safe="/:")}
    return {"uri": quote(posix), "uriBaseId": SOURCE_ROOT}


def region(span: Span) -> dict[str, int]:
    return {
        "startLine": span.line,
        "startColumn": span.column,
        "endLine": span.end_line,
        "endColumn": span.end_column,
    }
