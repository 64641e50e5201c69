"""The seed's complete examples are kept verbatim in spec/examples/, and they, and the demo workspace, check clean."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler.checker import check
from sleipnir.compiler.diagnostics import Diagnostic

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "spec" / "product" / "Sleipnir-Jobs.md"
SPEC_EXAMPLES = ROOT / "spec" / "examples"
DEMO = ROOT / "examples"
KINDS = {"job", "template", "pipeline", "stack", "prompt"}

_YAML_BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def seed_examples() -> list[Any]:
    """Every complete YAML example of the seed: a block whose one top-level key is a document kind."""
    if not SEED.is_file():
        raise AssertionError(f"the product document is missing: {SEED}")
    examples = []
    for block in _YAML_BLOCK.findall(SEED.read_text(encoding="utf-8")):
        value = yaml.safe_load(block)
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in KINDS:
            examples.append(value)
    return examples


def spec_example_values() -> list[Any]:
    values: list[Any] = []
    for path in sorted(SPEC_EXAMPLES.rglob("*.y*ml")):
        values.extend(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return values


def _report(diagnostics: tuple[Diagnostic, ...]) -> str:
    lines = []
    for d in diagnostics:
        place = (
            f"{d.primary.span.file}:{d.primary.span.line}:{d.primary.span.column}" if d.primary else d.path
        )
        lines.append(f"{place}: {d.severity.value}[{d.code}] {d.message}")
    return "\n".join(lines)


def test_seed_has_its_twenty_complete_examples() -> None:
    # A guard on the extraction itself: if it found nothing, the test below would pass vacuously.
    assert len(seed_examples()) == 20


@pytest.mark.parametrize(
    "example",
    seed_examples(),
    ids=lambda e: f"{next(iter(e))}-{next(iter(e.values())).get('name', 'nameless')}",
)
def test_seed_example_is_kept_verbatim_in_spec_examples(example: Any) -> None:
    assert example in spec_example_values(), "missing or edited in spec/examples/:\n" + yaml.safe_dump(
        example
    )


def test_spec_examples_check_clean() -> None:
    result = check([str(SPEC_EXAMPLES)])
    assert result.diagnostics == (), _report(result.diagnostics)
    kinds = {d.kind for d in result.workspace.documents}
    assert {"job", "template", "pipeline", "workspace"} <= kinds


def test_demo_workspace_checks_clean() -> None:
    result = check([str(DEMO)])
    assert result.diagnostics == (), _report(result.diagnostics)
    assert len(result.workspace.documents) >= 4


def test_cli_check_on_spec_examples_exits_zero() -> None:
    outcome = CliRunner().invoke(main, ["check", str(SPEC_EXAMPLES)])
    assert outcome.exit_code == 0, outcome.output


def test_cli_check_on_demo_workspace_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # With no path, `check` finds the workspace around the current folder, as in the README quickstart.
    monkeypatch.chdir(DEMO / "jobs")
    outcome = CliRunner().invoke(main, ["check"])
    assert outcome.exit_code == 0, outcome.output
