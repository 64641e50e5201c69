"""Alerts (spec/operations.md#alerts): a job's `alerts:` rules, evaluated over a run's metrics, delivered by
email, Slack or a webhook, with a cooldown that keeps one broken job from sending a flood.

- `evaluate` picks the rules whose condition holds over the metrics (the condition language of
  spec/conditions.md: `5%` is 0.05 and `10m` is 600 seconds, as the metrics are).
- `Notifier.send` delivers one event: three attempts with a short backoff, each failure logged; it never
  raises, and returns False when the event could not be delivered.
- `Cooldown` remembers, in a small SQLite file, when each rule last fired, so that the memory survives a restart
  of `serve` and is shared with one-off `run-job` runs.
- `AlertDispatcher` ties them together: `after_run` for the metric rules, `on_failure` for the runtime's `alert`
  error strategy and `{alert: true}`, and `hooks` to plug both into a run without making the run wait for a mail
  server.
"""

from __future__ import annotations

import hashlib
import logging
import math
import smtplib
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import tenacity

from ...compiler.ir import Secret
from ...compiler.ir.common import parse_duration, retry_after
from ...compiler.ir.expressions import ExpressionError
from ..conditions import holds
from ..engine.job import Hooks, RunResult
from ..secrets import MissingSecret, reveal
from .logs import Redactor

__all__ = [
    "ACTIONS",
    "DEFAULT_COOLDOWN",
    "DEFAULT_STORE",
    "AlertDispatcher",
    "AlertEvent",
    "AlertRule",
    "Cooldown",
    "Notifier",
    "evaluate",
]

ACTIONS = ("email", "slack", "webhook")
DEFAULT_COOLDOWN = 900.0
"""`cooldown: 15m`, in seconds."""
DEFAULT_STORE = ".sleipnir/alerts.db"
ATTEMPTS = 3
BACKOFF = (1.0, 3.0)
"""Seconds to wait before the second and the third attempt, unless the endpoint asks with `Retry-After`."""
RETRY_AFTER_CAP = 30.0
"""The longest `Retry-After` honoured, in seconds."""
TIMEOUT = 10.0
"""Seconds a delivery may take (connect, send, answer)."""
SLACK_ENV = "SLACK_WEBHOOK_URL"
FROM_ENV = "SLEIPNIR_ALERT_FROM"

_RETRIED_STATUS = frozenset({408, 425, 429})

_log = logging.getLogger("sleipnir.alerts")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """One entry of a job's `alerts:`."""

    condition: str
    """Over the run's metrics, in the condition language: `error_rate > 5%`."""
    action: str
    """`email`, `slack` or `webhook`."""
    recipients: tuple[str, ...] = ()
    """Addresses, for `email`."""
    channel: str | None = None
    """The Slack channel (`#ops`), for `slack`."""
    url: str | None = None
    """Where `webhook` posts; for `slack`, the incoming-webhook URL (else `SLACK_WEBHOOK_URL`)."""
    cooldown: float = DEFAULT_COOLDOWN
    """The least time between two notifications of this rule, in seconds."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown alert action {self.action!r}: use email, slack or webhook")
        if self.cooldown < 0:
            raise ValueError("an alert's cooldown cannot be negative")

    @classmethod
    def from_settings(cls, entry: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> AlertRule:
        """The rule of one plan `alerts` entry (a `${...}` URL kept as a secret is resolved from `environ`)."""
        url = entry.get("url")
        if isinstance(url, Secret):
            url = reveal(url, environ or {})
        return cls(
            condition=str(entry["condition"]),
            action=str(entry["action"]),
            recipients=tuple(str(r) for r in entry.get("recipients") or ()),
            channel=str(entry["channel"]) if entry.get("channel") else None,
            url=str(url) if url else None,
            cooldown=parse_duration(entry.get("cooldown", DEFAULT_COOLDOWN)),
        )

    @property
    def target(self) -> str:
        """Where the rule sends: its recipients, channel or URL."""
        if self.action == "email":
            return ",".join(self.recipients)
        return f"{self.channel or ''} {self.url or ''}".strip()

    def key(self, job: str, what: str | None = None) -> str:
        """The cooldown key: the job, the condition (or `what` else fired), the action and the target.
        The target is hashed: a Slack webhook URL is a secret, and the store is a plain file."""
        target = hashlib.sha256(self.target.encode()).hexdigest()[:16]
        return "\x1f".join((job, what or self.condition, self.action, target))


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    """What one alert says."""

    job: str
    run_id: str
    title: str
    """One line: the email subject, the bold first line on Slack."""
    text: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "condition"
    """`condition` (a rule held after a run) or `item_failed` (the `alert` error strategy)."""
    condition: str | None = None
    failure: Mapping[str, Any] | None = None
    """For `item_failed`: `stage`, `key` and `error`."""

    def as_json(self) -> dict[str, Any]:
        """The body a `webhook` action posts."""
        body: dict[str, Any] = {
            "kind": self.kind,
            "job": self.job,
            "run_id": self.run_id,
            "title": self.title,
            "text": self.text,
            "condition": self.condition,
            "metrics": dict(self.metrics),
        }
        if self.failure is not None:
            body["failure"] = dict(self.failure)
        return body


def evaluate(rules: Iterable[AlertRule], metrics: Mapping[str, Any]) -> list[AlertRule]:
    """The rules whose condition holds over `metrics` (rates as fractions, durations in seconds). A condition
    that does not parse never holds, and is logged: the compiler checks conditions, a handmade plan may not."""
    fired = []
    for rule in rules:
        try:
            if holds(rule.condition, metrics):
                fired.append(rule)
        except ExpressionError as error:
            _log.error("alert condition `%s` does not parse: %s", rule.condition, error, extra={"event": "alert"})
    return fired


class _Unsendable(Exception):
    """The event cannot be sent as configured: no point in trying again."""


class _Retryable(Exception):
    """This attempt failed in a way that another may not; `asked`: the server's `Retry-After`, in seconds."""

    def __init__(self, reason: str, asked: float | None = None) -> None:
        super().__init__(reason)
        self.asked = asked


class Notifier:
    """Delivers alert events by email (smtplib), Slack or webhook (httpx). One HTTP client, made when first
    needed, serves every post."""

    def __init__(
        self,
        smtp: Mapping[str, Any] | None,
        environ: Mapping[str, str],
        *,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
        attempts: int = ATTEMPTS,
        backoff: tuple[float, ...] = BACKOFF,
        timeout: float = TIMEOUT,
    ) -> None:
        self.smtp = dict(smtp or {})
        self.environ = environ
        self.sleep = sleep
        self.log = logger or _log
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def send(self, rule: AlertRule, event: AlertEvent) -> bool:
        """Deliver `event` by `rule`'s action; True when delivered. Never raises."""
        where = self._where(rule)
        hide = Redactor([u for u in (rule.url, self.environ.get(SLACK_ENV)) if u], self.environ)
        fields = {"event": "alert", "run_id": event.run_id, "action": rule.action}
        try:
            deliver = self._delivery(rule, event)
        except (_Unsendable, MissingSecret) as error:
            self.log.error("%s alert not sent: %s", rule.action, hide.text(str(error)), extra=fields)
            return False

        def reason(error: BaseException | None) -> str:
            return hide.text(str(error) if isinstance(error, _Retryable) else f"{type(error).__name__}: {error}")

        def failed(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self.log.warning(
                "%s alert to %s failed (attempt %d): %s", rule.action, where, state.attempt_number, reason(error),
                extra=fields,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=tenacity.retry_if_not_exception_type(_Unsendable),
            sleep=self.sleep,
            before_sleep=failed,
            reraise=True,
        )
        try:
            retrying(deliver)
        except _Unsendable as error:
            self.log.error("%s alert to %s refused: %s", rule.action, where, hide.text(str(error)), extra=fields)
            return False
        except Exception as error:
            self.log.error(
                "%s alert to %s not delivered after %d attempts: %s", rule.action, where, self.attempts, reason(error),
                extra=fields,
            )
            return False
        self.log.info("%s alert sent to %s: %s", rule.action, where, event.title, extra=fields)
        return True

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The backoff before the next attempt, or what the server asked for with `Retry-After` (capped)."""
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Retryable) and failure.asked is not None:
            return min(RETRY_AFTER_CAP, failure.asked)
        return self.backoff[min(state.attempt_number, len(self.backoff)) - 1] if self.backoff else 0.0

    def close(self) -> None:
        """Close the HTTP client."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- the actions --------------------------------------------------------------------------------------

    def _where(self, rule: AlertRule) -> str:
        """A target fit for a log line: addresses, or a URL's host only (a webhook URL may hold a token)."""
        if rule.action == "email":
            return ", ".join(rule.recipients) or "(no recipients)"
        url = rule.url or (self.environ.get(SLACK_ENV) if rule.action == "slack" else None)
        try:
            host = httpx.URL(url).host if url else ""
        except Exception:
            host = ""
        return (f"{rule.channel} via {host}" if rule.channel else host) or "(no URL)"

    def _delivery(self, rule: AlertRule, event: AlertEvent) -> Callable[[], None]:
        if rule.action == "email":
            return self._email(rule, event)
        if rule.action == "slack":
            url = rule.url or self.environ.get(SLACK_ENV)
            if not url:
                raise _Unsendable(f"no Slack webhook URL: set the rule's `url` or {SLACK_ENV}")
            payload: dict[str, Any] = {"text": f"*{event.title}*\n{event.text}"}
            if rule.channel:
                payload["channel"] = rule.channel
            return lambda: self._post(url, payload)
        if not rule.url:
            raise _Unsendable("a webhook alert needs a `url`")
        webhook_url = rule.url
        return lambda: self._post(webhook_url, event.as_json())

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, headers={"User-Agent": "sleipnir-alerts"})
            return self._client

    def _post(self, url: str, payload: Mapping[str, Any]) -> None:
        response = self._http().post(url, json=payload)
        if response.status_code < 300:
            return
        reason = f"HTTP {response.status_code}"
        if response.status_code >= 500 or response.status_code in _RETRIED_STATUS:
            raise _Retryable(reason, retry_after(response.headers))
        raise _Unsendable(reason)

    def _email(self, rule: AlertRule, event: AlertEvent) -> Callable[[], None]:
        host = self.smtp.get("host")
        if not host:
            raise _Unsendable("no mail server: add `smtp:` with a `host` to sleipnir.yaml")
        if not rule.recipients:
            raise _Unsendable("an email alert needs `recipients`")
        tls = bool(self.smtp.get("tls", False))
        port = int(self.smtp.get("port") or (587 if tls else 25))
        username = self.smtp.get("username")
        password: str | None = None
        if username:
            password_env = self.smtp.get("password_env")
            password = self.environ.get(str(password_env)) if password_env else None
            if password is None:
                raise _Unsendable(f"smtp.username is set but {password_env or 'smtp.password_env'} is not")
        message = EmailMessage()
        message["From"] = self.environ.get(FROM_ENV) or f"sleipnir@{socket.gethostname()}"
        message["To"] = ", ".join(rule.recipients)
        message["Subject"] = event.title
        message.set_content(event.text)

        def deliver() -> None:
            implicit_tls = tls and port == 465
            client: smtplib.SMTP
            if implicit_tls:
                client = smtplib.SMTP_SSL(str(host), port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(str(host), port, timeout=self.timeout)
            with client:
                if tls and not implicit_tls:
                    client.starttls(context=ssl.create_default_context())
                if username and password is not None:
                    try:
                        client.login(str(username), password)
                    except smtplib.SMTPAuthenticationError as error:
                        raise _Unsendable(f"the mail server refused the login ({error.smtp_code})") from None
                try:
                    client.send_message(message)
                except smtplib.SMTPRecipientsRefused as error:
                    raise _Unsendable(f"recipients refused: {', '.join(error.recipients)}") from None

        return deliver


class Cooldown:
    """When each alert last fired, in a SQLite file, so that a rule fires at most once per its cooldown.

    A failed store never stops an alert: without it, alerts go out (better a second mail than none)."""

    def __init__(self, store_path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(store_path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._quiet_until: dict[str, float] = {}
        """What this process already knows to be cooling down: a flood of failures costs no query each."""

    def claim(self, key: str, cooldown: float) -> bool:
        """True, and the firing recorded, when `key` has not fired in the last `cooldown` seconds."""
        now = self.clock()
        with self._lock:
            if now < self._quiet_until.get(key, -math.inf):
                return False
            try:
                db = self._open()
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute("SELECT fired_at FROM fired WHERE key = ?", (key,)).fetchone()
                    if row is not None and now - float(row[0]) < cooldown:
                        self._quiet_until[key] = float(row[0]) + cooldown
                        return False
                    db.execute("INSERT OR REPLACE INTO fired (key, fired_at) VALUES (?, ?)", (key, now))
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as error:
                _log.warning("the alert cooldown store %s failed: %s", self.path, error, extra={"event": "alert"})
            self._quiet_until[key] = now + cooldown
            return True

    def close(self) -> None:
        """Close the store."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("CREATE TABLE IF NOT EXISTS fired (key TEXT PRIMARY KEY, fired_at REAL NOT NULL)")
            self._db = db
        return self._db


class AlertDispatcher:
    """Evaluates, cools down and sends a workspace's alerts.

    `manifest_settings` is the body of `sleipnir.yaml` (its `smtp:` is read), `root` the workspace root (the
    cooldown store is `.sleipnir/alerts.db` below it), `environ` supplies the SMTP password, the Slack URL and
    the From address. Alert texts hide `secrets` (e.g. `logs.secrets_in(plan, environ)`) and the values of
    `environ`'s secret-named variables, as the log does.
    """

    def __init__(
        self,
        manifest_settings: Mapping[str, Any],
        root: str,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        *,
        logger: logging.Logger | None = None,
        store: str = DEFAULT_STORE,
        secrets: Iterable[str] = (),
    ) -> None:
        self.environ = environ
        self.log = logger or _log
        self.notifier = Notifier(manifest_settings.get("smtp"), environ, sleep=sleep, logger=self.log)
        self.cooldown = Cooldown(Path(root) / store, clock=clock)
        self.redactor = Redactor(secrets, environ)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[list[str]]] = []
        self._sent: list[str] = []
        """What finished deliveries sent since the last `drain` (the newest 100: `serve` never drains)."""
        self._pending_lock = threading.Lock()

    def rules(self, alerts: Iterable[Mapping[str, Any]]) -> list[AlertRule]:
        """The rules of a plan's `alerts` settings; an entry that is not a valid rule is logged and left out."""
        rules = []
        for entry in alerts:
            try:
                rules.append(AlertRule.from_settings(entry, self.environ))
            except (KeyError, ValueError, OverflowError, MissingSecret) as error:
                self.log.error("alert rule left out: %s", error, extra={"event": "alert"})
        return rules

    def after_run(self, job: str, run_id: str, alerts: Iterable[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[str]:
        """Send every rule of `alerts` whose condition holds over `metrics` and that is not cooling down.
        Returns what was sent, as `action: condition`. `cost` is compared only when `metrics` has it."""
        sent = []
        for rule in evaluate(self.rules(alerts), metrics):
            if not self.cooldown.claim(rule.key(job), rule.cooldown):
                self.log.info("alert `%s` cooling down: not sent", rule.condition, extra={"event": "alert", "run_id": run_id})
                continue
            event = self._metric_event(job, run_id, rule, metrics)
            if self.notifier.send(rule, event):
                sent.append(f"{rule.action}: {rule.condition}")
        return sent

    def on_failure(
        self,
        *,
        job: str,
        run_id: str,
        stage: str,
        key: str | None,
        error: str,
        alerts: Iterable[Mapping[str, Any]],
    ) -> list[str]:
        """An item failed under the `alert` strategy (or `alert: true`): send an `item_failed` event to each
        distinct destination of the job's rules, whatever their conditions, each within its rule's cooldown.
        Returns what was sent, as `action: item failed`."""
        return [
            f"{rule.action}: item failed"
            for rule, event in self._failure_events(job, run_id, stage, key, error, alerts)
            if self.notifier.send(rule, event)
        ]

    def hooks(
        self,
        job: str,
        alerts: Iterable[Mapping[str, Any]],
        *,
        metrics: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> Hooks:
        """Run callbacks that send a job's alerts: item failures as they happen, the rules after the run.
        Deliveries happen on a worker thread, so a run never waits for a mail server; `drain` waits for them.
        `metrics` may add to a run's metrics before the rules see them (the CLI adds `cost`)."""
        rules = list(alerts)

        def on_alert(*, job: str, run_id: str, stage: str, key: str | None, error: str, **_: Any) -> None:
            events = self._failure_events(job, run_id, stage, key, error, rules)
            if events:
                self._later(lambda: [f"{r.action}: item failed" for r, e in events if self.notifier.send(r, e)])

        def after(result: RunResult | None) -> None:
            if result is None:
                return
            values = metrics(result.metrics) if metrics is not None else result.metrics
            self._later(lambda: self.after_run(job, result.run_id, rules, values))

        return Hooks(
            on_alert=on_alert,
            on_complete=lambda *, result, **_: after(result),
            on_error=lambda *, error, result=None, **_: after(result),
        )

    def drain(self, timeout: float | None = None) -> list[str]:
        """Wait for the deliveries `hooks` started; what they sent."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
            sent, self._sent = self._sent, []
        for future in pending:
            sent.extend(future.result(timeout=timeout))
        return sent

    def close(self) -> None:
        """Finish the deliveries under way, then close the HTTP client and the cooldown store."""
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.notifier.close()
        self.cooldown.close()

    # -- helpers ------------------------------------------------------------------------------------------

    def _later(self, work: Callable[[], list[str]]) -> None:
        def guarded() -> list[str]:
            try:
                return work()
            except Exception:  # the worker must outlive any bug in one delivery
                self.log.exception("alert delivery failed", extra={"event": "alert"})
                return []

        with self._pending_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sleipnir-alerts")
            # A long-running `serve` never drains: finished deliveries leave the list, keeping what they sent.
            for future in [f for f in self._pending if f.done()]:
                self._pending.remove(future)
                self._sent = [*self._sent, *future.result()][-100:]
            self._pending.append(self._pool.submit(guarded))

    def _failure_events(
        self, job: str, run_id: str, stage: str, key: str | None, error: str, alerts: Iterable[Mapping[str, Any]]
    ) -> list[tuple[AlertRule, AlertEvent]]:
        what = f"{stage} failed for item {key}" if key is not None else f"{stage} failed"
        event = AlertEvent(
            job=job,
            run_id=run_id,
            kind="item_failed",
            title=self.redactor.text(f"[sleipnir] {job}: {what}"),
            text=self.redactor.text(f"Job {job}, run {run_id}: {what}.\n\n{error}\n"),
            failure={"stage": stage, "key": key, "error": self.redactor.text(error)},
        )
        chosen: dict[tuple[str, str], AlertRule] = {}
        for rule in self.rules(alerts):
            chosen.setdefault((rule.action, rule.target), rule)
        return [
            (rule, event)
            for rule in chosen.values()
            if self.cooldown.claim(rule.key(job, "item failed"), rule.cooldown)
        ]

    def _metric_event(self, job: str, run_id: str, rule: AlertRule, metrics: Mapping[str, Any]) -> AlertEvent:
        lines = [f"{name}: {_shown(name, value)}" for name, value in metrics.items() if not isinstance(value, Mapping)]
        text = f"Job {job}, run {run_id}: the alert condition `{rule.condition}` holds.\n\n" + "\n".join(lines) + "\n"
        return AlertEvent(
            job=job,
            run_id=run_id,
            title=self.redactor.text(f"[sleipnir] {job}: {rule.condition}"),
            text=self.redactor.text(text),
            metrics=dict(metrics),
            condition=rule.condition,
        )


def _shown(name: str, value: Any) -> str:
    if isinstance(value, float) and name.endswith("_rate"):
        return f"{value:.2%}"
    if isinstance(value, float) and name == "execution_time":
        return f"{value:.1f}s"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
