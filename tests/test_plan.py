"""`sleipnir plan` (the front end's outline): the version chosen for each reference, and pipeline stages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from sleipnir.cli import main


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_plan_shows_the_newest_version_when_none_is_given(tmp_path: Path) -> None:
    write(
        tmp_path / "jobs.yaml",
        """
        job:
          name: scoring
          prompts:
            - name: sentiment_analyzer
            - name: sentiment_analyzer
              version: 2.0.0
        """,
    )
    result = CliRunner().invoke(main, ["plan", "--format", "json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [job] = json.loads(result.output)["jobs"]
    newest, pinned = job["prompts"]
    assert (newest["version"], newest["newest"], newest["requested"]) == ("2.1.0", True, None)
    assert (pinned["version"], pinned["newest"]) == ("2.0.0", False)
    text = CliRunner().invoke(main, ["plan", str(tmp_path)]).output
    assert "sentiment_analyzer 2.1.0 (newest)" in text


def test_plan_orders_a_pipeline_in_stages(tmp_path: Path) -> None:
    for name in ("collector", "processor_a", "processor_b", "aggregator_job"):
        write(tmp_path / f"{name}.yaml", f"job:\n  name: {name}\n")
    write(
        tmp_path / "pipeline.yaml",
        """
        pipeline:
          name: fan
          jobs:
            - {id: job1, name: collector}
            - {id: job2a, name: processor_a, depends_on: [job1]}
            - {id: job2b, name: processor_b, depends_on: [job1]}
            - {id: job3, name: aggregator_job, depends_on: [job2a, job2b]}
        """,
    )
    result = CliRunner().invoke(main, ["plan", "--format", "json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [pipeline] = json.loads(result.output)["pipelines"]
    assert [[step["id"] for step in stage] for stage in pipeline["stages"]] == [["job1"], ["job2a", "job2b"], ["job3"]]


def test_plan_refuses_documents_with_errors(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "job:\n  name: a\n  name: b\n")
    result = CliRunner().invoke(main, ["plan", str(tmp_path)])
    assert result.exit_code == 1
    assert "duplicate-key" in result.output
