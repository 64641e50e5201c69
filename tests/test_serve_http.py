"""serve's HTTP surface under hostile use (issue 12): per-webhook rate limits (429 with Retry-After), a nesting
limit on webhook bodies (400, never a RecursionError), `/metrics` behind a bearer token, and a warning when it
listens beyond this machine with an unauthenticated webhook. Real `serve` processes, as in tests/test_serve.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

from test_run_process import make_workspace, process_env
from test_serve import SECRET, command, serving, wait_for

from sleipnir.runtime.serve.triggers import json_depth

HOOKS = """\
    job:
      name: hooks
      triggers:
        - type: webhook
          endpoint: /hooks/guarded
          secret_env: HOOK_SECRET
        - type: webhook
          endpoint: /hooks/limited
          requests_per_minute: 2
      prompts:
        - name: scorer
          version: 1.0.0
          model: mock
      output:
        path: out/hooks.jsonl
        mode: append
    """
ONE = json.dumps({"id": "h1", "text": "fine"}).encode()


def test_json_depth_skips_strings_and_stops_past_the_limit() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}', 64) == 3
    assert json_depth(b'"\\"[[["', 64) == 0
    assert json_depth(b"[" * 100_000 + b"]" * 100_000, 64) == 65


def test_webhook_rate_limits_nesting_limits_and_a_metrics_token(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/hooks.yaml": HOOKS})
    env = process_env(HOOK_SECRET=SECRET, SLEIPNIR_METRICS_TOKEN="metrics-token-9")
    with serving(ws, env, tmp_path / "logs") as serve:
        post = serve.http.post
        auth = {"Authorization": f"Bearer {SECRET}"}
        deep = post("/hooks/guarded", content=b"[" * 100_000 + b"]" * 100_000, headers=auth)
        assert deep.status_code == 400 and deep.json()["error"] == "the body is nested deeper than 64 levels"
        many = json.dumps([{"id": str(i)} for i in range(10_001)]).encode()
        assert post("/hooks/guarded", content=many, headers=auth).json()["error"].endswith("more than 10,000")
        nested = {"id": "n", "deep": json.loads("[" * 60 + "]" * 60)}
        assert post("/hooks/guarded", content=json.dumps(nested).encode(), headers=auth).status_code == 202

        assert [post("/hooks/limited", content=ONE).status_code for _ in range(2)] == [202, 202]
        limited = post("/hooks/limited", content=ONE)
        assert limited.status_code == 429 and "2 requests a minute" in limited.json()["error"]
        assert 1 <= int(limited.headers["Retry-After"]) <= 30
        assert post("/hooks/guarded", content=ONE, headers=auth).status_code == 202, "each webhook has its own limit"

        assert serve.http.get("/metrics").status_code == 401
        assert serve.http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        scraped = serve.http.get("/metrics", headers={"Authorization": "Bearer metrics-token-9"})
        assert scraped.status_code == 200 and "sleipnir_" in scraped.text
        assert serve.stop() == 0
    log = serve.stderr()
    assert "Traceback" not in log and "RecursionError" not in log and "metrics-token-9" not in log


def test_serve_listens_on_loopback_and_warns_when_public_with_an_open_webhook(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/hooks.yaml": HOOKS})
    env = process_env(HOOK_SECRET=SECRET)
    with serving(ws, env, tmp_path / "logs") as serve:  # no --host: the LISTENING pattern wants 127.0.0.1
        assert serve.port > 0
        assert serve.stop() == 0
    assert "beyond this machine" not in serve.stderr()
    err = tmp_path / "public.err"
    with err.open("wb") as sink:
        process = subprocess.Popen([*command("serve"), str(ws), "--host", "0.0.0.0", "--port", "0"], cwd=ws, env=env, stderr=sink)
        try:
            wait_for(lambda: "listening on http://0.0.0.0:" in err.read_text(), "the public listener", process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    log = err.read_text()
    assert process.returncode == 0, log  # a SIGTERM as soon as it listens drains: the handlers are in place by then
    assert "SIGTERM: finishing the running jobs" in log, log
    warnings = re.findall(r"listening on 0\.0\.0\.0, beyond this machine, and the webhook (\S+) has no secret_env", log)
    assert warnings == ["/hooks/limited"], log
