"""The real yaml-language-server, driven over LSP, on a workspace made by `sleipnir init` (spec/editors.md).

The server is Red Hat's yaml-language-server 1.x, from npm: `scripts/test` installs it into `.cache/node/` when
it is missing. It gets no settings beyond what `init` wrote: `.vscode/settings.json`'s `yaml.schemas` is handed
over when the server asks for the `yaml` section (`workspace/configuration`), as VS Code does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lsp_client import Client, Message

from sleipnir.cli import main

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / ".cache" / "node" / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"
INSTALL = "npm install --prefix .cache/node yaml-language-server@1 (scripts/test does this)"


def find_server(server: Path = SERVER) -> list[str]:
    """The command that starts the server; under CI a missing server fails the test, elsewhere it skips it."""
    node = shutil.which("node")
    if node is None or not server.is_file():
        missing = "node" if node is None else f"yaml-language-server at {server}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing} is required under CI: {INSTALL}", pytrace=False)
        pytest.skip(f"{missing} is missing: {INSTALL}")
    return [node, str(server), "--stdio"]


@pytest.fixture(scope="module")
def server_command() -> list[str]:
    return find_server()


def test_under_ci_a_missing_server_fails_rather_than_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI"):
        find_server(tmp_path / "absent")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        find_server(tmp_path / "absent")


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "demo"])
    assert result.exit_code == 0, result.output
    return tmp_path / "demo"


@pytest.fixture
def editor(demo: Path, server_command: list[str]) -> Iterator[Client]:
    """yaml-language-server on `demo`, configured from `demo/.vscode/settings.json` alone."""
    settings = json.loads((demo / ".vscode" / "settings.json").read_text(encoding="utf-8"))
    sections = {"yaml": {"schemas": settings["yaml.schemas"], "validate": True, "schemaStore": {"enable": False}}}

    def answer(method: str, params: Any) -> Any:
        if method == "workspace/configuration":
            return [sections.get(item.get("section")) for item in params["items"]]
        return None

    client = Client(demo, command=server_command, answer=answer)
    try:
        client.start(
            demo,
            {
                "workspace": {"configuration": True, "didChangeConfiguration": {"dynamicRegistration": True}},
                "textDocument": {"publishDiagnostics": {"relatedInformation": True}},
            },
        )
        client.notify("workspace/didChangeConfiguration", {"settings": None})  # the server pulls them
        yield client
    finally:
        client.close()


def diagnostics(client: Client, path: Path, text: str) -> list[Message]:
    """Open `path` with `text` (written to disk too) and return the first non-empty diagnostics published."""
    path.write_text(text, encoding="utf-8")
    client.open(path)

    def published(message: Message) -> bool:
        params = message.get("params") or {}
        return (
            message.get("method") == "textDocument/publishDiagnostics"
            and params.get("uri") == path.as_uri()
            and bool(params.get("diagnostics"))
        )

    _, message = client.wait_for(published, wait=60)
    found: list[Message] = message["params"]["diagnostics"]
    return found


def typo_in_job(text: str) -> str:
    """The job `init` wrote, with `concurrency` misspelt."""
    assert "    concurrency: 4\n" in text
    return text.replace("    concurrency: 4\n", "    concurency: 4\n")


def test_the_server_reports_a_typo_d_key_in_a_job_of_an_initialised_workspace(demo: Path, editor: Client) -> None:
    job = demo / "jobs" / "review_sentiment.yaml"
    text = typo_in_job(job.read_text(encoding="utf-8"))
    found = diagnostics(editor, job, text)
    line = text.splitlines().index("    concurency: 4")
    typo = [d for d in found if d["range"]["start"]["line"] == line]
    assert typo, found
    assert "concurency" in typo[0]["message"] and "not allowed" in typo[0]["message"], typo
    assert not any("Unable to load schema" in d["message"] for d in found), found


def test_a_job_without_a_modeline_is_validated_through_the_settings_glob(demo: Path, editor: Client) -> None:
    job = demo / "jobs" / "plain.yaml"
    text = typo_in_job((demo / "jobs" / "review_sentiment.yaml").read_text(encoding="utf-8")).split("\n", 1)[1]
    assert "yaml-language-server" not in text
    found = diagnostics(editor, job, text.replace("name: review_sentiment", "name: plain"))
    assert any("concurency" in d["message"] for d in found), found


def test_the_second_document_of_a_file_gets_its_diagnostics_through_the_settings_glob(
    demo: Path, editor: Client
) -> None:
    """spec/editors.md, "Files with several documents": the glob of `.vscode/settings.json` covers every document
    of the file, so a typo in the second one is reported where `sleipnir check` reports it."""
    first = "job:\n  name: first\n  prompts:\n    - name: analyzer\n"
    second = "job:\n  name: second\n  prompts:\n    - name: analyzer\n  execution:\n    concurency: 4\n"
    text = f"{first}---\n{second}"
    path = demo / "jobs" / "two.yaml"
    found = diagnostics(editor, path, text)
    line = text.splitlines().index("    concurency: 4")
    assert [d for d in found if d["range"]["start"]["line"] == line and "concurency" in d["message"]], found
    checked = CliRunner().invoke(main, ["check", str(path)])
    assert checked.exit_code == 1 and f"two.yaml:{line + 1}:5" in checked.output, checked.output


def test_a_modeline_covers_only_its_own_document(demo: Path, editor: Client) -> None:
    """Why spec/editors.md no longer says that one modeline covers a whole file: in a file outside the
    associated folders, the second document is validated only when it has a modeline of its own."""
    (demo / "misc").mkdir()
    modeline = "# yaml-language-server: $schema=../.sleipnir/schema/job.schema.json\n"
    second = "job:\n  name: second\n  execution:\n    concurency: 4\n"
    first = "job:\n  name: first\n  execution:\n    concurrency: 4\n"
    # One modeline on top: the second document's typo is not reported (only the first document's schema).
    unguarded = demo / "misc" / "one_modeline.yaml"
    text = f"{modeline}job:\n  name: first\n  execution:\n    concurencyy: 4\n---\n{second}"
    found = diagnostics(editor, unguarded, text)
    assert any("concurencyy" in d["message"] for d in found), found
    assert not any(d["range"]["start"]["line"] > 4 for d in found), found
    # A modeline in each document: both are validated.
    each = demo / "misc" / "each.yaml"
    text = f"{modeline}{first}---\n{modeline}{second}"
    found = diagnostics(editor, each, text)
    line = text.splitlines().index("    concurency: 4")
    assert [d for d in found if d["range"]["start"]["line"] == line], found


def test_every_key_of_every_shipped_schema_has_hover_text_with_a_reference_link() -> None:
    """Each property of each `schema/*.json` (the plan's too), at any depth, has a `markdownDescription` ending
    with a link to its section of spec/*.md: the editor's hover. (An `if` names keys only to test them.)"""
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for number, item in enumerate(node):
                walk(item, f"{where}[{number}]")
            return
        if not isinstance(node, dict):
            return
        for key, value in (node.get("properties") or {}).items():
            text = value.get("markdownDescription", "") if isinstance(value, dict) else ""
            if not re.search(r"\[reference\]\(https://\S+/spec/[a-z_]+\.md(#[\w-]+)?\)$", text):
                missing.append(f"{where}.{key}")
        for key, value in node.items():
            if key != "if":
                walk(value, f"{where}/{key}")

    files = sorted((ROOT / "schema").glob("*.schema.json"))
    assert len(files) == 8
    for path in files:
        walk(json.loads(path.read_text(encoding="utf-8")), path.name)
    assert not missing, missing
