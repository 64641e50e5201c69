"""`sleipnir lsp` driven by a real client over stdio: diagnostics as you type, definitions, references, hover and
completion, in a workspace of 50 jobs and a pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from lsp_client import Client, diagnostics_for, job_text, make_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[tuple[Client, Path]]:
    make_workspace(tmp_path, 50)
    client = Client(tmp_path)
    try:
        capabilities = client.start(tmp_path)
        assert capabilities["capabilities"]["definitionProvider"]
        yield client, tmp_path
    finally:
        client.close()


def test_a_semantic_diagnostic_is_published_after_a_change(workspace: tuple[Client, Path]) -> None:
    client, root = workspace
    batch = root / "jobs" / "batch_01.yaml"
    client.open(batch)
    text = batch.read_text(encoding="utf-8").replace(job_text(12), job_text(12, ("classifier", "9.9.9")))
    client.change(batch, text, version=2)
    _, message = client.wait_for(diagnostics_for(batch, "unknown-prompt-version"))
    [diagnostic] = message["params"]["diagnostics"]
    line = text.splitlines().index("      version: 9.9.9")
    assert diagnostic["range"]["start"] == {"line": line, "character": 15}
    assert diagnostic["severity"] == 1 and diagnostic["source"] == "sleipnir"
    assert "prompt module `classifier` has no version 9.9.9" in diagnostic["message"]
    assert "help: use `version: 1.0.0`" in diagnostic["message"]
    # Undoing the change clears them: the file gets an empty list.
    client.change(batch, batch.read_text(encoding="utf-8"), version=3)
    _, cleared = client.wait_for(diagnostics_for(batch))
    assert cleared["params"]["diagnostics"] == []


def test_a_cycle_and_a_typo_with_a_suggestion_are_published_for_the_pipeline(workspace: tuple[Client, Path]) -> None:
    client, root = workspace
    pipeline = root / "pipeline.yaml"
    client.open(pipeline)
    text = pipeline.read_text(encoding="utf-8")
    text = text.replace("{id: j001, name: job_001}", "{id: j001, name: jobb_001, depends_on: [j002]}")
    text = text.replace("{id: j002, name: job_002}", "{id: j002, name: job_002, depends_on: [j001]}")
    client.change(pipeline, text, version=2)
    _, message = client.wait_for(diagnostics_for(pipeline, "dependency-cycle"))
    codes = {d["code"]: d for d in message["params"]["diagnostics"]}
    assert set(codes) == {"dependency-cycle", "unknown-job"}
    assert "did you mean `job_001`?" in codes["unknown-job"]["message"]


def test_go_to_definition_from_a_pipeline_entry_lands_on_the_jobs_name_line(workspace: tuple[Client, Path]) -> None:
    client, root = workspace
    pipeline = root / "pipeline.yaml"
    client.open(pipeline)
    lines = pipeline.read_text(encoding="utf-8").splitlines()
    row = next(i for i, line in enumerate(lines) if "name: job_023}" in line)
    column = lines[row].index("job_023") + 3
    found = client.request(
        "textDocument/definition",
        {"textDocument": {"uri": pipeline.as_uri()}, "position": {"line": row, "character": column}},
    )
    batch = root / "jobs" / "batch_02.yaml"
    assert found["uri"] == batch.as_uri()
    target = batch.read_text(encoding="utf-8").splitlines()[found["range"]["start"]["line"]]
    assert target == "  name: job_023"

    # And from the job's prompt to the stdlib prompt module, and back with find-references.
    client.open(batch)
    job_lines = batch.read_text(encoding="utf-8").splitlines()
    prompt_row = next(i for i, line in enumerate(job_lines) if "- name: sentiment_analyzer" in line)
    prompt = client.request(
        "textDocument/definition",
        {"textDocument": {"uri": batch.as_uri()}, "position": {"line": prompt_row, "character": 14}},
    )
    assert "/stdlib/prompts/sentiment_analyzer/" in prompt["uri"]
    module = Path(unquote(urlparse(prompt["uri"]).path)).read_text(encoding="utf-8").splitlines()
    assert module[prompt["range"]["start"]["line"]].strip() == "name: sentiment_analyzer"

    name_row = job_lines.index("  name: job_023")
    uses = client.request(
        "textDocument/references",
        {
            "textDocument": {"uri": batch.as_uri()},
            "position": {"line": name_row, "character": 10},
            "context": {"includeDeclaration": False},
        },
    )
    assert [(u["uri"], u["range"]["start"]["line"]) for u in uses] == [(pipeline.as_uri(), row)]


def test_hover_gives_the_references_words_and_completion_offers_names(workspace: tuple[Client, Path]) -> None:
    client, root = workspace
    batch = root / "jobs" / "batch_00.yaml"
    client.open(batch)
    lines = batch.read_text(encoding="utf-8").splitlines()
    row = lines.index("    concurrency: 4")
    hover = client.request(
        "textDocument/hover", {"textDocument": {"uri": batch.as_uri()}, "position": {"line": row, "character": 6}}
    )
    assert "https://sleipnir.dev/spec/job.md" in hover["contents"]["value"]

    pipeline = root / "pipeline.yaml"
    client.open(pipeline)
    text = pipeline.read_text(encoding="utf-8") + "    - {id: extra, name: job_04"
    client.change(pipeline, text, version=2)
    last = len(text.splitlines()) - 1
    offered = client.request(
        "textDocument/completion",
        {"textDocument": {"uri": pipeline.as_uri()}, "position": {"line": last, "character": len(text.splitlines()[-1])}},
    )
    labels = {item["label"] for item in offered["items"]}
    assert {"job_000", "job_049"} <= labels and "classifier" not in labels

    version_text = batch.read_text(encoding="utf-8").replace("      version: 1.0.0\n", "      version: \n", 1)
    client.change(batch, version_text, version=2)
    version_row = version_text.splitlines().index("      version: ")
    versions = client.request(
        "textDocument/completion",
        {"textDocument": {"uri": batch.as_uri()}, "position": {"line": version_row, "character": 15}},
    )
    assert [item["label"] for item in versions["items"]] == ["1.0.0"]
