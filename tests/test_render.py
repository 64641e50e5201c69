"""Renderers: human (rustc style), JSON, GitHub workflow annotations and SARIF 2.1.0."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click.testing
import pytest
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler import CheckResult, check
from sleipnir.compiler.codes import CODES
from sleipnir.compiler.render import RENDERERS, github, human, json_report, sarif

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# A duplicate key (primary + secondary label + help) and a misspelt kind (notes + did-you-mean help); both come
# from the loader and the classifier, so these tests do not depend on the schemas' details.
PROBLEMS = """\
job:
  name: render_job
  description: first
  description: second
---
jbo:
  name: typo
"""


@pytest.fixture
def result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CheckResult:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.yaml").write_text(PROBLEMS, encoding="utf-8")
    return check(["problems.yaml"])


def test_the_fixture_has_the_diagnostics_these_tests_rely_on(result: CheckResult) -> None:
    assert [(d.code, d.primary.span.line if d.primary else 0) for d in result.diagnostics] == [
        ("duplicate-key", 4),
        ("unknown-document-kind", 6),
    ]


def test_renderers_are_registered_and_mask_url_passwords() -> None:
    assert RENDERERS["human"].__wrapped__ is human.render  # type: ignore[attr-defined]
    assert RENDERERS["json"].__wrapped__ is json_report.render  # type: ignore[attr-defined]
    assert RENDERERS["github"].__wrapped__ is github.render  # type: ignore[attr-defined]
    assert RENDERERS["sarif"].__wrapped__ is sarif.render  # type: ignore[attr-defined]


# Human


def test_human_shows_the_place_the_source_line_and_carets(result: CheckResult) -> None:
    text = human.render(result, False)
    lines = text.splitlines()
    assert lines[0] == "error[duplicate-key]: duplicate key `description`"
    assert lines[1] == " --> problems.yaml:4:3"
    source = lines.index("4 |   description: second")
    caret_line = lines[source + 1]
    prefix = len("4 | ")
    assert caret_line.startswith("  | ")
    # `description` is columns 3 to 13: the carets sit exactly under it.
    assert caret_line.index("^") - prefix == 2
    assert caret_line.count("^") == len("description")
    assert caret_line.endswith("second definition")
    # The secondary label: `:::` and dashes under the first definition.
    assert " ::: problems.yaml:3:3" in lines
    first = lines.index("3 |   description: first")
    assert lines[first + 1] == "  |   ----------- first defined here"
    assert any(line.startswith("  = help: remove one of them") for line in lines)


def test_human_shows_notes_and_did_you_mean(result: CheckResult) -> None:
    text = human.render(result, False)
    assert "error[unknown-document-kind]: unknown document kind `jbo`" in text
    assert " --> problems.yaml:6:1" in text
    assert "6 | jbo:\n  | ^^^ not a document kind" in text
    assert "  = note: the kinds are: job, template, pipeline, stack, prompt" in text
    assert "  = help: did you mean `job`?" in text


def test_human_summary_line(result: CheckResult) -> None:
    assert human.render(result, False).splitlines()[-1] == "failed: 2 errors in 1 document"


def test_human_without_color_has_no_escape_codes(result: CheckResult) -> None:
    assert "\x1b" not in human.render(result, False)


def test_human_with_color_styles_but_keeps_the_text(result: CheckResult) -> None:
    colored = human.render(result, True)
    assert ANSI.search(colored)
    assert ANSI.sub("", colored) == human.render(result, False)


def test_human_diagnostic_without_a_span_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    text = human.render(check(["empty"]), False)
    assert "warning[no-yaml-files]: no YAML files here" in text
    assert " --> empty" in text


def test_human_clean_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.yaml").write_text("job:\n  name: fine\n", encoding="utf-8")
    assert human.render(check(["ok.yaml"]), False) == "ok: 1 document in 1 file, no problems"


def _pretend_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make CliRunner's stdout claim to be a terminal, so `--color auto` would colour."""
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)


def test_cli_colors_a_terminal_by_default(result: CheckResult, monkeypatch: pytest.MonkeyPatch) -> None:
    del result
    monkeypatch.delenv("NO_COLOR", raising=False)
    _pretend_terminal(monkeypatch)
    outcome = CliRunner().invoke(main, ["check", "problems.yaml"], color=True)
    assert outcome.exit_code == 1
    assert ANSI.search(outcome.output)


def test_cli_respects_no_color(result: CheckResult, monkeypatch: pytest.MonkeyPatch) -> None:
    del result
    _pretend_terminal(monkeypatch)
    outcome = CliRunner().invoke(main, ["check", "problems.yaml"], color=True, env={"NO_COLOR": "1"})
    assert outcome.exit_code == 1
    assert "error[duplicate-key]" in outcome.output
    assert "\x1b" not in outcome.output


def test_cli_never_colors_a_pipe(result: CheckResult, monkeypatch: pytest.MonkeyPatch) -> None:
    del result
    monkeypatch.delenv("NO_COLOR", raising=False)
    outcome = CliRunner().invoke(main, ["check", "problems.yaml"], color=True)
    assert outcome.exit_code == 1
    assert "\x1b" not in outcome.output


# JSON


def test_json_is_versioned(result: CheckResult) -> None:
    report = json.loads(json_report.render(result, True))
    assert report["version"] == json_report.FORMAT_VERSION == 1
    assert report["tool"] == "sleipnir"
    assert report["ok"] is False
    assert report["summary"] == {"documents": 1, "errors": 2, "warnings": 0}
    first = report["diagnostics"][0]
    assert first["code"] == "duplicate-key"
    assert first["span"] == {"file": "problems.yaml", "line": 4, "column": 3, "end_line": 4, "end_column": 14}
    assert first["secondary"][0]["span"]["line"] == 3
    assert first["help"].startswith("remove one of them")


def test_cli_json_format(result: CheckResult) -> None:
    del result
    outcome = CliRunner().invoke(main, ["check", "--format", "json", "problems.yaml"])
    assert outcome.exit_code == 1
    assert json.loads(outcome.output)["version"] == 1


# GitHub annotations

_COMMAND = re.compile(r"^::(error|warning|notice) ([^:]*)::(.*)$")


def parse_annotation(line: str) -> tuple[str, dict[str, str], str]:
    match = _COMMAND.match(line)
    assert match, line
    command, fields, data = match.groups()
    properties = {}
    for field in fields.split(","):
        name, _, value = field.partition("=")
        properties[name] = _unescape(value)
    return command, properties, _unescape(data)


def _unescape(text: str) -> str:
    return (
        text.replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
    )


def test_github_annotations(result: CheckResult) -> None:
    lines = github.render(result, False).splitlines()
    assert len(lines) == 2
    command, properties, message = parse_annotation(lines[0])
    assert command == "error"
    assert properties == {
        "file": "problems.yaml",
        "line": "4",
        "col": "3",
        "endLine": "4",
        "endColumn": "14",
        "title": "sleipnir[duplicate-key]",
    }
    assert message.splitlines()[0] == "duplicate key `description`"
    assert "problems.yaml:3:3: first defined here" in message
    assert message.splitlines()[-1].startswith("help: remove one of them")

    _, properties, message = parse_annotation(lines[1])
    assert properties["title"] == "sleipnir[unknown-document-kind]"
    assert properties["line"] == "6"
    assert "note: the kinds are: job, template, pipeline, stack, prompt" in message
    assert message.endswith("help: did you mean `job`?")


def test_github_message_has_no_raw_newlines(result: CheckResult) -> None:
    for line in github.render(result, False).splitlines():
        assert line.startswith("::error ")
        assert "%0A" in line


def test_github_escaping() -> None:
    assert github.escape_data("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext: a,b"
    assert github.escape_property("dir,x/a:b%.yaml") == "dir%2Cx/a%3Ab%25.yaml"


def test_github_escapes_awkward_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "we,ird:name%.yaml"
    (tmp_path / name).write_text("job:\n  name: a\n  name: b\n", encoding="utf-8")
    (line,) = github.render(check([name]), False).splitlines()
    assert "file=we%2Cird%3Aname%25.yaml," in line
    _, properties, _ = parse_annotation(line)
    assert properties["file"] == name


def test_github_warning_without_a_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (line,) = github.render(check(["empty"]), False).splitlines()
    assert line == "::warning file=empty,title=sleipnir[no-yaml-files]::no YAML files here"


def test_cli_github_format(result: CheckResult) -> None:
    del result
    outcome = CliRunner().invoke(main, ["check", "--format", "github", "problems.yaml"])
    assert outcome.exit_code == 1
    assert [line.split(" ", 1)[0] for line in outcome.output.splitlines()] == ["::error", "::error"]


# SARIF


def _sarif(result: CheckResult) -> dict[str, Any]:
    log: dict[str, Any] = json.loads(sarif.render(result, False))
    return log


def test_sarif_log_structure(result: CheckResult) -> None:
    log = _sarif(result)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "sleipnir"
    assert driver["informationUri"].startswith("https://")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", driver["version"])
    rules = driver["rules"]
    assert [rule["id"] for rule in rules] == list(CODES)
    for rule in rules:
        assert rule["shortDescription"]["text"] == CODES[rule["id"]].summary
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    for item in run["results"]:
        assert rules[item["ruleIndex"]]["id"] == item["ruleId"]


def test_sarif_results(result: CheckResult) -> None:
    results = _sarif(result)["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("duplicate-key", "error"),
        ("unknown-document-kind", "error"),
    ]
    duplicate = results[0]
    assert duplicate["message"]["text"].startswith("duplicate key `description`")
    assert "\nhelp: remove one of them" in duplicate["message"]["text"]
    (location,) = duplicate["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "problems.yaml"
    assert physical["region"] == {"startLine": 4, "startColumn": 3, "endLine": 4, "endColumn": 14}
    (related,) = duplicate["relatedLocations"]
    assert related["id"] == 0
    assert related["physicalLocation"]["region"]["startLine"] == 3
    assert related["message"]["text"] == "first defined here"
    assert "did you mean `job`?" in results[1]["message"]["text"]
    assert "note: the kinds are" in results[1]["message"]["text"]


def test_sarif_uris_are_relative_with_forward_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs dir").mkdir()
    (tmp_path / "jobs dir" / "a.yaml").write_text("job:\n  name: a\n  name: b\n", encoding="utf-8")
    (item,) = _sarif(check(["jobs dir"]))["runs"][0]["results"]
    artifact = item["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": "jobs%20dir/a.yaml", "uriBaseId": "%SRCROOT%"}
    assert sarif.artifact("jobs\\b.yaml") == {"uri": "jobs/b.yaml", "uriBaseId": "%SRCROOT%"}
    assert sarif.artifact("/abs/x.yaml") == {"uri": "file:///abs/x.yaml"}


def test_sarif_result_without_a_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (item,) = _sarif(check(["empty"]))["runs"][0]["results"]
    assert item["level"] == "warning"
    assert item["locations"] == [
        {"physicalLocation": {"artifactLocation": {"uri": "empty", "uriBaseId": "%SRCROOT%"}}}
    ]


def test_sarif_satisfies_the_schema_required_fields(result: CheckResult) -> None:
    # No copy of the SARIF 2.1.0 schema is installed here, so its required properties are checked by hand.
    log = _sarif(result)
    assert {"version", "runs"} <= log.keys()
    for run in log["runs"]:
        assert "driver" in run["tool"] and "name" in run["tool"]["driver"]
        for rule in run["tool"]["driver"]["rules"]:
            assert isinstance(rule["id"], str)
        for item in run["results"]:
            assert isinstance(item["message"]["text"], str) and item["message"]["text"]
            assert item["level"] in ("none", "note", "warning", "error")
            for location in [*item.get("locations", []), *item.get("relatedLocations", [])]:
                region = location["physicalLocation"].get("region")
                if region:
                    assert region["startLine"] >= 1 and region["startColumn"] >= 1
                    assert (region["endLine"], region["endColumn"]) >= (
                        region["startLine"],
                        region["startColumn"],
                    )


def test_cli_sarif_format(result: CheckResult) -> None:
    del result
    outcome = CliRunner().invoke(main, ["check", "--format", "sarif", "problems.yaml"])
    assert outcome.exit_code == 1
    assert len(json.loads(outcome.output)["runs"][0]["results"]) == 2


def test_machine_formats_of_a_clean_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.yaml").write_text("job:\n  name: fine\n", encoding="utf-8")
    clean = check(["ok.yaml"])
    assert github.render(clean, False) == ""
    assert _sarif(clean)["runs"][0]["results"] == []
    assert json.loads(json_report.render(clean, False))["ok"] is True
