"""The `sleipnir schema` command writes exactly the published schemas."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler import schemas


def test_schema_lists_prints_and_writes_the_published_schemas(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["schema"])
    assert listed.exit_code == 0
    assert listed.output.split() == [*schemas.ALL, "plan"]

    printed = runner.invoke(main, ["schema", "job"])
    assert printed.exit_code == 0
    assert json.loads(printed.output) == schemas.load("job")

    written = runner.invoke(main, ["schema", "--output", str(tmp_path / "out")])
    assert written.exit_code == 0
    for kind in (*schemas.ALL, "plan"):
        path = tmp_path / "out" / f"{kind}.schema.json"
        assert json.loads(path.read_text(encoding="utf-8")) == schemas.load(kind)

    plan = runner.invoke(main, ["schema", "plan"])
    assert plan.exit_code == 0 and json.loads(plan.output) == schemas.load("plan")


def test_schema_rejects_an_unknown_kind_as_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["schema", "jobs"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
