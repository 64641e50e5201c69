"""The language reference keeps its promises: every complete example in spec/*.md checks as the page says.

A ```yaml block whose documents each have one kind key (job, template, pipeline, stack, prompt) must check
clean, and one with a job or a pipeline must also plan. A block whose first line is `# sleipnir.yaml` is checked as a workspace manifest. A block preceded by
`<!-- invalid: CODE -->` must produce the diagnostic CODE. Other blocks are fragments and are not checked.

Each block is written into a small workspace holding spec/examples/sleipnir.yaml and the supporting jobs of
spec/examples/support/jobs.yaml, so a page's pipeline may name those jobs; the stdlib is always available.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sleipnir.compiler.checker import check
from sleipnir.compiler.codes import CODES
from sleipnir.compiler.diagnostics import Diagnostic
from sleipnir.compiler.planner import plan

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec"
KINDS = {"job", "template", "pipeline", "stack", "prompt"}
MANIFEST_MARK = "# sleipnir.yaml"

_FENCE = re.compile(r"^```yaml[ \t]*$")
_INVALID = re.compile(r"^<!--\s*invalid:\s*([a-z0-9-]+)\s*-->$")
_CODE_ROW = re.compile(r"^\|\s*`([a-z0-9-]+)`\s*\|\s*(error|warning|note)\s*\|")


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    page: str
    line: int
    text: str
    expect: str | None
    """The diagnostic code the block must produce, or None when it must check clean."""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _is_complete(text: str) -> bool:
    if text.lstrip().startswith(MANIFEST_MARK):
        return True
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(documents) and all(
        isinstance(d, dict) and len(d) == 1 and next(iter(d)) in KINDS for d in documents
    )


def spec_blocks() -> list[Block]:
    """The checkable ```yaml blocks of every spec page that exists."""
    blocks = []
    for page in sorted(SPEC.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        expect: str | None = None
        index = 0
        while index < len(lines):
            stripped = lines[index].strip()
            if marked := _INVALID.match(stripped):
                expect = marked.group(1)
            elif _FENCE.match(stripped):
                end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
                text = "\n".join(lines[index + 1 : end]) + "\n"
                if expect is not None or _is_complete(text):
                    blocks.append(Block(page=page.name, line=index + 1, text=text, expect=expect))
                expect = None
                index = end
            elif stripped:
                expect = None
            index += 1
    return blocks


def _plannable(text: str) -> bool:
    return any(isinstance(d, dict) and ("job" in d or "pipeline" in d) for d in yaml.safe_load_all(text))


def _report(diagnostics: tuple[Diagnostic, ...]) -> str:
    return "\n".join(
        f"{d.primary.span.line if d.primary else '?'}: {d.severity.value}[{d.code}] {d.message}"
        for d in diagnostics
    )


def test_the_spec_has_pages_with_examples() -> None:
    # Guards the collection below, which would otherwise pass vacuously.
    assert (SPEC / "README.md").is_file()
    assert sum(b.expect is None for b in spec_blocks()) >= 10
    assert any(b.expect is not None for b in spec_blocks())


@pytest.mark.parametrize("block", spec_blocks(), ids=lambda b: b.id)
def test_spec_example(block: Block, tmp_path: Path) -> None:
    shutil.copy(SPEC / "examples" / "sleipnir.yaml", tmp_path / "sleipnir.yaml")
    shutil.copy(SPEC / "examples" / "support" / "jobs.yaml", tmp_path / "support_jobs.yaml")
    manifest = block.text.lstrip().startswith(MANIFEST_MARK)
    target = tmp_path / ("sleipnir.yaml" if manifest else "example.yaml")
    target.write_text(block.text, encoding="utf-8")

    diagnostics = check([str(target)]).diagnostics

    where = f"{block.page} line {block.line}"
    if block.expect is None:
        assert diagnostics == (), f"{where} should check clean:\n{_report(diagnostics)}"
        if not manifest and _plannable(block.text):
            # A promise to users: a complete job or pipeline also plans, given values for its environment.
            environ = {name: "https://example.test/x" for name in re.findall(r"\$\{([A-Za-z_]\w*)(?:\}|:\?)", block.text)}
            planned = plan(str(target), environ=environ)
            assert planned.ok, f"{where} should plan:\n{_report(planned.diagnostics)}"
    else:
        assert block.expect in CODES, f"{where} expects an unregistered code {block.expect}"
        codes = {d.code for d in diagnostics}
        assert block.expect in codes, f"{where} should give {block.expect}, got:\n{_report(diagnostics)}"


def _code_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in (SPEC / "diagnostics.md").read_text(encoding="utf-8").splitlines():
        if row := _CODE_ROW.match(line.strip()):
            assert row.group(1) not in table, f"{row.group(1)} has two rows in spec/diagnostics.md"
            table[row.group(1)] = row.group(2)
    return table


def test_code_table_lists_exactly_the_registered_codes() -> None:
    table = _code_table()
    assert sorted(set(CODES) - set(table)) == [], (
        "registered in compiler/codes.py but not in spec/diagnostics.md"
    )
    assert sorted(set(table) - set(CODES)) == [], (
        "in spec/diagnostics.md but not registered in compiler/codes.py"
    )


def test_code_table_gives_each_code_its_severity() -> None:
    table = _code_table()
    wrong = {
        name: (table[name], code.severity.value)
        for name, code in CODES.items()
        if table.get(name) != code.severity.value
    }
    assert wrong == {}, "spec severity, registered severity"
