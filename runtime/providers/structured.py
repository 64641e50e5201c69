"""How an output schema reaches a model server: structured outputs, or the system message.

A provider's `structured_output` (sleipnir.yaml) says what its server takes:
- `json_schema` (the default): `response_format: {"type": "json_schema", "json_schema": {"name", "schema",
  "strict"}}` carries the plan's `sent_schema` (the strict form the compiler made);
- `json_object`: `response_format: {"type": "json_object"}`, and the schema goes into the system message;
- `none`: no `response_format`; the schema goes into the system message.

In the system message the schema is compact: its properties, types, enums, descriptions, bounds and `required`,
as minified JSON (`instructions`). The schema is never dropped on the way down: every mode carries it.

`unsupported_format` tells a 400 that refuses the `json_schema` format itself (vLLM before structured outputs,
llama.cpp and Ollama builds without them, proxies) from any other 400 that merely mentions `response_format`,
such as OpenAI's "Invalid schema for response_format ...", which a fallback must never hide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MODES", "instructions", "response_format", "unsupported_format", "with_instructions"]

MODES = ("json_schema", "json_object", "none")

_KEPT = frozenset({
    "type", "properties", "required", "enum", "const", "description", "items", "anyOf", "oneOf", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "format", "additionalProperties", "$ref", "$defs", "definitions",
})  # fmt: skip
"""What the compact form keeps: what a model needs to write a conforming value."""
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_UNSUPPORTED = re.compile(
    r"(?:unsupported|unknown|invalid)\s+(?:value\s+for\s+)?[`'\"]?response_format[`'\"]?(?:\.type)?\s*(?:type\b|:|$)"
    r"|[`'\"]?json_schema[`'\"]?\s+(?:response[_ ]format\s+)?(?:type\s+)?(?:is\s+)?(?:not\s+supported|unsupported|not\s+allowed)"
    r"|(?:does\s+not|doesn't|do\s+not)\s+support\s+(?:the\s+)?(?:[`'\"]?json_schema|[`'\"]?response_format|structured\s+outputs?)"
    r"|response_format(?:\.type)?[`'\"]?\s+(?:type\s+)?(?:is\s+)?(?:not\s+supported|unsupported)"
    r"|(?:response_format|json_schema)\s+(?:\w+\s+)?must\s+be\s+(?:one\s+of\s+)?['\"`]?(?:text|json_object)",
    re.IGNORECASE,
)


def schema_name(name: str) -> str:
    """A `json_schema.name` servers accept (`^[a-zA-Z0-9_-]{1,64}$`) from a module name."""
    return _NAME.sub("_", name)[:64] or "output"


def response_format(mode: str, name: str, schema: Mapping[str, Any] | None, strict: bool) -> dict[str, Any] | None:
    """The `response_format` a JSON reply is asked for with, in `mode`."""
    if mode == "json_schema" and schema is not None:
        return {"type": "json_schema", "json_schema": {"name": schema_name(name), "schema": schema, "strict": strict}}
    if mode == "none":
        return None
    return {"type": "json_object"}


def instructions(schema: Mapping[str, Any]) -> str:
    """The schema in the compact form a system message carries."""
    return (
        "Reply with one JSON object, and nothing else, that follows this JSON Schema (`required` lists the "
        "properties it must have):\n" + _ENCODER.encode(_compact(schema))
    )


def with_instructions(messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
    """`messages` with the schema's instructions at the end of the system message (a new one when none)."""
    text = instructions(schema)
    if messages and messages[0].get("role") == "system":
        first = {"role": "system", "content": f"{messages[0].get('content', '')}\n\n{text}"}
        return (first, *(dict(m) for m in messages[1:]))
    return ({"role": "system", "content": text}, *(dict(m) for m in messages))


def unsupported_format(status: int, detail: str, code: str | None, param: str | None = None) -> bool:
    """Whether an error reply refuses the `json_schema` response format itself (so `json_object` may work)."""
    if status != 400 and status != 422:
        return False
    if code in ("unsupported_response_format", "response_format_not_supported"):
        return True
    return bool(_UNSUPPORTED.search(detail)) and "schema for" not in detail.lower()


def _compact(schema: Any) -> Any:
    if isinstance(schema, list | tuple):
        return [_compact(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    made: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEPT:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            made[key] = {name: _compact(sub) for name, sub in value.items()}
        else:
            made[key] = _compact(value) if isinstance(value, Mapping | list | tuple) and key != "enum" else _plain(value)
    return made


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
