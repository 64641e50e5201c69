"""`sleipnir plan` on the command line: every format, --out, --estimate, overrides and errors."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_sources import pg_table, postgres_url  # noqa: F401 (fixtures)

from sleipnir.cli import main
from sleipnir.compiler.ir import PromptCall, Source, from_json

JOB = """
job:
  name: scoring
  input:
    source: database
    query: "SELECT id, text FROM reviews WHERE stars <= :stars"
    parameters:
      stars: 3
  prompts:
    - name: sentiment_analyzer
    - name: sentiment_analyzer
      version: 2.0.0
      temperature: 0.1
  error_handling:
    on_prompt_failure: {strategy: retry, max_retries: 3}
  schedule:
    cron: "30 6 * * 1"
    timezone: Europe/Oslo
  profiles:
    production:
      model: gpt-4o
"""


def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sleipnir.yaml").write_text("name: plans\ndatabase: data/app.db\n", encoding="utf-8")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "scoring.yaml").write_text(textwrap.dedent(JOB).lstrip(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLEIPNIR_PROFILE", raising=False)
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_is_the_plan_the_runtime_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    code, out, _ = run("plan", "scoring", "--format", "json", "--profile", "production")
    assert code == 0
    plan = from_json(out)
    assert plan.name == "scoring" and plan.profile == "production"
    newest, pinned = (n for n in plan.nodes if isinstance(n, PromptCall))
    assert (newest.version, pinned.version) == ("2.1.0", "2.0.0")
    assert newest.model == pinned.model == "gpt-4o"
    again = run("plan", "scoring", "--format", "json", "--profile", "production")[1]
    assert again == out, "the same inputs give byte-identical JSON"


def test_text_shows_origins_retries_fire_times_and_a_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    code, out, _ = run("plan", "scoring", "--param", "temperature=0.4")
    assert code == 0, out
    assert "+1s, +2s, +4s" in out
    assert "(--param)" in out and "temperature 0.4" in out
    assert "Europe/Oslo" in out and "UTC" in out
    assert out.rstrip().splitlines()[-1].startswith("plan ")


def test_dot_and_mermaid_draw_every_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    dot = run("plan", "scoring", "--format", "dot")[1]
    mermaid = run("plan", "scoring", "--format", "mermaid")[1]
    assert dot.startswith("digraph") and mermaid.startswith("flowchart")
    for text in (dot, mermaid):
        assert "sentiment_analyzer" in text and "input" in text and "output" in text


def test_out_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    code, out, _ = run("plan", "scoring", "--format", "json", "--out", "build/plan.json")
    assert code == 0 and out == ""
    assert from_json((tmp_path / "build" / "plan.json").read_text(encoding="utf-8")).name == "scoring"
    assert [p.name for p in (tmp_path / "build").iterdir()] == ["plan.json"], "no temporary file is left"


def test_estimate_counts_the_rows_of_a_sqlite_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "app.db") as database:
        database.execute("CREATE TABLE reviews (id INTEGER, text TEXT, stars INTEGER)")
        database.executemany("INSERT INTO reviews VALUES (?, ?, ?)", [(i, "ok", i % 5 + 1) for i in range(50)])
    without = run("plan", "scoring")[1]
    with_count = run("plan", "scoring", "--estimate")[1]
    assert "30 items" not in without
    assert "30 items" in with_count.splitlines()[-1], "COUNT(*) over the query, with :stars bound to 3"
    assert "what a run would call was not read (provider `openai` needs an API key" in with_count, "no key, no survey"


def test_estimate_reads_the_ledger_for_what_a_run_would_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: ledger\nfallback_provider: mock\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(10)))
    (tmp_path / "job.yaml").write_text(
        "job:\n  name: tally\n  input:\n    source: file\n    path: items.jsonl\n    key: id\n"
        "  prompts:\n    - name: sentiment_analyzer\n  output:\n    destination: file\n    path: out.jsonl\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run("run-job", "tally", "--limit", "6")[0] == 0
    code, out, err = run("plan", "tally", "--estimate")
    assert code == 0, err
    assert "would call 4 of 10 items: 4 new, 0 stale, 0 failed before; 6 already done" in out
    assert "4 items" in out.splitlines()[-1], "the estimate's calls and cost are for the items a run would call"


def test_param_files_named_params_yaml_live_in_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    (tmp_path / "backfill.params.yaml").write_text("input.batch_size: 7\n", encoding="utf-8")
    code, out, err = run("plan", "scoring", "--format", "json", "--param-file", "backfill.params.yaml")
    assert code == 0, err
    source = from_json(out).nodes[0]
    assert isinstance(source, Source) and source.batch_size == 7
    assert run("check")[0] == 0, "check does not read a parameter file as a document"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("plan", "scorng"), "unknown-target", "did you mean `scoring`?"),
        (("plan", "scoring", "--profile", "staging"), "unknown-profile", "profiles of this job: production"),
        (("plan", "scoring", "--param", "temperature=hot"), "invalid-type", "must be a number"),
        (("plan", "scoring", "--param", "input.batch_sise=5"), "unknown-key", "did you mean `batch_size`?"),
        (("plan", "scoring", "--param", "nonsense"), "invalid-param", "is not KEY=VALUE"),
    ],
)
def test_problems_exit_1_with_a_diagnostic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], code: str, text: str
) -> None:
    workspace(tmp_path, monkeypatch)
    exit_code, out, err = run(*args)
    assert exit_code == 1 and out == ""
    assert f"error[{code}]" in err and text in err
    assert "Traceback" not in err


def test_a_folder_plans_every_job_and_pipeline_as_a_json_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    (tmp_path / "pipeline.yaml").write_text("pipeline:\n  name: weekly\n  jobs: [scoring]\n", encoding="utf-8")
    code, out, _ = run("plan", ".", "--format", "json")
    assert code == 0
    assert sorted((p["kind"], p["name"]) for p in json.loads(out)) == [("job", "scoring"), ("pipeline", "weekly")]


def test_a_broken_document_the_job_does_not_use_is_not_checked_and_does_not_stop_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, monkeypatch)
    (tmp_path / "jobs" / "other.yaml").write_text("job:\n  name: other\n  prompts:\n    - name: nosuch_prompt\n", encoding="utf-8")
    (tmp_path / "jobs" / "torn.yaml").write_text("job:\n  name: [torn\n", encoding="utf-8")
    code, out, err = run("plan", "scoring", "--format", "json")
    assert code == 0 and from_json(out).name == "scoring"
    # Planned in focus: what the job does not use is indexed, not checked. A file that cannot even be read
    # (it may hide a name the job needs) is reported, as a warning.
    assert "unknown-prompt" not in err and "other.yaml" not in err
    assert "warning[yaml-syntax]" in err and "not used by `scoring`" in err
    code, _, err = run("plan", "other")
    assert code == 1 and "error[unknown-prompt]" in err, "the broken job itself is still refused"


def test_select_plans_only_the_documents_it_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sleipnir.compiler.planner import plan

    workspace(tmp_path, monkeypatch)
    (tmp_path / "jobs" / "secret.yaml").write_text(
        "job:\n  name: keyed\n  prompts:\n    - name: classifier\n      api_key: ${UNSET_KEY}\n", encoding="utf-8"
    )
    everything = plan(environ={})
    assert not everything.ok, "the keyed job needs its key to plan"
    scheduled = plan(environ={}, select=lambda d: bool(d.body.get("schedule")))
    assert scheduled.ok and [p.name for p in scheduled.plans] == ["scoring"]


def test_estimate_counts_a_postgresql_source_with_its_parameters_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import psycopg

    url, table = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_table")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE TABLE "{table}" (id INTEGER, note TEXT)'.encode())
        for n in range(12):
            connection.execute(f'INSERT INTO "{table}" VALUES (%s, %s)'.encode(), (n, "it's 100%" if n % 2 else "plain"))
    (tmp_path / "sleipnir.yaml").write_text(f"name: pg\nconnections:\n  warehouse: {url}\n", encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        "job:\n  name: counted\n  input:\n    connection: warehouse\n"
        f"    query: \"SELECT id FROM {table} WHERE note = :note AND note <> ':literal'\"\n"
        "    parameters:\n      note: \"it's 100%\"\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run("plan", "counted", "--estimate")
    assert code == 0, err
    assert "6 items" in out.splitlines()[-1], "COUNT(*) with :note bound, the ':literal' left as written"


def test_a_pipeline_names_its_job_plans_by_id_and_carries_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jsonschema

    from sleipnir.compiler import schemas
    from sleipnir.compiler.ir import JobStep, to_json

    workspace(tmp_path, monkeypatch)
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline:\n  name: weekly\n  jobs:\n"
        "    - {id: first, name: scoring}\n    - {id: again, name: scoring, depends_on: [first]}\n",
        encoding="utf-8",
    )
    code, out, _ = run("plan", "weekly", "--format", "json")
    assert code == 0
    data = json.loads(out)
    steps = {n["id"]: n["plan"] for n in data["nodes"] if n["kind"] == "job"}
    assert steps["first"] == steps["again"] and list(data["plans"]) == [steps["first"]]
    assert data["plans"][steps["first"]]["name"] == "scoring" and "id" not in data["plans"][steps["first"]]
    assert not list(jsonschema.Draft7Validator(schemas.load("plan")).iter_errors(data))

    planned = from_json(out)
    assert planned.id == data["id"]
    [first, again] = [n for n in planned.nodes if isinstance(n, JobStep)]
    assert first.plan is again.plan and first.plan.id == steps["first"]
    assert to_json(planned) == out, "the streamed JSON is the plan's one JSON form"
    assert run("plan", "weekly", "--format", "json")[1] == out, "and it is deterministic"

    edited = json.loads(out)
    edited["plans"][steps["first"]]["settings"]["execution"]["concurrency"] = 99
    with pytest.raises(ValueError, match="does not match its content"):
        from_json(json.dumps(edited))


def test_a_job_is_planned_in_focus_reading_only_what_it_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sleipnir.compiler.checker import check
    from sleipnir.compiler.index import Documents
    from sleipnir.compiler.planner import plan

    workspace(tmp_path, monkeypatch)
    for number in range(3):
        (tmp_path / "jobs" / f"other_{number}.yaml").write_text(
            f"job:\n  name: other_{number}\n  input: {{source: file, path: in.jsonl}}\n"
            "  prompts: [{name: classifier}]\n  output: {path: out.jsonl}\n",
            encoding="utf-8",
        )
    check(cache=True)  # as after any earlier check or plan: the cache is warm
    planned = plan("scoring", environ={}, cache=True)
    assert planned.ok and [p.name for p in planned.plans] == ["scoring"]
    documents = planned.check.workspace.documents
    assert isinstance(documents, Documents)
    parsed = {Path(f.shown).name for f in documents.workspace_index.files.values() if f.parsed is not None}
    assert "scoring.yaml" in parsed and "sleipnir.yaml" in parsed
    assert not any(name.startswith("other_") for name in parsed), parsed
    assert "2.0.0.yaml" in parsed, "the prompt modules it uses are read, to lower them"


def test_a_name_taken_from_a_secret_is_refused_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by hypothesis: a phase named `${OPENAI_API_KEY}` became a sealed secret as a node id."""
    write_files(tmp_path, {
        "sleipnir.yaml": "name: names\nfallback_provider: mock\n",
        "job.yaml": "job:\n  name: named\n  phases:\n    - name: ${OPENAI_API_KEY}\n      prompt: classifier\n"
        "    - name: b\n      prompt: aggregator\n",
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-shown-0123456789")
    code, out, err = run("plan", "named")
    assert code == 1 and out == ""
    assert "error[invalid-value]: `${OPENAI_API_KEY}` would make a name of a secret" in err
    assert "job.yaml:4:13" in err and "sk-not-shown" not in err and "Traceback" not in err


def test_a_stage_that_needs_rows_but_reads_no_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, {
        "sleipnir.yaml": "name: stages\nfallback_provider: mock\n",
        "prompt.yaml": "prompt:\n  name: summarise\n  version: 1.0.0\n  description: Summarise a text.\n"
        "  variables:\n    text: {type: string, required: true}\n  template:\n    user: 'Summarise {{ text }}'\n",
        "jobs.yaml": "job:\n  name: collect\n  input: {source: file, path: in.jsonl}\n  prompts: [{name: summarise}]\n"
        "  output: {destination: file, path: out/collected.jsonl}\n---\n"
        "job:\n  name: digest\n  prompts: [{name: summarise}]\n---\n"
        "job:\n  name: digest_bound\n  prompts:\n    - name: summarise\n      inputs: {text: 'all of it'}\n",
        "in.jsonl": '{"id": 1, "text": "a"}\n',
        "p.yaml": "pipeline:\n  name: p\n  jobs:\n    - {id: one, name: collect}\n    - {id: two, name: digest, depends_on: [one]}\n",
        "q.yaml": "pipeline:\n  name: q\n  jobs: [collect, digest_bound]\n",
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code, out, err = run("plan", "p")
    assert code == 1 and out == ""
    assert "error[missing-input]: `two` runs after `one` but reads no input, and its prompt `summarise` needs `text`" in err
    assert "p.yaml:5:7" in err and "`one` writes out/collected.jsonl" in err
    assert "input: {source: file, path: out/collected.jsonl}" in err
    assert run("plan", "q")[0] == 0, "a stage whose call binds the variable needs no row"
    assert run("plan", "digest")[0] == 0, "a job alone with no input runs once: not an error"


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
