"""What `sleipnir` shows on a terminal and writes on stdout, in real processes (spec/cli.md#output).

`--json` stays alone on stdout whatever the job's logging says; `-q` and `-v`; colour by `--color`,
FORCE_COLOR and NO_COLOR on every command; no wrapping when stderr is not a terminal. What a person sees on a
terminal is read from a real pseudo-terminal (the `pty` module): each notice once, one line per failure, the
summary, and no log records."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from llm_server import LLMServer
from test_run_process import llm, make_workspace, process_env, scoring_job, server, sleipnir, write_items

__all__ = ["llm", "server"]  # fixtures shared with test_run_process

LLM_LATENCY = 0.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FALLBACK_NOTICE = "no API key for provider `openai`"
LOGGING = "logging:\n  destination: {destination}\n  format: {format}\n  level: DEBUG\n"


def offline_job(name: str = "score", extra: str = "") -> str:
    """A scoring job whose model (`gpt-4o-mini`) falls back to the offline mock provider: no key is set."""
    return scoring_job(name, extra=extra).replace("      endpoint: ${LLM_URL}\n", "")


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    """A workspace whose manifest falls back to the mock provider, with the job `score` over 5 items."""
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": offline_job()}, "name: t\nfallback_provider: mock\n")
    write_items(ws / "data" / "items.jsonl", 5)
    return ws


def with_logging(ws: Path, destination: str, form: str) -> None:
    job = offline_job(extra=LOGGING.format(destination=destination, format=form))
    (ws / "jobs" / "score.yaml").write_text(job, encoding="utf-8")


def env_of(**extra: str) -> dict[str, str]:
    env = process_env(None, **extra)
    env.pop("OPENAI_API_KEY", None)
    return env


def failing(tmp_path: Path, server: LLMServer, *, items: int, failures: int) -> Path:
    """A workspace whose job `score` skips failed items, over `items` items of which the first `failures`
    calls get OpenAI's context-length 400 from `server`."""
    skip = "error_handling:\n  on_prompt_failure:\n    strategy: skip\n"
    output = "path: out/scores.jsonl\ndead_letter: out/dead.jsonl\n"
    ws = make_workspace(tmp_path / "ws", {"jobs/score.yaml": scoring_job("score", output, concurrency=1, extra=skip)})
    write_items(ws / "data" / "items.jsonl", items)
    server.add_faults(*[{"kind": "context_length"}] * failures)
    return ws


# -- stdout belongs to --json -------------------------------------------------------------------------------


@pytest.mark.parametrize("destination", ["stdout", "stderr", "file"])
@pytest.mark.parametrize("form", ["json", "text"])
@pytest.mark.parametrize("verbose", [False, True])
def test_json_is_the_only_thing_on_stdout_for_every_logging_setting(
    offline: Path, destination: str, form: str, verbose: bool
) -> None:
    with_logging(offline, destination, form)
    command = [sys.executable, "-m", "sleipnir", "run-job", "score", "--json", *(["-v"] if verbose else [])]
    piped = subprocess.run(
        f"{' '.join(command)} | {sys.executable} -m json.tool",
        shell=True, cwd=offline, env=env_of(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    result = json.loads(piped.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["items_processed"] == 5
    records = "run started" in piped.stderr
    assert records == verbose, piped.stderr  # log records reach the terminal only with -v, and only on stderr
    if destination == "file":
        assert "run started" in (offline / "logs" / "score.log").read_text()


def test_trigger_json_is_alone_on_stdout_too(offline: Path) -> None:
    with_logging(offline, "stdout", "json")
    done = sleipnir(["trigger", "score", "--json"], offline, env_of())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert '"event": "start"' in done.stderr  # `trigger` is a service's run: its records are written, on stderr


def test_dry_run_and_json_together_is_a_usage_error(offline: Path) -> None:
    done = sleipnir(["run-job", "score", "--dry-run", "--json"], offline, env_of())
    assert done.returncode == 2 and done.stdout == ""
    assert "sleipnir plan --format json" in done.stderr


def test_a_job_with_no_logging_block_pipes_its_json_too(offline: Path) -> None:
    done = sleipnir(["run-job", "score", "--json"], offline, env_of())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert done.stderr.count(FALLBACK_NOTICE) == 1  # the notice once, and not again as a log record


def test_json_refuses_a_job_whose_output_is_stdout(offline: Path) -> None:
    job = offline_job().replace("path: out/scores.jsonl", "destination: stdout")
    (offline / "jobs" / "score.yaml").write_text(job, encoding="utf-8")
    done = sleipnir(["run-job", "score", "--json"], offline, env_of())
    assert done.returncode == 2
    assert done.stdout == ""
    assert "--json prints the result on stdout, where `score` writes its output" in done.stderr
    assert "Traceback" not in done.stderr


# -- -q and -v ----------------------------------------------------------------------------------------------


def test_quiet_prints_the_summary_line_only(offline: Path) -> None:
    done = sleipnir(["run-job", "score", "-q"], offline, env_of())
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert re.fullmatch(r"score: succeeded: 5 ok, [\d,]+ tokens, \$\d+\.\d{4}, [\d.]+s", line), line


def test_quiet_still_prints_errors_one_line_per_failure(tmp_path: Path, server: LLMServer) -> None:
    ws = failing(tmp_path, server, items=6, failures=2)
    done = sleipnir(["run-job", "score", "-q"], ws, process_env(server))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert re.fullmatch(r"score: succeeded: 4 ok, 2 skipped, .*", lines[0]), lines
    failures = lines[1:]
    assert len(failures) == 2, lines
    assert all(re.fullmatch(r"failed k00\d at prompt: .*context length.*", line) for line in failures), failures


def test_verbose_and_quiet_together_is_a_usage_error(offline: Path) -> None:
    done = sleipnir(["run-job", "score", "-q", "-v"], offline, env_of())
    assert done.returncode == 2
    assert "give -q or -v, not both" in done.stderr


# -- colour -------------------------------------------------------------------------------------------------

BROKEN_JOB = "job:\n  nme: x\n"


@pytest.mark.parametrize(
    ("args", "env", "coloured"),
    [
        (["check", "--color", "always"], {}, True),
        (["check"], {"FORCE_COLOR": "1"}, True),
        (["check"], {}, False),
        (["check", "--color", "never"], {"FORCE_COLOR": "1"}, False),
        (["check"], {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        (["check", "--color", "always"], {"NO_COLOR": "1"}, True),
        (["--color", "always", "check"], {}, True),
        (["plan", "broken", "--color", "always"], {}, True),
        (["plan", "broken"], {"FORCE_COLOR": "1"}, True),
        (["list", "--color", "always"], {}, True),
    ],
)
def test_color_and_force_color_work_on_every_command(
    tmp_path: Path, args: list[str], env: dict[str, str], coloured: bool
) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/broken.yaml": BROKEN_JOB})
    environment = {k: v for k, v in env_of().items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    done = sleipnir(args, ws, {**environment, **env})
    assert done.returncode in (0, 1), done.stderr
    assert bool(ANSI.search(done.stdout + done.stderr)) == coloured, done.stdout + done.stderr


def test_a_run_is_coloured_with_force_color_and_plain_without(offline: Path) -> None:
    environment = {k: v for k, v in env_of().items() if k != "NO_COLOR"}
    coloured = sleipnir(["run-job", "score"], offline, {**environment, "FORCE_COLOR": "1"})
    plain = sleipnir(["run-job", "score", "--fresh"], offline, environment)
    assert coloured.returncode == plain.returncode == 0, coloured.stderr + plain.stderr
    assert ANSI.search(coloured.stderr) and not ANSI.search(plain.stderr)
    assert "\r" not in coloured.stderr  # FORCE_COLOR colours; it does not animate a bar into a file


# -- no wrapping --------------------------------------------------------------------------------------------


def test_nothing_is_wrapped_at_80_columns_when_stderr_is_not_a_terminal(offline: Path) -> None:
    environment = {k: v for k, v in env_of().items() if k != "COLUMNS"}
    done = sleipnir(["run-job", "score"], offline, environment)
    assert done.returncode == 0, done.stderr
    [notice] = [line for line in done.stderr.splitlines() if FALLBACK_NOTICE in line]
    assert len(notice) > 80, notice
    assert notice.endswith("calls go to the offline `mock` provider (sleipnir.yaml fallback_provider)"), notice


# -- a real terminal ----------------------------------------------------------------------------------------


def on_a_terminal(args: list[str], cwd: Path, env: dict[str, str], columns: int = 160) -> tuple[int, str]:
    """Run `sleipnir ARGS` with stdout and stderr on a pseudo-terminal `columns` wide; its exit code and what
    the terminal received, colour codes removed and carriage-return redraws kept as separate lines."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {k: v for k, v in env.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sleipnir", *args],
        cwd=cwd, env={**environment, "TERM": "xterm-256color"}, stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed: the process is done writing
                break
            if not chunk:
                break
            received += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    code = process.wait(timeout=30)
    text = ANSI.sub("", received.decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "\n")
    return code, text


def test_a_terminal_shows_the_bar_each_notice_once_and_the_summary_and_no_log_records(offline: Path) -> None:
    with_logging(offline, "stderr", "text")
    code, shown = on_a_terminal(["run-job", "score"], offline, env_of())
    assert code == 0, shown
    assert shown.count(FALLBACK_NOTICE) == 1, shown
    assert re.search(r"score .*5/5 .*items/s", shown), shown  # the progress bar, finished
    assert "score: succeeded" in shown and re.search(r"items ok\s+│\s+5", shown), shown  # the summary table
    assert "run started" not in shown and " INFO " not in shown  # log records only with -v

    code, resumed = on_a_terminal(["run-job", "score"], offline, env_of())
    assert code == 0
    assert resumed.count("note: resuming: items already done are skipped") == 1, resumed

    code, verbose = on_a_terminal(["run-job", "score", "--fresh", "-v"], offline, env_of())
    assert code == 0
    assert "run started" in verbose


def test_a_terminal_shows_one_readable_line_per_failure(tmp_path: Path, server: LLMServer) -> None:
    ws = failing(tmp_path, server, items=8, failures=3)
    code, shown = on_a_terminal(["run-job", "score"], ws, process_env(server), columns=100)
    assert code == 0, shown
    lines = shown.rstrip("\n").splitlines()
    failures = lines[-3:]  # the last lines: one per failure, each cut to the terminal's 100 columns
    assert not any(line.startswith("failed ") for line in lines[:-3]), shown
    assert all(re.fullmatch(r"failed k00\d at prompt: scorer: 400 from .*…", line) for line in failures), failures
    assert all(len(line) <= 100 for line in failures), failures
    assert re.search(r"skipped\s+│\s+3", shown), shown
