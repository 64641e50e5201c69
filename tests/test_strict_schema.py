"""The strict form of output schemas (compiler/strict_schema.py): what structured outputs are sent, and what
`check` says about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sleipnir.compiler import check
from sleipnir.compiler.strict_schema import strict_form
from sleipnir.runtime.providers.schema_fill import fill

STDLIB_PROMPTS = sorted((Path(__file__).parent.parent / "stdlib" / "prompts").glob("*/*.yaml"))

MODULE = """\
prompt:
  name: triage
  version: 1.0.0
  description: Route a ticket.
  template:
    user: "{{ input | tojson }}"
  output:
    format: json
    schema:
"""


def strict_ok(schema: Any, where: str = "") -> None:
    """The rules of OpenAI's strict mode, checked everywhere in `schema`."""
    if not isinstance(schema, dict):
        return
    if "properties" in schema:
        assert schema.get("additionalProperties") is False, where
        assert sorted(schema["required"]) == sorted(schema["properties"]), where
        for name, sub in schema["properties"].items():
            strict_ok(sub, f"{where}/{name}")
    for key in ("minLength", "maxLength", "uniqueItems", "oneOf", "allOf", "default"):
        assert key not in schema, f"{where}: {key}"
    if isinstance(schema.get("items"), dict):
        strict_ok(schema["items"], f"{where}/items")
    for branch in schema.get("anyOf", []):
        strict_ok(branch, where)


def test_an_optional_property_becomes_required_and_nullable() -> None:
    schema = {
        "type": "object",
        "required": ["label"],
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"]},
            "note": {"type": "string", "maxLength": 20},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "kind": {"enum": ["x", "y"]},
        },
    }
    form = strict_form(schema)
    assert form.strict
    sent = form.schema
    strict_ok(sent)
    assert sent["properties"]["label"] == {"type": "string", "enum": ["a", "b"]}
    assert sent["properties"]["note"] == {"type": ["string", "null"]}
    assert sent["properties"]["tags"]["type"] == ["array", "null"]
    assert sent["properties"]["kind"] == {"anyOf": [{"enum": ["x", "y"]}, {"type": "null"}]}
    assert "/properties/note: optional, sent as required and nullable" in form.changes
    assert "/properties/note: `maxLength` is not sent (the reply is still checked against it)" in form.changes
    assert "/: other properties are not allowed (`additionalProperties: false`)" in form.changes
    assert schema["required"] == ["label"], "the module's schema is left as it was"


def test_a_schema_strict_mode_takes_as_it_is_has_no_changes() -> None:
    schema = {
        "type": "object",
        "required": ["a", "b"],
        "additionalProperties": False,
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": ["string", "null"]}},
    }
    form = strict_form(schema)
    assert form.strict and form.changes == () and form.schema == schema


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "array", "items": {"type": "string"}}, "the root is not an object"),
        ({"type": "object"}, "an object without `properties`"),
        ({"type": "object", "properties": {"a": {"type": "object", "additionalProperties": {"type": "string"}}}},
         "an object without `properties`"),
        ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}, "`allOf` has no strict form"),
        ({"type": "object", "properties": {"a": {"type": "string"}},
          "additionalProperties": {"type": "integer"}}, "`additionalProperties` with a schema"),
    ],
)  # fmt: skip
def test_what_strict_mode_cannot_express_is_sent_whole_with_strict_false(schema: dict[str, Any], reason: str) -> None:
    form = strict_form(schema)
    assert not form.strict
    assert form.schema == schema, "the schema is never dropped or cut down"
    [change] = form.changes
    assert reason in change and "strict: false" in change


@pytest.mark.parametrize("path", STDLIB_PROMPTS, ids=lambda p: f"{p.parent.name}@{p.stem}")
def test_every_stdlib_schema_has_a_strict_form_whose_instances_fit_the_full_schema(path: Path) -> None:
    schema = yaml.safe_load(path.read_text())["prompt"]["output"]["schema"]
    form = strict_form(schema)
    assert form.strict, form.changes
    strict_ok(form.schema)
    jsonschema.Draft202012Validator.check_schema(form.schema)
    for seed in range(20):
        value = fill(form.schema, seed.to_bytes(2, "big"))
        jsonschema.validate(value, form.schema)


scalars = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"enum": ["a", "b"]}])
objects = st.recursive(
    scalars,
    lambda inner: st.builds(
        lambda props, required: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in required],
        },
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, min_size=1, max_size=3),
        st.sets(st.sampled_from(["a", "b", "c", "d"])),
    ),
    max_leaves=6,
).filter(lambda s: s.get("type") == "object")


@settings(max_examples=60, deadline=None)
@given(objects)
def test_the_strict_form_of_any_object_schema_follows_the_rules(schema: dict[str, Any]) -> None:
    form = strict_form(schema)
    assert form.strict
    strict_ok(form.schema)
    jsonschema.Draft202012Validator.check_schema(form.schema)


def _check(tmp_path: Path, schema: str) -> list[Any]:
    path = tmp_path / "triage.yaml"
    path.write_text(MODULE + "".join(f"      {line}\n" for line in schema.splitlines()), encoding="utf-8")
    return list(check([str(path)]).diagnostics)


def test_check_notes_a_schema_strict_mode_changes_and_says_how(tmp_path: Path) -> None:
    [note] = _check(tmp_path, "type: object\nrequired: [team]\nproperties:\n  team: {type: string}\n  why: {type: string}")
    assert note.code == "strict-schema-changed" and note.severity == "note"
    assert note.primary is not None and note.primary.span.line == 10
    assert "/properties/why: optional, sent as required and nullable" in note.notes


def test_check_warns_about_a_schema_strict_mode_cannot_take(tmp_path: Path) -> None:
    [warning] = _check(tmp_path, "type: object\nproperties:\n  a:\n    allOf: [{type: string}]\nrequired: [a]\nadditionalProperties: false")
    assert warning.code == "strict-schema-unsupported" and warning.severity == "warning"
    assert any("`allOf` has no strict form" in note for note in warning.notes)


def test_check_is_silent_about_a_schema_strict_mode_takes_unchanged(tmp_path: Path) -> None:
    assert _check(tmp_path, "type: object\nrequired: [a]\nadditionalProperties: false\nproperties:\n  a: {type: string}") == []
