"""Classified documents -> schema-valid documents. Validate fast, explain slowly.

jsonschema-rs answers "valid or not" for every document; only a document that fails is walked again with
jsonschema's `iter_errors`, whose errors are ranked, reduced to one per problem and mapped back to YAML spans.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .diagnostics import Diagnostics
from .documents import Document, Path
from .ir.common import suggestion_help
from .schemas import explaining_validator, fast_validator
from .span import Span

if TYPE_CHECKING:
    from jsonschema import ValidationError

SUBSTITUTION_REF = "#/definitions/substitution"
"""Schemas let a typed scalar be a whole `${...}` substitution through an `anyOf` branch with this `$ref`."""

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
_RANGE_WORDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}


def validate(documents: Sequence[Document], sink: Diagnostics) -> list[Document]:
    """The documents that satisfy their kind's schema; every other one gets its diagnostics."""
    valid = []
    for document in documents:
        if fast_validator(document.kind).is_valid(document.value):
            valid.append(document)
        else:
            explain(document, sink)
    return valid


class Located(Protocol):
    """Where diagnostics about a value point: a `Document`, or a stand-in that maps paths elsewhere."""

    def span_at(self, path: Path, *, key: bool = False) -> Span: ...

    def source_text(self, path: Path) -> str: ...


def explain(document: Document, sink: Diagnostics) -> None:
    """One diagnostic per problem in a document that failed its schema."""
    explain_value(document.kind, document.value, document, sink)


def explain_value(kind: str, value: Any, document: Located, sink: Diagnostics) -> None:
    """One diagnostic per problem in `value`, which failed the schema of `kind`; spans come from `document`."""
    errors = sorted(explaining_validator(kind).iter_errors(value), key=_depth_first)
    reported: set[tuple[Any, ...]] = set()
    for error in errors:
        leaf = _leaf(error)
        path = tuple(leaf.absolute_path)
        key = (path, leaf.validator)
        # One problem, one diagnostic: an instance already reported gets nothing more from a second keyword.
        if key in reported or (path, "*") in reported:
            continue
        reported.add(key)
        if leaf.validator not in ("additionalProperties", "required"):
            reported.add((path, "*"))
        _diagnose(document, leaf, sink)


def _depth_first(error: ValidationError) -> tuple[int, str]:
    return (-len(error.absolute_path), str(error.validator))


def _leaf(error: ValidationError) -> ValidationError:
    """Descend `anyOf`/`oneOf` to the most relevant branch error, ignoring the substitution branch."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: Any = error.validator_value
        context = [
            sub
            for sub in error.context
            if not (sub.relative_schema_path and _is_substitution(branches[sub.relative_schema_path[0]]))
        ]
        if not context:
            break
        if len({sub.relative_schema_path[0] for sub in context}) > 1:
            # Several forms failed: explain the one form that accepts the value's type, if there is exactly one.
            fitting = [sub for sub in context if _type_fits(branches[sub.relative_schema_path[0]], error.instance)]
            if len({sub.relative_schema_path[0] for sub in fitting}) != 1:
                break
            context = fitting
        from jsonschema.exceptions import best_match

        error = best_match(context) or error
    return error


def _type_fits(schema: Any, instance: Any) -> bool:
    expected = schema.get("type") if isinstance(schema, dict) else None
    if expected is None:
        return True
    names = expected if isinstance(expected, list) else [expected]
    return _json_type(instance) in names or (
        "number" in names and type(instance) is int
    ) or ("array" in names and isinstance(instance, list)) or ("object" in names and isinstance(instance, dict))


def _is_substitution(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("$ref") == SUBSTITUTION_REF


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null"
    )


def where(path: Iterable[Any]) -> str:
    """A path as a reader writes it: `job.prompts[0].temperature`."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text or "document"


def _diagnose(document: Located, error: ValidationError, sink: Diagnostics) -> None:
    path = tuple(error.absolute_path)
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        for key in instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            sink.emit(
                "unknown-key",
                f"unknown key `{key}` in {where(path)}",
                document.span_at((*path, key), key=True),
                label="not a valid key here",
                notes=(f"valid keys here: {', '.join(allowed)}",) if allowed else (),
                help=suggestion_help(key, allowed) or "remove it, or check the spelling against the valid keys",
            )
        return
    if validator == "required" and isinstance(instance, dict):
        required: Any = error.validator_value
        for name in required:
            if name not in instance:
                sink.emit(
                    "missing-key",
                    f"missing required key `{name}` in {where(path)}",
                    document.span_at(path, key=True),
                    label=f"`{name}` is required here",
                    notes=_described(schema.get("properties", {}).get(name)),
                )
        return
    span = document.span_at(path)
    notes = _described(schema)
    if validator == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else str(expected)
        found = _JSON_TYPES.get(type(instance), "null")
        help_text = None
        if "string" in expected_text and isinstance(instance, int | float) and not isinstance(instance, bool):
            help_text = f'quote it to make it a string: "{document.source_text(path)}"'
        sink.emit(
            "invalid-type",
            f"{where(path)} must be {_article(expected_text)}, found {found}",
            span,
            label=f"expected {expected_text}",
            notes=notes,
            help=help_text,
        )
        return
    if validator == "enum":
        values: Any = error.validator_value
        options = [str(o) for o in values]
        sink.emit(
            "invalid-value",
            f"{where(path)} must be one of {', '.join(f'`{o}`' for o in options)}, found `{instance}`",
            span,
            label="not an allowed value",
            notes=notes,
            help=suggestion_help(str(instance), options),
        )
        return
    if validator in _RANGE_WORDS:
        sink.emit(
            "invalid-value",
            f"{where(path)} must be {_RANGE_WORDS[validator]} {error.validator_value}, found {instance}",
            span,
            label="out of range",
            notes=notes,
        )
        return
    if validator == "pattern":
        expected = schema.get("x-expected") or f"a string matching `{error.validator_value}`"
        sink.emit(
            "invalid-value",
            f"{where(path)} must be {expected}, found `{instance}`",
            span,
            label="badly formed",
            notes=notes,
        )
        return
    if validator in ("anyOf", "oneOf"):
        sink.emit(
            "invalid-value",
            f"{where(path)} matches none of its allowed forms",
            span,
            label="not an allowed form",
            notes=(*notes, *_forms(error.validator_value)),
        )
        return
    sink.emit("invalid-value", f"{where(path)}: {error.message}", span, notes=notes)


def _described(schema: Any) -> tuple[str, ...]:
    if isinstance(schema, dict) and isinstance(schema.get("description"), str):
        return (schema["description"],)
    return ()


def _forms(branches: Any) -> tuple[str, ...]:
    forms = [b.get("description") or b.get("type") for b in branches if isinstance(b, dict) and not _is_substitution(b)]
    return tuple(f"allowed: {form}" for form in forms if form)


def _article(text: str) -> str:
    return f"an {text}" if text[:1] in "aeiou" else f"a {text}"
