"""`sleipnir check --watch` as a user runs it: a real process, real file edits, watchfiles underneath."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

JOB = """\
job:
  name: nightly
  input: {{source: file, path: data.jsonl}}
  prompts: [{{name: classifier, version: 1.0.0}}]
  output: {{path: out.jsonl}}
  schedule: {{cron: "{cron}"}}
"""


class Output:
    """The lines a process prints, read on a thread so that the test can wait for one without blocking."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        self.reader = threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True)
        self.reader.start()

    def until_summary(self, wait: float) -> list[str] | None:
        """The lines up to the next summary line (`ok:`, `failed:`, `passed:`), or None if none comes."""
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=wait)
            except queue.Empty:
                return None
            lines.append(line.rstrip("\n"))
            if line.startswith(("ok:", "failed:", "passed:")):
                return lines


def edit_until_rechecked(path: Path, text: str, output: Output) -> list[str]:
    """Write `text` to `path` until the watcher reports a re-check (it may not be watching yet at first)."""
    for _ in range(30):
        path.write_text(text, encoding="utf-8")
        report = output.until_summary(wait=2)
        if report is not None:
            return report
    raise AssertionError("the watcher never checked again")


def test_check_watch_prints_only_what_changed(tmp_path: Path) -> None:
    (tmp_path / "sleipnir.yaml").write_text("name: watched\n", encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(cron="0 9 * * *"), encoding="utf-8")
    (tmp_path / "other.yaml").write_text(JOB.replace("nightly", "other").format(cron="0 8 * * *"), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "sleipnir", "check", "--watch", "--color", "never", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    output = Output(process)
    try:
        first = output.until_summary(wait=120)
        assert first is not None and first[-1].startswith("ok: 3 documents in 3 files"), first

        broken = edit_until_rechecked(job, JOB.format(cron="61 9 * * *"), output)
        text = "\n".join(broken)
        assert "error[invalid-cron]" in text and "job.yaml:6:" in text, text
        assert "other.yaml" not in text, "only what changed is printed"
        assert broken[-1].startswith("failed: 1 error"), broken

        fixed = edit_until_rechecked(job, JOB.format(cron="0 10 * * *"), output)
        assert any(line.startswith("fixed: ") and "invalid-cron" in line for line in fixed), fixed
        assert fixed[-1].startswith("ok: 3 documents"), fixed
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        output.reader.join(timeout=60)
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == 0
