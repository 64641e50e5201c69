"""Golden files: each `tests/goldens/*.yaml` carries its expected diagnostics inline.

A comment `# E: code` (error), `# W: code` (warning) or `# N: code` (note) names a diagnostic on its own line;
several may share a line (`# E: unknown-key E: invalid-type`). A line that cannot hold a comment (a tab in the
indentation, a bad byte, a line inside a block scalar) is named in a header comment instead:
`# expect: 4:1 tab-indent` (line and column) or `# expect: 13 template-syntax` (line only), optionally with a
severity letter before the code. A file with no expectations must check clean.

Beside each golden, `<name>.out` holds the human rendering without colour; `pytest --update-goldens` rewrites it.
The expectations written in the YAML are the specification: they are never rewritten, and are still asserted
during an update.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from sleipnir.compiler import check
from sleipnir.compiler.codes import CODES, Severity
from sleipnir.compiler.render import human

GOLDENS = Path(__file__).parent / "goldens"
CASES = sorted(GOLDENS.glob("*.yaml"))

_LETTERS = {"E": Severity.ERROR, "W": Severity.WARNING, "N": Severity.NOTE}
_INLINE_START = re.compile(r"#\s*[EWN]:\s*[a-z]")
_INLINE = re.compile(r"\b([EWN]):\s*([a-z][a-z0-9-]*)")
_HEADER = re.compile(r"^#\s*expect:\s*(\d+)(?::(\d+))?\s+(?:([EWN]):\s*)?([a-z][a-z0-9-]*)\s*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    line: int
    severity: Severity
    code: str
    column: int | None = None


def expectations(path: Path) -> list[Expected]:
    """The diagnostics a golden file declares. Undecodable bytes are replaced: only the comments matter here."""
    found: list[Expected] = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            line_text, column, letter, code = header.groups()
            severity = _LETTERS[letter] if letter else CODES[code].severity
            found.append(
                Expected(
                    line=int(line_text), severity=severity, code=code, column=int(column) if column else None
                )
            )
            continue
        start = _INLINE_START.search(line)
        if start:
            for letter, code in _INLINE.findall(line, start.start()):
                found.append(Expected(line=number, severity=_LETTERS[letter], code=code))
    return found


def test_there_are_enough_goldens() -> None:
    assert len(CASES) >= 20
    assert sum(1 for case in CASES if not expectations(case)) >= 2, "keep a few valid files among the goldens"


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_golden(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_goldens: bool) -> None:
    expected = expectations(case)
    for item in expected:
        assert item.code in CODES, f"{case.name}:{item.line}: `{item.code}` is not a registered code"

    # A private copy: no workspace around it, and the path in the output is just the file name.
    shutil.copyfile(case, tmp_path / case.name)
    monkeypatch.chdir(tmp_path)
    result = check([case.name])

    rendered = human.render(result, False) + "\n"
    assert "\x1b[" not in rendered
    out = case.with_suffix(".out")
    if update_goldens:
        # Written before the expectations are asserted: one run refreshes every rendering.
        out.write_text(rendered, encoding="utf-8")

    actual = {(d.primary.span.line if d.primary else 0, d.severity, d.code) for d in result.diagnostics}
    wanted = {(e.line, e.severity, e.code) for e in expected}
    missing, unexpected = sorted(wanted - actual), sorted(actual - wanted)
    assert not missing and not unexpected, _explain(case, missing, unexpected, rendered)
    assert len(result.diagnostics) == len(expected), _explain(case, [], [], rendered)

    for item in expected:
        if item.column is not None:
            columns = {
                d.primary.span.column
                for d in result.diagnostics
                if d.primary and d.code == item.code and d.primary.span.line == item.line
            }
            assert item.column in columns, f"{case.name}:{item.line}: {item.code} at columns {columns}"

    if not update_goldens:
        assert out.exists(), f"{out.name} is missing: run pytest --update-goldens to write it"
        assert rendered == out.read_text(encoding="utf-8"), f"{out.name} differs; run pytest --update-goldens"


def _explain(
    case: Path,
    missing: list[tuple[int, Severity, str]],
    unexpected: list[tuple[int, Severity, str]],
    output: str,
) -> str:
    lines = [f"{case.name}: diagnostics differ from the inline expectations"]
    lines += [f"  missing    line {line}: {severity.value}[{code}]" for line, severity, code in missing]
    lines += [f"  unexpected line {line}: {severity.value}[{code}]" for line, severity, code in unexpected]
    return "\n".join([*lines, "actual output:", output])


def test_expectation_syntax(tmp_path: Path) -> None:
    sample = tmp_path / "sample.yaml"
    sample.write_text(
        '# expect: 4:1 tab-indent\n# expect: 9 W: no-yaml-files\njob:\n  channel: "#ops"  # E: unknown-key E: invalid-type\n',
        encoding="utf-8",
    )
    assert expectations(sample) == [
        Expected(line=4, severity=Severity.ERROR, code="tab-indent", column=1),
        Expected(line=9, severity=Severity.WARNING, code="no-yaml-files"),
        Expected(line=4, severity=Severity.ERROR, code="unknown-key"),
        Expected(line=4, severity=Severity.ERROR, code="invalid-type"),
    ]
