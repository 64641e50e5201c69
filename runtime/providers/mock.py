"""The `mock` provider: offline, deterministic answers made from the input. It backs the quickstart and dry runs.

It is a documented provider, not a test double: a job whose prompt names `provider: mock` runs end to end with no
network and no key, and its outputs satisfy the prompt module's output schema, so every later step (conditions,
validation, sinks) sees realistic data.

How an answer is made:
- With an output schema, the answer is the JSON text of `schema_fill.fill(schema, seed, hints)`, where the
  schema is the one structured outputs are sent (the strict form), as a server with structured outputs answers. The seed is the
  SHA-256 of the model name and the messages, so the same request always gets the same answer and different
  inputs get different ones. The hints echo the input: `text`, `cleaned_text` and `summary` fields get a trimmed
  copy of the user message's text, `language` is `en`, and a `label` or `sentiment` enum follows a small word
  list (`great`, `broken`, ...) when the text is clearly positive or negative, and the hash otherwise.
- Without a schema, the answer is a short text quoting the input (a JSON object `{"text": ...}` when the request
  asks for JSON).
- Token usage is estimated at four characters a token.

Options (`ProviderConfig.options`): `latency`, seconds to wait before answering, for demos of progress bars.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import ChatRequest, ChatResponse, ProviderConfig, ProviderError
from .schema_fill import fill

__all__ = ["MockProvider", "estimate_tokens", "reply"]

_ECHO_FIELDS = ("text", "cleaned_text", "content", "normalized_text", "normalised_text")
_SUMMARY_FIELDS = ("summary", "rationale", "reasoning", "explanation")
_LABEL_FIELDS = ("label", "sentiment", "overall_sentiment")
_POSITIVE = frozenset((
    "good", "great", "excellent", "love", "loved", "amazing", "awesome", "perfect", "happy", "recommend",
    "fantastic", "fast", "best", "nice",
))  # fmt: skip
_NEGATIVE = frozenset((
    "bad", "terrible", "awful", "hate", "hated", "broken", "poor", "worst", "slow", "refund", "disappointed",
    "useless", "late", "never",
))  # fmt: skip
_WORD = re.compile(r"[a-z']+")
_ENCODER = json.JSONEncoder(ensure_ascii=False)  # reused: json.dumps builds one per call for non-defaults


class MockProvider:
    """The offline provider. Safe to share; it holds no connections."""

    def __init__(self, config: ProviderConfig) -> None:
        latency = config.options.get("latency", 0) or 0
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise ProviderError(
                f"provider {config.name!r}: option latency must be a number of seconds, not {latency!r}",
                retryable=False,
                kind="client",
            )
        self._latency = float(latency)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self._latency:
            await asyncio.sleep(self._latency)
        # As a server with structured outputs does: the answer follows the schema the request carries.
        schema = request.sent_schema if request.sent_schema is not None else request.output_schema
        text = reply(request.model, request.messages, schema if request.json_output else None, json_output=request.json_output)
        return ChatResponse(
            text=text,
            prompt_tokens=estimate_tokens(sum(len(m.get("content", "")) for m in request.messages)),
            completion_tokens=estimate_tokens(len(text)),
            model=request.model,
        )

    async def aclose(self) -> None:
        return None


def estimate_tokens(characters: int) -> int:
    """Four characters a token, rounded up."""
    return (characters + 3) // 4


def reply(
    model: str,
    messages: Sequence[Mapping[str, str]],
    schema: Mapping[str, Any] | None,
    *,
    json_output: bool = False,
) -> str:
    """The mock answer to `messages`: JSON satisfying `schema` when there is one, else a short text."""
    digest = hashlib.sha256(model.encode())
    for message in messages:
        digest.update(
            b"\x00" + message.get("role", "").encode() + b"\x00" + message.get("content", "").encode()
        )
    seed = digest.digest()
    text = _input_text(messages)
    if schema is not None:
        return _ENCODER.encode(fill(schema, seed, _hints(text)))
    excerpt = " ".join(text.split())[:120]
    answer = f"Mock reply ({digest.hexdigest()[:8]})" + (f": {excerpt}" if excerpt else "")
    return _ENCODER.encode({"text": answer}) if json_output else answer


def _input_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The text the last user message is about: without a leading `Text:`-style line, and the string values of
    a JSON record when the message carries one."""
    content = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    first, _, rest = content.strip().partition("\n")
    body = rest.strip() if first.rstrip().endswith(":") and rest.strip() else content.strip()
    if body[:1] in ("{", "["):
        try:
            record = json.loads(body)
        except ValueError:
            return body
        return " ".join(_strings(record)) or body
    return body


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _hints(text: str) -> dict[str, str]:
    flat = " ".join(text.split())
    if not flat:
        return {"language": "en"}
    ends = [i for i in (flat.find(". "), flat.find("! "), flat.find("? ")) if i >= 0]
    sentence = flat[: min(ends) + 1 if ends else 200][:200]
    hints = dict.fromkeys(_ECHO_FIELDS, flat[:2000]) | dict.fromkeys(_SUMMARY_FIELDS, sentence)
    hints["language"] = "en"
    words = set(_WORD.findall(flat.lower()))
    score = len(words & _POSITIVE) - len(words & _NEGATIVE)
    if score:
        hints.update(dict.fromkeys(_LABEL_FIELDS, "positive" if score > 0 else "negative"))
    return hints
