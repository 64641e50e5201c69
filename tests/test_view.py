"""The results viewer over HTTP: a real `sleipnir view` process over the ledger of real runs (the offline
`mock` model), read with httpx; and `serve`'s `/`. The browser test is tests/test_view_browser.py."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_run_process import make_workspace, process_env
from test_runs_command import history_workspace, mock_job, run_job
from test_serve import serving, wait_for

from sleipnir.runtime.engine.history import History
from sleipnir.runtime.engine.job import RunResult
from sleipnir.runtime.io.dbconn import parse_database_url
from sleipnir.runtime.serve import view

SCRIPT = "<script>alert('x')</script>"
SKIPPING = """\
error_handling:
  on_input_error:
    strategy: skip
"""
ROWS = [
    {"id": "k1", "text": "great product"},
    {"id": "k2", "text": f"awful {SCRIPT}"},
    {"id": "k3", "text": "fine"},
]


def write_rows(ws: Path, name: str, rows: list[dict[str, str]], bad_line: bool = True) -> None:
    lines = [json.dumps(row) for row in rows] + (["not json"] if bad_line else [])
    (ws / "data" / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Viewed:
    ws: Path
    before: RunResult
    after: RunResult
    other: RunResult
    http: httpx.Client
    base_url: str


@contextlib.contextmanager
def viewing(ws: Path, logs: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`sleipnir view --port 0` in `ws`; yields the process and its base URL."""
    logs.mkdir(parents=True, exist_ok=True)
    err = logs / "view.err"
    with err.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "sleipnir", "view", "--port", "0"], cwd=ws, env=process_env(), stderr=sink
        )
    try:
        wait_for(lambda: "http://127.0.0.1:" in err.read_text(), "the viewer's address", process)
        found = re.search(r"http://127\.0\.0\.1:\d+", err.read_text())
        assert found is not None
        yield process, found.group(0)
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, err.read_text()


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewed]:
    """Two runs of `reviews` (the second after one row's text changed), one of `other`, and the viewer."""
    ws = history_workspace(
        tmp_path_factory.mktemp("view") / "ws", {"reviews": mock_job("reviews", SKIPPING), "other": mock_job("other")}
    )
    write_rows(ws, "reviews", ROWS)
    before = run_job(ws, "reviews")
    write_rows(ws, "reviews", [*ROWS[:2], {"id": "k3", "text": "changed my mind"}])
    after = run_job(ws, "reviews", fresh=True)
    other = run_job(ws, "other")
    assert (before.status, after.status, other.status) == ("succeeded",) * 3
    with viewing(ws, ws.parent / "logs") as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        yield Viewed(ws, before, after, other, client, url)


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_runs_list_links_every_run(viewed: Viewed) -> None:
    page = viewed.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for run in (viewed.before, viewed.after, viewed.other):
        assert f'<a href="/runs/{run.run_id}">{run.run_id}</a>' in page.text
    assert page.text.index(viewed.other.run_id) < page.text.index(viewed.after.run_id) < page.text.index(viewed.before.run_id)
    one_job = viewed.http.get("/", params={"job": "other"}).text
    assert viewed.other.run_id in one_job and viewed.before.run_id not in one_job


def test_a_run_shows_inputs_outputs_and_errors_escaped(viewed: Viewed) -> None:
    page = viewed.http.get(f"/runs/{viewed.after.run_id}")
    assert page.status_code == 200
    shown = text_of(page.text)
    assert viewed.after.plan_id in shown and "2 ok" not in shown  # three rows read well, one bad line
    assert "3 ok, 1 skipped, 0 failed" in shown
    assert "data/reviews.jsonl:4: invalid JSON: Expecting value at column 1" in shown
    assert '"rationale": "changed my mind"' in shown and '"text": "great product"' in shown
    # What a model or an input wrote is text on the page, never markup.
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert SCRIPT in shown
    k2 = page.text.split('data-key="k2"')[1].split("</tr>")[0]
    output = k2.split('<pre class="output">')[1].split("</pre>")[0]
    assert "&lt;script&gt;" in output and '"rationale": "awful ' + SCRIPT in html.unescape(output)


def test_items_filter_by_status_and_search(viewed: Viewed) -> None:
    run = f"/runs/{viewed.after.run_id}"

    def keys(**params: str) -> list[str]:
        page = viewed.http.get(run, params=params)
        assert page.status_code == 200
        return re.findall(r'<tr class="item" data-key="([^"]+)">', page.text)

    assert keys() == ["k1", "k2", "k3", "row 3"]
    assert keys(status="skipped") == ["row 3"]
    assert keys(status="succeeded") == ["k1", "k2", "k3"]
    assert keys(q="CHANGED MY") == ["k3"]
    assert keys(q="invalid json") == ["row 3"]
    assert keys(q="100%_") == []
    assert keys(status="skipped", q="great") == []
    assert "No items skipped holding “great”" in text_of(viewed.http.get(run, params={"status": "skipped", "q": "great"}).text)


def test_two_runs_compare_item_by_item(viewed: Viewed) -> None:
    params = {"a": viewed.before.run_id, "b": viewed.after.run_id}
    page = viewed.http.get("/compare", params=params)
    assert page.status_code == 200
    changed = re.findall(r'<tr class="pair changed" data-key="([^"]+)">', page.text)
    same = re.findall(r'<tr class="pair" data-key="([^"]+)">', page.text)
    assert changed == ["k3"] and same == ["k1", "k2", "row 3"]
    assert "1 changed" in page.text
    cells = text_of(page.text.split('data-key="k3"')[1].split("</tr>")[0])
    assert '"rationale": "fine"' in cells and '"rationale": "changed my mind"' in cells
    only = viewed.http.get("/compare", params={**params, "changed": "1"}).text
    assert re.findall(r'data-key="([^"]+)"', only) == ["k3"]


def test_unknown_runs_are_404_and_other_jobs_do_not_compare(viewed: Viewed) -> None:
    typo = viewed.after.run_id[:-1] + ("0" if viewed.after.run_id[-1] != "0" else "1")
    missing = viewed.http.get(f"/runs/{typo}")
    assert missing.status_code == 404 and f"no run `{typo}` in the run ledger" in missing.text
    assert f'<a href="/runs/{viewed.after.run_id}">' in missing.text  # did you mean
    assert viewed.http.get("/compare", params={"a": viewed.before.run_id, "b": "nope"}).status_code == 404
    assert viewed.http.get("/compare").status_code == 404
    mixed = viewed.http.get("/compare", params={"a": viewed.before.run_id, "b": viewed.other.run_id})
    assert mixed.status_code == 400 and "compare two runs of one job" in mixed.text
    assert viewed.http.get("/nowhere").status_code == 404
    assert viewed.http.post("/").status_code == 405  # read-only


def test_viewing_never_writes_the_store(viewed: Viewed) -> None:
    state = viewed.ws / ".sleipnir" / "state.db"

    def digest() -> str:
        return hashlib.sha256(state.read_bytes()).hexdigest()

    was = digest()
    for path in ("/", f"/runs/{viewed.before.run_id}", f"/runs/{viewed.before.run_id}?q=x&status=failed"):
        assert viewed.http.get(path).status_code == 200
    assert viewed.http.get("/compare", params={"a": viewed.before.run_id, "b": viewed.after.run_id}).status_code == 200
    assert digest() == was


def test_an_empty_workspace_has_no_runs_yet(tmp_path: Path) -> None:
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")})
    with viewing(ws, tmp_path / "logs") as (_, url):
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "No runs yet" in page.text
        assert httpx.get(url + "/runs/abc", timeout=30).status_code == 404
    assert not (ws / ".sleipnir").exists()


WEBHOOK = """\
    job:
      name: hooked
      triggers:
        - type: webhook
          endpoint: /hooks/in
      prompts:
        - name: scorer
          version: 1.0.0
          model: mock
      output:
        path: out/hooked.jsonl
        mode: append
    """


def test_serve_answers_slash_with_the_viewer(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"jobs/hooked.yaml": WEBHOOK})
    with serving(ws, process_env(), tmp_path / "logs") as serve:
        accepted = serve.http.post("/hooks/in", content=json.dumps({"id": "w1", "text": "via a webhook"}).encode())
        assert accepted.status_code == 202
        run_id = accepted.json()["run_id"]
        serve.wait_for(lambda: '<td class="succeeded">' in serve.http.get("/").text, "the webhook's run, finished")
        listed = serve.http.get("/")
        assert listed.status_code == 200 and f'<a href="/runs/{run_id}">' in listed.text
        page = serve.http.get(f"/runs/{run_id}")
        assert page.status_code == 200 and "via a webhook" in text_of(page.text)
        assert serve.stop() == 0


def test_view_refuses_a_bad_state_and_a_taken_port_in_one_line(tmp_path: Path) -> None:
    bad = history_workspace(tmp_path / "bad", {"alpha": mock_job("alpha")}, manifest="name: bad\nstate: 5\n")
    done = subprocess.run([sys.executable, "-m", "sleipnir", "view"], cwd=bad, env=process_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == "error: sleipnir.yaml:2:8: `state` must be a path or a PostgreSQL URL\n"
    ws = history_workspace(tmp_path / "ws", {"alpha": mock_job("alpha")})
    with viewing(ws, tmp_path / "logs") as (_, url):
        port = url.rsplit(":", 1)[1]
        taken = subprocess.run(
            [sys.executable, "-m", "sleipnir", "view", "--port", port], cwd=ws, env=process_env(), capture_output=True, text=True, timeout=120
        )
        assert taken.returncode == 1 and taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: "), taken.stderr
        assert "Traceback" not in taken.stderr


def test_compare_reads_both_runs_a_window_at_a_time(viewed: Viewed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 2 keys give the pairs one window of 500 gives, changed or all, whatever the page size."""
    history = History(parse_database_url(".sleipnir/state.db", root=str(viewed.ws)))
    try:
        ids = viewed.before.run_id, viewed.after.run_id

        def pairs(changed_only: bool, wanted: int) -> list[tuple[str, bool]]:
            rows = view._pairs(history, *ids, changed_only=changed_only, wanted=wanted)
            return [(row["key"], row["changed"]) for row in rows]

        whole = pairs(False, 100)
        assert whole == [("k1", False), ("k2", False), ("k3", True), ("row 3", False)]
        monkeypatch.setattr(view, "_WINDOW", 2)
        assert pairs(False, 100) == whole and pairs(True, 100) == [("k3", True)]
        assert pairs(False, 2) == whole[:2]
    finally:
        history.close()
