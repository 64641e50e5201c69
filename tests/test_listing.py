"""`sleipnir list`, `--select NAME|GLOB|tag:T` on check, plan and run-job, did-you-mean for unknown names, and
the shell completion of job names, in real processes (spec/cli.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_process import make_workspace, process_env, sleipnir, write_items
from test_terminal import offline_job

TAGGED = """\
prompt:
  name: tagged
  version: 2.0.0
  description: A prompt module with tags.
  tags: [nightly, reviews]
  model: {name: mock}
  variables:
    text: {type: string, required: true}
  template:
    user: "{{ text }}"
"""
USES_TAGGED = """\
job:
  name: {name}
  input: {{path: data/items.jsonl, key: id}}
  prompts:
    - name: tagged
      version: 2.0.0
  output: {{path: out/{name}.jsonl}}
"""
BROKEN = "job:\n  name: broken\n  prompts: 3\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """Jobs `score` (the scorer prompt, untagged), `score_tagged` and `summary_tagged` (the `tagged` prompt,
    tags nightly and reviews), `broken` (invalid), and the pipeline `nightly` of the two tagged jobs; offline
    through the mock provider."""
    files = {
        "jobs/score.yaml": offline_job("score"),
        "jobs/tagged.yaml": USES_TAGGED.format(name="score_tagged") + "---\n" + USES_TAGGED.format(name="summary_tagged"),
        "prompts/tagged.yaml": TAGGED,
        "broken/broken.yaml": BROKEN,
        "pipelines/nightly.yaml": "pipeline:\n  name: nightly\n  jobs: [score_tagged, summary_tagged]\n",
    }
    root = make_workspace(tmp_path / "ws", files, "name: t\nfallback_provider: mock\n")
    write_items(root / "data" / "items.jsonl", 3)
    return root


def env_of() -> dict[str, str]:
    env = process_env(None)
    env.pop("OPENAI_API_KEY", None)
    return env


def test_list_shows_names_kinds_places_versions_and_tags(ws: Path) -> None:
    done = sleipnir(["list"], ws, env_of())
    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert lines == [
        "job broken broken/broken.yaml:2",
        "job score jobs/score.yaml:2",
        "job score_tagged jobs/tagged.yaml:2 tags: nightly, reviews",
        "job summary_tagged jobs/tagged.yaml:10 tags: nightly, reviews",
        "pipeline nightly pipelines/nightly.yaml:2 tags: nightly, reviews",
        "prompt scorer@1.0.0 prompts/scorer.yaml:2",
        "prompt tagged@2.0.0 prompts/tagged.yaml:2 tags: nightly, reviews",
    ]


def test_list_json_and_kind(ws: Path) -> None:
    done = sleipnir(["list", "--kind", "prompt", "--json"], ws, env_of())
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["kind"], r["name"], r["version"], r["file"], r["line"]) for r in rows] == [
        ("prompt", "scorer", "1.0.0", "prompts/scorer.yaml", 2),
        ("prompt", "tagged", "2.0.0", "prompts/tagged.yaml", 2),
    ]
    assert rows[1]["tags"] == ["nightly", "reviews"] and rows[1]["stdlib"] is False
    stdlib = json.loads(sleipnir(["list", "--kind", "template", "--stdlib", "--json"], ws, env_of()).stdout)
    assert stdlib and all(r["stdlib"] and r["file"].startswith("stdlib/") for r in stdlib)


def test_check_select_limits_the_diagnostics_to_the_selection_and_what_it_uses(ws: Path) -> None:
    whole = sleipnir(["check"], ws, env_of())
    assert whole.returncode == 1 and "broken/broken.yaml" in whole.stdout
    chosen = sleipnir(["check", "--select", "score_tagged"], ws, env_of())
    assert chosen.returncode == 0, chosen.stdout
    assert "broken" not in chosen.stdout
    assert "4 documents in 3 files" in chosen.stdout  # jobs/tagged.yaml (two jobs), the prompt, the manifest
    picked = sleipnir(["check", "--select", "broken"], ws, env_of())
    assert picked.returncode == 1 and "broken/broken.yaml" in picked.stdout


def test_plan_select_by_tag_and_glob_plans_each(ws: Path) -> None:
    by_tag = sleipnir(["plan", "--select", "tag:nightly", "--format", "json"], ws, env_of())
    assert by_tag.returncode == 0, by_tag.stderr
    # the pipeline is picked because its jobs are
    assert sorted(p["name"] for p in json.loads(by_tag.stdout)) == ["nightly", "score_tagged", "summary_tagged"]
    by_glob = sleipnir(["plan", "--select", "score*", "--format", "json"], ws, env_of())
    assert by_glob.returncode == 0, by_glob.stderr
    assert sorted(p["name"] for p in json.loads(by_glob.stdout)) == ["score", "score_tagged"]


def test_run_job_select_runs_each_selected_job(ws: Path) -> None:
    done = sleipnir(["run-job", "--select", "tag:reviews", "--select", "score", "--json"], ws, env_of())
    assert done.returncode == 0, done.stderr
    *jobs, pipeline = json.loads(done.stdout)  # in `list` order: the jobs, then the pipeline of the tagged two
    assert [r["job"] for r in jobs] == ["score", "score_tagged", "summary_tagged"]
    assert all(r["status"] == "succeeded" and r["metrics"]["items_processed"] == 3 for r in jobs)
    assert (ws / "out" / "summary_tagged.jsonl").exists()
    assert pipeline["pipeline"] == "nightly" and pipeline["status"] == "succeeded"
    assert [r["metrics"]["items_already_done"] for r in pipeline["jobs"].values()] == [3, 3]  # done just before


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["run-job", "--select", "scroe"], "did you mean `score`?"),
        (["plan", "--select", "tag:nightlly"], "did you mean `tag:nightly`?"),
        (["check", "--select", "summary_taged"], "did you mean `summary_tagged`?"),
        (["list", "--select", "scorre"], "did you mean `score`?"),
        (["trigger", "score_taged"], "did you mean `score_tagged`?"),
    ],
)
def test_an_unknown_name_exits_1_with_did_you_mean(ws: Path, args: list[str], suggestion: str) -> None:
    done = sleipnir(args, ws, env_of())
    assert done.returncode == 1, done.stderr
    assert suggestion in done.stderr
    assert "Traceback" not in done.stderr


def test_a_glob_that_matches_nothing_exits_1(ws: Path) -> None:
    done = sleipnir(["run-job", "--select", "nothing_*"], ws, env_of())
    assert done.returncode == 1
    assert "--select nothing_*: no job or pipeline matches" in done.stderr


def test_target_and_select_together_is_a_usage_error(ws: Path) -> None:
    assert sleipnir(["run-job", "score", "--select", "score"], ws, env_of()).returncode == 2
    assert sleipnir(["plan", "score", "--select", "score"], ws, env_of()).returncode == 2


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("sleipnir run-job s", ["score", "score_tagged", "summary_tagged"]),
        ("sleipnir run-job n", ["nightly"]),
        ("sleipnir run-job score_", ["score_tagged"]),
        ("sleipnir plan su", ["summary_tagged"]),
        ("sleipnir trigger b", ["broken"]),
        ("sleipnir check --select ta", ["tagged"]),
        ("sleipnir run-job --select tag:", ["tag:nightly", "tag:reviews"]),
        ("sleipnir plan --select tag:n", ["tag:nightly"]),
    ],
)
def test_shell_completion_completes_job_names(ws: Path, words: str, expected: list[str]) -> None:
    env = {**env_of(), "_SLEIPNIR_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    done = subprocess.run(
        [sys.executable, "-m", "sleipnir"], cwd=ws, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"plain,{name}" for name in expected]


def test_the_bash_completion_script_is_printed(ws: Path) -> None:
    env = {**env_of(), "_SLEIPNIR_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "sleipnir"], cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_SLEIPNIR_COMPLETE=bash_complete" in done.stdout


def test_completing_a_job_name_imports_no_runtime(ws: Path) -> None:
    """Completion runs at every <TAB>: it reads the index and imports no runtime, HTTP stack or driver."""
    heavy = ("aiohttp", "httpx", "psycopg", "prometheus_client", "sleipnir.runtime")
    script = (
        "import sys\nfrom sleipnir.cli import main\n"
        "try:\n    main(prog_name='sleipnir')\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    env = {**env_of(), "_SLEIPNIR_COMPLETE": "bash_complete", "COMP_WORDS": "sleipnir run-job sc", "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["plain,score", "plain,score_tagged", "[]"], done.stdout + done.stderr


def test_run_job_select_keeps_going_past_a_job_that_does_not_compile(ws: Path) -> None:
    done = sleipnir(["run-job", "--select", "broken", "--select", "score", "--json"], ws, env_of())
    assert done.returncode == 1
    broken, score = json.loads(done.stdout)
    assert broken == {"job": "broken", "status": "not_started", "message": "see the errors on stderr"}
    assert score["job"] == "score" and score["status"] == "succeeded"
    assert "broken/broken.yaml" in done.stderr
