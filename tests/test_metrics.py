"""Run metrics in the Prometheus formats: the exposition `serve` answers with, the textfile of a one-off run, and
a push to a Pushgateway (a real HTTP server on 127.0.0.1 speaking its protocol). Every output is read back with
prometheus-client's own parser."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_runs_command import history_workspace, mock_job, run_job

from sleipnir.cli.console import cost_of
from sleipnir.compiler.model import MONITORED
from sleipnir.runtime.serve.metrics import (
    ALWAYS,
    SERIES,
    RunMetrics,
    default_textfile,
    export_after_run,
    push,
    write_textfile,
)

METRICS: dict[str, Any] = {
    "execution_time": 42.5,
    "items_processed": 90,
    "items_skipped": 4,
    "items_failed": 6,
    "retries": 3,
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "token_usage": 1500,
    "success_rate": 0.9,
    "error_rate": 0.1,
    "tokens_by_model": {"gpt-4o-mini": {"prompt": 1200, "completion": 300}},
    "rate_limits": {"openai": {"requests_per_minute": 540.0, "decreases": 2, "rate_limited": 17}},
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of an exposition, by (name, labels), `_created` timestamps left out."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def families(found: Samples) -> set[str]:
    """Sample names folded to their series: `x_bucket`, `x_sum`, `x_count` are `x`."""
    return {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in names(found)}


# -- the exposition -----------------------------------------------------------------------------------------


def test_one_run_in_the_exposition() -> None:
    metrics = RunMetrics()
    metrics.observe("triage", "succeeded", METRICS, 0.25)
    found = samples(metrics.exposition())

    assert value(found, "sleipnir_runs_total", job="triage", status="succeeded") == 1
    assert value(found, "sleipnir_runs_total", job="triage", status="failed") == 0
    assert value(found, "sleipnir_items_total", job="triage", outcome="succeeded") == 90
    assert value(found, "sleipnir_items_total", job="triage", outcome="skipped") == 4
    assert value(found, "sleipnir_items_total", job="triage", outcome="failed") == 6
    assert value(found, "sleipnir_tokens_total", job="triage", kind="prompt") == 1200
    assert value(found, "sleipnir_tokens_total", job="triage", kind="completion") == 300
    assert value(found, "sleipnir_retries_total", job="triage") == 3
    assert value(found, "sleipnir_rate_limit_requests_per_minute", job="triage", provider="openai") == 540
    assert value(found, "sleipnir_rate_limited_total", job="triage", provider="openai") == 17
    assert value(found, "sleipnir_rate_decreases_total", job="triage", provider="openai") == 2
    assert value(found, "sleipnir_cost_dollars_total", job="triage") == 0.25
    assert value(found, "sleipnir_last_run_duration_seconds", job="triage") == 42.5
    assert value(found, "sleipnir_last_run_success_rate", job="triage") == 0.9
    assert value(found, "sleipnir_last_run_error_rate", job="triage") == 0.1
    assert value(found, "sleipnir_last_run_timestamp_seconds", job="triage") > 1.7e9
    assert value(found, "sleipnir_run_duration_seconds_count", job="triage") == 1
    assert value(found, "sleipnir_run_duration_seconds_sum", job="triage") == 42.5
    assert value(found, "sleipnir_run_duration_seconds_bucket", job="triage", le="30.0") == 0
    assert value(found, "sleipnir_run_duration_seconds_bucket", job="triage", le="60.0") == 1
    assert families(found) == {series for names in SERIES.values() for series in names} | {
        "sleipnir_runs_total",
        "sleipnir_last_run_timestamp_seconds",
    }


def test_skipped_and_held_runs_are_counted_by_reason() -> None:
    metrics = RunMetrics()
    metrics.skipped("nightly", "overlap")
    metrics.skipped("nightly", "overlap")
    metrics.held("nightly", "data_available")
    metrics.held("nightly", "time_window")
    found = samples(metrics.exposition())
    assert value(found, "sleipnir_runs_skipped_total", job="nightly", reason="overlap") == 2
    assert value(found, "sleipnir_runs_held_total", job="nightly", reason="data_available") == 1
    assert value(found, "sleipnir_runs_held_total", job="nightly", reason="time_window") == 1
    assert names(found) == {"sleipnir_runs_skipped_total", "sleipnir_runs_held_total"}


def test_jobs_are_apart_and_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    metrics.observe("a", "succeeded", METRICS, None)
    metrics.observe("b", "failed", {**METRICS, "items_processed": 1}, None)
    metrics.observe("a", "succeeded", METRICS, None)
    assert metrics.registry is registry
    found = samples(metrics.exposition())
    assert value(found, "sleipnir_runs_total", job="a", status="succeeded") == 2
    assert value(found, "sleipnir_runs_total", job="b", status="failed") == 1
    assert value(found, "sleipnir_items_total", job="a", outcome="succeeded") == 180
    assert value(found, "sleipnir_items_total", job="b", outcome="succeeded") == 1


def test_every_monitored_metric_has_its_series() -> None:
    assert set(SERIES) == set(MONITORED)
    assert not set(ALWAYS) & {series for names in SERIES.values() for series in names}


def test_a_job_exports_only_the_metrics_it_lists() -> None:
    metrics = RunMetrics()
    metrics.observe("lean", "succeeded", METRICS, 1.5, selected=["execution_time", "error_rate"])
    found = samples(metrics.exposition())
    assert families(found) == {
        "sleipnir_runs_total",
        "sleipnir_last_run_timestamp_seconds",
        "sleipnir_last_run_duration_seconds",
        "sleipnir_run_duration_seconds",
        "sleipnir_last_run_error_rate",
    }
    metrics.observe("costly", "succeeded", METRICS, 1.5, selected=["cost"])
    found = samples(metrics.exposition())
    assert value(found, "sleipnir_cost_dollars_total", job="costly") == 1.5
    assert ("sleipnir_cost_dollars_total", frozenset({("job", "lean")})) not in found


def test_an_unknown_cost_is_no_series_rather_than_zero() -> None:
    metrics = RunMetrics()
    metrics.observe("unpriced", "succeeded", METRICS, None)
    assert "sleipnir_cost_dollars_total" not in names(samples(metrics.exposition()))


def test_fifty_runs_of_a_job_add_no_series() -> None:
    metrics = RunMetrics()
    metrics.observe("steady", "succeeded", METRICS, 0.01)
    first = set(samples(metrics.exposition()))
    for number in range(50):
        status = ("succeeded", "failed", "interrupted", "timed_out")[number % 4]
        metrics.observe("steady", status, {**METRICS, "execution_time": number * 97.0}, 0.01)
    found = samples(metrics.exposition())
    assert set(found) == first
    assert value(found, "sleipnir_runs_total", job="steady", status="timed_out") == 12
    assert value(found, "sleipnir_run_duration_seconds_count", job="steady") == 51
    labels = {key for _, pairs in found for key, _ in pairs}
    assert labels == {"job", "status", "outcome", "kind", "le", "provider"}


# -- the textfile of a one-off run --------------------------------------------------------------------------


def test_the_textfile_counts_every_run_and_keeps_the_last_gauges(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "triage.prom"
    write_textfile(path, "triage", "succeeded", METRICS, 0.25)
    write_textfile(path, "triage", "failed", {**METRICS, "execution_time": 7.0, "success_rate": 0.5}, 0.5)
    found = samples(path.read_text())
    assert value(found, "sleipnir_runs_total", job="triage", status="succeeded") == 1
    assert value(found, "sleipnir_runs_total", job="triage", status="failed") == 1
    assert value(found, "sleipnir_items_total", job="triage", outcome="succeeded") == 180
    assert value(found, "sleipnir_tokens_total", job="triage", kind="prompt") == 2400
    assert value(found, "sleipnir_cost_dollars_total", job="triage") == 0.75
    assert value(found, "sleipnir_run_duration_seconds_count", job="triage") == 2
    assert value(found, "sleipnir_run_duration_seconds_sum", job="triage") == 49.5
    assert value(found, "sleipnir_run_duration_seconds_bucket", job="triage", le="15.0") == 1
    assert value(found, "sleipnir_last_run_duration_seconds", job="triage") == 7.0
    assert value(found, "sleipnir_last_run_success_rate", job="triage") == 0.5
    # Written by rename: no temporary file is left beside it for node-exporter to half-read.
    assert sorted(p.name for p in path.parent.iterdir()) == ["triage.prom", "triage.prom.lock"]


WRITER = """
import sys
from sleipnir.runtime.serve.metrics import write_textfile
metrics = {"items_total": 10, "items_succeeded": 9, "items_failed": 1, "execution_time": 1.5}
for _ in range(int(sys.argv[2])):
    write_textfile(sys.argv[1], "triage", "succeeded", metrics, 0.01)
"""


def test_processes_writing_one_textfile_at_once_lose_no_run(tmp_path: Path) -> None:
    # Each write reads the file, adds its run and renames a new file into place: without the lock (filelock, a
    # `.lock` file beside the textfile) two processes read the same counts and one run is lost.
    path = tmp_path / "triage.prom"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), "15"], stderr=subprocess.PIPE) for _ in range(4)
    ]
    for writer in writers:
        _, error = writer.communicate(timeout=120)
        assert writer.returncode == 0, error.decode()
    found = samples(path.read_text())
    assert value(found, "sleipnir_runs_total", job="triage", status="succeeded") == 60
    assert value(found, "sleipnir_run_duration_seconds_count", job="triage") == 60


def test_runs_finishing_at_once_are_all_counted(tmp_path: Path) -> None:
    path = tmp_path / "busy.prom"

    def write_five() -> None:
        for _ in range(5):
            write_textfile(path, "busy", "succeeded", METRICS, 0.5)

    threads = [threading.Thread(target=write_five) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = samples(path.read_text())
    assert value(found, "sleipnir_runs_total", job="busy", status="succeeded") == 40
    assert value(found, "sleipnir_run_duration_seconds_count", job="busy") == 40
    assert value(found, "sleipnir_cost_dollars_total", job="busy") == 20


def test_a_textfile_keeps_when_its_series_were_created(tmp_path: Path) -> None:
    path = tmp_path / "old.prom"
    write_textfile(path, "old", "succeeded", METRICS, None)
    created = {s.name: s.value for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    write_textfile(path, "old", "succeeded", METRICS, None)
    again = {s.name: s.value for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    stamps = [name for name in created if name.endswith("_created")]
    assert stamps and all(again[name] == created[name] for name in stamps)


def test_a_textfile_that_is_not_metrics_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "broken.prom"
    path.write_text("this is { not the text format\n", encoding="utf-8")
    write_textfile(path, "broken", "succeeded", METRICS, None)
    assert value(samples(path.read_text()), "sleipnir_runs_total", job="broken", status="succeeded") == 1


@pytest.mark.parametrize("export_to", ["textfile", "prometheus"])
def test_a_one_off_run_writes_the_default_textfile(tmp_path: Path, export_to: str) -> None:
    settings = {"export_to": export_to, "metrics": ["token_usage"]}
    line = export_after_run(settings, root=str(tmp_path), job="triage", status="succeeded", metrics=METRICS, cost=1.0)
    path = default_textfile(str(tmp_path), "triage")
    assert path == tmp_path / ".sleipnir" / "metrics" / "triage.prom"
    assert line == "metrics written to .sleipnir/metrics/triage.prom"
    found = samples(path.read_text())
    assert families(found) == {"sleipnir_runs_total", "sleipnir_last_run_timestamp_seconds", "sleipnir_tokens_total"}


def test_export_none_does_nothing(tmp_path: Path) -> None:
    for settings in ({"export_to": "none"}, {}):
        assert export_after_run(settings, root=str(tmp_path), job="j", status="failed", metrics=METRICS, cost=None) is None
    assert list(tmp_path.iterdir()) == []


def test_a_textfile_that_cannot_be_written_is_a_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / ".sleipnir").write_text("a file where the folder should be", encoding="utf-8")
    line = export_after_run(
        {"export_to": "textfile"}, root=str(tmp_path), job="j", status="succeeded", metrics=METRICS, cost=None
    )
    assert line is not None and line.startswith("metrics not written to .sleipnir/metrics/j.prom: ")
    assert line in caplog.messages


def test_a_real_run_exports_its_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monitoring = "monitoring:\n  export_to: textfile\n  metrics: [items_processed, token_usage, cost]\n"
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha", monitoring)})
    monkeypatch.chdir(ws)
    result = run_job(ws, "alpha")
    from sleipnir import JobExecutor

    plan = JobExecutor("alpha", workspace=ws, environ={}).plan()
    cost = cost_of(result.metrics["tokens_by_model"], plan.root)
    line = export_after_run(
        plan.settings["monitoring"], root=plan.root, job=result.job, status=result.status, metrics=result.metrics, cost=cost
    )
    assert line == "metrics written to .sleipnir/metrics/alpha.prom"
    found = samples((ws / ".sleipnir" / "metrics" / "alpha.prom").read_text())
    assert value(found, "sleipnir_items_total", job="alpha", outcome="succeeded") == 2
    assert value(found, "sleipnir_tokens_total", job="alpha", kind="prompt") == result.metrics["prompt_tokens"] > 0
    assert cost is not None and value(found, "sleipnir_cost_dollars_total", job="alpha") == pytest.approx(cost)
    assert "sleipnir_last_run_duration_seconds" not in names(found)


# -- a Pushgateway on 127.0.0.1 -----------------------------------------------------------------------------


@dataclass
class Pushgateway:
    url: str
    pushes: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    """An HTTP server that takes pushes as a Pushgateway does: PUT or POST on /metrics/job/<job>."""
    gateway = Pushgateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self._push()

        def do_POST(self) -> None:
            self._push()

        def _push(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.path.startswith("/metrics/job/"):
                self.send_response(404)
            else:
                gateway.pushes.append(
                    {"method": self.command, "path": self.path, "body": body.decode(), "headers": dict(self.headers)}
                )
                self.send_response(gateway.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_push_puts_the_run_under_its_job(pushgateway: Pushgateway) -> None:
    push(pushgateway.url, "triage", "succeeded", METRICS, 0.25)
    (pushed,) = pushgateway.pushes
    assert (pushed["method"], pushed["path"]) == ("PUT", "/metrics/job/triage")
    found = samples(pushed["body"])
    assert value(found, "sleipnir_runs_total", job="triage", status="succeeded") == 1
    assert value(found, "sleipnir_last_run_error_rate", job="triage") == 0.1
    assert value(found, "sleipnir_cost_dollars_total", job="triage") == 0.25
    assert "Authorization" not in pushed["headers"]


def test_export_to_pushgateway_with_credentials(pushgateway: Pushgateway, tmp_path: Path) -> None:
    url = pushgateway.url.replace("http://", "http://pusher:s3cret-pw@")
    settings = {"export_to": "pushgateway", "pushgateway_url": url, "metrics": ["retries"]}
    line = export_after_run(settings, root=str(tmp_path), job="nightly", status="failed", metrics=METRICS, cost=None)
    assert line == f"metrics pushed to {pushgateway.url.replace('http://', 'http://pusher:***@')} (job nightly)"
    (pushed,) = pushgateway.pushes
    assert pushed["path"] == "/metrics/job/nightly"
    assert pushed["headers"]["Authorization"] == "Basic " + base64.b64encode(b"pusher:s3cret-pw").decode()
    found = samples(pushed["body"])
    assert families(found) == {
        "sleipnir_runs_total",
        "sleipnir_last_run_timestamp_seconds",
        *SERIES["retries"],  # the retries and the rate limits that caused them
    }
    assert value(found, "sleipnir_runs_total", job="nightly", status="failed") == 1


def test_a_failed_push_is_a_message_never_an_exception(
    pushgateway: Pushgateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pushgateway.status = 500
    url = pushgateway.url.replace("http://", "http://pusher:s3cret-pw@")
    settings = {"export_to": "pushgateway", "pushgateway_url": url}
    line = export_after_run(settings, root=str(tmp_path), job="j", status="succeeded", metrics=METRICS, cost=None)
    assert line is not None and line.startswith("metrics not pushed to http://pusher:***@127.0.0.1:")
    assert "500" in line and "s3cret-pw" not in line
    assert line in caplog.messages

    closed = f"http://127.0.0.1:{_closed_port()}"
    line = export_after_run(
        {"export_to": "pushgateway", "pushgateway_url": closed}, root=str(tmp_path), job="j", status="succeeded",
        metrics=METRICS, cost=None,
    )  # fmt: skip
    assert line is not None and line.startswith(f"metrics not pushed to {closed}: ")

    line = export_after_run({"export_to": "pushgateway"}, root=str(tmp_path), job="j", status="ok", metrics={}, cost=None)
    assert line == "metrics not pushed: `monitoring.pushgateway_url` is not set"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return int(port)
