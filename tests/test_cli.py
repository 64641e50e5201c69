"""The command line: `sleipnir schema` writes exactly the published schemas, every command is listed with its own
summary, and the commands that only compile load no runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler import schemas


def test_schema_lists_prints_and_writes_the_published_schemas(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["schema"])
    assert listed.exit_code == 0
    assert listed.output.split() == [*schemas.ALL, "plan"]

    printed = runner.invoke(main, ["schema", "job"])
    assert printed.exit_code == 0
    assert json.loads(printed.output) == schemas.load("job")

    written = runner.invoke(main, ["schema", "--output", str(tmp_path / "out")])
    assert written.exit_code == 0
    for kind in (*schemas.ALL, "plan"):
        path = tmp_path / "out" / f"{kind}.schema.json"
        assert json.loads(path.read_text(encoding="utf-8")) == schemas.load(kind)

    plan = runner.invoke(main, ["schema", "plan"])
    assert plan.exit_code == 0 and json.loads(plan.output) == schemas.load("plan")


def test_schema_rejects_an_unknown_kind_as_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["schema", "jobs"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_every_command_is_listed_with_its_own_summary() -> None:
    import inspect

    from sleipnir.cli import COMMANDS

    assert sorted(COMMANDS) == sorted(main.list_commands(click.Context(main)))
    for name, entry in COMMANDS.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.help is not None
        assert inspect.cleandoc(command.help).splitlines()[0] == entry.summary, name


HEAVY = ("aiohttp", "httpx", "psycopg", "prometheus_client", "sleipnir.runtime", "sleipnir.executor")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["check", "WORKSPACE"], ["schema"], ["plan", "WORKSPACE/job.yaml"], ["list"], ["run-job", "--help"]],
)
def test_commands_that_compile_import_no_runtime(tmp_path: Path, argv: list[str]) -> None:
    """`--help`, `check`, `schema`, `plan`, `list` and `run-job --help` (and so the shell completion of a
    run-job's arguments) load neither the runtime nor an HTTP stack nor a database driver."""
    (tmp_path / "job.yaml").write_text(
        "job:\n  name: one\n  input: {type: file, path: data.jsonl}\n"
        "  prompts: [{name: classifier, version: 1.0.0, model: mock}]\n"
        "  output: {type: file, path: out.jsonl}\n",
        encoding="utf-8",
    )
    args = [a.replace("WORKSPACE", str(tmp_path)) for a in argv]
    script = (
        "import sys\nfrom sleipnir.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as done:\n    code = done.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def _imported_by(argv: list[str], cwd: Path) -> set[str]:
    """The top-level packages (and sleipnir's modules) a `sleipnir` command imports, in a fresh process."""
    script = (
        "import sys\nfrom sleipnir.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted({m if m.startswith('sleipnir') else m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120)
    return set(json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')))


def test_the_import_set_of_check(tmp_path: Path) -> None:
    """`sleipnir check` imports no HTTP stack, database driver, metrics client, runtime, or networkx (not even
    for a pipeline, unless it has a cycle to show); once the cache is warm, not even the checks' libraries or a
    YAML validator."""
    (tmp_path / "sleipnir.yaml").write_text("name: imports\n", encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        "job:\n  name: one\n  input: {source: file, path: data.jsonl}\n"
        "  prompts: [{name: classifier, version: 1.0.0}]\n"
        "  output: {path: out.jsonl}\n  schedule: {cron: '0 9 * * *'}\n",
        encoding="utf-8",
    )
    (tmp_path / "pipeline.yaml").write_text(
        "pipeline:\n  name: nightly\n  jobs: [{id: a, name: one}, {id: b, name: one, depends_on: [a]}]\n",
        encoding="utf-8",
    )
    never = {"aiohttp", "httpx", "psycopg", "prometheus_client", "networkx", "pygls", "watchfiles", "rich"}
    cold = _imported_by(["check", "--no-cache", str(tmp_path)], tmp_path)
    assert not cold & never, cold & never
    assert not {m for m in cold if m.startswith(("sleipnir.runtime", "sleipnir.executor", "sleipnir.lsp"))}
    assert {"yaml", "jsonschema_rs", "sleipnir.compiler.checks.schedules"} <= cold, "the cold check runs the checks"
    assert "lark" not in cold, "no text holds a `${` or a condition: the grammars are not needed"
    assert "croniter" not in cold, "`0 9 * * *` is of the simple form that needs no croniter"
    assert "semver" not in cold, "versions are ordered without the semver package"

    (tmp_path / "job.yaml").write_text(
        (tmp_path / "job.yaml").read_text(encoding="utf-8").replace("{path: out.jsonl}", "{path: 'out_${RUN_DATE}.jsonl'}"),
        encoding="utf-8",
    )
    assert "lark" in _imported_by(["check", "--no-cache", str(tmp_path)], tmp_path), "a `${` is parsed"
    (tmp_path / "job.yaml").write_text(
        (tmp_path / "job.yaml").read_text(encoding="utf-8").replace("'0 9 * * *'", "'*/15 9 * * 1-5'"),
        encoding="utf-8",
    )
    assert "croniter" in _imported_by(["check", "--no-cache", str(tmp_path)], tmp_path), "croniter judges steps"

    _imported_by(["check", str(tmp_path)], tmp_path)  # fills the cache
    warm = _imported_by(["check", str(tmp_path)], tmp_path)
    assert not warm & (never | {"croniter", "lark", "jinja2", "jsonschema", "jsonschema_rs"}), sorted(
        warm & (never | {"croniter", "lark", "jinja2", "jsonschema", "jsonschema_rs"})
    )
    loaded = {m for m in warm if m.startswith(("sleipnir.compiler.checks.", "sleipnir.compiler.ir."))}
    assert loaded == {"sleipnir.compiler.checks.names", "sleipnir.compiler.ir.common"}, (
        "only the index-wide name check and did-you-mean: no check module, grammar or plan class"
    )


def test_ctrl_c_while_a_command_loads_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C before the command's own handler is in place (its modules still importing) gets the same line and
    code as one during a run, not click's "Aborted!" and exit 1, nor a traceback."""
    import importlib

    import sleipnir.cli as cli
    from sleipnir.cli import common, quick

    # An earlier in-process command may have asked `run` to end the process at once (`skip_teardown`): not here.
    monkeypatch.setattr(common._Teardown, "skip", False)

    real = importlib.import_module

    def loading(name: str, package: str | None = None) -> object:
        if name.endswith(".check"):
            raise KeyboardInterrupt
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", loading)
    monkeypatch.setattr(quick, "replay_check", lambda argv: None)
    monkeypatch.setattr(sys, "argv", ["sleipnir", "check", "."])
    with pytest.raises(SystemExit) as done:
        cli.entry()
    assert done.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"

    def early(argv: list[str]) -> None:  # before click is even imported
        raise KeyboardInterrupt

    monkeypatch.setattr(quick, "replay_check", early)
    with pytest.raises(SystemExit) as done:
        cli.entry()
    assert done.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_path_or_device_that_refuses_is_one_line_and_exit_1_for_every_command(tmp_path: Path) -> None:
    """What the machine refuses (a path through a file, a full device, a reader gone) is the user's to fix: one
    line that names it and exit 1, never an internal error or a traceback, whichever command met it."""
    (tmp_path / "file").write_text("not a folder\n")
    result = CliRunner().invoke(main, ["schema", "--output", str(tmp_path / "file" / "schemas")])
    assert result.exit_code == 1, result.output
    assert "internal-error" not in result.output and "Not a directory" in result.output
    assert str(tmp_path / "file") in result.output

    init = CliRunner().invoke(main, ["init", str(tmp_path / "ws")])
    assert init.exit_code == 0, init.output
    sleipnir = [sys.executable, "-m", "sleipnir"]
    subprocess.run([*sleipnir, "run-job", "review_sentiment", "-q"], cwd=tmp_path / "ws", check=True, capture_output=True, timeout=120)
    # A check's answer is kept (its snapshot); the same check again is answered from it, before click loads.
    subprocess.run([*sleipnir, "check"], cwd=tmp_path / "ws", check=True, stdout=subprocess.DEVNULL, timeout=120)
    if Path("/dev/full").exists():  # Linux: every write fails with ENOSPC
        for argv in (["runs"], ["runs", "--json"], ["plan", "review_sentiment", "--format", "json"], ["list"], ["check"]):
            with open("/dev/full", "w") as full:
                done = subprocess.run([*sleipnir, *argv], cwd=tmp_path / "ws", stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
            assert done.returncode == 1, (argv, done.stderr)
            assert done.stderr.strip().splitlines()[-1] == "error: No space left on device", (argv, done.stderr)
            assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, (argv, done.stderr)
    # A reader that is gone before anything is written: a quiet exit 1.
    process = subprocess.Popen([*sleipnir, "plan", "review_sentiment", "--format", "json"], cwd=tmp_path / "ws", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    with process.stderr:
        error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1 and error == "", error
