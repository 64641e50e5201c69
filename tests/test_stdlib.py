"""The standard library is real: it checks clean, has every prompt the seed names, and its prompts work.

Each prompt module's templates are rendered the way a run renders them (sandboxed Jinja, strict undefined
names, the declared variables bound only from the row's fields of the same name) and must show the row's
text; each output schema must accept a hand-written answer of the kind a model gives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator

from sleipnir.compiler.checker import check
from sleipnir.compiler.registry import version_key

ROOT = Path(__file__).resolve().parents[1]
STDLIB = ROOT / "stdlib"
PROMPT_FILES = sorted((STDLIB / "prompts").glob("*/*.yaml"))

SEED_PROMPTS = {
    "sentiment_analyzer": ["2.0.0", "2.1.0"],
    "classifier": ["1.0.0"],
    "preprocessor": ["1.0.0"],
    "analyzer": ["2.0.0"],
    "validator": ["1.0.0"],
    "report_generator": ["1.0.0"],
    "text_cleaner": ["1.0.0"],
    "item_processor": ["1.0.0"],
    "aggregator": ["1.0.0"],
    "category_analyzer": ["1.0.0"],
    "result_merger": ["1.0.0"],
}
"""Every prompt the seed (Sleipnir-Jobs.md) names, with the versions it names or this issue asks for."""

REVIEW_TEXT = "The blender broke after two days"
ROW: dict[str, Any] = {"review_id": 7, "review_text": REVIEW_TEXT}
"""A row as the seed's basic job reads it: no field is called `text`."""

SAMPLE_OUTPUTS: dict[tuple[str, str], dict[str, Any]] = {
    ("sentiment_analyzer", "2.0.0"): {"label": "negative", "confidence": 0.93},
    ("sentiment_analyzer", "2.1.0"): {
        "label": "negative",
        "confidence": 0.93,
        "needs_review": False,
        "reasoning": "The author says the blender 'broke after two days'.",
    },
    ("classifier", "1.0.0"): {
        "category": "product_quality",
        "secondary_categories": [],
        "confidence": 0.88,
        "rationale": "'broke after two days' describes a defect.",
    },
    ("preprocessor", "1.0.0"): {
        "text": "The blender broke after two days",
        "language": "en",
        "translated_text": None,
        "content_type": "complaint",
        "contains_pii": False,
        "is_empty": False,
        "notes": None,
    },
    ("analyzer", "1.0.0"): {
        "summary": "A customer reports that their blender failed within two days.",
        "topics": ["product durability"],
        "key_points": ["The blender stopped working after two days."],
    },
    ("analyzer", "2.0.0"): {
        "summary": "A customer reports that their blender failed within two days.",
        "key_points": ["The blender stopped working after two days."],
        "topics": ["product durability", "defects"],
        "entities": [{"name": "blender", "type": "product"}],
        "sentiment": "negative",
        "action_items": ["Offer a replacement or refund."],
    },
    ("validator", "1.0.0"): {
        "is_valid": False,
        "score": 0.55,
        "issues": [
            {
                "field": "sentiment",
                "severity": "major",
                "problem": "The result says positive but the author complains.",
                "suggestion": "Use negative.",
            }
        ],
        "summary": "The sentiment label contradicts the text.",
    },
    ("report_generator", "1.0.0"): {
        "title": "Daily analysis report, 2024-05-01",
        "period": "2024-05-01",
        "summary": "One complaint about a failed blender.",
        "highlights": [],
        "concerns": ["A blender failed after two days."],
        "recommendations": ["Check the blender batch for defects."],
        "report_markdown": "# Daily analysis report\n\n## Concerns\n\n- A blender failed after two days.\n",
    },
    ("text_cleaner", "1.0.0"): {
        "cleaned_text": "The blender broke after two days",
        "language": "en",
        "changes": [],
        "is_empty": False,
    },
    ("item_processor", "1.0.0"): {
        "summary": "Blender failed after two days.",
        "category": "product_defect",
        "sentiment": "negative",
        "key_facts": ["failed after 2 days"],
        "flags": ["churn_risk"],
    },
    ("aggregator", "1.0.0"): {
        "item_count": 2,
        "summary": "Both items report early product failures.",
        "themes": [{"theme": "early failure", "count": 2, "example": "broke after two days"}],
        "sentiment_breakdown": {"positive": 0, "negative": 2, "neutral": 0, "mixed": 0},
        "outliers": [],
        "recommendations": ["Investigate the blender's motor supplier."],
    },
    ("category_analyzer", "1.0.0"): {
        "category": "kitchen",
        "item_count": 1,
        "summary": "The only kitchen item reports a blender that failed quickly.",
        "themes": ["durability"],
        "sentiment": "negative",
        "issues": [{"issue": "blender failure", "severity": "high", "mentions": 1}],
    },
    ("result_merger", "1.0.0"): {
        "category_count": 2,
        "summary": "Kitchen products fail early; shipping is on time.",
        "categories": [
            {"category": "kitchen", "summary": "Early blender failures.", "priority": "high"},
            {"category": "shipping", "summary": "No problems.", "priority": "low"},
        ],
        "cross_cutting_themes": [],
        "top_priorities": ["Fix blender durability."],
    },
}


def _load(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))["prompt"]
    return body


def _render(body: dict[str, Any], row: dict[str, Any], **bindings: Any) -> dict[str, str]:
    """The prompt's messages for `row`, with default parameters, as a run renders them."""
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    parameters = {name: spec["default"] for name, spec in body.get("parameters", {}).items() if "default" in spec}
    context: dict[str, Any] = {name: row[name] for name in body.get("variables", {}) if name in row}
    context.update(bindings, input=row, parameters=parameters)
    return {
        message: environment.from_string(source).render(context)
        for message, source in body["template"].items()
    }


TEXT_PROMPT_FILES = [p for p in PROMPT_FILES if "text" in _load(p).get("variables", {})]


def test_the_stdlib_checks_clean() -> None:
    result = check([str(STDLIB)])
    assert result.diagnostics == ()
    kinds = sorted(d.kind for d in result.workspace.documents)
    assert kinds.count("prompt") == len(PROMPT_FILES) >= 13
    assert kinds.count("stack") == 1 and kinds.count("template") == 1


@pytest.mark.parametrize("name", sorted(SEED_PROMPTS))
def test_every_prompt_the_seed_names_exists(name: str) -> None:
    versions = sorted((p.stem for p in (STDLIB / "prompts" / name).glob("*.yaml")), key=version_key)
    assert set(SEED_PROMPTS[name]) <= set(versions)


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_prompt_file_is_named_by_its_module(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    modeline = text.splitlines()[0]
    assert modeline == "# yaml-language-server: $schema=../../../schema/prompt.schema.json"
    assert (path.parent / modeline.split("=", 1)[1]).resolve() == ROOT / "schema" / "prompt.schema.json"
    body = _load(path)
    assert (body["name"], body["version"]) == (path.parent.name, path.stem)
    assert body["description"] and body["model"]["name"] and body["template"]["user"]


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_prompt_renders_a_row_with_other_field_names(path: Path) -> None:
    body = _load(path)
    required = {n for n, v in body.get("variables", {}).items() if v.get("required")}
    bindings = {"items": [ROW], "category": "kitchen"}
    messages = _render(body, ROW, **{name: bindings[name] for name in required})
    assert REVIEW_TEXT in messages["user"]
    assert "{{" not in messages["user"] and "{%" not in messages["user"]
    assert "JSON" in messages.get("system", "") or body["output"].get("format") == "text"


@pytest.mark.parametrize("path", TEXT_PROMPT_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_prompt_prefers_a_declared_text_variable(path: Path) -> None:
    body = _load(path)
    row = {"text": "Arrived late but works well", "id": 3}
    assert "Arrived late but works well" in _render(body, row)["user"]
    assert '"id": 3' not in _render(body, row)["user"]


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_output_schema_accepts_a_sample_answer(path: Path) -> None:
    body = _load(path)
    schema = body["output"]["schema"]
    Draft202012Validator.check_schema(schema)
    sample = SAMPLE_OUTPUTS[(body["name"], body["version"])]
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(sample)]
    assert errors == []
    # The schema is strict enough to catch a wrong answer: every property is required.
    assert sorted(schema["required"]) == sorted(schema["properties"])
    assert list(Draft202012Validator(schema).iter_errors({})) != []


def test_sentiment_analyzer_reads_the_text_cleaner_output_and_job_parameters() -> None:
    body = _load(STDLIB / "prompts" / "sentiment_analyzer" / "2.1.0.yaml")
    cleaned = {"cleaned_text": "the blender broke", "language": "en", "changes": ["removed HTML"], "is_empty": False}
    messages = _render(body, {"review_text": "<p>The blender BROKE</p>"}, text_cleaner=cleaned)
    assert "the blender broke" in messages["user"] and "<p>" not in messages["user"]
    # The seed's basic job passes include_reasoning and confidence_threshold.
    assert {"include_reasoning", "confidence_threshold"} <= set(body["parameters"])
    assert "Set `reasoning` to null" in messages["system"]


def test_validator_checks_an_earlier_analyzer_result() -> None:
    body = _load(STDLIB / "prompts" / "validator" / "1.0.0.yaml")
    analysis = SAMPLE_OUTPUTS[("analyzer", "2.0.0")]
    user = _render(body, ROW, analyzer=analysis)["user"]
    assert "from the analyzer" in user and "Offer a replacement" in user


def _first_name(expression: str) -> str:
    """`clean` for `{{ clean.cleaned_text }}` or `clean.language == "en"`."""
    return re.split(r"[^A-Za-z0-9_]", expression.removeprefix("{{").strip(), maxsplit=1)[0]


def test_the_stack_uses_stdlib_prompts_in_order() -> None:
    stack = yaml.safe_load((STDLIB / "stacks" / "sentiment_analysis_stack" / "1.0.0.yaml").read_text())["stack"]
    assert (stack["name"], stack["version"]) == ("sentiment_analysis_stack", "1.0.0")
    steps = []
    for step in stack["steps"]:
        steps.extend([(s, True) for s in step["parallel"]] if "parallel" in step else [(step, False)])
    seen: set[str] = set()
    for step, _ in steps:
        assert (STDLIB / "prompts" / step["prompt"] / f"{step['version']}.yaml").is_file()
        if "when" in step:
            assert _first_name(step["when"]) in seen, "a `when` reads an earlier step"
        for expression in step.get("inputs", {}).values():
            assert _first_name(expression) in seen, "an input reads an earlier step"
        seen.add(step["id"])
    assert [s["prompt"] for s, _ in steps[:2]] == ["text_cleaner", "sentiment_analyzer"]
    assert any("when" in s for s, _ in steps) and any(parallel for _, parallel in steps)
