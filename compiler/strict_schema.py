"""The strict form of an output schema: what a server with structured outputs is sent.

OpenAI's strict structured outputs (and the servers that copy them) accept a subset of JSON Schema: the root is
an object, every object lists all its properties in `required` and has `additionalProperties: false`, and some
keywords are refused. `strict_form(schema)` makes that form once, at plan time:

- an optional property becomes required and nullable (`type: [T, "null"]`, `null` added to an `enum`, or an
  `anyOf` with `{"type": "null"}`); the runtime drops the nulls it then receives for optional properties before
  it validates the reply against the full schema;
- an object with properties gets `additionalProperties: false` (the extra keys it allowed were never required);
- `oneOf` becomes `anyOf` (every `oneOf` instance is an `anyOf` instance; the full schema still checks the rest);
- keywords strict mode refuses but that only narrow a value (`minLength`, `maxLength`, `uniqueItems`,
  `minProperties`, `maxProperties`, `default`, a `format` it does not know, ...) are dropped from what is sent,
  and the reply is still checked against them;
- what it cannot express at all (`allOf`, `not`, `if`, `patternProperties`, a map object whose values follow
  a schema, a tuple `items`, an object without properties, a root that is not an object) leaves the schema as it
  is, sent with `strict: false`: the server is asked to follow it, without the strict guarantee.

The schema is never dropped: the full schema is what validates every reply. `changes` says what differs, for
`sleipnir check` (spec/prompt.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StrictForm", "strict_form"]

_NARROWING = frozenset({
    "minLength", "maxLength", "uniqueItems", "minProperties", "maxProperties", "default", "examples",
    "contentEncoding", "contentMediaType", "readOnly", "writeOnly", "deprecated",
})  # fmt: skip
"""Keywords strict mode refuses that only narrow what a value may be: dropped, still checked on the reply."""
_SILENT = frozenset({"$schema", "$id", "$comment"})
"""Keywords dropped without a word: they say nothing about the value."""
_UNEXPRESSIBLE = frozenset({
    "allOf", "not", "if", "then", "else", "patternProperties", "propertyNames", "unevaluatedProperties",
    "unevaluatedItems", "dependencies", "dependentRequired", "dependentSchemas", "contains", "prefixItems",
    "additionalItems",
})  # fmt: skip
_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


@dataclass(frozen=True, slots=True)
class StrictForm:
    """`schema` to send and whether to send it with `strict: true`; `changes` lists how it differs from the
    module's schema, one phrase each (empty when it is sent as written)."""

    schema: dict[str, Any]
    strict: bool
    changes: tuple[str, ...]


class _Unexpressible(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def strict_form(schema: Mapping[str, Any]) -> StrictForm:
    """The strict form of `schema` (a plain JSON value), or `schema` itself with `strict: False`."""
    changes: list[str] = []
    try:
        if _types(schema) != {"object"}:
            raise _Unexpressible("/", "the root is not an object")
        made = _walk(schema, "", changes, nullable=False)
    except _Unexpressible as reason:
        return StrictForm(schema=_plain(schema), strict=False, changes=(f"{reason}: sent with `strict: false`",))
    return StrictForm(schema=made, strict=True, changes=tuple(changes))


def _walk(schema: Any, where: str, changes: list[str], *, nullable: bool) -> Any:
    if not isinstance(schema, Mapping):
        return schema
    made: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNEXPRESSIBLE:
            raise _Unexpressible(where or "/", f"`{key}` has no strict form")
        if key in _SILENT:
            continue
        if key in _NARROWING or (key == "format" and value not in _FORMATS):
            changes.append(f"{where or '/'}: `{key}` is not sent (the reply is still checked against it)")
            continue
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            made[key] = {name: _walk(sub, f"{where}/{key}/{name}", changes, nullable=False) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            if key == "oneOf":
                changes.append(f"{where or '/'}: `oneOf` is sent as `anyOf`")
            made["anyOf"] = [_walk(sub, f"{where}/{key}/{n}", changes, nullable=False) for n, sub in enumerate(value)]
        elif key == "items":
            if not isinstance(value, Mapping):
                raise _Unexpressible(where or "/", "a tuple `items` has no strict form")
            made[key] = _walk(value, f"{where}/items", changes, nullable=False)
        else:
            made[key] = _plain(value)
    if "object" in _types(schema) or "properties" in schema:
        _close_object(schema, made, where, changes)
    return _nullable(made) if nullable else made


def _close_object(schema: Mapping[str, Any], made: dict[str, Any], where: str, changes: list[str]) -> None:
    """Every property required (optional ones nullable), no other property allowed."""
    properties = schema.get("properties")
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, Mapping) or not properties:
        if extra is False:
            made["properties"], made["required"] = {}, []
            return
        raise _Unexpressible(where or "/", "an object without `properties` has no strict form")
    required = set(schema.get("required") or ())
    for name in properties:
        if name not in required:
            made["properties"][name] = _nullable(made["properties"][name])
            changes.append(f"{where}/properties/{name}: optional, sent as required and nullable")
    made["required"] = list(properties)
    if extra is not False:
        if isinstance(extra, Mapping) and extra:
            raise _Unexpressible(where or "/", "`additionalProperties` with a schema has no strict form")
        changes.append(f"{where or '/'}: other properties are not allowed (`additionalProperties: false`)")
    made["additionalProperties"] = False


def _nullable(schema: Any) -> Any:
    """`schema` that also accepts null."""
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if "$ref" in schema or "anyOf" in schema or "const" in schema or kind is None:
        branches = schema.get("anyOf")
        if isinstance(branches, list) and len(schema) == 1:
            return schema if {"type": "null"} in branches else {"anyOf": [*branches, {"type": "null"}]}
        return {"anyOf": [schema, {"type": "null"}]}
    made = dict(schema)
    kinds = [kind] if isinstance(kind, str) else list(kind)
    if "null" not in kinds:
        made["type"] = [*kinds, "null"]
    if isinstance(made.get("enum"), list) and None not in made["enum"]:
        made["enum"] = [*made["enum"], None]
    return made


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "properties" in schema else set()
    return {kind} if isinstance(kind, str) else {str(k) for k in kind}


def _plain(value: Any) -> Any:
    """A plain JSON copy (frozen mappings and tuples from a plan become dicts and lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
