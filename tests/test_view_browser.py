"""The results viewer in a real browser: headless Chromium (Debian's `chromium`, which scripts/test installs)
reads the pages `sleipnir view` serves after a real `sleipnir run-job` against the loopback LLM server
(tests/llm_server.py) with one injected failure, and follows their links as a user would: the runs list, one
run, its skipped items.

Chromium's `--dump-dom` prints the DOM after the page loaded. Without Chromium the test is skipped, except under
`CI=true`, where a missing browser fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from llm_server import LLMServer
from test_run_process import make_workspace, process_env, scoring_job
from test_view import viewing

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless, and nothing that reaches for the network beyond the page asked for (the machine is offline)."""


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        message = "Chromium is not installed: scripts/test installs Debian's `chromium` (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The page's DOM as Chromium rendered it, from a new empty profile."""
    profile.mkdir(parents=True)
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def link(dom: str, text: str) -> str:
    """The href of the link whose text is `text`."""
    found = re.search(r'<a href="([^"]+)">' + re.escape(html.escape(text, quote=False)) + r"</a>", dom)
    assert found is not None, f"no link {text!r} in the page"
    return html.unescape(found.group(1))


def test_chromium_lists_the_runs_opens_one_and_reads_an_output_and_a_failure(tmp_path: Path) -> None:
    browser = chromium()
    job = scoring_job("reviews", concurrency=1, extra="error_handling:\n  on_prompt_failure:\n    strategy: skip\n")
    ws = make_workspace(tmp_path / "ws", {"jobs/reviews.yaml": job})
    rows = [
        {"id": "a1", "text": "the model refuses this one"},
        {"id": "a2", "text": "arrived early, works well"},
        {"id": "a3", "text": "broken <b>twice</b>"},
    ]
    (ws / "data").mkdir()
    (ws / "data" / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with LLMServer() as server:
        server.add_faults({"kind": "400", "message": "this request was refused by the content policy"})
        ran = subprocess.run(
            [sys.executable, "-m", "sleipnir", "run-job", "reviews", "--json"],
            cwd=ws,
            env=process_env(server),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert ran.returncode == 0, ran.stderr
    run_id = re.search(r'"run_id": "([0-9a-f]+)"', ran.stdout)
    assert run_id is not None

    with viewing(ws, tmp_path / "logs") as (_, url):
        runs = dump_dom(browser, url + "/", tmp_path / "profile-1")
        assert "<h1>runs</h1>" in runs
        page = url + link(runs, run_id.group(1))

        run = dump_dom(browser, page, tmp_path / "profile-2")
        assert f"<h1>run {run_id.group(1)}</h1>" in run
        outputs = {
            key: json.loads(html.unescape(output))
            for key, output in re.findall(r'<tr class="item" data-key="([^"]+)">(?:(?!</tr>).)*?<pre class="output">(.*?)</pre>', run, re.S)
        }
        written = {row["id"]: row for row in map(json.loads, (ws / "out" / "scores.jsonl").read_text().splitlines())}
        assert set(outputs) == {"a2", "a3"} and outputs["a2"] == {"scorer": written["a2"]["scorer"]}, outputs
        inputs = [html.unescape(i) for i in re.findall(r"<td><pre>(.*?)</pre></td>", run, re.S)]
        # An input's markup is shown as text: the browser made no <b> element of it.
        assert any('"text": "broken <b>twice</b>"' in i for i in inputs) and "<b>twice</b>" not in run
        errors = [html.unescape(e) for e in re.findall(r'<pre class="error">(.*?)</pre>', run, re.S)]
        assert len(errors) == 1 and "this request was refused by the content policy" in errors[0], errors

        skipped = dump_dom(browser, url + link(run, "skipped (1)"), tmp_path / "profile-3")
        assert re.findall(r'<tr class="item" data-key="([^"]+)">', skipped) == ["a1"]


def test_without_chromium_ci_fails_and_elsewhere_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        chromium()
