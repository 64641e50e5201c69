"""Alerts with real parts: a local SMTP server (aiosmtpd), loopback HTTP servers for Slack and webhooks, a
SQLite cooldown store, and a real run whose failing item raises an alert."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from sleipnir.compiler.planner import plan as compile_plan
from sleipnir.runtime.engine.job import JobRun, RunOptions
from sleipnir.runtime.serve.alerts import (
    RETRY_AFTER_CAP,
    AlertDispatcher,
    AlertEvent,
    AlertRule,
    Cooldown,
    Notifier,
    evaluate,
)
from sleipnir.runtime.serve.logs import chain_hooks, configure, log_hooks

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import LLMServer

ROOT = Path(__file__).resolve().parents[1]
METRICS: dict[str, Any] = {
    "execution_time": 754.2,
    "items_processed": 180,
    "items_failed": 20,
    "error_rate": 0.1,
    "success_rate": 0.9,
    "retries": 4,
    "token_usage": 12000,
    "tokens_by_model": {"gpt-4o-mini": {"prompt": 9000, "completion": 3000}},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Inbox:
    """aiosmtpd's handler: keeps every message, and who logged in."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"smtp-pass-0042")


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Endpoint:
    """A loopback HTTP server that records JSON bodies and answers with scripted statuses (then 200); a status may
    come with headers, `(429, {"Retry-After": "2"})`."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.statuses: list[int | tuple[int, dict[str, str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                endpoint.bodies.append(json.loads(self.rfile.read(length)))
                scripted = endpoint.statuses.pop(0) if endpoint.statuses else 200
                status, headers = scripted if isinstance(scripted, tuple) else (scripted, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with Endpoint() as running:
        yield running


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dispatcher(root: Path, environ: dict[str, str] | None = None, smtp: dict[str, Any] | None = None, **rest: Any) -> AlertDispatcher:
    rest.setdefault("sleep", lambda seconds: None)
    return AlertDispatcher({"smtp": smtp} if smtp else {}, str(root), environ or {}, **rest)


# -- conditions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "fires"),
    [
        ("error_rate > 0.05", True),
        ("error_rate > 5%", True),
        ("error_rate > 10%", False),
        ("error_rate >= 10%", True),
        ("execution_time > 10m", True),
        ("execution_time > 13m", False),
        ("execution_time > 600", True),
        ("success_rate < 0.9 and items_processed > 10", False),
        ("success_rate <= 0.9 and items_processed > 10", True),
        ("success_rate < 95% and not items_processed > 1000", True),
        ("cost > 1", False),
    ],
)
def test_conditions_read_percentages_as_fractions_and_durations_as_seconds(condition: str, fires: bool) -> None:
    rule = AlertRule(condition=condition, action="webhook", url="http://example.test/")
    assert evaluate([rule], METRICS) == ([rule] if fires else [])


def test_a_condition_that_does_not_parse_never_fires(caplog: pytest.LogCaptureFixture) -> None:
    assert evaluate([AlertRule(condition="error_rate >> 1", action="slack")], METRICS) == []
    assert "does not parse" in caplog.text


def test_rules_and_cooldowns_are_read_from_plan_entries() -> None:
    rule = AlertRule.from_settings({"condition": "error_rate > 5%", "action": "email", "recipients": ["a@x.io"]})
    assert rule.cooldown == 900 and rule.recipients == ("a@x.io",)
    cooldowns = [AlertRule.from_settings({"condition": "true", "action": "slack", "cooldown": c}).cooldown
                 for c in ("15m", "2h", "1h30m", "90s", 45, "1d")]
    assert cooldowns == [900, 7200, 5400, 90, 45, 86400]
    with pytest.raises(ValueError):
        AlertRule.from_settings({"condition": "true", "action": "slack", "cooldown": "15 minutes"})
    with pytest.raises(ValueError):
        AlertRule(condition="true", action="pager")


# -- delivery -----------------------------------------------------------------------------------------------


def test_email_goes_to_a_real_smtp_server(tmp_path: Path, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    environ = {"SMTP_PASSWORD": "smtp-pass-0042", "SLEIPNIR_ALERT_FROM": "alerts@example.com"}
    smtp = {"host": "127.0.0.1", "port": port, "tls": False, "username": "sleipnir", "password_env": "SMTP_PASSWORD"}
    alerts = dispatcher(tmp_path, environ, smtp)
    rules = [{"condition": "error_rate > 5%", "action": "email", "recipients": ["oncall@example.com", "lead@example.com"], "cooldown": "15m"}]
    assert alerts.after_run("nightly_scores", "run-0001", rules, METRICS) == ["email: error_rate > 5%"]
    alerts.close()
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert envelope.mail_from == "alerts@example.com"
    assert inbox.logins == [(b"sleipnir", b"smtp-pass-0042")]
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert "nightly_scores" in message["Subject"] and "error_rate > 5%" in message["Subject"]
    body = message.get_body().get_content()  # type: ignore[union-attr]
    assert "nightly_scores" in body and "error_rate > 5%" in body and "run-0001" in body
    assert "error_rate: 10.00%" in body and "execution_time: 754.2s" in body


def test_email_without_a_mail_server_or_password_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rule = AlertRule(condition="true", action="email", recipients=("a@example.com",))
    event = AlertEvent(job="j", run_id="r", title="t", text="x")
    assert Notifier(None, {}).send(rule, event) is False
    assert "add `smtp:`" in caplog.text
    smtp = {"host": "127.0.0.1", "port": free_port(), "username": "u", "password_env": "SMTP_PASSWORD"}
    assert Notifier(smtp, {}).send(rule, event) is False
    assert "SMTP_PASSWORD is not" in caplog.text


def test_slack_posts_text_and_channel_to_the_webhook_from_the_environment(tmp_path: Path, endpoint: Endpoint) -> None:
    alerts = dispatcher(tmp_path, {"SLACK_WEBHOOK_URL": endpoint.url})
    rules = [{"condition": "execution_time > 10m", "action": "slack", "channel": "#ops"}]
    assert alerts.after_run("nightly", "run-2", rules, METRICS) == ["slack: execution_time > 10m"]
    alerts.close()
    [body] = endpoint.bodies
    assert body["channel"] == "#ops"
    assert body["text"].startswith("*[sleipnir] nightly: execution_time > 10m*\n")
    assert "run-2" in body["text"]


def test_a_webhook_posts_the_event_as_json(tmp_path: Path, endpoint: Endpoint) -> None:
    alerts = dispatcher(tmp_path)
    rules = [{"condition": "retries > 3", "action": "webhook", "url": endpoint.url}]
    assert alerts.after_run("nightly", "run-3", rules, METRICS) == ["webhook: retries > 3"]
    alerts.close()
    [body] = endpoint.bodies
    assert body["kind"] == "condition" and body["job"] == "nightly" and body["run_id"] == "run-3"
    assert body["condition"] == "retries > 3" and body["metrics"]["retries"] == 4
    assert body["metrics"]["tokens_by_model"] == METRICS["tokens_by_model"]


def test_a_failing_endpoint_is_retried(endpoint: Endpoint) -> None:
    slept: list[float] = []
    endpoint.statuses = [500, 503]
    notifier = Notifier(None, {}, sleep=slept.append)
    rule = AlertRule(condition="true", action="webhook", url=endpoint.url)
    assert notifier.send(rule, AlertEvent(job="j", run_id="r", title="t", text="x")) is True
    notifier.close()
    assert len(endpoint.bodies) == 3 and slept == [1.0, 3.0]


def test_a_retry_waits_what_the_endpoint_asks_with_retry_after(endpoint: Endpoint) -> None:
    slept: list[float] = []
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    endpoint.statuses = [(429, {"Retry-After": "7"}), (503, {"Retry-After": soon}), (503, {"Retry-After": "3600"})]
    notifier = Notifier(None, {}, sleep=slept.append, attempts=4)
    rule = AlertRule(condition="true", action="webhook", url=endpoint.url)
    assert notifier.send(rule, AlertEvent(job="j", run_id="r", title="t", text="x")) is True
    notifier.close()
    assert len(endpoint.bodies) == 4
    # delta-seconds, an HTTP-date (about 20 s away), and a long wait capped at RETRY_AFTER_CAP.
    assert slept[0] == 7.0 and 15.0 < slept[1] <= 20.0 and slept[2] == RETRY_AFTER_CAP


def test_a_client_error_is_not_retried(endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    endpoint.statuses = [404]
    notifier = Notifier(None, {}, sleep=lambda s: None)
    rule = AlertRule(condition="true", action="webhook", url=endpoint.url)
    assert notifier.send(rule, AlertEvent(job="j", run_id="r", title="t", text="x")) is False
    notifier.close()
    assert len(endpoint.bodies) == 1 and "HTTP 404" in caplog.text


def test_a_dead_endpoint_returns_false_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    token_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/secret-token-xyz"
    notifier = Notifier(None, {"SLACK_WEBHOOK_URL": token_url}, sleep=slept.append)
    rule = AlertRule(condition="true", action="slack", channel="#ops")
    with caplog.at_level(logging.INFO, logger="sleipnir.alerts"):
        assert notifier.send(rule, AlertEvent(job="j", run_id="r", title="t", text="x")) is False
    notifier.close()
    assert slept == [1.0, 3.0]
    failures = [r for r in caplog.records if r.name == "sleipnir.alerts"]
    assert [r.levelname for r in failures] == ["WARNING", "WARNING", "ERROR"]
    assert "not delivered after 3 attempts" in failures[-1].getMessage()
    assert "secret-token-xyz" not in caplog.text, "a webhook URL holds a token: only its host is logged"


# -- cooldown -----------------------------------------------------------------------------------------------


def test_cooldown_suppresses_a_second_alert_within_its_time_and_survives_a_restart(tmp_path: Path, endpoint: Endpoint) -> None:
    clock = Clock()
    rules = [{"condition": "error_rate > 5%", "action": "webhook", "url": endpoint.url, "cooldown": "15m"}]
    alerts = dispatcher(tmp_path, clock=clock)
    assert alerts.after_run("flaky", "r1", rules, METRICS) == ["webhook: error_rate > 5%"]
    clock.now += 14 * 60
    assert alerts.after_run("flaky", "r2", rules, METRICS) == []
    alerts.close()
    restarted = dispatcher(tmp_path, clock=clock)
    assert restarted.after_run("flaky", "r3", rules, METRICS) == [], "the store remembers across processes"
    # Another job, or another condition, has a cooldown of its own.
    assert restarted.after_run("other", "r4", rules, METRICS) == ["webhook: error_rate > 5%"]
    clock.now += 60 + 1
    assert restarted.after_run("flaky", "r5", rules, METRICS) == ["webhook: error_rate > 5%"]
    restarted.close()
    assert [b["run_id"] for b in endpoint.bodies] == ["r1", "r4", "r5"]
    assert (tmp_path / ".sleipnir" / "alerts.db").is_file()


def test_cooldown_store_in_seconds(tmp_path: Path) -> None:
    clock = Clock(100.0)
    cooldown = Cooldown(tmp_path / "deep" / "alerts.db", clock=clock)
    assert cooldown.claim("k", 30) is True
    clock.now = 129.0
    assert cooldown.claim("k", 30) is False
    clock.now = 130.0
    assert cooldown.claim("k", 30) is True
    assert cooldown.claim("zero", 0) is True and cooldown.claim("zero", 0) is True
    cooldown.close()


# -- the alert error strategy -------------------------------------------------------------------------------


def test_an_item_failure_goes_to_each_destination_once_regardless_of_condition(tmp_path: Path, endpoint: Endpoint) -> None:
    environ = {"PARTNER_API_KEY": "pk-live-0000-7777"}
    clock = Clock()
    rules = [
        {"condition": "error_rate > 50%", "action": "webhook", "url": endpoint.url, "cooldown": "10m"},
        {"condition": "retries > 100", "action": "webhook", "url": endpoint.url},
    ]
    alerts = dispatcher(tmp_path, environ, clock=clock)
    sent = alerts.on_failure(
        job="nightly", run_id="r1", stage="prompt", key="item-9", error="401 for key pk-live-0000-7777", alerts=rules
    )
    assert sent == ["webhook: item failed"]
    assert alerts.on_failure(job="nightly", run_id="r1", stage="prompt", key="item-10", error="again", alerts=rules) == []
    clock.now += 601
    assert alerts.on_failure(job="nightly", run_id="r1", stage="output", key=None, error="disk full", alerts=rules) == [
        "webhook: item failed"
    ]
    alerts.close()
    first, second = endpoint.bodies
    assert first["kind"] == "item_failed" and first["failure"]["key"] == "item-9"
    assert first["title"] == "[sleipnir] nightly: prompt failed for item item-9"
    assert "pk-live-0000-7777" not in json.dumps(endpoint.bodies) and "(sensitive)" in first["failure"]["error"]
    assert second["failure"] == {"stage": "output", "key": None, "error": "disk full"}


def test_a_real_run_sends_its_alerts_through_the_hooks(tmp_path: Path, endpoint: Endpoint) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: alerted\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.jsonl").write_text(
        "".join(json.dumps({"id": f"i{n}", "text": f"fine {n}"}) + "\n" for n in range(8)), encoding="utf-8"
    )
    with LLMServer(latency=0.0) as llm:
        llm.add_faults({"kind": "400", "count": 2})
        (tmp_path / "job.yaml").write_text(
            textwrap.dedent(
                f"""
                job:
                  name: alerted
                  input:
                    path: data/in.jsonl
                  prompts:
                    - name: sentiment_analyzer
                      model: sentiment
                      endpoint: {llm.base_url}
                  output:
                    path: out/scored.jsonl
                  execution:
                    concurrency: 1
                  error_handling:
                    on_prompt_failure: {{strategy: alert}}
                  logging:
                    format: json
                    destination: file
                    path: logs/alerted.log
                  alerts:
                    - condition: error_rate > 10%
                      action: webhook
                      url: {endpoint.url}
                """
            ),
            encoding="utf-8",
        )
        compiled = compile_plan(str(tmp_path / "job.yaml"), environ={})
        assert compiled.ok, [d.message for d in compiled.diagnostics]
        [plan] = compiled.plans
        log = configure(plan.settings["logging"], job=plan.name, root=plan.root, environ={})
        alerts = AlertDispatcher({}, plan.root, {}, sleep=lambda s: None, logger=log)
        hooks = chain_hooks(log_hooks(log), alerts.hooks(plan.name, plan.settings["alerts"]))
        result = asyncio.run(JobRun(plan, RunOptions(environ={}, hooks=hooks)).run())
    sent = alerts.drain()
    alerts.close()
    for handler in log.handlers:
        handler.flush()
    assert result.ok and result.progress.skipped == 2 and result.metrics["error_rate"] == 0.25
    # The first failure was sent; the second fell in the cooldown; the rule fired after the run.
    assert sorted(sent) == ["webhook: error_rate > 10%", "webhook: item failed"]
    kinds = [b["kind"] for b in endpoint.bodies]
    assert kinds == ["item_failed", "condition"] and endpoint.bodies[1]["run_id"] == result.run_id
    lines = [json.loads(line) for line in (tmp_path / "logs" / "alerted.log").read_text().splitlines()]
    assert [line["event"] for line in lines].count("alert") >= 4, "two failures, and two deliveries"
    assert any("webhook alert sent" in line["message"] for line in lines)
