"""What the loopback LLM server (`tests/llm_server.py`) answers, apart from speaking HTTP.

It behaves as real OpenAI-compatible servers do, not as the client hopes:

- The schema it follows is the one the request carries: `response_format: {"type": "json_schema",
  "json_schema": {"schema": ...}}` (structured outputs, as OpenAI, vLLM, llama.cpp and Ollama serve them), or,
  like a model reading its instructions, a JSON Schema quoted in the messages (a JSON object with `properties`
  or `type`). A request that asks for JSON and carries no schema gets a JSON object of its own shape
  (`{"text": ...}`), which satisfies no schema with required fields; one that asks for nothing gets prose.
- `Bucket` is a real token bucket of R requests a minute (burst: one second's worth, at least one); beyond it
  the server answers 429 with `retry-after-ms` and `Retry-After` (whole seconds, rounded up), as OpenAI does.
- `Periodic` faults hit every Nth request whatever the rate: `429:7:0.2` (429 with `Retry-After: 0.2` on every
  7th request), `500:11`, `drop:13` (the connection closed unanswered), `hang:50` (never answered).
- `UNSUPPORTED_FORMAT` is the 400 a server without structured outputs gives a `json_schema` request.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["UNSUPPORTED_FORMAT", "Bucket", "Periodic", "schema_in_request", "schema_in_text"]

UNSUPPORTED_FORMAT = {
    "error": {
        "message": "response_format type 'json_schema' is not supported by this server; use 'json_object'",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": None,
    }
}
_DECODER = json.JSONDecoder()


def schema_in_request(request: Mapping[str, Any]) -> tuple[Any, bool]:
    """(the schema the answer follows or None, whether the answer is JSON)."""
    response_format = request.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema, True
    messages = request.get("messages") or []
    for message in messages:
        schema = schema_in_text(str(message.get("content", ""))) if isinstance(message, Mapping) else None
        if schema is not None:
            return schema, True
    return None, kind == "json_object"


def schema_in_text(text: str) -> Any:
    """The first JSON object in `text` that looks like a JSON Schema (it has `properties` or `type`), or None."""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict) and ("properties" in value or "type" in value):
            return value
        start = text.find("{", start + 1)
    return None


class Bucket:
    """A token bucket of `rpm` requests a minute; `take()` is None when a request may go, else the seconds until
    one may."""

    def __init__(self, rpm: float, burst: float | None = None) -> None:
        self.rate = rpm / 60.0
        self.capacity = burst if burst is not None else max(1.0, self.rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float | None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate

    @staticmethod
    def headers(wait: float) -> str:
        """The 429's headers: exact milliseconds, and whole seconds for clients that read only `Retry-After`."""
        return f"retry-after-ms: {math.ceil(wait * 1000)}\r\nRetry-After: {max(1, math.ceil(wait))}\r\n"


class Periodic:
    """Faults on every Nth request, in the order given (the first whose N divides the request number wins)."""

    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self.rules: list[dict[str, Any]] = list(rules or [])

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        """`429:7:0.2` -> `{"kind": "429", "every": 7, "retry_after": 0.2}`."""
        kind, every, *rest = text.split(":")
        rule: dict[str, Any] = {"kind": kind, "every": int(every)}
        if rest:
            rule["retry_after"] = float(rest[0])
        return rule

    def fault(self, number: int) -> dict[str, Any] | None:
        for rule in self.rules:
            if number % int(rule["every"]) == 0:
                return rule
        return None
