"""An OpenAI-compatible Chat Completions server on 127.0.0.1 with injectable faults, for tests and benchmarks.

Run it in its own process: `python tests/llm_server.py --port 0 --latency 0.05` prints the port it bound on
stdout, then serves until it is killed. `LLMServer` does that from Python (a context manager: start the
subprocess, read the port, stop it) and wraps the admin endpoints.

Chat: `POST .../chat/completions` (any prefix, so base URLs `http://127.0.0.1:PORT/v1` and `.../` both work)
answers with a `chat.completion` object, usage figures included, after `--latency` seconds. With `--api-key K`
a request without `Authorization: Bearer K` gets OpenAI's 401 (whose message echoes the key sent, as careless
servers do, so that tests can check the client never repeats it).

What the answer says is what a server with structured outputs gives (`tests/llm_answers.py`): an instance of
the `response_format` JSON Schema the request carries, or of a JSON Schema quoted in its messages (a model
following its instructions); a JSON object of its own shape when JSON is asked for with no schema; prose
otherwise. Values are made as Sleipnir's `mock` provider makes them (`sleipnir.runtime.providers.mock.reply`).
- `--responder fixed` gives every request the answer the first request with the same schema got: replies stay
  schema-valid and cost no generation, for load tests that must not wait for the server.
- `--structured-output json_object`: a server without structured outputs, answering 400 to `json_schema`.
- `--rpm R` (and `--burst B`): a real token bucket of R requests a minute; beyond it, 429 with `Retry-After`.
- `--every 429:7:0.2 --every 500:11 --every drop:13`: faults on every Nth request whatever the rate.

Admin endpoints (JSON in and out):
- `POST /_admin/faults` with a list of faults (or one), queued in order; each applies to the next `count`
  (default 1) chat requests: `{"kind": "429", "retry_after": 2}` or `{"kind": "429", "retry_after_ms": 1500}`;
  `{"kind": "500"}`, `{"kind": "503"}` (also with `retry_after`) or any other status such as `{"kind": "401"}`;
  `{"kind": "slow", "delay": 1.5}` (a normal reply, late); `{"kind": "bad_json"}` (200, a body that is not
  JSON); `{"kind": "schema_invalid"}` (200, content `{"unexpected": 1}`, which no schema with required fields
  or `additionalProperties: false` accepts); `{"kind": "drop"}` (the connection is closed without a reply);
  `{"kind": "hang"}` (never answered); `{"kind": "context_length"}` (OpenAI's 400 `context_length_exceeded`);
  `{"kind": "400", "message": "..."}` (any status with that error message).
- `POST /_admin/every` replaces the periodic faults: `[{"kind": "429", "every": 7, "retry_after": 0.2}, ...]`.
- `GET /_admin/requests?last=N` -> `{"count": chat requests received, "statuses": {status: count}, "bodies":
  the last N request bodies}`.
- `POST /_admin/reset` clears the queued and periodic faults, the counts and the recorded bodies.

The HTTP/1.1 side is a minimal keep-alive parser on an asyncio `Protocol` (Content-Length bodies, one request
at a time per connection), because the server must never be a benchmark's bottleneck; see `--help` and
`tests/test_providers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from llm_answers import UNSUPPORTED_FORMAT, Bucket, Periodic, schema_in_request

from sleipnir.runtime.providers.mock import estimate_tokens, reply

__all__ = ["LLMServer", "Settings", "serve"]

CONTEXT_LENGTH_ERROR = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "131072 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# A chat.completion object as a template: cheaper than building and encoding a dict for every reply.
_COMPLETION = (
    '{"id":"chatcmpl-%d","object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,'
    '"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout",
            429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


@dataclasses.dataclass(slots=True, kw_only=True)
class Settings:
    """How a server behaves (the command line's options)."""

    latency: float = 0.0
    api_key: str | None = None
    responder: str = "mock"
    structured_output: str = "json_schema"
    """`json_schema`: structured outputs are served; `json_object`: a `json_schema` request gets a 400."""
    rpm: float | None = None
    burst: float | None = None
    every: tuple[str, ...] = ()
    """Periodic faults, `KIND:N[:RETRY_AFTER]`."""


class _State:
    """What one server process knows: its settings, the fault queues, the counts and the requests seen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latency = settings.latency
        self.api_key = settings.api_key
        self.responder = settings.responder
        self.faults: collections.deque[list[Any]] = collections.deque()  # [fault, remaining]
        self.periodic = Periodic([Periodic.parse(rule) for rule in settings.every])
        self.bucket = Bucket(settings.rpm, settings.burst) if settings.rpm else None
        self.fixed: dict[str | None, str] = {}  # the `fixed` responder's answers, by the schema's JSON
        self.count = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.bodies: collections.deque[bytes] = collections.deque(maxlen=1000)
        self.answered = 0
        self.answer_seconds = 0.0
        """Chat replies sent after a `--latency` wait, and the seconds from reading each request to writing its
        reply: how late the timers fire, beside the latency asked for (`benchmarks/runtime.py` prints it)."""

    def next_fault(self) -> dict[str, Any] | None:
        if self.faults:
            entry = self.faults[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self.faults.popleft()
            return dict(entry[0])
        return self.periodic.fault(self.count)

    def reset(self) -> None:
        self.faults.clear()
        self.periodic = Periodic()
        self.fixed.clear()
        self.bodies.clear()
        self.statuses.clear()
        self.count = 0
        self.answered = 0
        self.answer_seconds = 0.0


def _response(status: int, body: bytes, extra: str = "", content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _error(status: int, message: str, kind: str = "server_error", code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def _parsed(body: bytes) -> Any:
    """A recorded body as JSON, or as text when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _line_end(head: bytes, start: int) -> int:
    """Where the header line running at `start` ends: the next CRLF, or the end of the head."""
    at = head.find(b"\r\n", start)
    return len(head) if at < 0 else at


class _Connection(asyncio.Protocol):
    """One client connection: parse requests in order, answer each (maybe later), keep the connection open."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.buffer = b""
        self.busy = False
        self.read_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        # Header names are found in the lower-cased head with `find`, not by splitting it into lines: this
        # loop runs once a request, and a benchmark must not wait for it.
        while self.transport is not None and not self.busy:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lower = buffer[:end].lower()
            if b"\r\ntransfer-encoding:" in lower:
                self._finish(_response(411, _error(411, "send a Content-Length")), close=True)
                return
            at = lower.find(b"\r\ncontent-length:")
            length = int(lower[at + 17 : _line_end(lower, at + 2)]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                return
            body = buffer[end + 4 : end + 4 + length]
            self.buffer = buffer[end + 4 + length :]
            close = b"\r\nconnection: close" in lower
            authorization = None
            if self.state.api_key is not None and (at := lower.find(b"\r\nauthorization:")) >= 0:
                authorization = buffer[at + 16 : _line_end(lower, at + 2)].decode("latin-1").strip()
            method, _, rest = buffer[: _line_end(lower, 0)].decode("latin-1").partition(" ")
            self.busy = True
            self.read_at = time.perf_counter()
            self._dispatch(method, rest.rpartition(" ")[0], body, authorization, close)

    def _dispatch(
        self, method: str, target: str, body: bytes, authorization: str | None, close: bool
    ) -> None:
        path, _, query = target.partition("?")
        if path.endswith("/chat/completions") and method == "POST":
            self._chat(body, authorization, close)
        elif path.startswith("/_admin/"):
            try:
                answer = _response(200, json.dumps(self._admin(method, path, query, body)).encode())
            except (ValueError, TypeError, AttributeError) as error:
                answer = _response(400, _error(400, f"bad admin call: {error}", "invalid_request_error"))
            self._finish(answer, close)
        else:
            self._finish(
                _response(404, _error(404, f"no route {method} {path}", "invalid_request_error")), close
            )

    def _admin(self, method: str, path: str, query: str, body: bytes) -> Any:
        state = self.state
        if path == "/_admin/faults" and method == "POST":
            faults = json.loads(body)
            for fault in faults if isinstance(faults, list) else [faults]:
                state.faults.append([fault, int(fault.get("count", 1))])
            return {"queued": len(state.faults)}
        if path == "/_admin/every" and method == "POST":
            rules = json.loads(body)
            state.periodic = Periodic(rules if isinstance(rules, list) else [rules])
            return {"every": state.periodic.rules}
        if path == "/_admin/requests":
            last = int(dict(p.partition("=")[::2] for p in query.split("&") if p).get("last", 10))
            bodies = list(state.bodies)[-last:] if last > 0 else []
            return {
                "count": state.count,
                "statuses": dict(state.statuses),
                "bodies": [_parsed(b) for b in bodies],
                "answered": state.answered,
                "answer_seconds": state.answer_seconds,
            }
        if path == "/_admin/reset" and method == "POST":
            state.reset()
            return {"reset": True}
        return {"error": f"unknown admin call {method} {path}"}

    def _chat(self, body: bytes, authorization: str | None, close: bool) -> None:
        state = self.state
        state.count += 1
        state.bodies.append(body)
        delay = state.latency
        if state.api_key is not None and authorization != f"Bearer {state.api_key}":
            sent = (authorization or "").removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {sent}. You can find your API key at https://example.invalid."
            )
            self._answer(delay, 401, _error(401, message, "invalid_request_error", "invalid_api_key"), close)
            return
        if state.bucket is not None and (wait := state.bucket.take()) is not None:
            message = "Rate limit reached for requests per minute; please try again later."
            self._answer(delay, 429, _error(429, message, "requests", "rate_limit_exceeded"), close, Bucket.headers(wait))
            return
        fault = state.next_fault()
        kind = str(fault.get("kind")) if fault else None
        if kind == "hang":
            state.statuses["hang"] += 1
            return
        if kind == "drop":
            state.statuses["drop"] += 1
            self._later(delay, None, close=True)
            return
        if kind == "slow":
            delay += float(fault.get("delay", 1.0)) if fault else 0.0
            kind = None
        if kind == "bad_json":
            self._answer(delay, 200, b'{"id": "chatcmpl-broken", "choices": [{"mess', close)
            return
        if kind == "context_length":
            self._answer(delay, 400, json.dumps(CONTEXT_LENGTH_ERROR).encode(), close)
            return
        if kind is not None and kind.isdigit() and fault is not None:
            self._status_fault(delay, int(kind), fault, close)
            return
        try:
            request = json.loads(body)
            model = str(request.get("model", ""))
            messages = request.get("messages") or []
        except (ValueError, AttributeError):
            self._answer(delay, 400, _error(400, "body is not JSON", "invalid_request_error"), close)
            return
        response_format = request.get("response_format") or {}
        if state.settings.structured_output != "json_schema" and response_format.get("type") == "json_schema":
            self._answer(delay, 400, json.dumps(UNSUPPORTED_FORMAT).encode(), close)
            return
        content = '{"unexpected": 1}' if kind == "schema_invalid" else self._content(request, model, messages)
        prompt_tokens = estimate_tokens(sum(len(str(m.get("content", ""))) for m in messages))
        completion_tokens = estimate_tokens(len(content))
        answer = _COMPLETION % (
            state.count,
            int(time.time()),
            json.dumps(model),
            json.dumps(content),
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
        )
        self._answer(delay, 200, answer.encode(), close)

    def _status_fault(self, delay: float, status: int, fault: Mapping[str, Any], close: bool) -> None:
        extra = ""
        if "retry_after" in fault:
            extra += f"Retry-After: {fault['retry_after']}\r\n"
        if "retry_after_ms" in fault:
            extra += f"retry-after-ms: {fault['retry_after_ms']}\r\n"
        kind_name = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
        message = str(fault.get("message") or f"injected {status}")
        self._answer(delay, status, _error(status, message, kind_name), close, extra)

    def _content(self, request: Mapping[str, Any], model: str, messages: list[Any]) -> str:
        schema, wants_json = schema_in_request(request)
        if self.state.responder != "fixed":
            return reply(model, messages, schema, json_output=wants_json)
        key = json.dumps(schema, sort_keys=True) if schema is not None else None
        cached = self.state.fixed.get(key)
        if cached is None:
            cached = self.state.fixed[key] = reply(model, messages, schema, json_output=wants_json)
        return cached

    def _answer(self, delay: float, status: int, body: bytes, close: bool, extra: str = "") -> None:
        self.state.statuses[str(status)] += 1
        self._later(delay, _response(status, body, extra), close)

    def _later(self, delay: float, data: bytes | None, close: bool) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._finish_late, data, close)
        else:
            self._finish(data, close)

    def _finish_late(self, data: bytes | None, close: bool) -> None:
        if data is not None:
            state = self.state
            state.answered += 1
            state.answer_seconds += time.perf_counter() - self.read_at
        self._finish(data, close)

    def _finish(self, data: bytes | None, close: bool) -> None:
        """Send `data` (None: drop the connection unanswered), then go on with any pipelined request."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if data is None:
            transport.abort()
            return
        transport.write(data)
        if close:
            transport.close()
            return
        self.busy = False
        if self.buffer:
            self._process()


async def serve(host: str, port: int, settings: Settings) -> None:
    """Serve until cancelled; print the bound port on stdout first."""
    state = _State(settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), host, port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat reply")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--responder", choices=("mock", "fixed"), default="mock")
    parser.add_argument("--structured-output", choices=("json_schema", "json_object"), default="json_schema")
    parser.add_argument("--rpm", type=float, default=None, help="a token bucket of this many requests a minute")
    parser.add_argument("--burst", type=float, default=None, help="the bucket's size (default: a second's worth)")
    parser.add_argument("--every", action="append", default=[], help="a periodic fault, KIND:N[:RETRY_AFTER]")
    args = parser.parse_args(argv)
    settings = Settings(
        latency=args.latency,
        api_key=args.api_key,
        responder=args.responder,
        structured_output=args.structured_output,
        rpm=args.rpm,
        burst=args.burst,
        every=tuple(args.every),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, settings))


class LLMServer:
    """The server in a subprocess: `with LLMServer(latency=0.05) as server: ... server.base_url ...`.

    The admin helpers talk to the running server over HTTP, so they work from any thread or process.
    """

    def __init__(self, *, python: str = sys.executable, **settings: Any) -> None:
        self.settings = Settings(**settings)
        self.python = python
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> LLMServer:
        """Start the process and wait (at most `timeout` seconds) until it prints its port."""
        settings = self.settings
        command = [self.python, os.path.abspath(__file__), "--port", "0", "--latency", str(settings.latency)]
        command += ["--responder", settings.responder, "--structured-output", settings.structured_output]
        command += ["--api-key", settings.api_key] if settings.api_key else []
        command += ["--rpm", str(settings.rpm)] if settings.rpm else []
        command += ["--burst", str(settings.burst)] if settings.burst else []
        for rule in settings.every:
            command += ["--every", rule]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the LLM server did not start (it printed {line!r}); see its stderr above")
        self.port = int(line)
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        with self._opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def add_faults(self, *faults: Mapping[str, Any]) -> None:
        """Queue faults for the next chat requests, in order (see the module docstring for their kinds)."""
        self._call("POST", "/_admin/faults", [dict(f) for f in faults])

    def set_every(self, *rules: Mapping[str, Any]) -> None:
        """Replace the periodic faults: `{"kind": "429", "every": 7, "retry_after": 0.2}`, ..."""
        self._call("POST", "/_admin/every", [dict(r) for r in rules])

    def requests(self, last: int = 10) -> dict[str, Any]:
        """`{"count": chat requests so far, "bodies": the last `last` request bodies, parsed}`."""
        result: dict[str, Any] = self._call("GET", f"/_admin/requests?last={last}")
        return result

    def reset(self) -> None:
        """Clear the queued and periodic faults, the counts and the recorded bodies."""
        self._call("POST", "/_admin/reset", {})


if __name__ == "__main__":
    main()
