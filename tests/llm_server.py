"""An OpenAI-compatible Chat Completions server on 127.0.0.1 with injectable faults, for tests and benchmarks.

Run it in its own process: `python tests/llm_server.py --port 0 --latency 0.05` prints the port it bound on
stdout, then serves until it is killed. `LLMServer` does that from Python (a context manager: start the
subprocess, read the port, stop it) and wraps the admin endpoints.

Chat: `POST .../chat/completions` (any prefix, so base URLs `http://127.0.0.1:PORT/v1` and `.../` both work)
answers with a `chat.completion` object, usage figures included, after `--latency` seconds. With `--api-key K`
a request without `Authorization: Bearer K` gets OpenAI's 401 (whose message echoes the key sent, as careless
servers do, so that tests can check the client never repeats it).

What the answer says (`--responder`):
- `mock` (the default) answers as Sleipnir's `mock` provider would (`sleipnir.runtime.providers.mock.reply`):
  JSON satisfying a schema when one is known, else a short text. The provider sends only
  `response_format: {"type": "json_object"}`, never the schema, so the test tells the server the schema:
  `POST /_admin/schemas {"KEY": schema, ...}`, where KEY is a model name, or a marker text found in the system
  message (the first registered marker that occurs wins; the model is tried first). A request carrying
  `response_format.json_schema.schema` (OpenAI's structured outputs) uses that schema. A request that asks for
  JSON with no known schema gets `{"label": ..., "confidence": ...}` from a small sentiment schema.
- `fixed` gives every request the answer `mock` gave the first request with the same schema (or with none):
  replies stay schema-valid and cost no generation, for load tests that must not wait for the server.

Admin endpoints (JSON in and out):
- `POST /_admin/faults` with a list of faults (or one), queued in order; each applies to the next `count`
  (default 1) chat requests: `{"kind": "429", "retry_after": 2}` or `{"kind": "429", "retry_after_ms": 1500}`;
  `{"kind": "500"}`, `{"kind": "503"}` (also with `retry_after`) or any other status such as `{"kind": "401"}`;
  `{"kind": "slow", "delay": 1.5}` (a normal reply, late); `{"kind": "bad_json"}` (200, a body that is not
  JSON); `{"kind": "schema_invalid"}` (200, content `{"unexpected": 1}`, which no schema with required fields
  or `additionalProperties: false` accepts); `{"kind": "drop"}` (the connection is closed without a reply);
  `{"kind": "context_length"}` (OpenAI's 400 `context_length_exceeded`).
- `GET /_admin/requests?last=N` -> `{"count": chat requests received, "bodies": the last N request bodies}`.
- `POST /_admin/reset` clears the faults, the count, the recorded bodies and the schemas.

The HTTP/1.1 side is a minimal keep-alive parser on an asyncio `Protocol` (Content-Length bodies, one request
at a time per connection), because the server must never be a benchmark's bottleneck; see `--help` and
`tests/test_providers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
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

from sleipnir.runtime.providers.mock import estimate_tokens, reply

__all__ = ["LLMServer", "serve"]

DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral", "mixed"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
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
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class _State:
    """What one server process knows: its settings, the fault queue, the schemas and the requests seen."""

    def __init__(self, latency: float, api_key: str | None, responder: str) -> None:
        self.latency = latency
        self.api_key = api_key
        self.responder = responder
        self.faults: collections.deque[list[Any]] = collections.deque()  # [fault, remaining]
        self.schemas: dict[str, Any] = {}
        self.fixed: dict[int | None, str] = {}  # the `fixed` responder's answers, by the schema's id
        self.count = 0
        self.bodies: collections.deque[bytes] = collections.deque(maxlen=1000)

    def next_fault(self) -> dict[str, Any] | None:
        if not self.faults:
            return None
        entry = self.faults[0]
        entry[1] -= 1
        if entry[1] <= 0:
            self.faults.popleft()
        return dict(entry[0])

    def reset(self) -> None:
        self.faults.clear()
        self.schemas.clear()
        self.fixed.clear()
        self.bodies.clear()
        self.count = 0


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
        if path == "/_admin/requests":
            last = int(dict(p.partition("=")[::2] for p in query.split("&") if p).get("last", 10))
            bodies = list(state.bodies)[-last:] if last > 0 else []
            return {"count": state.count, "bodies": [_parsed(b) for b in bodies]}
        if path == "/_admin/schemas" and method == "POST":
            state.schemas.update(json.loads(body))
            return {"schemas": sorted(state.schemas)}
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
            self._later(
                delay, _response(401, _error(401, message, "invalid_request_error", "invalid_api_key")), close
            )
            return
        fault = state.next_fault()
        kind = str(fault.get("kind")) if fault else None
        if kind == "drop":
            self._later(delay, None, close=True)
            return
        if kind == "slow":
            delay += float(fault.get("delay", 1.0)) if fault else 0.0
            kind = None
        if kind == "bad_json":
            self._later(delay, _response(200, b'{"id": "chatcmpl-broken", "choices": [{"mess'), close)
            return
        if kind == "context_length":
            self._later(delay, _response(400, json.dumps(CONTEXT_LENGTH_ERROR).encode()), close)
            return
        if kind is not None and kind.isdigit():
            status = int(kind)
            extra = ""
            if fault and "retry_after" in fault:
                extra += f"Retry-After: {fault['retry_after']}\r\n"
            if fault and "retry_after_ms" in fault:
                extra += f"retry-after-ms: {fault['retry_after_ms']}\r\n"
            kind_name = "rate_limit_exceeded" if status == 429 else "server_error"
            self._later(
                delay, _response(status, _error(status, f"injected {status}", kind_name), extra), close
            )
            return
        try:
            request = json.loads(body)
            model = str(request.get("model", ""))
            messages = request.get("messages") or []
        except (ValueError, AttributeError):
            self._later(
                delay, _response(400, _error(400, "body is not JSON", "invalid_request_error")), close
            )
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
        self._later(delay, _response(200, answer.encode()), close)

    def _content(self, request: Mapping[str, Any], model: str, messages: list[Any]) -> str:
        response_format = request.get("response_format") or {}
        schema = (response_format.get("json_schema") or {}).get("schema")
        schemas = self.state.schemas
        if schema is None and schemas:
            schema = schemas.get(model)
            if schema is None:
                system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
                schema = next((s for marker, s in schemas.items() if marker in system), None)
        if schema is None and response_format:
            schema = DEFAULT_SCHEMA
        if self.state.responder != "fixed":
            return reply(model, messages, schema, json_output=bool(response_format))
        key = id(schema) if schema is not None else None
        cached = self.state.fixed.get(key)
        if cached is None:
            cached = self.state.fixed[key] = reply(model, messages, schema, json_output=bool(response_format))
        return cached

    def _later(self, delay: float, data: bytes | None, close: bool) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._finish, data, close)
        else:
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


async def serve(host: str, port: int, latency: float, api_key: str | None, responder: str) -> None:
    """Serve until cancelled; print the bound port on stdout first."""
    state = _State(latency, api_key, responder)
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
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.latency, args.api_key, args.responder))


class LLMServer:
    """The server in a subprocess: `with LLMServer(latency=0.05) as server: ... server.base_url ...`.

    The admin helpers talk to the running server over HTTP, so they work from any thread or process.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        responder: str = "mock",
        python: str = sys.executable,
    ) -> None:
        self.latency = latency
        self.api_key = api_key
        self.responder = responder
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
        command = [self.python, os.path.abspath(__file__), "--port", "0", "--latency", str(self.latency)]
        command += ["--responder", self.responder] + (["--api-key", self.api_key] if self.api_key else [])
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

    def set_schemas(self, schemas: Mapping[str, Any]) -> None:
        """Register output schemas by model name or system-message marker for the `mock` responder."""
        self._call("POST", "/_admin/schemas", dict(schemas))

    def requests(self, last: int = 10) -> dict[str, Any]:
        """`{"count": chat requests so far, "bodies": the last `last` request bodies, parsed}`."""
        result: dict[str, Any] = self._call("GET", f"/_admin/requests?last={last}")
        return result

    def reset(self) -> None:
        """Clear faults, schemas, the request count and the recorded bodies."""
        self._call("POST", "/_admin/reset", {})


if __name__ == "__main__":
    main()
