"""Every complete example of the product document runs, not only checks and plans.

The seed examples (spec/examples) are copied into a temporary workspace and each job and pipeline is run with
the examples' own manifest (`fallback_provider: mock`, so no key is needed), exactly as printed: a job without an
`input` runs its prompts once, for one item with an empty row (a scheduled report); the basic job reads the `reviews` table the test creates in the
workspace database; the environment-variables job calls a real OpenAI-compatible server on 127.0.0.1 through the
`OPENAI_API_KEY` and `API_ENDPOINT` it names.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sleipnir.compiler.ir import JobStep, Plan, PromptCall, Source
from sleipnir.compiler.planner import plan as compile_plan
from sleipnir.runtime.engine.job import JobRun, RunOptions
from sleipnir.runtime.engine.pipeline import run_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import LLMServer

EXAMPLES = Path(__file__).resolve().parents[1] / "spec" / "examples"
ROWS = [
    {"id": f"item-{n}", "review_text": text, "category": category, "text": text}
    for n, (text, category) in enumerate(
        [
            ("Great kettle, boils fast", "kitchen"),
            ("The lamp flickers and the switch broke", "lighting"),
            ("Sturdy pan, heats evenly", "kitchen"),
            ("Bulbs arrived smashed", "lighting"),
            ("Nice colour, fair price", "decor"),
        ]
    )
]


def documents() -> list[tuple[str, str]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name == "sleipnir.yaml":
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        kind = next(iter(document))
        if kind in ("job", "pipeline"):
            found.append((path.name, kind))
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".sleipnir"))
    database = root / ".sleipnir" / "examples.db"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE reviews (review_id TEXT PRIMARY KEY, review_text TEXT, processed BOOLEAN)")
        connection.executemany(
            "INSERT INTO reviews VALUES (?, ?, false)", [(row["id"], row["review_text"]) for row in ROWS]
        )
    with (root / "items.jsonl").open("w", encoding="utf-8") as file:
        for row in ROWS:
            file.write(json.dumps(row) + "\n")
    return root


@pytest.mark.parametrize(("file", "kind"), documents(), ids=[name for name, _ in documents()])
def test_the_seed_example_runs(workspace: Path, server: LLMServer, file: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    environ = {"OPENAI_API_KEY": "sk-test-not-real", "API_ENDPOINT": server.base_url} if file == "environment_variables.yaml" else {}
    before = server.requests()["count"]
    plan = _compiled(file, environ)
    if kind == "pipeline":
        _run_pipeline(plan, environ)
        return
    run = asyncio.run(JobRun(plan, RunOptions(environ=environ)).run())
    assert run.ok, run.message
    assert run.progress.succeeded >= 1 and run.progress.failed == 0
    if _has_no_input(plan):
        assert run.progress.succeeded == 1, "a job without input runs its prompts once"
    if file == "environment_variables.yaml":
        assert server.requests()["count"] - before == 1, "the job called the endpoint its variables name, once"
    if file == "basic_job.yaml":
        with sqlite3.connect(workspace / ".sleipnir" / "examples.db") as connection:
            stored = connection.execute("SELECT COUNT(*) FROM sentiment_results").fetchone()[0]
        assert stored == len(ROWS), "the basic job writes its results back to the workspace database"


def _has_no_input(plan: Plan) -> bool:
    return next(node for node in plan.nodes if isinstance(node, Source)).source == "run_input"


# -- against a schema-following server ----------------------------------------------------------------------

STDLIB = Path(__file__).resolve().parents[1] / "stdlib" / "prompts"
STDLIB_ROW = {
    "id": "item-1",
    "text": "The kettle boils fast but the lid broke after a week.",
    "context": "A kitchen appliance review.",
    "category": "kitchen",
    "period": "2026-W49",
    "items": [{"id": "a", "text": "Great kettle"}, {"id": "b", "text": "The lid broke"}],
    "results": [{"label": "positive"}, {"label": "negative"}],
    "candidate": {"label": "positive", "confidence": 0.7},
}


@pytest.mark.parametrize(("file", "kind"), documents(), ids=[name for name, _ in documents()])
def test_the_seed_example_runs_clean_against_a_schema_following_server(
    workspace: Path, server: LLMServer, file: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fallback to the mock: every call goes to a server that answers with an instance of the schema the
    request carries, and with nothing valid when it carries none."""
    monkeypatch.chdir(workspace)
    environ = {"OPENAI_API_KEY": "sk-test-not-real", "OPENAI_BASE_URL": server.base_url, "API_ENDPOINT": server.base_url}
    before = server.requests()["count"]
    plan = _compiled(file, environ)
    if kind == "pipeline":
        _run_pipeline(plan, environ)
    else:
        run = asyncio.run(JobRun(plan, RunOptions(environ=environ)).run())
        assert run.ok, run.message
        assert run.progress.failed == 0 and run.progress.skipped == 0 and run.progress.retries == 0
        assert not any("mock" in notice for notice in run.notices)
    if _calls(plan):
        assert server.requests()["count"] > before, "the calls went to the server"


def _compiled(file: str, environ: dict[str, str]) -> Plan:
    result = compile_plan(file, environ=environ)
    assert result.ok, [d.message for d in result.diagnostics]
    [plan] = result.plans
    return plan


def _run_pipeline(plan: Plan, environ: dict[str, str]) -> None:
    outcome = asyncio.run(run_pipeline(plan, RunOptions(environ=environ)))
    assert outcome.ok, {entry: run.message for entry, run in outcome.jobs.items()}
    assert len(outcome.jobs) == len(plan.nodes)


def _calls(plan: Plan) -> bool:
    """Whether the plan (or a job of the pipeline) calls a model."""
    return any(isinstance(n, PromptCall) or (isinstance(n, JobStep) and _calls(n.plan)) for n in plan.nodes)


def stdlib_modules() -> list[tuple[str, str]]:
    return [(path.parent.name, path.stem) for path in sorted(STDLIB.glob("*/*.yaml"))]


@pytest.mark.parametrize(("name", "version"), stdlib_modules(), ids=[f"{n}@{v}" for n, v in stdlib_modules()])
def test_every_stdlib_prompt_runs_clean_against_a_schema_following_server(
    tmp_path: Path, server: LLMServer, name: str, version: str
) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: stdlib_check\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text(json.dumps(STDLIB_ROW) + "\n", encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        f"job:\n  name: one_{name}\n  input:\n    path: items.jsonl\n  prompts:\n    - name: {name}\n"
        f"      version: {version}\n      model: gpt-4o-mini\n      endpoint: {server.base_url}\n"
        "  output:\n    path: out.jsonl\n",
        encoding="utf-8",
    )
    result = compile_plan(str(tmp_path / "job.yaml"), environ={})
    assert result.ok, [d.message for d in result.diagnostics]
    [plan] = result.plans
    run = asyncio.run(JobRun(plan, RunOptions(environ={})).run())
    assert run.ok and run.progress.succeeded == 1 and run.progress.retries == 0, (run.message, run.errors)
    [row] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert name in row
