"""The JSON Schemas the compiler validates against: the draft-07 files shipped in `sleipnir.schema`."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs

SCHEMA_KINDS = ("job", "template", "pipeline", "stack", "prompt", "workspace")


@cache
def load(kind: str) -> dict[str, Any]:
    """The published schema for `kind` (a document kind, or `workspace` for `sleipnir.yaml`)."""
    text = (resources.files("sleipnir.schema") / f"{kind}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def fast_validator(kind: str) -> jsonschema_rs.Draft7Validator:
    """A compiled validator that only answers valid or not: the fast path for documents that pass."""
    return jsonschema_rs.Draft7Validator(load(kind))


@cache
def explaining_validator(kind: str) -> jsonschema.Draft7Validator:
    """jsonschema's validator, used only on documents that failed, for ranked and detailed errors."""
    return jsonschema.Draft7Validator(load(kind))
