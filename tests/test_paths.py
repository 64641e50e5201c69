"""A job's files stay inside its workspace, unless `sleipnir.yaml` allows a folder (spec/workspace.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sleipnir.compiler.checker import check
from sleipnir.compiler.ir.common import WorkspacePaths
from sleipnir.compiler.planner import plan
from sleipnir.runtime.engine.job import RunOptions, run_job

PROMPT = "prompt:\n  name: echo\n  version: 1.0.0\n  description: echo\n  template:\n    user: hi\n"


def workspace(root: Path, job: str, manifest: str = "") -> Path:
    (root / "jobs").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "sleipnir.yaml").write_text(f"name: paths\nfallback_provider: mock\n{manifest}")
    (root / "prompts" / "echo.yaml").write_text(PROMPT)
    (root / "jobs" / "j.yaml").write_text(
        "job:\n  name: j\n  params:\n    out: results/j.jsonl\n  prompts:\n    - name: echo\n      model: mock\n" + job
    )
    return root


def sleipnir(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sleipnir", *args], cwd=root, capture_output=True, text=True, check=False
    )


def test_the_rule_resolves_dots_globs_and_symlinks(tmp_path: Path) -> None:
    root, shared = tmp_path / "ws", tmp_path / "shared"
    root.mkdir()
    shared.mkdir()
    (root / "link").symlink_to(tmp_path)
    rule = WorkspacePaths(root=str(root), allow=(str(shared),))
    assert rule.escape("data/in.jsonl") is None and rule.escape("a/../b.jsonl") is None
    assert rule.escape("incoming/*.jsonl") is None and rule.escape("*.json") is None
    assert rule.escape("../outside.jsonl") == "leads outside the workspace"
    assert rule.escape("link/shared/../x.jsonl") == "leads outside the workspace"
    assert rule.escape("/etc/passwd") == "is outside the workspace"
    assert rule.escape(str(shared / "deep" / "x.jsonl")) is None
    assert rule.escape(f"{shared}/../x.jsonl") == "is outside the workspace"
    assert rule.escape("a\x00b") == "holds a NUL character"


def test_the_checks_resolver_agrees_with_realpath(tmp_path: Path) -> None:
    """`check` resolves each folder once a run and looks at a path's last part alone; it must judge as
    `os.path.realpath` does, links in the last part and in the folders included."""
    import os
    from types import SimpleNamespace

    from sleipnir.compiler.checks.paths import resolve_in_run, rule_in_run

    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "up").symlink_to(tmp_path)
    (root / "data" / "out.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    rule_in_run(SimpleNamespace(root=root), SimpleNamespace(file=str(root / "job.yaml")), [])  # a new run
    for path in ("data/in.jsonl", "data/out.jsonl", "up/x.jsonl", "data/..", "data/../../x", "data/", "", "../ws/data/in.jsonl", "/etc/passwd", "up/ws/data/out.jsonl"):
        assert resolve_in_run(str(root), path) == os.path.realpath(os.path.join(root, path)), path
    rule = WorkspacePaths(root=str(root))
    assert rule.escape("data/out.jsonl", resolve_in_run) == "leads outside the workspace"
    assert rule.escape("data/in.jsonl", resolve_in_run) is None


@pytest.mark.parametrize(
    ("job", "where"),
    [
        ("  input:\n    path: ../../../../etc/passwd\n", (9, 11)),
        ("  output:\n    path: ../../outside/x.jsonl\n", (9, 11)),
        ("  output:\n    path: /tmp/x.jsonl\n", (9, 11)),
        ("  output:\n    dead_letter: ../dead.jsonl\n", (9, 18)),
        ("  logging:\n    destination: file\n    path: /var/log/j.log\n", (10, 11)),
        ("  triggers:\n    - type: file_created\n      path: ../incoming/*.jsonl\n", (10, 13)),
    ],
)
def test_check_refuses_a_path_that_leaves_the_workspace(tmp_path: Path, job: str, where: tuple[int, int]) -> None:
    root = workspace(tmp_path / "ws", job)
    [error] = [d for d in check([str(root)]).diagnostics if d.severity == "error"]
    assert error.code == "path-outside-workspace" and error.primary is not None
    assert (error.primary.span.line, error.primary.span.column) == where


def test_an_allowed_folder_may_hold_absolute_and_outside_paths(tmp_path: Path) -> None:
    # `../allowed` is the workspace's sibling under tmp_path, nothing outside the test's own folder.
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    job = f"  output:\n    path: {allowed}/x.jsonl\n  logging:\n    destination: file\n    path: ../allowed/j.log\n"
    root = workspace(tmp_path / "ws", job, manifest=f"paths:\n  allow: [{allowed}]\n")
    assert check([str(root)]).ok


def test_a_path_escape_through_a_param_fails_before_anything_runs_and_the_allowed_prefix_lets_it_pass(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path / "ws", "  output:\n    path: ${out}\n")
    assert sleipnir(root, "check").returncode == 0
    escape = sleipnir(root, "run-job", "j", "--param", "out=../outside/x.jsonl")
    assert escape.returncode == 1 and "path-outside-workspace" in escape.stderr + escape.stdout
    assert not (tmp_path / "outside").exists()
    planned = sleipnir(root, "plan", "j", "--param", "out=../outside/x.jsonl")
    assert planned.returncode == 1 and "`../outside/x.jsonl` leads outside the workspace" in planned.stderr
    assert "the value comes from --param" in planned.stderr
    (tmp_path / "outside").mkdir()
    (root / "sleipnir.yaml").write_text(f"name: paths\nfallback_provider: mock\npaths:\n  allow: [{tmp_path / 'outside'}]\n")
    allowed = sleipnir(root, "plan", "j", "--param", "out=../outside/x.jsonl")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


@pytest.mark.parametrize("moved", ["input", "output"])
def test_the_runtime_tests_each_path_again_before_it_opens_it(tmp_path: Path, moved: str) -> None:
    """A symlink changed between `plan` and the run: the file it now leads to is outside, and is not touched."""
    root = workspace(tmp_path / "ws", "  input:\n    path: data/in.jsonl\n  output:\n    path: out/o.jsonl\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "in.jsonl").write_text('{"id": 1}\n')
    for name in ("data", "out"):
        (root / f"real_{name}").mkdir()
        (root / name).symlink_to(root / f"real_{name}")
    (root / "real_data" / "in.jsonl").write_text('{"id": 1}\n')
    result = plan("j", workspace=str(root), environ={})
    assert result.ok, [d.message for d in result.diagnostics]
    link = root / ("data" if moved == "input" else "out")
    link.unlink()
    link.symlink_to(tmp_path / "outside")
    run = run_job(result.plans[0], RunOptions(environ={}))
    shown = "data/in.jsonl" if moved == "input" else "out/o.jsonl"
    assert run.status == "failed" and run.message.startswith(f"{shown} leads outside the workspace"), run.message
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["in.jsonl"]
