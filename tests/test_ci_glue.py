"""CI glue: the SARIF log's shape and its rules' help links, the pre-commit hook (run for real through
`pre-commit try-repo`, which pip-installs this repository into its own environment) and the GitHub Action's
manifest. spec/ci.md documents them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sleipnir.compiler.codes import CODES
from sleipnir.compiler.render import sarif

REPO = Path(__file__).resolve().parents[1]

_MESSAGE = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}}
_LOCATION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": -1},
        "physicalLocation": {
            "type": "object",
            "properties": {
                "artifactLocation": {
                    "type": "object",
                    "properties": {"uri": {"type": "string", "format": "uri-reference"}, "uriBaseId": {"type": "string"}},
                },
                "region": {
                    "type": "object",
                    "properties": {
                        k: {"type": "integer", "minimum": 1} for k in ("startLine", "startColumn", "endLine", "endColumn")
                    },
                },
            },
        },
        "message": _MESSAGE,
    },
}
SARIF_SHAPE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "description": "The parts of the OASIS SARIF 2.1.0 schema (sarifLog, run, toolComponent, reportingDescriptor, "
    "result, location) that `check --format sarif` writes, with their required properties, types and enums.",
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "informationUri": {"type": "string", "format": "uri"},
                                    "version": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "shortDescription", "fullDescription", "helpUri"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": _MESSAGE,
                                                "fullDescription": _MESSAGE,
                                                "helpUri": {"type": "string", "format": "uri"},
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {"level": {"enum": ["none", "note", "warning", "error"]}},
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": -1},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": _MESSAGE,
                                "locations": {"type": "array", "items": _LOCATION},
                                "relatedLocations": {"type": "array", "items": _LOCATION},
                            },
                        },
                    },
                },
            },
        },
    },
}
TYPO_JOB = """\
job:
  name: typo
  input:
    path: data/typo.jsonl
  prompts:
    - name: classifier
      version: 1.0.0
      model: mock
  output:
    path: out/typo.jsonl
  execution:
    concurency: 2
"""


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sleipnir", "check", *args], cwd=cwd, capture_output=True, text=True, check=False)


def anchors() -> set[str]:
    return set(re.findall(r'<a id="([a-z0-9-]+)"></a>', (REPO / "spec" / "diagnostics.md").read_text(encoding="utf-8")))


def test_the_sarif_log_has_the_sarif_shape_and_each_rule_links_its_anchor(tmp_path: Path) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: ci\n", encoding="utf-8")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "typo.yaml").write_text(TYPO_JOB, encoding="utf-8")
    done = check(tmp_path, "--format", "sarif")
    assert done.returncode == 1, done.stderr
    log = json.loads(done.stdout)
    jsonschema.Draft7Validator(SARIF_SHAPE, format_checker=jsonschema.FormatChecker()).validate(log)
    [run] = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == list(CODES)
    documented = anchors()
    for rule in rules:
        page, _, anchor = rule["helpUri"].partition("#")
        assert page == sarif.INFORMATION_URI and anchor == rule["id"] and anchor in documented
        assert rule["fullDescription"]["text"].startswith(CODES[rule["id"]].summary)
        assert rule["fullDescription"]["text"] != rule["shortDescription"]["text"]
    [result] = run["results"]
    assert result["ruleId"] == "unknown-key" and rules[result["ruleIndex"]]["helpUri"].endswith("#unknown-key")
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 12


def test_every_code_row_has_one_anchor_of_its_own() -> None:
    rows = re.findall(r'^\| `([a-z0-9-]+)` \| \w+ \| <a id="([a-z0-9-]+)"></a>', (REPO / "spec" / "diagnostics.md").read_text(encoding="utf-8"), re.M)
    assert sorted(code for code, _ in rows) == sorted(CODES)
    assert all(code == anchor for code, anchor in rows)


def test_the_hook_manifest_runs_check_once_for_the_workspace() -> None:
    [hook] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert hook["id"] == "sleipnir-check" and hook["entry"] == "sleipnir check"
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    assert re.search(hook["files"], "jobs/a.yaml") and re.search(hook["files"], "b.yml") and not re.search(hook["files"], "c.py")


def test_the_action_checks_to_sarif_and_uploads_it() -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    [install] = [s for s in steps if s.get("name") == "Install sleipnir"]
    assert "pip install" in install["run"] and install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    [checking] = [s for s in steps if s.get("id") == "check"]
    assert "sleipnir check" in checking["run"] and "--format sarif" in checking["run"]
    assert '> "$SARIF_FILE"' in checking["run"]
    [upload] = [s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@")]
    assert upload["with"]["sarif_file"] == "${{ inputs.working-directory }}/${{ inputs.sarif-file }}"
    # Inputs reach the scripts through the environment, never pasted into them.
    for step in steps:
        assert "${{ inputs." not in step.get("run", "")
    assert set(action["inputs"]) >= {"paths", "working-directory", "strict", "sarif-file", "upload"}


@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is in the dev extra")
def test_pre_commit_try_repo_runs_the_hook(tmp_path: Path) -> None:
    """pre-commit installs this repository into an environment of its own (from the package index pip is
    configured with) and runs the hook on a workspace: clean, then with a typo'd key."""
    ws = tmp_path / "ws"
    (ws / "jobs").mkdir(parents=True)
    (ws / "sleipnir.yaml").write_text("name: hooked\n", encoding="utf-8")
    (ws / "jobs" / "typo.yaml").write_text(TYPO_JOB.replace("concurency", "concurrency"), encoding="utf-8")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=ws, env=env, check=True, capture_output=True)

    def hook() -> subprocess.CompletedProcess[str]:
        command = ["pre-commit", "try-repo", str(REPO), "sleipnir-check", "--all-files", "--color", "never"]
        return subprocess.run(command, cwd=ws, env=env, capture_output=True, text=True, timeout=1200, check=False)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "a workspace")
    clean = hook()
    assert clean.returncode == 0 and re.search(r"sleipnir check\.+Passed", clean.stdout), clean.stdout + clean.stderr
    (ws / "jobs" / "typo.yaml").write_text(TYPO_JOB, encoding="utf-8")
    git("add", "-A")
    broken = hook()
    assert broken.returncode == 1 and re.search(r"sleipnir check\.+Failed", broken.stdout), broken.stdout
    assert "unknown key `concurency`" in broken.stdout and "jobs/typo.yaml:12:5" in broken.stdout
