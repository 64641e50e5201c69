"""The results viewer in a real browser: headless Chromium (Debian's `chromium`, which scripts/test installs)
reads the pages `sleipnir view` serves after a real `sleipnir run-job` on the offline `mock` model, and follows
their links as a user would: the runs list, one run, its skipped items.

Chromium's `--dump-dom` prints the DOM after the page loaded. Without Chromium the test is skipped, except under
`CI=true`, where a missing browser fails.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_process import process_env
from test_runs_command import history_workspace, mock_job
from test_view import SKIPPING, viewing

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
    ws = history_workspace(tmp_path / "ws", {"reviews": mock_job("reviews", SKIPPING)})
    (ws / "data" / "reviews.jsonl").write_text(
        '{"id": "a1", "text": "arrived early, works well"}\n{"id": "a2", "text": "broken <b>twice</b>"}\nnot json\n',
        encoding="utf-8",
    )
    ran = subprocess.run(
        [sys.executable, "-m", "sleipnir", "run-job", "reviews", "--json"], cwd=ws, env=process_env(), capture_output=True, text=True
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
        outputs = [html.unescape(o) for o in re.findall(r'<pre class="output">(.*?)</pre>', run, re.S)]
        assert any('"rationale": "arrived early, works well"' in o for o in outputs), outputs
        # An input's markup is shown as text: the browser made no <b> element of it.
        assert any('"rationale": "broken <b>twice</b>"' in o for o in outputs) and "<b>twice</b>" not in run
        errors = [html.unescape(e) for e in re.findall(r'<pre class="error">(.*?)</pre>', run, re.S)]
        assert errors == ["data/reviews.jsonl:3: invalid JSON: Expecting value at column 1"]

        skipped = dump_dom(browser, url + link(run, "skipped (1)"), tmp_path / "profile-3")
        assert re.findall(r'<tr class="item" data-key="([^"]+)">', skipped) == ["row 2"]
