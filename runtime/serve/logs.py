"""A job's log (spec/operations.md#logging): one logger per job, built from `plan.settings["logging"]`.

Every record carries `job`, `run_id` and `event` (and `item` where there is one), and passes through a
`Redactor` before any handler writes it, so a secret's value never reaches a log line: not in the message, not
in an extra field, not in a traceback. `log_hooks` turns a run's lifecycle callbacks into log events;
`chain_hooks` lets the CLI and `serve` stack it with their own callbacks.

    log = configure(plan.settings["logging"], job=plan.name, root=plan.root, secrets=secrets_in(plan, environ))
    log.info("item done", extra={"event": "item", "item": key})
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...compiler.ir import Secret
from ...compiler.ir.common import WorkspacePaths, mask_passwords
from ..engine.job import Hooks, Progress, RunResult, chain_hooks

__all__ = [
    "REDACTED",
    "Redactor",
    "chain_hooks",
    "configure",
    "log_hooks",
    "logger_name",
    "secrets_in",
]

REDACTED = "(sensitive)"
MIN_SECRET_LENGTH = 4
"""Shorter values are not redacted: replacing every `1` or `on` in a log would hide everything and protect
nothing worth protecting."""

_SENSITIVE_ENV = re.compile(r"(_KEY|_TOKEN)$|SECRET|PASSWORD", re.IGNORECASE)
"""Environment variables whose values are secrets: `OPENAI_API_KEY`, `GITHUB_TOKEN`, `WEBHOOK_SECRET`."""
_SENSITIVE_FIELD = re.compile(r"(^|[_-])(password|passwd|secret|token|api_?key|authorization|credentials?)$", re.IGNORECASE)
"""Extra fields whose values are secrets whatever they hold. Anchored at the end, so that the metrics
`prompt_tokens` and `token_usage` are not."""
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_CONTEXT_FIELDS = ("job", "run_id", "event", "item")
_OWNED = "_sleipnir_owned"
"""Marks the handlers `configure` installed, so a second call replaces them instead of adding more."""


class Redactor:
    """Replaces the values of known secrets with `(sensitive)` in text and in nested values."""

    def __init__(self, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> None:
        values = {s for s in secrets if isinstance(s, str)}
        values |= {value for name, value in (environ or {}).items() if _SENSITIVE_ENV.search(name)}
        # Longest first, so a secret that contains another is replaced whole.
        kept = sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, kept))) if kept else None

    def text(self, text: str) -> str:
        """`text` with every secret value replaced."""
        text = mask_passwords(text)
        return self.pattern.sub(REDACTED, text) if self.pattern is not None else text

    def value(self, value: Any, field: str = "") -> Any:
        """`value` with secrets replaced in every string inside it, and sensitive-named fields hidden whole."""
        if field and _SENSITIVE_FIELD.search(field) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return value


def secrets_in(plan: Any, environ: Mapping[str, str]) -> set[str]:
    """The values, in `environ`, of every secret a plan refers to (connection URLs, API keys, headers)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            names.update(value.names)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for item in dataclasses.fields(value):
                walk(getattr(value, item.name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(plan)
    return {environ[name] for name in names if environ.get(name)}


class _Context(logging.Filter):
    """Fills in the job, the run and the event of a record that does not say them, then redacts it."""

    def __init__(self, job: str, run_id: str | None, redactor: Redactor) -> None:
        super().__init__()
        self.job, self.run_id, self.redactor = job, run_id, redactor

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        fields.setdefault("job", self.job)
        if fields.get("run_id") is None:
            record.run_id = self.run_id
        fields.setdefault("event", "log")
        if getattr(record, "_sleipnir_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record, nor raise in the caller
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redactor.text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        for name in [n for n in fields if n not in _RECORD_FIELDS]:
            fields[name] = self.redactor.value(fields[name], name)
        record._sleipnir_redacted = True
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_FIELDS and name not in _CONTEXT_FIELDS and not name.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, job, run_id, event, message, item (when there is one), extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "job": getattr(record, "job", None),
            "run_id": getattr(record, "run_id", None),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        if getattr(record, "item", None) is not None:
            line["item"] = record.__dict__["item"]
        line.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`ts LEVEL job run_id event [item=KEY] message [field=value ...]`, one record a line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            f"{record.levelname:<7}",
            str(getattr(record, "job", "-")),
            str(getattr(record, "run_id", None) or "-"),
            str(getattr(record, "event", "log")),
        ]
        if getattr(record, "item", None) is not None:
            parts.append(f"item={record.__dict__['item']}")
        parts.append(record.getMessage())
        parts.extend(f"{k}={json.dumps(v, default=str) if not isinstance(v, str) else v}" for k, v in _extras(record).items())
        text = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return f"{text}\n{record.exc_text}" if record.exc_text else text


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout or stderr as they are when a record is written (a test runner or a daemon may swap them)."""

    def __init__(self, which: str) -> None:
        super().__init__(getattr(sys, which))
        self.which = which

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self.which)  # handle() holds the handler's lock here
        super().emit(record)


def logger_name(job: str) -> str:
    """The name of a job's logger."""
    return f"sleipnir.jobs.{job}"


def _handler(settings: Mapping[str, Any], job: str, root: str, paths: WorkspacePaths | None) -> logging.Handler:
    destination = str(settings.get("destination") or "stderr")
    if destination == "none":
        return logging.NullHandler()
    if destination in ("stdout", "stderr"):
        return _Console(destination)
    written = str(settings.get("path") or f"logs/{job}.log")
    reason = paths.escape(written) if paths is not None else None
    if reason is not None:
        # `plan` refused such a path; a symlink changed since. The lines go to stderr rather than out of bounds.
        sys.stderr.write(f"warning: the log file {written} {reason}; logging to stderr\n")
        return _Console("stderr")
    path = Path(written)
    path = path if path.is_absolute() else Path(root) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    retention = int(settings.get("retention") or 7)
    rotate = str(settings.get("rotate") or "none")
    if rotate == "daily":
        return logging.handlers.TimedRotatingFileHandler(
            path, when="midnight", backupCount=retention, encoding="utf-8", utc=True
        )
    if rotate == "size":
        max_bytes = int(settings.get("max_bytes") or 10485760)
        return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=retention, encoding="utf-8")
    return logging.FileHandler(path, encoding="utf-8")


def configure(
    settings: Mapping[str, Any],
    *,
    job: str,
    root: str,
    run_id: str | None = None,
    secrets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    paths: WorkspacePaths | None = None,
    echo: bool = False,
) -> logging.Logger:
    """The logger of `job`, writing where `settings` (a plan's `logging` settings) say.

    `destination: none` (given by `run-job`, never by a job) writes nothing; `echo` writes the records to
    stderr as well (`run-job -v` with a log file).
    Not the root logger: records stop here (`propagate` is off). Calling it again for the same job replaces
    the handlers it installed, or, when the settings, root and secrets are the same, keeps them and only takes
    the new `run_id` (the run a record belongs to when it does not say). Secrets are the given values plus
    those of `environ` (the process environment by default) named like `*_KEY`, `*_TOKEN`, `*SECRET*`,
    `*PASSWORD*`.
    """
    redactor = Redactor(secrets, os.environ if environ is None else environ)
    logger = logging.getLogger(logger_name(job))
    shape = (json.dumps(dict(settings), sort_keys=True, default=str), str(root), redactor.pattern, echo)
    owned = [h for h in logger.handlers if getattr(h, _OWNED, None) is not None]
    if owned and all(getattr(h, _OWNED) == shape for h in owned):
        for handler in owned:
            for context in handler.filters:
                if isinstance(context, _Context):
                    context.run_id = run_id
        return logger
    for handler in owned:
        logger.removeHandler(handler)
        handler.close()
    handlers = [_handler(settings, job, root, paths)]
    if echo and not isinstance(handlers[0], _Console):
        handlers.append(_Console("stderr"))
    for handler in handlers:
        handler.addFilter(_Context(job, run_id, redactor))
        handler.setFormatter(JsonFormatter() if settings.get("format") == "json" else TextFormatter())
        setattr(handler, _OWNED, shape)
        logger.addHandler(handler)
    logger.setLevel(str(settings.get("level") or "INFO").upper())
    logger.propagate = False
    return logger


def log_hooks(logger: logging.Logger) -> Hooks:
    """Run callbacks that log the run's events: `start`, `progress` (each further 10% done; every 1,000 items
    when the total is unknown), `item` (an item failed or was skipped, with its key), `alert`, `notice`,
    `notify`, `complete` and `error`."""
    state: dict[str, Any] = {"run_id": None, "step": 0}

    def emit(level: int, event: str, message: str, **fields: Any) -> None:
        fields.setdefault("run_id", state["run_id"])
        logger.log(level, message, extra={"event": event, **fields})

    def on_start(*, run_id: str, plan: Any = None, **_: Any) -> None:
        state["run_id"], state["step"] = run_id, 0
        emit(logging.INFO, "start", "run started", plan_id=getattr(plan, "id", None))

    def on_progress(*, progress: Progress, **_: Any) -> None:
        percent = progress.percent
        step = int(percent // 10) if percent is not None else (progress.done // 1000)
        if step <= state["step"]:
            return
        state["step"] = step
        done = f"{percent:.0f}% done" if percent is not None else f"{progress.done:,} items done"
        emit(logging.INFO, "progress", done, done=progress.done, failed=progress.failed, skipped=progress.skipped,
             percent=None if percent is None else round(percent, 1))

    def on_alert(*, job: str, run_id: str, stage: str, key: str | None, error: str, **_: Any) -> None:
        emit(logging.WARNING, "alert", f"{stage} failed: {error}", run_id=run_id, item=key, stage=stage)

    def on_notice(*, message: str, **_: Any) -> None:
        emit(logging.INFO, "notice", message)

    def on_item_failed(*, key: str, stage: str, error: str, attempts: int, outcome: str, **_: Any) -> None:
        level = logging.WARNING if outcome == "skipped" else logging.ERROR
        emit(level, "item", f"item {outcome} ({stage}): {error}", item=key, stage=stage, attempts=attempts, outcome=outcome)

    def on_notify(*, job: str, run_id: str, result: RunResult, **_: Any) -> None:
        emit(logging.INFO, "notify", "complete event (output.on_complete: notify)", run_id=run_id)

    def on_complete(*, result: RunResult, **_: Any) -> None:
        emit(logging.INFO, "complete", f"run {result.status}", run_id=result.run_id, status=result.status,
             metrics=result.metrics)

    def on_error(*, error: str, result: RunResult | None = None, **_: Any) -> None:
        fields: dict[str, Any] = {}
        if result is not None:
            fields = {"run_id": result.run_id, "status": result.status, "metrics": result.metrics}
        emit(logging.ERROR, "error", f"run failed: {error}", **fields)

    return Hooks(
        on_start=on_start,
        on_progress=on_progress,
        on_complete=on_complete,
        on_error=on_error,
        on_alert=on_alert,
        on_item_failed=on_item_failed,
        on_notify=on_notify,
        on_notice=on_notice,
    )

