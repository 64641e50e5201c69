"""No planted password or key appears in any output format of check, plan, run-job and runs, nor in any file
the run leaves under the workspace: URL passwords show as `user:***@`, secrets as references."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from llm_server import LLMServer
from test_run_process import llm, make_workspace, process_env, scoring_job, server, write_items
from test_sources import postgres_url

__all__ = ["llm", "postgres_url", "server"]

MANIFEST_PASSWORD = "PlantedManifestPw41"
PARAM_PASSWORD = "PlantedParamPw52"
TOKEN = "PlantedTokenValue63"
MARKERS = (MANIFEST_PASSWORD, PARAM_PASSWORD, TOKEN)


def with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}"


@pytest.fixture
def tables(postgres_url: str) -> Iterator[tuple[str, str]]:
    source, sink = (f"sleipnir_leak_{uuid.uuid4().hex[:10]}_{n}" for n in ("in", "out"))
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {source} (item_id text, region text)".encode())
        connection.execute(f"INSERT INTO {source} VALUES ('1', 'eu'), ('2', 'us')".encode())
    yield source, sink
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS {source}, {sink}, "{sink}__sleipnir_partial"'.encode())


def sleipnir(root: Path, *args: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLEIPNIR_"))}
    done = subprocess.run(
        [sys.executable, "-m", "sleipnir", *args], cwd=root, capture_output=True, text=True, check=False,
        env={**environ, "ITEM_TOKEN": TOKEN, "NO_COLOR": "1"},
    )
    assert "internal-error" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_planted_passwords_and_tokens_reach_no_output_and_no_file(
    tmp_path: Path, postgres_url: str, tables: tuple[str, str]
) -> None:
    source, sink = tables
    root = tmp_path
    (root / "jobs").mkdir()
    (root / "prompts").mkdir()
    (root / "sleipnir.yaml").write_text(
        "name: leak\ndatabase: data.db\nfallback_provider: mock\n"
        f"connections:\n  pg: {with_password(postgres_url, MANIFEST_PASSWORD)}\n"
    )
    (root / "prompts" / "echo.yaml").write_text(
        "prompt:\n  name: echo\n  version: 1.0.0\n  description: echo\n  variables:\n    region: {type: string}\n  template:\n    user: '{{ region }}'\n"
    )
    (root / "jobs" / "leak.yaml").write_text(
        "job:\n  name: leak\n  params:\n    dest: none\n"
        f"  input:\n    source: postgresql\n    connection: pg\n"
        f"    query: \"SELECT item_id, region FROM {source} WHERE region <> '${{ITEM_TOKEN}}'\"\n"
        "  prompts:\n    - name: echo\n      version: 1.0.0\n      model: mock\n"
        f"  output:\n    destination: postgresql\n    connection: ${{dest}}\n    table: {sink}\n"
        "  logging:\n    level: DEBUG\n    format: json\n    destination: file\n    path: logs/leak.log\n"
        "  monitoring:\n    export_to: textfile\n"
    )
    param = f"dest={with_password(postgres_url, PARAM_PASSWORD)}"
    outputs = {
        **{f"check {f}": sleipnir(root, "check", "--format", f) for f in ("human", "json", "github", "sarif")},
        **{f"plan {f}": sleipnir(root, "plan", "leak", "--param", param, "--format", f) for f in ("text", "json", "dot", "mermaid")},
        "run-job": sleipnir(root, "run-job", "leak", "--param", param),
        "run-job --json": sleipnir(root, "run-job", "leak", "--param", param, "--json", "--fresh"),
        "runs": sleipnir(root, "runs"),
        "runs --json": sleipnir(root, "runs", "--json"),
    }
    assert "literal-password" in outputs["check human"] and ":***@" in outputs["plan json"]
    assert '"status": "succeeded"' in outputs["run-job --json"], outputs["run-job --json"]
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute(f"SELECT count(*) FROM {sink}".encode()).fetchone() == (2,)
    leaks = [(where, m) for where, text in outputs.items() for m in MARKERS if m in text]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "leak.log" for p in files) and any(p.suffix == ".prom" for p in files)
    leaks += [(str(p.relative_to(root)), m) for p in files for m in MARKERS if m.encode() in p.read_bytes()]
    assert [leak for leak in leaks if leak[0] != "sleipnir.yaml" and leak[0] != "jobs/leak.yaml"] == []


API_KEY = "sk-PlantedApiKey74"


def test_a_planted_api_key_reaches_no_output_and_no_file(tmp_path: Path, server: LLMServer) -> None:
    """The key goes to a real OpenAI-compatible server with every call, and nowhere else."""
    logging_keys = "logging:\n  level: DEBUG\n  format: json\n  destination: file\n  path: logs/score.log\n"
    job = scoring_job("score", "path: out/scores.jsonl", extra=logging_keys + "monitoring:\n  export_to: textfile\n")
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": job})
    write_items(ws / "data" / "items.jsonl", 5)
    env = {**process_env(server), "OPENAI_API_KEY": API_KEY}
    outputs = [
        subprocess.run([sys.executable, "-m", "sleipnir", *args], cwd=ws, env=env, capture_output=True, text=True, check=False)
        for args in (
            ("plan", "score", "--format", "json"),
            ("plan", "score"),
            ("run-job", "score"),
            ("run-job", "score", "--json", "--fresh"),
            ("runs", "--json"),
        )
    ]
    assert outputs[3].returncode == 0, outputs[3].stderr
    assert server.requests(0)["count"] >= 10, "both runs called the server"
    assert [o.args for o in outputs if API_KEY in o.stdout + o.stderr] == []
    files = [p for p in ws.rglob("*") if p.is_file()]
    assert any(p.name == "score.log" for p in files)
    assert [str(p.relative_to(ws)) for p in files if API_KEY.encode() in p.read_bytes()] == []
