"""A job's log: JSON or text lines carrying job, run and event, rotated by size or by day, secrets hidden."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sleipnir.compiler.planner import plan as compile_plan
from sleipnir.runtime.engine.job import Hooks, JobRun, RunOptions
from sleipnir.runtime.serve.logs import (
    REDACTED,
    Redactor,
    chain_hooks,
    configure,
    log_hooks,
    logger_name,
    secrets_in,
)

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import LLMServer

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-never-in-a-log-9137"
FILE_JSON = {"level": "INFO", "format": "json", "destination": "file", "path": "logs/job.log", "rotate": "none"}


@pytest.fixture(autouse=True)
def fresh_loggers() -> Iterator[None]:
    """Each test's job loggers start without handlers, and leave none open."""
    yield
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("sleipnir.jobs."):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()


def test_json_lines_carry_job_run_event_and_item(tmp_path: Path) -> None:
    log = configure(FILE_JSON, job="scored", root=str(tmp_path), run_id="run-1", environ={})
    log.info("item done", extra={"event": "item", "item": "r007", "tokens": 42})
    log.warning("plain line")
    log.debug("below the level")
    flush(log)
    first, second = records(tmp_path / "logs" / "job.log")
    assert first["job"] == "scored" and first["run_id"] == "run-1"
    assert first["event"] == "item" and first["item"] == "r007" and first["tokens"] == 42
    assert first["message"] == "item done" and first["level"] == "INFO"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert second["event"] == "log" and "item" not in second and second["level"] == "WARNING"
    assert log.name == logger_name("scored") and not log.propagate
    assert not set(log.handlers) & set(logging.getLogger().handlers)


def test_text_format_and_a_console_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = configure({"format": "text", "destination": "stdout"}, job="texty", root=str(tmp_path), run_id="abc", environ={})
    log.info("item done", extra={"event": "item", "item": 7, "attempts": 2})
    log.error("went wrong %s", "badly")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert " INFO    texty abc item item=7 item done attempts=2" in out[0]
    assert out[1].split()[1:] == ["ERROR", "texty", "abc", "log", "went", "wrong", "badly"]
    assert not (tmp_path / "logs").exists()


def test_configuring_twice_does_not_duplicate_lines(tmp_path: Path) -> None:
    configure(FILE_JSON, job="twice", root=str(tmp_path), run_id="first", environ={})
    log = configure(FILE_JSON, job="twice", root=str(tmp_path), run_id="second", environ={})
    log.info("once")
    assert len(log.handlers) == 1
    # Other settings replace the handler rather than adding one.
    log = configure({**FILE_JSON, "path": "logs/other.log"}, job="twice", root=str(tmp_path), run_id="third", environ={})
    log.info("moved")
    flush(log)
    assert len(log.handlers) == 1
    [line] = records(tmp_path / "logs" / "job.log")
    assert line["message"] == "once" and line["run_id"] == "second"
    [moved] = records(tmp_path / "logs" / "other.log")
    assert moved["run_id"] == "third"


def test_size_rotation_keeps_retention_files(tmp_path: Path) -> None:
    settings = {**FILE_JSON, "path": "deep/er/job.log", "rotate": "size", "max_bytes": 2000, "retention": 3}
    log = configure(settings, job="sized", root=str(tmp_path), environ={})
    [handler] = log.handlers
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    for number in range(400):
        log.info("line %d with some padding to fill the file", number, extra={"event": "item", "item": number})
    flush(log)
    folder = tmp_path / "deep" / "er"
    assert sorted(p.name for p in folder.iterdir()) == ["job.log", "job.log.1", "job.log.2", "job.log.3"]
    assert all(p.stat().st_size <= 2000 for p in folder.iterdir())
    # The newest records are in the current file, and each file is whole JSON lines.
    assert records(folder / "job.log")[-1]["item"] == 399
    assert all(records(p) for p in folder.iterdir())


def test_daily_rotation_rolls_at_midnight_and_keeps_retention_files(tmp_path: Path) -> None:
    settings = {**FILE_JSON, "rotate": "daily", "retention": 2}
    log = configure(settings, job="daily", root=str(tmp_path), environ={})
    [handler] = log.handlers
    assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    assert handler.when == "MIDNIGHT" and handler.interval == 86400 and handler.backupCount == 2 and handler.utc
    folder = tmp_path / "logs"
    for day in range(1, 6):  # the files of five earlier days
        (folder / f"job.log.2020-01-0{day}").write_text('{"old": true}\n', encoding="utf-8")
    log.info("yesterday")
    handler.doRollover()  # what midnight does; we do not wait for it
    log.info("today")
    flush(log)
    rotated = sorted(p.name for p in folder.glob("job.log.*"))
    assert len(rotated) == 2 and rotated[0] == "job.log.2020-01-05", rotated
    assert records(folder / rotated[1])[0]["message"] == "yesterday"
    assert [r["message"] for r in records(folder / "job.log")] == ["today"]


def test_a_secret_never_reaches_the_file(tmp_path: Path) -> None:
    environ = {"PARTNER_API_KEY": "partner-key-5551", "DB_PASSWORD": "hunter2-db", "HOME": "/home/x"}
    log = configure(FILE_JSON, job="secretive", root=str(tmp_path), secrets=[SECRET], environ=environ)
    log.info("calling with %s", SECRET)
    log.warning("header Bearer %s", "partner-key-5551", extra={"event": "call", "url": f"https://x/?k={SECRET}"})
    log.info("nested", extra={"details": {"list": ["hunter2-db"], "api_key": "whatever-it-is"}, "access_token": "t0k3n-x"})
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom", extra={"event": "error"})
    flush(log)
    text = (tmp_path / "logs" / "job.log").read_text(encoding="utf-8")
    for secret in (SECRET, "partner-key-5551", "hunter2-db", "whatever-it-is", "t0k3n-x"):
        assert secret not in text
    first, second, third, fourth = records(tmp_path / "logs" / "job.log")
    assert first["message"] == f"calling with {REDACTED}"
    assert second["url"] == f"https://x/?k={REDACTED}"
    assert third["details"] == {"list": [REDACTED], "api_key": REDACTED} and third["access_token"] == REDACTED
    assert "RuntimeError" in fourth["exception"] and REDACTED in fourth["exception"]
    # Metrics named like tokens are not secrets.
    assert Redactor().value({"prompt_tokens": 5, "token_usage": 9}) == {"prompt_tokens": 5, "token_usage": 9}


def test_secrets_in_a_plan_are_the_values_of_its_environment_references(tmp_path: Path) -> None:
    (tmp_path / "sleipnir.yaml").write_text(
        "name: s\nconnections:\n  warehouse: ${WAREHOUSE_URL}\n", encoding="utf-8"
    )
    (tmp_path / "job.yaml").write_text(
        textwrap.dedent(
            """
            job:
              name: secretive
              input:
                source: database
                connection: warehouse
                query: SELECT 1 AS id
              prompts:
                - name: classifier
                  version: 1.0.0
            """
        ),
        encoding="utf-8",
    )
    environ = {"WAREHOUSE_URL": "postgresql://u:pw-77@db/x"}
    compiled = compile_plan(str(tmp_path / "job.yaml"), environ=environ)
    assert compiled.ok, [d.message for d in compiled.diagnostics]
    assert secrets_in(compiled.plans[0], environ) == {"postgresql://u:pw-77@db/x"}


def test_log_hooks_log_a_real_run_and_chain_with_other_hooks(tmp_path: Path) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: logged\n", encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.jsonl").write_text(
        "".join(json.dumps({"id": f"i{n:02d}", "text": f"fine {n}"}) + "\n" for n in range(20)), encoding="utf-8"
    )
    with LLMServer(latency=0.0) as llm:
        llm.add_faults({"kind": "400"})
        (tmp_path / "job.yaml").write_text(
            textwrap.dedent(
                f"""
                job:
                  name: logged
                  input:
                    path: data/in.jsonl
                    batch_size: 2
                  prompts:
                    - name: sentiment_analyzer
                      model: sentiment
                      endpoint: {llm.base_url}
                  output:
                    path: out/scored.jsonl
                  execution:
                    concurrency: 1
                  error_handling:
                    on_prompt_failure: {{strategy: skip, alert: true}}
                  logging:
                    format: json
                    destination: file
                    path: logs/logged.log
                """
            ),
            encoding="utf-8",
        )
        compiled = compile_plan(str(tmp_path / "job.yaml"), environ={})
        assert compiled.ok, [d.message for d in compiled.diagnostics]
        [plan] = compiled.plans
        log = configure(plan.settings["logging"], job=plan.name, root=plan.root, environ={})
        seen: list[str] = []
        hooks = chain_hooks(log_hooks(log), Hooks(on_complete=lambda *, result: seen.append(result.status)))
        result = asyncio.run(JobRun(plan, RunOptions(environ={}, hooks=hooks, progress_every=0.001)).run())
    flush(log)
    assert result.ok and seen == ["succeeded"]
    lines = records(tmp_path / "logs" / "logged.log")
    events = [line["event"] for line in lines]
    assert events[0] == "start" and events[-1] == "complete"
    assert all(line["run_id"] == result.run_id and line["job"] == "logged" for line in lines)
    [alert] = [line for line in lines if line["event"] == "alert"]
    assert alert["level"] == "WARNING" and alert["stage"] == "prompt" and alert["item"].startswith("i")
    progress = [line["percent"] for line in lines if line["event"] == "progress"]
    assert progress and progress == sorted(progress) and len(progress) == len(set(int(p // 10) for p in progress))
    assert lines[-1]["metrics"]["items_processed"] == 19
