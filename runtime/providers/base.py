"""The provider seam: one async method and `aclose`, as httpx's transports are.

A provider turns a `ChatRequest` into a `ChatResponse` or raises `ProviderError`. Whether an error is worth
retrying is the provider's call (it knows its protocol); the runtime's retry policy decides how often and when.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


def loads(text: str | bytes) -> Any:
    """JSON from a server: orjson, 3 to 5 times faster than `json.loads` on a chat completion (the hot path of
    every call). What orjson refuses (NaN) is read by `json.loads`, and an invalid text raises `json.loads`'s
    `ValueError`, with its message. orjson reads an integer beyond 64 bits as a float: fine for a reply's
    envelope (token counts), not for an answer's values, which the runtime reads (`io.dbconn.read_json`)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@dataclass(slots=True, kw_only=True)
class ChatRequest:
    """One model call; a provider reads it and never changes it. (Not frozen: one is made for every call, and a
    frozen dataclass's `__init__` costs three times a plain one's.)"""

    model: str
    messages: tuple[Mapping[str, str], ...]
    """`{"role": "system" | "user", "content": ...}` in order."""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    json_output: bool = False
    """Ask for a JSON object (`response_format` in the OpenAI protocol)."""
    output_schema: Mapping[str, Any] | None = None
    """The JSON Schema the answer must satisfy, as the prompt module declares it (plain dicts and lists)."""
    sent_schema: Mapping[str, Any] | None = None
    """What structured outputs are sent (the plan's strict form of `output_schema`); None without a schema."""
    strict: bool = False
    """Send `sent_schema` with `strict: true`."""
    schema_name: str = "output"
    """The `json_schema.name` sent with it: the prompt module's name."""
    timeout: float = 120.0
    """Seconds for this one call."""


@dataclass(slots=True, kw_only=True)
class ChatResponse:
    """A model's answer and what it cost; the runtime reads it and never changes it. (Not frozen, as `ChatRequest`:
    one is made for every call, 0.5 us plain against 1.2 frozen.)"""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    notice: str | None = None
    """A line for the person running the job, said once: the server refused structured outputs, and the
    provider sends the schema in the system message from now on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """How to reach one provider endpoint, with secrets already resolved by the runtime."""

    name: str
    protocol: str
    base_url: str | None = None
    api_key: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A call that failed. `retryable`: 429, 5xx, timeouts, dropped connections, unparsable replies.
    Not retryable: other 4xx, context-length errors. `retry_after`: seconds the server asked to wait."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.kind = kind
        """A short word for logs and metrics: `rate_limit`, `server`, `timeout`, `connection`, `client`,
        `context_length`, `bad_reply`, `auth`, `not_found`."""
        self.unsupported_format = False
        """A 400 refusing the `json_schema` response format itself (the provider falls back to `json_object`)."""


RUN_LEVEL = {
    "auth": "check the provider's API key and what it is allowed to use",
    "not_found": "check the model's name and the provider's endpoint URL",
}
"""Error kinds that no call of the run can get past (a refused key, a model or endpoint that is not there): the
runtime stops the run at the first, whatever the prompt's failure strategy, rather than fail or skip every item
with the same error. Each maps to what the person running the job should check."""


class Provider(Protocol):
    """What the runtime calls. Implementations keep one pooled client per endpoint and are safe to share."""

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


class ProviderFactory(Protocol):
    """What the `sleipnir.providers` entry point names: a callable making a provider from its config."""

    def __call__(self, config: ProviderConfig) -> Provider: ...
