"""A repeated `sleipnir check` answered from its snapshot (`compiler/snapshot.py`, `cli/quick.py`) prints exactly
what the full check prints, after any sequence of edits; and it answers the common case, an edit that changes
no document's value, without importing click, the checks or a schema validator."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_incremental import Workspace, files, job_yaml, operations

from sleipnir.cli import main
from sleipnir.cli.quick import check_command, plain_check
from sleipnir.compiler.snapshot import replay

APPENDED = ("# touched\n", "\n", "  # an indented note\n", "  tags: [nightly]\n", "---\n", "...\n", "    - x\n")


class Edited(Workspace):
    """The property test's workspace, with edits that keep values (a comment, a save without a change) too."""

    def apply(self, operation: tuple[object, ...]) -> None:
        kind, relative = operation[0], str(operation[1])
        path = self.root / relative
        if kind == "append":
            if path.exists():
                self.write(relative, path.read_text(encoding="utf-8") + str(operation[2]))
        elif kind == "save":
            if path.exists():
                self.write(relative, path.read_text(encoding="utf-8"))
        else:
            super().apply(operation)


edits = st.one_of(
    operations,
    st.tuples(st.just("append"), files, st.sampled_from(APPENDED)),
    st.tuples(st.just("save"), files),
)


def full_check(folder: str, *options: str) -> tuple[str, int]:
    """What `sleipnir check` prints (and its exit code) run through click: a full check, which remembers it."""
    done = CliRunner().invoke(main, ["check", folder, *options])
    assert done.stdout.endswith("\n"), done.output
    return done.stdout[:-1], done.exit_code


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edits, min_size=1, max_size=8))
def test_a_replayed_answer_is_the_full_checks_answer_after_every_step(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        workspace = Edited(Path(folder))
        command = check_command([folder], "human", False)
        full_check(folder)
        for operation in steps:
            workspace.apply(operation)
            replayed = replay([folder], command)
            full = full_check(folder)
            if replayed is not None:
                assert replayed == full, operation


def test_a_comment_or_a_save_is_answered_and_a_changed_value_is_not(tmp_path: Path) -> None:
    workspace = Edited(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "nothing", None, None))
    folder = str(tmp_path)
    command = check_command([folder], "human", False)
    assert replay([folder], command) is None, "no snapshot yet"
    first = full_check(folder)
    assert first[1] == 1 and "unknown-prompt" in first[0]
    assert replay([folder], command) == first

    workspace.apply(("append", "jobs/a.yaml", "# touched\n"))
    assert replay([folder], command) == first, "a comment after the last value changes nothing"
    workspace.apply(("save", "jobs/a.yaml"))
    assert replay([folder], command) == first, "nor does a save of the same text"
    workspace.apply(("append", "jobs/c.yaml", "# touched\n"))
    assert replay([folder], command) is None, "the answer mentions c.yaml: it is checked again"
    workspace.apply(("append", "jobs/a.yaml", "  tags: [nightly]\n"))
    assert replay([folder], command) is None, "a value changed"
    assert full_check(folder) != first
    assert replay([folder], check_command([folder], "json", False)) is None, "each command has its own answer"


def test_a_corrupt_snapshot_or_another_compiler_is_no_answer(tmp_path: Path) -> None:
    Workspace(tmp_path)
    folder = str(tmp_path)
    command = check_command([folder], "human", False)
    first = full_check(folder)
    (snapshot,) = (tmp_path / ".sleipnir" / "cache").glob("*/check-*.json")
    text = snapshot.read_text(encoding="utf-8")
    for broken in (text[:-5], text.replace('"files":[[', '"files":[[3,'), "[]", '{"command": 1}'):
        snapshot.write_text(broken, encoding="utf-8")
        assert replay([folder], command) is None
        assert full_check(folder) == first
    compiler = snapshot.parent
    compiler.rename(compiler.with_name("0" * 20))
    assert replay([folder], command) is None, "another compiler's snapshot is not read"


def test_strict_and_uncached_checks_are_not_remembered(tmp_path: Path) -> None:
    Workspace(tmp_path)
    folder = str(tmp_path)
    full_check(folder, "--strict")
    full_check(folder, "--no-cache")
    assert not list((tmp_path / ".sleipnir").rglob("check-*.json"))


def test_only_plain_checks_are_replayed() -> None:
    assert plain_check(["check"]) == ([], "human", "auto")
    assert plain_check(["check", "a", "--format", "json", "b", "--color=never"]) == (["a", "b"], "json", "never")
    for argv in (
        [],
        ["plan", "x"],
        ["--color", "always", "check"],
        ["check", "--strict"],
        ["check", "--no-cache"],
        ["check", "--select", "x"],
        ["check", "--watch"],
        ["check", "--help"],
        ["check", "--format"],
        ["check", "--format", "--strict"],
        ["check", "--color", "red"],
        ["check", "-"],
        ["check", "--", "a"],
    ):
        assert plain_check(argv) is None, argv


def test_a_replayed_check_imports_neither_click_nor_the_checks(tmp_path: Path) -> None:
    """The editor benchmark's case, as a process: one file of a checked workspace gets a comment."""
    workspace = Edited(tmp_path)
    workspace.write("jobs/c.yaml", job_yaml("gamma", "clean", "1.0.0", "0 9 * * *"))
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}

    def imported() -> tuple[set[str], subprocess.CompletedProcess[str]]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "sleipnir", "check"],
            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
        return {line.rsplit("|", 1)[-1].strip() for line in lines}, done

    full, first = imported()
    assert "click" in full and first.returncode == 0
    workspace.apply(("append", "jobs/c.yaml", "# touched\n"))
    quick, again = imported()
    assert (again.stdout, again.returncode) == (first.stdout, first.returncode)
    heavy = {"click", "jsonschema_rs", "orjson", "sleipnir.compiler.checker", "sleipnir.cli.check"}
    assert not quick & heavy, sorted(quick & heavy)
    assert "sleipnir.compiler.snapshot" in quick and "yaml" in quick, "the changed file was parsed again"
