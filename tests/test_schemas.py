"""The published JSON Schemas: built from the compiler's model, valid draft-07, and read alike by both validators.

The compiler validates fast with jsonschema-rs and explains failures with Python jsonschema (compiler/validate.py).
That split is only sound if the two agree on every document: a document the fast path passes is never explained,
and one it fails must have errors to explain. The corpus is the seed document's complete examples and
hypothesis-made mutations of them.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleipnir.compiler import model
from sleipnir.compiler.schemas import (
    ALL,
    ANY_DOCUMENT,
    SCHEMA_KINDS,
    build,
    explaining_validator,
    fast_validator,
    load,
    main,
    render,
    write,
)

REPO = Path(__file__).parents[1]
SEED = REPO / "spec" / "product" / "Sleipnir-Jobs.md"
SEED_KINDS = ("job", "template", "pipeline", "stack")


def seed_examples() -> list[tuple[str, dict[str, Any]]]:
    """(kind, document) for every complete YAML example in the seed; fragments without a kind key are skipped."""
    if not SEED.is_file():
        pytest.fail(f"the seed document is missing: expected it at {SEED}", pytrace=False)
    examples = []
    for block in re.findall(r"```yaml\n(.*?)```", SEED.read_text(encoding="utf-8"), re.DOTALL):
        value = yaml.safe_load(block)
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEED_KINDS:
            examples.append((next(iter(value)), value))
    return examples


def test_the_seed_has_examples_of_every_kind_it_uses() -> None:
    kinds = [kind for kind, _ in seed_examples()]
    assert len(kinds) >= 20
    assert {"job", "pipeline", "template"} <= set(kinds)


# --- (a) the published files are the model's build -----------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_published_schema_is_the_models_build(kind: str) -> None:
    published = REPO / "schema" / f"{kind}.schema.json"
    assert published.read_text(encoding="utf-8") == render(kind), (
        f"schema/{kind}.schema.json is stale: regenerate it with `sleipnir schema --output schema/`"
    )
    assert load(kind) == build(kind)


def test_render_is_deterministic_json_with_a_trailing_newline() -> None:
    text = render("job")
    assert text == render("job")
    assert text.endswith("}\n")
    assert json.loads(text) == build("job")


def test_write_writes_each_kind(tmp_path: Path) -> None:
    written = write(tmp_path / "out", ("job", ANY_DOCUMENT))
    assert [path.name for path in written] == ["job.schema.json", "sleipnir.schema.json"]
    assert written[0].read_text(encoding="utf-8") == render("job")


def test_main_regenerates_and_refuses_unknown_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(f"{kind}.schema.json" for kind in ALL)
    assert main([str(tmp_path), "jbo"]) == 2
    assert main([]) == 2
    assert "unknown schema kind: jbo" in capsys.readouterr().err


def test_build_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown schema kind"):
        build("jobs")


# --- (b) valid draft-07 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_schema_is_valid_draft_07(kind: str) -> None:
    schema = build(kind)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"] == f"{model.SCHEMA_BASE}{kind}.schema.json"
    assert schema["title"] and schema["description"]
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema_rs.Draft7Validator(schema)  # compiles every pattern with Rust's regex too


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_top_level_is_a_closed_object(kind: str) -> None:
    schema = build(kind)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    if kind != "workspace":
        assert schema["required"] == [kind]
        assert list(schema["properties"]) == [kind]


def test_patterns_are_portable_and_explained() -> None:
    """Every pattern reads alike in Python `re` and Rust `regex`, and says in words what it wants."""
    for kind in ALL:
        for node in _nodes(build(kind)):
            assert "format" not in node or not isinstance(node["format"], str), node
            if isinstance(node.get("pattern"), str):
                pattern = node["pattern"]
                assert "(?" not in pattern and not re.search(r"\\[1-9]|\\d", pattern), pattern
                assert node.get("x-expected"), f"pattern {pattern} has no x-expected phrase"


def test_every_record_is_closed() -> None:
    for kind in ALL:
        for node in _nodes(build(kind)):
            if isinstance(node.get("properties"), dict):
                assert node.get("additionalProperties") is False, sorted(node["properties"])


def test_the_substitution_definition() -> None:
    substitution = build("job")["definitions"]["substitution"]
    assert substitution["pattern"] == r"^\$\{[^}]+\}$"
    assert substitution["description"]


# --- (c) the fast path and the explaining path agree -----------------------------------------------------------

_OTHER_VALUES: tuple[Any, ...] = (
    0, -1, 3, 1.5, 1e9, True, False, None, "", "text", "${X}", "${BATCH:-100}", "${X}y", "09:00", "1.0.0",
    [], ["a"], [1, "b"], {}, {"a": 1}, {"name": "x"},
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node below the root."""
    found = []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    for step, child in items:
        found.append((*path, step))
        found.extend(_places(child, (*path, step)))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_documents(draw: st.DrawFn, examples: list[tuple[str, dict[str, Any]]]) -> tuple[str, Any]:
    kind, original = draw(st.sampled_from(examples))
    document = copy.deepcopy(original)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = _places(document)
        path = draw(st.sampled_from(places))
        parent, step = _get(document, path[:-1]), path[-1]
        mutation = draw(st.sampled_from(("drop", "rename", "retype")))
        if mutation == "drop":
            del parent[step]
        elif mutation == "rename" and isinstance(parent, dict):
            typos = st.sampled_from((f"{step}x", str(step)[:-1], "nmae", "kind", "job"))
            new = draw(st.one_of(typos, st.text(max_size=8)))
            if new not in parent:
                parent[new] = parent.pop(step)
        else:
            parent[step] = copy.deepcopy(draw(st.sampled_from(_OTHER_VALUES)))
        if not _places(document):
            break
    return kind, document


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_and_explaining_validators_agree_on_mutations(data: st.DataObject) -> None:
    """jsonschema-rs (the fast path) and jsonschema (the explaining path) must agree, or a broken document
    could pass unexplained, or a valid one be "explained" with no errors."""
    kind, document = data.draw(mutated_documents(seed_examples()))
    for schema_kind in (kind, ANY_DOCUMENT):
        fast = fast_validator(schema_kind).is_valid(document)
        explained = not any(explaining_validator(schema_kind).iter_errors(document))
        assert fast == explained, (schema_kind, document)


def test_validators_agree_on_the_seed_examples() -> None:
    for _, document in seed_examples():
        for schema_kind in (*SCHEMA_KINDS, ANY_DOCUMENT):
            assert fast_validator(schema_kind).is_valid(document) == explaining_validator(schema_kind).is_valid(
                document
            )


# --- (d) every seed example is valid ---------------------------------------------------------------------------


def test_every_seed_example_is_valid_against_its_kind() -> None:
    for kind, document in seed_examples():
        errors = [error.message for error in explaining_validator(kind).iter_errors(document)]
        assert errors == [], (document, errors)
        assert fast_validator(kind).is_valid(document)
        assert fast_validator(ANY_DOCUMENT).is_valid(document)


@pytest.mark.parametrize("kind", ["job", "pipeline", "template"])
def test_default_snippets_expand_to_valid_documents(kind: str) -> None:
    snippets = build(kind)["defaultSnippets"]
    assert snippets and all(snippet["label"] and snippet["description"] for snippet in snippets)
    for snippet in snippets:
        document = json.loads(_expand(json.dumps(snippet["body"])))
        assert next(iter(document)) == kind
        assert explaining_validator(kind).is_valid(document), document
    assert snippets[0] in build(ANY_DOCUMENT)["defaultSnippets"]


def _expand(text: str) -> str:
    """A snippet body as the editor inserts it: tab stops give their placeholder text, `\\$` a plain `$`."""
    text = re.sub(r"(?<!\\\\)\$\{[0-9]+:([^}]*)\}", r"\1", text)
    return text.replace("\\\\$", "$")


# --- (e) ranges and substitutions ------------------------------------------------------------------------------


def _job(**body: Any) -> dict[str, Any]:
    return {"job": {"name": "ranges", **body}}


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        (_job(prompts=[{"name": "p", "temperature": 3}]), False),
        (_job(prompts=[{"name": "p", "temperature": 2}]), True),
        (_job(prompts=[{"name": "p", "temperature": -0.1}]), False),
        (_job(prompts=[{"name": "p", "top_p": 1.5}]), False),
        (_job(prompts=[{"name": "p", "max_tokens": 0}]), False),
        (_job(prompts=[{"name": "p", "timeout": 0}]), False),
        (_job(execution={"concurrency": 0}), False),
        (_job(execution={"concurrency": 1}), True),
        (_job(execution={"timeout": 0}), False),
        (_job(execution={"timeout": 0.5}), True),
        (_job(execution={"retry_on_failure": -1}), False),
        (_job(execution={"retry_on_failure": 0}), True),
        (_job(input={"batch_size": 0}), False),
        (_job(input={"batch_size": 1.5}), False),
        (_job(input={"batch_size": "${BATCH:-100}"}), True),
        (_job(input={"batch_size": "100"}), False),
        (_job(input={"batch_size": "${A}-${B}"}), False),
        (_job(input={"source": "${SOURCE}"}), True),
        (_job(input={"source": "databse"}), False),
        (_job(conditions=[{"type": "time_window", "start": "09:00", "end": "17:30"}]), True),
        (_job(conditions=[{"type": "time_window", "start": "9:00"}]), False),
        (_job(conditions=[{"type": "time_window", "end": "24:00"}]), False),
        (_job(conditions=[{"type": "data_available", "threshold": -1}]), False),
        (_job(error_handling={"on_prompt_failure": {"max_retries": -1}}), False),
        (_job(schedule={"catchup_window": "6h"}), True),
        (_job(schedule={"catchup_window": 3600}), True),
        (_job(schedule={"catchup_window": "6 hours"}), False),
        (_job(version="1.0"), False),
        (_job(version="1.0.0-rc.1"), True),
        (_job(name="9lives"), False),
        (_job(name="${job_name}"), True),
        (_job(nmae="x"), False),
        (_job(triggers=[{"type": "webhook", "endpoint": "trigger/process"}]), False),
        (_job(alerts=[{"condition": "error_rate > 0.05"}]), False),
    ],
)
def test_ranges_and_substitutions(document: dict[str, Any], valid: bool) -> None:
    assert explaining_validator("job").is_valid(document) is valid
    assert fast_validator("job").is_valid(document) is valid


def test_stack_steps_and_pipeline_entries() -> None:
    stack: dict[str, Any] = {
        "stack": {
            "name": "s",
            "version": "1.0.0",
            "steps": [
                {"id": "sentiment", "prompt": "sentiment_analyzer", "version": "2.1.0"},
                {"id": "both", "parallel": [{"id": "a", "prompt": "classifier"}, {"id": "b", "prompt": "analyzer"}]},
                {"id": "check", "prompt": "validator", "when": 'sentiment.label == "negative"'},
            ],
        }
    }
    assert explaining_validator("stack").is_valid(stack)
    stack["stack"]["steps"].append({"id": "x", "parallel": [], "prompt": "p"})
    assert not explaining_validator("stack").is_valid(stack)
    pipeline = {"pipeline": {"jobs": ["a", {"id": "b", "name": "b", "depends_on": ["a"], "params": {"N": 1}}]}}
    assert explaining_validator("pipeline").is_valid(pipeline)
    assert not explaining_validator("pipeline").is_valid({"pipeline": {"name": "p"}})


def test_prompt_module_and_workspace() -> None:
    prompt = {
        "prompt": {
            "name": "sentiment_analyzer",
            "version": "2.1.0",
            "description": "Sentiment with a confidence score",
            "model": {"name": "gpt-4", "temperature": 0.2},
            "variables": {"review_text": {"type": "string", "required": True}},
            "parameters": {"include_reasoning": {"type": "boolean", "default": False}},
            "template": {"system": "You rate sentiment.", "user": "{{ review_text }}"},
            "output": {"format": "json", "schema": {"type": "object", "required": ["label"]}},
        }
    }
    assert explaining_validator("prompt").is_valid(prompt)
    del prompt["prompt"]["template"]
    assert not explaining_validator("prompt").is_valid(prompt)
    workspace = {
        "name": "acme",
        "default_profile": "development",
        "connections": {"prod_db": "postgresql://db/prod", "local": {"url": "sqlite:///x.db"}},
        "providers": {"openai": {"api_key_env": "OPENAI_API_KEY", "requests_per_minute": 500}},
        "smtp": {"host": "localhost", "port": 25},
    }
    assert explaining_validator("workspace").is_valid(workspace)
    assert not explaining_validator("workspace").is_valid({**workspace, "smtp": {"port": 0}})
    assert fast_validator(ANY_DOCUMENT).is_valid(workspace)
    assert not fast_validator(ANY_DOCUMENT).is_valid({"job": {"name": "x"}, "name": "both"})


# --- (f) every property is described ---------------------------------------------------------------------------


def test_every_key_in_the_model_is_described() -> None:
    for kind in model.KINDS.values():
        for path, key in model.walk(kind.body):
            assert key.about.strip().endswith((".", ")")), f"{kind.name}.{'.'.join(path)}"


@pytest.mark.parametrize("kind", ALL)
def test_every_property_has_description_and_markdown_with_a_spec_link(kind: str) -> None:
    count = 0
    for node in _nodes(build(kind)):
        for name, schema in (node.get("properties") or {}).items():
            count += 1
            assert schema.get("description"), name
            assert "`" not in schema["description"], name
            link = re.search(r"\[reference\]\((\S+)\)$", schema.get("markdownDescription", ""))
            assert link and link.group(1).startswith(f"{model.DOCS_BASE}spec/"), name
    assert count > 5


def test_doc_links_land_on_a_section_of_the_spec() -> None:
    """A link's page, when it exists in spec/, has the anchor the link names (a heading, or an `<a id>`)."""
    link = re.compile(r"\]\(" + re.escape(f"{model.DOCS_BASE}spec/") + r"([^)]+)\)")
    links = {
        match.group(1)
        for kind in ALL
        for node in _nodes(build(kind))
        for match in link.finditer(node.get("markdownDescription", ""))
    }
    assert {"job.md", "job.md#input", "job.md#error_handling", "workspace.md#connections"} <= links
    for target in sorted(links):
        page, _, anchor = target.partition("#")
        path = REPO / "spec" / page
        if not path.is_file() or not anchor:
            continue  # a page still to be written, or a page's top
        text = path.read_text(encoding="utf-8")
        anchors = {_slug(heading) for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
        anchors |= set(re.findall(r'<a id="([^"]+)"', text))
        assert anchor in anchors, f"spec/{page} has no section #{anchor}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _nodes(schema: Any) -> list[dict[str, Any]]:
    """Every schema object in a document; data under `defaultSnippets`, `default`, `enum` and `examples` is not."""
    if not isinstance(schema, dict):
        return []
    found = [schema]
    for keyword, child in schema.items():
        if keyword in ("properties", "definitions"):
            found.extend(node for sub in child.values() for node in _nodes(sub))
        elif keyword in ("anyOf", "oneOf", "allOf"):
            found.extend(node for sub in child for node in _nodes(sub))
        elif keyword in ("items", "additionalProperties", "propertyNames", "if", "then", "else"):
            found.extend(_nodes(child))
    return found
