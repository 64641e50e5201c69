"""Loading a workspace, names, exit codes and the CLI's promise of no tracebacks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler import check, checker


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


JOB = """
job:
  name: {name}
  prompts:
    - name: classifier
      version: 1.0.0
"""


def test_check_without_paths_reads_the_workspace_around_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "sleipnir.yaml", "name: demo\n")
    write(tmp_path / "jobs" / "a.yaml", JOB.format(name="a"))
    write(tmp_path / "jobs" / "nested" / "b.yml", JOB.format(name="b"))
    monkeypatch.chdir(tmp_path / "jobs" / "nested")
    result = check()
    assert result.diagnostics == ()
    assert sorted(d.name or "" for d in result.workspace.documents if d.kind == "job") == ["a", "b"]
    assert result.workspace.root == tmp_path
    assert result.workspace.manifest is not None


def test_multi_document_files_and_duplicate_names_name_both_places(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", JOB.format(name="same") + "---\n" + JOB.format(name="same"))
    result = check([str(path)])
    [duplicate] = [d for d in result.diagnostics if d.code == "duplicate-name"]
    assert duplicate.primary is not None and duplicate.primary.span.line == 9
    assert [label.span.line for label in duplicate.secondary] == [2]


def test_same_name_with_different_versions_is_allowed(tmp_path: Path) -> None:
    text = JOB.format(name="same").replace("  prompts:", "  version: 1.0.0\n  prompts:")
    path = write(tmp_path / "jobs.yaml", text + "---\n" + text.replace("1.0.0\n  prompts", "2.0.0\n  prompts"))
    assert [d.code for d in check([str(path)]).diagnostics] == []


def test_unknown_document_kind_suggests_the_closest_kind(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "jbo:\n  name: a\n")
    [diagnostic] = check([str(path)]).diagnostics
    assert diagnostic.code == "unknown-document-kind"
    assert diagnostic.help == "did you mean `job`?"


def test_a_missing_path_is_a_diagnostic_not_a_crash(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("text", "code"), [(JOB.format(name="ok"), 0), ("job:\n  name: [\n", 1)])
def test_exit_codes(tmp_path: Path, text: str, code: int) -> None:
    path = write(tmp_path / "job.yaml", text)
    assert CliRunner().invoke(main, ["check", str(path)]).exit_code == code


def test_warnings_fail_only_under_strict(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    assert runner.invoke(main, ["check", str(tmp_path / "empty")]).exit_code == 0
    assert runner.invoke(main, ["check", "--strict", str(tmp_path / "empty")]).exit_code == 1


def test_an_internal_error_is_one_line_and_the_traceback_needs_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(context: checker.CheckContext) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(checker, "SEMANTIC_CHECKS", (broken,))
    path = write(tmp_path / "job.yaml", JOB.format(name="ok"))
    runner = CliRunner()
    quiet = runner.invoke(main, ["check", str(path)])
    assert quiet.exit_code == 2
    assert "error[internal-error]: RuntimeError: boom" in quiet.output
    assert "Traceback" not in quiet.output
    loud = runner.invoke(main, ["--debug", "check", str(path)])
    assert loud.exit_code == 2
    assert "Traceback" in loud.output


def test_usage_errors_exit_2() -> None:
    assert CliRunner().invoke(main, ["check", "--format", "nonsense"]).exit_code == 2
