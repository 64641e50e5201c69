"""A small language-server client for tests and benchmarks: JSON-RPC over a real `sleipnir lsp` process's
stdin and stdout (or another server's, such as yaml-language-server), framed with `Content-Length` headers as
editors frame it. Requests from the server (`workspace/configuration`, `client/registerCapability`) are answered
by `answer`, or with null."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

Message = dict[str, Any]


class Client:
    def __init__(
        self,
        cwd: Path,
        command: Sequence[str] | None = None,
        answer: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.answer = answer
        self.writing = threading.Lock()
        self.process = subprocess.Popen(
            [*(command or (sys.executable, "-m", "sleipnir", "lsp"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self.ids = itertools.count(1)
        self.responses: dict[int, Message] = {}
        self.notifications: queue.Queue[tuple[float, Message]] = queue.Queue()
        self.arrived = threading.Condition()
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None
            message: Message = json.loads(stream.read(length))
            if "id" in message and "method" in message:  # a request from the server
                result = self.answer(message["method"], message.get("params")) if self.answer else None
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})
            elif "id" in message:
                with self.arrived:
                    self.responses[int(message["id"])] = message
                    self.arrived.notify_all()
            else:
                self.notifications.put((time.perf_counter(), message))

    def _send(self, message: Message) -> None:
        body = json.dumps(message).encode("utf-8")
        assert self.process.stdin is not None
        with self.writing:  # the reader thread answers the server's requests
            self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.process.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any, wait: float = 120) -> Any:
        number = next(self.ids)
        self._send({"jsonrpc": "2.0", "id": number, "method": method, "params": params})
        with self.arrived:
            if not self.arrived.wait_for(lambda: number in self.responses, timeout=wait):
                raise AssertionError(f"no answer to {method}")
            response = self.responses.pop(number)
        assert "error" not in response, response
        return response.get("result")

    def wait_for(self, accept: Callable[[Message], bool], wait: float = 120) -> tuple[float, Message]:
        """The first notification `accept` takes, with the time it arrived (skipping the others)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the notification never came")
            try:
                arrived, message = self.notifications.get(timeout=left)
            except queue.Empty:
                continue
            if accept(message):
                return arrived, message

    def start(self, root: Path, capabilities: Message | None = None) -> Any:
        capabilities = self.request(
            "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": capabilities or {}}
        )
        self.notify("initialized", {})
        return capabilities

    def open(self, path: Path) -> None:
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": path.as_uri(),
                    "languageId": "yaml",
                    "version": 1,
                    "text": path.read_text(encoding="utf-8"),
                }
            },
        )

    def change(self, path: Path, text: str, version: int) -> float:
        """Send the whole new text of `path`; returns when it was sent."""
        sent = time.perf_counter()
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": path.as_uri(), "version": version}, "contentChanges": [{"text": text}]},
        )
        return sent

    def close(self) -> None:
        try:
            self.request("shutdown", None, wait=60)
            self.notify("exit", None)
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.reader.join(timeout=60)
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


def diagnostics_for(path: Path, code: str | None = None) -> Callable[[Message], bool]:
    """Accepts the diagnostics published for `path` (holding one with `code`, when given)."""

    def accept(message: Message) -> bool:
        if message.get("method") != "textDocument/publishDiagnostics":
            return False
        params = message["params"]
        if params["uri"] != path.as_uri():
            return False
        return code is None or any(d.get("code") == code for d in params["diagnostics"])

    return accept


PROMPTS = (("classifier", "1.0.0"), ("sentiment_analyzer", "2.1.0"), ("text_cleaner", "1.0.0"))


def job_text(index: int, prompt: tuple[str, str] | None = None) -> str:
    name, version = prompt or PROMPTS[index % len(PROMPTS)]
    return (
        f"job:\n  name: job_{index:03d}\n  description: Job number {index}\n"
        f"  input:\n    source: file\n    path: data/{index:03d}.jsonl\n"
        f"  prompts:\n    - name: {name}\n      version: {version}\n"
        f"  output:\n    path: out/{index:03d}.jsonl\n"
        f"  execution:\n    concurrency: 4\n"
    )


def make_workspace(root: Path, jobs: int, per_file: int = 10) -> list[Path]:
    """A workspace of `jobs` jobs using stdlib prompts, `per_file` to a file, and one pipeline over them all."""
    (root / "sleipnir.yaml").write_text("name: editor\n", encoding="utf-8")
    (root / "jobs").mkdir()
    files = []
    for first in range(0, jobs, per_file):
        path = root / "jobs" / f"batch_{first // per_file:02d}.yaml"
        path.write_text("---\n".join(job_text(i) for i in range(first, min(first + per_file, jobs))), encoding="utf-8")
        files.append(path)
    entries = "".join(f"    - {{id: j{i:03d}, name: job_{i:03d}}}\n" for i in range(jobs))
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(f"pipeline:\n  name: everything\n  jobs:\n{entries}", encoding="utf-8")
    files.append(pipeline)
    return files
