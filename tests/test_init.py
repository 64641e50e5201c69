"""`sleipnir init`, a workspace without a manifest, and `sleipnir schema --catalog` (spec/workspace.md, "A new
workspace" and "Finding the workspace"; spec/editors.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler import schemas

JOB = "review_sentiment"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("init", "demo")
    assert code == 0, err
    assert "sleipnir run-job review_sentiment" in out
    return tmp_path / "demo"


def test_init_writes_the_manifest_a_job_data_schemas_editor_settings_and_gitignore(demo: Path) -> None:
    files = tree(demo)
    assert set(files) == {
        "sleipnir.yaml",
        f"jobs/{JOB}.yaml",
        "data/reviews.jsonl",
        ".vscode/settings.json",
        ".gitignore",
        *(f".sleipnir/schema/{kind}.schema.json" for kind in schemas.ALL),
    }
    manifest = yaml.safe_load(files["sleipnir.yaml"])
    assert manifest["fallback_provider"] == "mock"
    assert manifest["state"].endswith(".db")
    assert manifest["name"] == "demo"
    rows = [json.loads(line) for line in files["data/reviews.jsonl"].splitlines()]
    assert len(rows) >= 3 and all(row["review_text"] for row in rows)
    for kind in schemas.ALL:
        assert files[f".sleipnir/schema/{kind}.schema.json"].decode() == schemas.shipped_text(kind)
    # Modelines are relative paths into the workspace's copy: they resolve offline.
    assert files[f"jobs/{JOB}.yaml"].decode().splitlines()[0] == (
        "# yaml-language-server: $schema=../.sleipnir/schema/job.schema.json"
    )
    assert files["sleipnir.yaml"].decode().splitlines()[0] == (
        "# yaml-language-server: $schema=.sleipnir/schema/workspace.schema.json"
    )
    settings = json.loads(files[".vscode/settings.json"])["yaml.schemas"]
    assert settings["./.sleipnir/schema/job.schema.json"] == ["jobs/**/*.yaml", "jobs/**/*.yml"]
    assert "sleipnir.yaml" in settings["./.sleipnir/schema/workspace.schema.json"]
    for target in settings:
        assert (demo / target).is_file(), target
    assert "https://" not in "".join(text.decode() for name, text in files.items() if name.endswith(".yaml"))


def test_the_gitignore_keeps_state_out_of_git_but_the_schemas_in(demo: Path) -> None:
    """Asked of git itself: the run ledger is ignored, the schemas the editor reads are not."""
    subprocess.run(["git", "init", "-q", str(demo)], check=True)
    (demo / ".sleipnir" / "state.db").write_bytes(b"")
    (demo / "output").mkdir()
    (demo / "output" / "x.jsonl").write_text("{}\n")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(demo), "check-ignore", "-q", path]).returncode == 0

    assert ignored(".sleipnir/state.db")
    assert ignored("output/x.jsonl")
    assert not ignored(".sleipnir/schema/job.schema.json")
    assert not ignored(f"jobs/{JOB}.yaml")


def test_the_new_workspace_checks_clean(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(demo)
    code, out, err = run("check", "--strict")
    assert code == 0, out + err
    assert out.startswith("ok: 2 documents in 2 files, no problems"), out


def test_run_job_on_the_new_workspace_works_offline_at_once(tmp_path: Path) -> None:
    """As a new user would: a real process, no API key, the job named as `init` printed it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLEIPNIR_"))}
    made = subprocess.run(
        [sys.executable, "-m", "sleipnir", "init", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    demo = tmp_path / "demo"
    ran = subprocess.run(
        [sys.executable, "-m", "sleipnir", "run-job", JOB, "--json"],
        cwd=demo,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "mock" in ran.stderr, "the run says that calls went to the mock provider"
    outputs = [json.loads(line) for line in (demo / "output" / f"{JOB}.jsonl").read_text().splitlines()]
    assert [row["review_id"] for row in outputs] == ["R001", "R002", "R003", "R004", "R005"]
    assert all(row["sentiment_analyzer"]["label"] for row in outputs)
    assert (demo / ".sleipnir" / "state.db").is_file(), "the run ledger is the SQLite file the manifest names"


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "jobs").mkdir(parents=True)
    (tmp_path / "demo" / "jobs" / f"{JOB}.yaml").write_text("# mine\n")
    before = tree(tmp_path)
    code, out, err = run("init", "demo")
    assert code == 1
    assert out == ""
    assert "nothing was written" in err and f"jobs/{JOB}.yaml" in err
    assert tree(tmp_path) == before


def test_init_that_cannot_write_says_so_and_takes_back_what_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file where init needs a folder (`data`): the manifest and the job were written before it fails, and are
    taken back with the folders made for them; the user's own file stays. No traceback, exit 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "data").write_text("mine\n")
    before = tree(tmp_path)
    code, out, err = run("init", "demo")
    assert code == 1 and out == ""
    assert "error: cannot make the workspace in demo:" in err and "nothing was kept" in err, err
    assert tree(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["data"], "no folder made for it is left"
    code, _, err = run("init", str(tmp_path / "demo" / "data" / "ws"))  # a path through a file
    assert code == 1 and "cannot make the workspace" in err, err


def test_init_again_in_an_initialised_workspace_refuses(demo: Path) -> None:
    before = tree(demo)
    code, _, err = run("init", "demo")
    assert code == 1 and "sleipnir.yaml" in err
    assert tree(demo) == before


def test_init_in_the_current_folder_names_the_workspace_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-Reviews 2"
    folder.mkdir()
    monkeypatch.chdir(folder)
    code, out, _ = run("init")
    assert code == 0
    assert "cd " not in out
    assert yaml.safe_load((folder / "sleipnir.yaml").read_text())["name"] == "my_reviews_2"


def test_init_brings_stale_schema_copies_up_to_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "demo" / ".sleipnir" / "schema" / "job.schema.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    code, _, err = run("init", "demo")
    assert code == 0, err
    assert stale.read_text() == schemas.shipped_text("job")


# --------------------------------------------------------------------------------------------------------------
# A workspace without a manifest


PIPELINE = "pipeline:\n  name: weekly\n  jobs:\n    - id: report\n      name: report_job\n"
REPORT = (
    "job:\n  name: report_job\n  input: {source: file, path: data/x.jsonl, format: jsonl}\n"
    "  prompts: [{name: analyzer}]\n  output: {destination: file, path: out/x.jsonl, format: jsonl}\n"
)


def test_without_a_manifest_the_files_folder_is_the_workspace_and_check_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(PIPELINE)
    (tmp_path / "pipelines" / "report.yaml").write_text(REPORT)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("check", "pipelines/p.yaml")
    assert code == 0, out
    assert "unknown-job" not in out
    assert out.count("no sleipnir.yaml found; treating pipelines as the workspace") == 1, out
    assert out.count("note[no-manifest]") == 1


def test_without_a_manifest_and_no_path_the_current_folder_is_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(PIPELINE)
    (tmp_path / "jobs" / "report.yaml").write_text(REPORT)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("check")
    assert code == 0, out
    assert out.count("no sleipnir.yaml found; treating . as the workspace") == 1, out
    # The note is for a person: the formats machines read stay as they were.
    assert json.loads(run("check", "--format", "json")[1])["diagnostics"] == []
    assert json.loads(run("check", "--format", "sarif")[1])["runs"][0]["results"] == []
    assert run("check", "--format", "github")[1].strip() == ""
    assert not (tmp_path / ".sleipnir").exists(), "no check cache is written into a folder that is no workspace"


def test_a_workspace_with_a_manifest_gets_no_note(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(demo / "jobs")
    code, out, _ = run("check", f"{JOB}.yaml")
    assert code == 0 and "no-manifest" not in out, out


# --------------------------------------------------------------------------------------------------------------
# sleipnir schema --catalog


def test_schema_catalog_prints_a_schemastore_style_catalog() -> None:
    code, out, _ = run("schema", "--catalog")
    assert code == 0
    catalog = json.loads(out)
    assert catalog["$schema"] == "https://json.schemastore.org/schema-catalog.json"
    entries = {entry["url"].rsplit("/", 1)[-1]: entry for entry in catalog["schemas"]}
    assert set(entries) == {f"{kind}.schema.json" for kind in schemas.ALL}
    for kind in schemas.ALL:
        entry = entries[f"{kind}.schema.json"]
        assert entry["url"] == schemas.load(kind)["$id"]
        assert entry["name"].startswith("Sleipnir") and entry["description"]
    assert entries["workspace.schema.json"]["fileMatch"] == ["sleipnir.yaml", "sleipnir.yml"]


def test_schema_catalog_takes_no_kind() -> None:
    code, _, err = run("schema", "job", "--catalog")
    assert code == 2 and "--catalog" in err
