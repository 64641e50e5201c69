"""`sleipnir serve` and `sleipnir trigger` as real processes: files dropped into a watched folder, HTTP POSTs to
webhooks with and without the secret, `/metrics` scraped and parsed with prometheus-client, `/healthz`, SIGTERM
draining a running job, a restart that neither repeats a file nor forgets an interrupted body, a reload, cron
fire times on a simulated clock with catch-up after a downtime, and conditions holding runs back.

Each test builds a workspace in tmp_path (the mock provider, or the LLM server subprocess for a slow job) and
runs `serve` as a subprocess on port 0; the port is read from its log. Waits poll for a state with a one-minute
safety net; nothing asserts a duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_server import LLMServer
from prometheus_client.parser import text_string_to_metric_families
from test_run_process import llm, make_workspace, process_env, server

from sleipnir.cli import main as cli_main

__all__ = ["llm", "server"]

LLM_LATENCY = 0.05
SECRET = "s3cret-webhook-value-7f1d"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def command(name: str) -> list[str]:
    """How to start `sleipnir NAME`: through the CLI once it registers the command, else the command object."""
    if name in cli_main.commands:
        return [sys.executable, "-m", "sleipnir", name]
    return [sys.executable, "-c", f"from sleipnir.cli.serve import {name}_command as c; c(prog_name='sleipnir {name}')"]


def wait_for(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `ready()`; fail if the process ends first, or after a minute (a safety net, not a timing)."""
    deadline = time.monotonic() + 60
    while not ready():
        if process is not None and process.poll() is not None:
            pytest.fail(f"serve ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after 60 s")
        time.sleep(0.02)


class Serve:
    """`sleipnir serve ROOT --port 0` in the background; its output goes to files under `logs`."""

    def __init__(self, root: Path, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.err_path = logs / "stderr"
        with (logs / "stdout").open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen([*command("serve"), str(root), "--port", "0"], cwd=root, env=env, stdout=out, stderr=err)
        self.port = 0
        wait_for(lambda: LISTENING.search(self.stderr()) is not None, "the HTTP server", self.process)
        match = LISTENING.search(self.stderr())
        assert match is not None
        self.port = int(match.group(1))
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        wait_for(ready, what, self.process)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def serving(root: Path, env: dict[str, str], logs: Path) -> Iterator[Serve]:
    served = Serve(root, env, logs)
    try:
        yield served
    finally:
        served.close()


def runs(root: Path, job: str) -> list[dict[str, Any]]:
    """The runs of `job` recorded in the workspace's ledger, oldest first."""
    path = root / ".sleipnir" / "state.db"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
        try:
            rows = connection.execute(
                "SELECT run_id, plan_id, status, summary FROM sleipnir_runs WHERE job = ? ORDER BY started_at", (job,)
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [{"run_id": r, "plan_id": p, "status": s, "summary": json.loads(m) if m else {}} for r, p, s, m in rows]


def finished(root: Path, job: str) -> list[dict[str, Any]]:
    return [run for run in runs(root, job) if run["status"] != "running"]


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "text": f"review {i}: great product"}) + "\n" for i in ids), encoding="utf-8")


INBOX = """\
    job:
      name: inbox
      triggers:
        - type: file_created
          path: inbox/*.jsonl
        - type: webhook
          endpoint: /hooks/inbox
          secret_env: INBOX_WEBHOOK_SECRET
      prompts:
        - name: scorer
          version: 1.0.0
          model: mock
      output:
        path: out/inbox.jsonl
        mode: append
      monitoring:
        export_to: prometheus
    """


def scheduled(name: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        job:
          name: {name}
          input:
            path: data/items.jsonl
          prompts:
            - name: scorer
              version: 1.0.0
              model: mock
          output:
            path: out/{name}.jsonl
          monitoring:
            export_to: prometheus
        """
    ) + textwrap.indent(textwrap.dedent(extra), "  ")


# -- file triggers ------------------------------------------------------------------------------------------


def test_each_new_file_is_processed_once_and_not_again_after_a_restart(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/inbox.yaml": INBOX})
    env = process_env(INBOX_WEBHOOK_SECRET=SECRET)
    inbox = ws / "inbox"
    with serving(ws, env, tmp_path / "first") as serve:
        write_rows(inbox / "a.jsonl", ["a1", "a2"])
        staged = ws / "b.jsonl.part"
        write_rows(staged, ["b1"])
        os.replace(staged, inbox / "b.jsonl")  # moved in whole, as careful writers do
        write_rows(inbox / "notes.txt", ["ignored"])
        serve.wait_for(lambda: len(finished(ws, "inbox")) >= 2, "two runs")
        assert serve.stop() == 0
    first = finished(ws, "inbox")
    assert [r["status"] for r in first] == ["succeeded", "succeeded"]
    assert sorted(row["id"] for row in lines(ws / "out" / "inbox.jsonl")) == ["a1", "a2", "b1"]

    write_rows(inbox / "c.jsonl", ["c1"])  # arrives while serve is down
    with serving(ws, env, tmp_path / "second") as serve:
        serve.wait_for(lambda: len(finished(ws, "inbox")) >= 3, "the file that came during the downtime")
        write_rows(inbox / "d.jsonl", ["d1", "d2"])
        serve.wait_for(lambda: len(finished(ws, "inbox")) >= 4, "the new file")
        assert serve.stop() == 0
    assert len(runs(ws, "inbox")) == 4, "a.jsonl and b.jsonl were not processed again"
    assert sorted(row["id"] for row in lines(ws / "out" / "inbox.jsonl")) == ["a1", "a2", "b1", "c1", "d1", "d2"]


# -- webhooks, /metrics, /healthz ---------------------------------------------------------------------------


def test_webhooks_need_the_secret_and_a_sound_body_and_metrics_count_the_runs(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/inbox.yaml": INBOX})
    env = process_env(INBOX_WEBHOOK_SECRET=SECRET)
    with serving(ws, env, tmp_path / "logs") as serve:
        post = serve.http.post
        one = json.dumps({"id": "w1", "text": "great"}).encode()
        assert post("/hooks/inbox", content=one).status_code == 401
        refused = post("/hooks/inbox", content=one, headers={"Authorization": "Bearer not-the-secret"})
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        bearer = post("/hooks/inbox", content=one, headers={"Authorization": f"Bearer {SECRET}"})
        assert bearer.status_code == 202 and bearer.json()["items"] == 1
        two = json.dumps([{"id": "w2", "text": "awful"}, {"id": "w3", "text": "fine"}]).encode()
        signature = hmac.new(SECRET.encode(), two, hashlib.sha256).hexdigest()
        signed = post("/hooks/inbox", content=two, headers={"X-Sleipnir-Signature": f"sha256={signature}"})
        assert signed.status_code == 202 and signed.json()["items"] == 2
        forged = post("/hooks/inbox", content=two + b" ", headers={"X-Sleipnir-Signature": f"sha256={signature}"})
        assert forged.status_code == 401
        auth = {"Authorization": f"Bearer {SECRET}"}
        big = b'{"id": "big", "text": "' + b"x" * (1 << 20) + b'"}'
        assert post("/hooks/inbox", content=big, headers=auth).status_code == 413
        malformed = post("/hooks/inbox", content=b'{"id": ', headers=auth)
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
        scalar = post("/hooks/inbox", content=b'[{"id": "ok"}, 7]', headers=auth)
        assert scalar.status_code == 400 and "item 1 of the array is int" in scalar.json()["error"]
        assert post("/hooks/elsewhere", content=one, headers=auth).status_code == 404

        accepted = {bearer.json()["run_id"], signed.json()["run_id"]}
        serve.wait_for(lambda: len(finished(ws, "inbox")) >= 2, "the two accepted runs")
        assert {r["run_id"] for r in finished(ws, "inbox")} == accepted

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            scraped = serve.http.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scraped.text)
                for s in family.samples
            }

        # A run is counted once serve has its result, just after its record is written: poll, never race it.
        succeeded = ("sleipnir_runs_total", (("job", "inbox"), ("status", "succeeded")))
        serve.wait_for(lambda: scrape().get(succeeded) == 2, "both runs counted in /metrics")
        samples = scrape()
        assert samples[succeeded] == 2
        assert samples[("sleipnir_items_total", (("job", "inbox"), ("outcome", "succeeded")))] == 3

        health = serve.http.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["uptime"] > 0
        assert [(j["name"], j["triggers"]) for j in body["jobs"]] == [("inbox", ["file_created", "webhook"])]
        assert serve.stop() == 0
    assert len(runs(ws, "inbox")) == 2, "no refused request started a run"
    assert sorted(row["id"] for row in lines(ws / "out" / "inbox.jsonl")) == ["w1", "w2", "w3"]
    log = serve.stderr()
    assert "refused a request without a valid secret" in log
    assert SECRET not in log
    assert not list((ws / ".sleipnir" / "incoming").glob("*/*.jsonl")), "finished bodies are removed"


def slow_job(name: str, when: str, source: str | None = None) -> str:
    """A job scoring its rows one at a time at the LLM server (`${LLM_URL}`), slow enough to stop mid-run; `when`
    is its `triggers:` or `schedule:`, `source` its input file."""
    body = (
        f"name: {name}\n{when}input:\n" + (f"  path: {source}\n" if source else "") + "  batch_size: 4\n"
        "prompts:\n  - name: scorer\n    version: 1.0.0\n    endpoint: ${LLM_URL}\n"
        f"output:\n  path: out/{name}.jsonl\nexecution:\n  concurrency: 1\n"
    )
    return "job:\n" + textwrap.indent(body, "  ")


SLOW = slow_job("slow", "triggers:\n  - type: webhook\n    endpoint: /hooks/slow\n")


def items_done(root: Path) -> int:
    with contextlib.closing(sqlite3.connect(root / ".sleipnir" / "state.db", timeout=10)) as connection:
        try:
            return int(connection.execute("SELECT COUNT(*) FROM sleipnir_items WHERE status = 'succeeded'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_sigterm_drains_a_running_job_and_the_next_start_resumes_its_body(tmp_path: Path, server: LLMServer) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/slow.yaml": SLOW})
    env = process_env(server)
    rows = [{"id": f"s{i:02d}", "text": f"review {i}"} for i in range(40)]
    with serving(ws, env, tmp_path / "first") as serve:
        accepted = serve.http.post("/hooks/slow", json=rows)
        assert accepted.status_code == 202
        serve.wait_for(lambda: items_done(ws) >= 3, "some items done")
        assert serve.stop() == 0, serve.stderr()
    [first] = runs(ws, "slow")
    assert first["run_id"] == accepted.json()["run_id"]
    assert first["status"] == "interrupted" and first["summary"]["items_processed"] < len(rows)
    assert "finishing the running jobs" in serve.stderr()
    assert len(list((ws / ".sleipnir" / "incoming" / "slow").glob("*.jsonl"))) == 1, "the body waits for the next start"

    with serving(ws, env, tmp_path / "second") as serve:
        serve.wait_for(lambda: any(r["status"] == "succeeded" for r in runs(ws, "slow")), "the resumed run")
        assert serve.stop() == 0
    resumed = runs(ws, "slow")[-1]
    assert resumed["summary"]["items_already_done"] == first["summary"]["items_processed"]
    assert sorted(row["id"] for row in lines(ws / "out" / "slow.jsonl")) == [r["id"] for r in rows]
    assert not list((ws / ".sleipnir" / "incoming" / "slow").glob("*.jsonl"))


# -- compile errors and reloads ------------------------------------------------------------------------------


def test_serve_refuses_to_start_when_the_workspace_does_not_compile(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/bad.yaml": scheduled("bad", 'schedule:\n  cron: "61 * * * *"\n')})
    done = subprocess.run([*command("serve"), str(ws), "--port", "0"], cwd=ws, env=process_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "invalid-cron" in done.stderr and "jobs/bad.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_reload_swaps_good_plans_and_keeps_them_when_the_change_does_not_compile(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/inbox.yaml": INBOX})
    env = process_env(INBOX_WEBHOOK_SECRET=SECRET)
    auth = {"Authorization": f"Bearer {SECRET}"}
    body = {"id": "r1", "text": "good"}
    with serving(ws, env, tmp_path / "logs") as serve:
        assert serve.http.post("/hooks/moved", json=body, headers=auth).status_code == 404
        (ws / "jobs" / "inbox.yaml").write_text(textwrap.dedent(INBOX).replace("/hooks/inbox", "/hooks/moved"), encoding="utf-8")
        serve.wait_for(lambda: serve.http.post("/hooks/moved", json=body, headers=auth).status_code == 202, "the new endpoint")
        assert serve.http.post("/hooks/inbox", json=body, headers=auth).status_code == 404
        (ws / "jobs" / "broken.yaml").write_text(scheduled("broken", 'schedule:\n  cron: "0 0 9 * * *"\n'), encoding="utf-8")
        serve.wait_for(lambda: "does not compile; the plans that run are kept" in serve.stderr(), "the failed reload")
        assert "invalid-cron" in serve.stderr()
        assert serve.http.post("/hooks/moved", json=body, headers=auth).status_code == 202
        assert serve.stop() == 0


# -- schedules on a simulated clock, catch-up and conditions ------------------------------------------------


def scraped_samples(serve: Serve) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = serve.http.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def test_cron_runs_on_a_simulated_clock_and_catchup_makes_up_a_downtime(tmp_path: Path) -> None:
    hourly = 'schedule:\n  cron: "0 * * * *"\n  catchup: {policy}\n'
    ws = make_workspace(
        tmp_path / "ws",
        {
            "jobs/all.yaml": scheduled("hourly_all", hourly.format(policy="all")),
            "jobs/latest.yaml": scheduled("hourly_latest", hourly.format(policy="latest")),
            "jobs/none.yaml": scheduled("hourly_none", hourly.format(policy="none")),
            "jobs/night.yaml": scheduled(
                "night_only",
                'schedule:\n  cron: "0 * * * *"\nconditions:\n  - type: time_window\n    start: "22:00"\n    end: "06:00"\n',
            ),
        },
    )
    write_rows(ws / "data" / "items.jsonl", ["i1", "i2"])
    jobs = ("hourly_all", "hourly_latest", "hourly_none")

    # 08:59:59 on a clock at real speed: the 09:00 runs come a second later; night_only is held back.
    env = process_env(SLEIPNIR_CLOCK_START="2024-05-01T08:59:59Z")
    with serving(ws, env, tmp_path / "morning") as serve:
        serve.wait_for(lambda: all(len(finished(ws, job)) == 1 for job in jobs), "the 09:00 runs")
        serve.wait_for(lambda: "held back" in serve.stderr(), "the held run")
        # A run's metrics are exported after its ledger entry ends: wait for them too.
        succeeded = ("sleipnir_runs_total", (("job", "hourly_all"), ("status", "succeeded")))
        serve.wait_for(lambda: succeeded in scraped_samples(serve), "the runs' metrics")
        samples = scraped_samples(serve)
        assert samples[("sleipnir_runs_held_total", (("job", "night_only"), ("reason", "time_window")))] == 1
        assert samples[("sleipnir_runs_total", (("job", "hourly_all"), ("status", "succeeded")))] == 1
        assert serve.stop() == 0
    assert "time_window: 09:00 UTC is outside 22:00-06:00" in serve.stderr()
    assert runs(ws, "night_only") == []

    # Down until 12:30: 10:00, 11:00 and 12:00 were missed.
    env = process_env(SLEIPNIR_CLOCK_START="2024-05-01T12:30:00Z")
    with serving(ws, env, tmp_path / "noon") as serve:
        serve.wait_for(lambda: len(finished(ws, "hourly_all")) == 4, "three runs made up")
        serve.wait_for(lambda: len(finished(ws, "hourly_latest")) == 2, "the latest run made up")
        serve.wait_for(lambda: "making up 1 missed runs" in serve.stderr() and "held back" in serve.stderr(), "night_only")
        assert serve.stop() == 0
    assert len(runs(ws, "hourly_none")) == 1, "catchup: none makes nothing up"
    assert all(run["status"] == "succeeded" for job in jobs for run in runs(ws, job))
    assert "making up 3 missed runs (all)" in serve.stderr()
    assert len(lines(ws / "out" / "hourly_all.jsonl")) == 2, "every scheduled run reads the source afresh"


MINUTELY = slow_job("minutely", 'schedule:\n  cron: "* * * * *"\n  overlap: queue\n  catchup: all\n', "data/items.jsonl")


def handled_until(root: Path, job: str) -> datetime:
    with contextlib.closing(sqlite3.connect(root / ".sleipnir" / "state.db", timeout=10)) as connection:
        [(until,)] = connection.execute("SELECT handled_until FROM sleipnir_schedule WHERE job = ?", (job,)).fetchall()
    return datetime.fromtimestamp(until, UTC)


def test_a_stop_gives_back_the_fire_times_it_left_unrun_and_the_next_start_makes_them_up(tmp_path: Path, server: LLMServer) -> None:
    """A run is going (slowly) when the next fire time comes due and queues behind it; SIGTERM then interrupts
    the first and stops the second before its turn. Neither fire time is lost: the next start resumes the first
    and runs the second, with every fire time missed while serve was down. Each fire time's items are called
    once, over both starts."""
    ws = make_workspace(tmp_path / "ws", {"jobs/minutely.yaml": MINUTELY})
    write_rows(ws / "data" / "items.jsonl", [f"m{i:02d}" for i in range(40)])
    env = process_env(server, SLEIPNIR_CLOCK="fast:60", SLEIPNIR_CLOCK_START="2024-05-01T08:58:00Z")
    started_at = re.compile(r"starting \(schedule (\S+)\)")
    with serving(ws, env, tmp_path / "first") as serve:
        serve.wait_for(lambda: started_at.search(serve.stderr()) is not None, "the first run")
        match = started_at.search(serve.stderr())
        assert match is not None
        first_fire = datetime.fromisoformat(match.group(1))
        second_fire = first_fire + timedelta(minutes=1)
        serve.wait_for(lambda: f"the run due {second_fire.isoformat()} waits for the previous one" in serve.stderr(), "the next run queued")
        assert serve.stop() == 0, serve.stderr()
    first_log = serve.stderr()
    [first] = runs(ws, "minutely")
    assert first["status"] == "interrupted" and 0 < first["summary"]["items_processed"] < 40
    then = "left for the next start or replica to make up (catchup: all)"
    assert f"serve's stop interrupted the run: {first_fire.isoformat()} {then}" in first_log
    assert f"serve stopped before the run's turn: {second_fire.isoformat()} {then}" in first_log

    # Back a few seconds after the stop, at real speed: no fire time comes due while the test looks.
    restart = handled_until(ws, "minutely") + timedelta(seconds=5)
    due = [
        fire
        for fire in (first_fire + timedelta(minutes=n) for n in range(60))
        if fire <= restart and f"skipped the run due {fire.isoformat()}" not in first_log
    ]
    env = process_env(server, SLEIPNIR_CLOCK_START=restart.isoformat())
    with serving(ws, env, tmp_path / "second") as serve:
        serve.wait_for(lambda: len(finished(ws, "minutely")) == 1 + len(due), "the runs made up")
        assert serve.stop() == 0, serve.stderr()
    assert f"making up {len(due)} missed runs (all): " + ", ".join(fire.isoformat() for fire in due) in serve.stderr()
    assert all(run["status"] == "succeeded" for run in runs(ws, "minutely")[1:])
    assert any(run["summary"]["items_already_done"] == first["summary"]["items_processed"] for run in runs(ws, "minutely"))
    with contextlib.closing(sqlite3.connect(ws / ".sleipnir" / "state.db", timeout=10)) as connection:
        scopes = connection.execute("SELECT COUNT(*) FROM sleipnir_items WHERE status = 'succeeded' GROUP BY plan_id").fetchall()
    assert scopes == [(40,)] * len(due), "each fire time's items, once"
    assert server.requests(0)["count"] == 40 * len(due), "no item was called twice"


# -- sleipnir trigger ---------------------------------------------------------------------------------------


def test_trigger_checks_the_conditions_then_runs_by_hand(tmp_path: Path) -> None:
    night = 'conditions:\n  - type: time_window\n    start: "22:00"\n    end: "06:00"\n'
    ws = make_workspace(tmp_path / "ws", {"jobs/night.yaml": scheduled("night_only", night)})
    write_rows(ws / "data" / "items.jsonl", ["i1", "i2"])

    def trigger(*args: str, start: str) -> subprocess.CompletedProcess[str]:
        env = process_env(SLEIPNIR_CLOCK_START=start)
        return subprocess.run([*command("trigger"), *args], cwd=ws, env=env, capture_output=True, text=True, timeout=120)

    held = trigger("night_only", start="2024-05-01T12:00:00Z")
    assert held.returncode == 1 and "held back: time_window: 12:00 UTC is outside 22:00-06:00" in held.stderr
    assert not (ws / "out" / "night_only.jsonl").exists()

    ran = trigger("night_only", "--json", start="2024-05-01T23:00:00Z")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    assert sorted(row["id"] for row in lines(ws / "out" / "night_only.jsonl")) == ["i1", "i2"]
    assert (ws / ".sleipnir" / "metrics" / "night_only.prom").exists(), "a one-off run writes the textfile"

    write_rows(tmp_path / "other.jsonl", ["o1"])
    other = trigger("night_only", "--input", str(tmp_path / "other.jsonl"), start="2024-05-01T23:00:00Z")
    assert other.returncode == 0, other.stderr
    # Runs accumulate in the output by item key: the by-hand run adds its row to the earlier ones.
    assert [row["id"] for row in lines(ws / "out" / "night_only.jsonl")] == ["i1", "i2", "o1"]

    unknown = trigger("nightly_onyl", start="2024-05-01T23:00:00Z")
    assert unknown.returncode == 1 and "no job or pipeline named `nightly_onyl`" in unknown.stderr
    # Beside a file that does not load (it may be the one that defines the name), both are said.
    (ws / "jobs" / "broken.yaml").write_text("job: [unclosed\n", encoding="utf-8")
    both = trigger("nightly_onyl", start="2024-05-01T23:00:00Z")
    assert both.returncode == 1 and "broken.yaml" in both.stderr, both.stderr
    assert "no job or pipeline named `nightly_onyl`" in both.stderr, both.stderr


# -- soak ---------------------------------------------------------------------------------------------------

SOAK_CRONS = (
    ("*/5 * * * *", "UTC"),
    ("*/10 * * * *", "UTC"),
    ("0 * * * *", "UTC"),
    ("15,45 * * * *", "UTC"),
    ("0 */3 * * *", "UTC"),
    ("5 * * * *", "UTC"),
    ("50 * * * *", "UTC"),
    ("20 9 * * *", "UTC"),
    ("0 0 * * *", "UTC"),
    ("@daily", "Europe/Oslo"),
    ("30 2 * * *", "Europe/Oslo"),
    ("*/30 * * * *", "Europe/Oslo"),
    ("@hourly", "America/New_York"),
    ("*/15 8-18 * * MON-FRI", "UTC"),
    ("0 12 * * *", "UTC"),
    ("40 */2 * * *", "Europe/Oslo"),
)
SOAK_START = "2024-03-30T12:00:30+00:00"
"""A Saturday noon: the simulated day takes in Oslo's spring-forward night."""


def _process_sample(pid: int) -> tuple[int, int]:
    """(resident memory in kB, open file descriptors) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.soak
def test_soak_a_simulated_day_of_20_jobs_with_real_triggers(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`serve` with 16 cron jobs on a clock 1,440 times as fast (a day a minute) and 4 triggered jobs fed by
    files and webhooks for about 50 s: no fire time missed or run twice, every file and body run once, and no
    growth in memory or open files. Run it with `pytest -m soak`."""
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the soak test runs only with -m soak")
    from datetime import datetime, timedelta

    from sleipnir.runtime.serve.schedule import CronSchedule

    files: dict[str, str] = {}
    for index, (cron, zone) in enumerate(SOAK_CRONS):
        files[f"jobs/cron_{index:02d}.yaml"] = scheduled(f"cron_{index:02d}", f'schedule:\n  cron: "{cron}"\n  timezone: {zone}\n  catchup: none\n')
    for index in range(2):
        files[f"jobs/files_{index}.yaml"] = INBOX.replace("name: inbox", f"name: files_{index}").replace(
            "inbox/*.jsonl", f"drop_{index}/*.jsonl"
        ).replace("/hooks/inbox", f"/hooks/unused_{index}").replace("out/inbox.jsonl", f"out/files_{index}.jsonl")
        files[f"jobs/hook_{index}.yaml"] = INBOX.replace("name: inbox", f"name: hook_{index}").replace(
            "inbox/*.jsonl", f"never_{index}/*.none"
        ).replace("/hooks/inbox", f"/hooks/in_{index}").replace("out/inbox.jsonl", f"out/hook_{index}.jsonl")
    ws = make_workspace(tmp_path / "ws", files)
    write_rows(ws / "data" / "items.jsonl", ["i1"])
    env = process_env(INBOX_WEBHOOK_SECRET=SECRET, SLEIPNIR_CLOCK="fast:1440", SLEIPNIR_CLOCK_START=SOAK_START)
    start = datetime.fromisoformat(SOAK_START)
    written = {0: 0, 1: 0}
    accepted = {0: 0, 1: 0}
    # Memory and open files are compared as the least of each over 10 s of the same load, early and late: runs
    # start and end all the time, and one sample counts the files of the runs in flight at that moment (one
    # sample early and one late once read 32 and 38).
    floors: dict[str, tuple[int, int]] = {}
    with serving(ws, env, tmp_path / "soak") as serve:
        pid = serve.process.pid
        began = time.monotonic()
        step = 0
        while time.monotonic() - began < 50:
            step += 1
            which = step % 2
            if step % 3 == 0:
                target = ws / f"drop_{which}" / f"f{step:05d}.jsonl"
                staged = ws / f".f{step:05d}.part"
                write_rows(staged, [f"f{step}"])
                os.replace(staged, target)
                written[which] += 1
            answer = serve.http.post(f"/hooks/in_{which}", json=[{"id": f"h{step}", "text": "great"}], headers={"Authorization": f"Bearer {SECRET}"})
            assert answer.status_code == 202
            accepted[which] += 1
            elapsed = time.monotonic() - began
            window = "baseline" if 10 < elapsed <= 20 else "end" if elapsed > 40 else None
            if window is not None:
                sample = _process_sample(pid)
                floor = floors.get(window, sample)
                floors[window] = (min(floor[0], sample[0]), min(floor[1], sample[1]))
            time.sleep(0.25)
        for which in (0, 1):
            serve.wait_for(lambda w=which: len(finished(ws, f"files_{w}")) == written[w], f"files_{which}'s runs")
            serve.wait_for(lambda w=which: len(finished(ws, f"hook_{w}")) == accepted[w], f"hook_{which}'s runs")

        def simulated_now() -> datetime:
            return datetime.fromisoformat(serve.http.get("/healthz").json()["now"])

        # Stop in a quiet stretch (no job fires between :55 and :00) of the last simulated hour, once the :55 fire
        # times have been taken up: 30 simulated seconds are 21 ms here, less than a loaded machine may take to
        # claim a fire time and start its run (a run not started by the stop is not made).
        quiet = start + timedelta(hours=23, minutes=55)
        schedules = {f"cron_{i:02d}": CronSchedule(cron=cron, timezone=zone) for i, (cron, zone) in enumerate(SOAK_CRONS)}
        due = {name: len(list(itertools.takewhile(lambda t: t <= quiet, s.fires(start)))) for name, s in schedules.items()}

        def skipped(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
            return samples.get(("sleipnir_runs_skipped_total", (("job", name), ("reason", "overlap"))), 0)

        def taken_up() -> bool:
            samples = scraped_samples(serve)
            return all(len(runs(ws, name)) + skipped(samples, name) >= due[name] for name in schedules)

        serve.wait_for(lambda: simulated_now() >= quiet + timedelta(seconds=30), "the end of the day")
        serve.wait_for(taken_up, "the last fire times taken up")
        samples = scraped_samples(serve)
        stopped_at = simulated_now()
        assert stopped_at < start + timedelta(hours=23, minutes=59, seconds=30), "stopped inside the quiet stretch"
        assert serve.stop() == 0
    for name, schedule in schedules.items():
        assert len(runs(ws, name)) + skipped(samples, name) == due[name], f"{name} ({schedule.cron}): every fire time once"
    for which in (0, 1):
        assert len(lines(ws / "out" / f"files_{which}.jsonl")) == written[which]
        assert len(lines(ws / "out" / f"hook_{which}.jsonl")) == accepted[which]
    baseline, end = floors["baseline"], floors["end"]
    assert end[1] <= baseline[1] + 4, f"open files grew: {baseline[1]} -> {end[1]}"
    assert end[0] <= baseline[0] * 1.25 + 8192, f"memory grew: {baseline[0]} kB -> {end[0]} kB"
