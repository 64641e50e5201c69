"""`sleipnir run-job` does what a job's `logging`, `alerts` and `monitoring` ask, around its items."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sleipnir.cli import main


@pytest.fixture
def hook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_run_logs_alerts_and_exports_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = hook_server
    (tmp_path / "sleipnir.yaml").write_text("name: ops\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text(
        "".join(json.dumps({"id": n, "text": f"great product {n}"}) + "\n" for n in range(6)) + "not json\n",
        encoding="utf-8",
    )
    job = f"""
    job:
      name: watched
      input:
        path: items.jsonl
      prompts:
        - name: sentiment_analyzer
          model: mock
      output:
        path: out/watched.jsonl
      logging:
        level: INFO
        format: json
        destination: file
        path: logs/watched.log
      monitoring:
        export_to: textfile
      error_handling:
        on_input_error: {{strategy: skip}}
      alerts:
        - condition: items_processed >= 5
          action: webhook
          url: {url}
    """
    (tmp_path / "job.yaml").write_text(textwrap.dedent(job).lstrip(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run-job", "watched"])
    assert result.exit_code == 0, result.output

    records = [json.loads(line) for line in (tmp_path / "logs" / "watched.log").read_text().splitlines()]
    assert {r["event"] for r in records} >= {"start", "complete"}
    assert all(r["job"] == "watched" and r["run_id"] for r in records)
    [skipped] = [r for r in records if r["event"] == "item"]
    assert skipped["item"] == "row 6" and skipped["level"] == "WARNING" and "items.jsonl:7" in skipped["message"]

    [alert] = received
    assert alert["job"] == "watched" and "items_processed >= 5" in json.dumps(alert)

    text = (tmp_path / ".sleipnir" / "metrics" / "watched.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = families["sleipnir_runs"].samples
    assert any(s.labels == {"job": "watched", "status": "succeeded"} and s.value == 1 for s in runs)
    assert "metrics:" in result.stderr and "alert sent" in result.stderr
