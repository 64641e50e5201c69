"""A plan for people and tools: the text format, the DOT and Mermaid drawings, and the plan's JSON Schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from handmade_plans import (
    CLEANER,
    NOW,
    PLANS,
    PRICES,
    SECRET_VALUE,
    call,
    fan_job,
    multi_prompt_job,
    pipeline,
    secret_job,
    shows,
    stack_job,
)

from sleipnir.compiler import plan_schema
from sleipnir.compiler.estimate import estimate
from sleipnir.compiler.ir import Edge, Frozen, JobStep, Plan, Retry, Split, digest, from_json, to_json
from sleipnir.compiler.render.plan_graph import render_dot, render_mermaid
from sleipnir.compiler.render.plan_text import duration, render_plan

REPO = Path(__file__).resolve().parents[1]


# --- text ------------------------------------------------------------------------------------------------------


def test_text_shows_header_parameters_levels_and_each_nodes_settings() -> None:
    plan = multi_prompt_job()
    text = render_plan(plan, estimate=None, now=NOW)
    assert text.startswith("job review_sentiment 1.0.0\n  Clean each review, then score its sentiment.\n")
    assert f"plan {plan.id[:12]} · profile production" in text
    assert re.search(r"region\s+= eu\s+<- --param", text)
    assert re.search(r"min_rating = 3\s+<- jobs/reviews.yaml:4", text)
    levels = [text.index(f"level {n}") for n in (1, 2, 3, 4)]
    assert levels == sorted(levels)
    assert (
        text.index("input ")
        < text.index("text_cleaner ")
        < text.index("sentiment_analyzer ")
        < text.index("output ")
    )
    shows(
        text,
        "prompt text_cleaner@1.0.0 · gpt-4o via openai · per item",
        "prompt sentiment_analyzer@2.1.0 · gpt-4o-mini via openai · per item",
        "concurrency 20 · batch 50 · timeout 1m30s · on failure skip",
        "retry 3x: +1s, +2s, +4s (jitter)",
        "source file data/reviews.jsonl (jsonl)",
        "batch 50 sequential · key review_id · keep category",
        "sink file output/results.jsonl (jsonl) · replace",
        "dead letter output/failed.jsonl",
        "inputs text = {{ input.review_text }}",
    )
    assert "\x1b[" not in text
    assert text.endswith(f"plan {plan.id[:12]}: 4 nodes, 2 prompt calls per item\n")


def test_text_shows_where_values_came_from_but_not_defaults() -> None:
    text = render_plan(multi_prompt_job(), estimate=None, now=NOW)
    shows(
        text,
        "temperature 0.2 (profile production)",
        "model gpt-4o (--param)",
        "model gpt-4o-mini (env SLEIPNIR_PARAM_MODEL)",
        "batch_size 50 (profile production)",
        "path data/reviews.jsonl (jobs/reviews.yaml:8)",
        "retry 3x: +1s, +2s, +4s (jitter) · from jobs/reviews.yaml:30",
    )
    # Built-in and prompt-module defaults are not news.
    assert "top_p" not in text
    assert "batch_strategy" not in text
    assert "(prompt sentiment_analyzer@2.1.0)" not in text


def test_text_of_a_stack_shows_parallel_groups_and_conditions() -> None:
    text = render_plan(stack_job(), estimate=None, now=NOW)
    assert 'when clean.label == "negative" or score < 0.5' in text
    assert text.count("parallel group stack.review") == 2
    shows(text, "from stack.clean", "from stack.check, stack.summary", "concurrency 5")
    # A level holds both branches of the group.
    level = text[text.index("level 3") : text.index("level 4")]
    assert "stack.check" in level and "stack.summary" in level


def test_text_of_fan_out_and_fan_in() -> None:
    text = render_plan(fan_job(), estimate=None, now=NOW)
    shows(
        text,
        "split by category",
        "from fan_out (groups)",
        "merge: collects every group's outputs of process",
        "prompt result_merger@1.0.0 · gpt-4o via openai · once over all",
        "one at a time",
        "from fan_in.collect (collection)",
        "1 prompt call per group, 1 over all",
    )


def test_text_of_a_pipeline_nests_each_jobs_plan() -> None:
    plan = pipeline()
    text = render_plan(plan, estimate=None, now=NOW)
    collect = plan.nodes[0]
    assert isinstance(collect, JobStep)
    shows(text, f"job review_sentiment 1.0.0 · plan {collect.plan.id[:12]}", "after collect")
    nested = text[text.index("job review_sentiment") : text.index("job report_job")]
    assert re.search(r"\n\s+text_cleaner\s+prompt text_cleaner@1.0.0", nested)
    assert re.search(r"\n\s+report\s+prompt sentiment_analyzer@2.1.0", text)
    assert '"@daily" in America/New_York' in text
    assert text.rstrip().endswith("2 jobs, 7 nodes, 3 prompt calls")


def test_next_fire_times_in_the_jobs_zone_and_in_utc() -> None:
    text = render_plan(secret_job(), estimate=None, now=NOW)
    assert 'schedule  "30 9 * * MON-FRI" in Europe/Oslo' in text
    lines = [line for line in text.splitlines() if line.startswith(("  next", "  then"))]
    assert len(lines) == 3
    # Friday in CET (UTC+1); then, after the clocks go forward on Sunday, CEST (UTC+2).
    assert re.search(r"next\s+Fri 2025-03-28 09:30 CET \(Europe/Oslo\)\s+Fri 2025-03-28 08:30 UTC", lines[0])
    assert re.search(r"then\s+Mon 2025-03-31 09:30 CEST \(Europe/Oslo\)\s+Mon 2025-03-31 07:30 UTC", lines[1])
    assert re.search(r"then\s+Tue 2025-04-01 09:30 CEST \(Europe/Oslo\)\s+Tue 2025-04-01 07:30 UTC", lines[2])


def test_a_naive_now_is_utc_and_a_disabled_schedule_has_no_fire_times() -> None:
    aware = render_plan(secret_job(), estimate=None, now=NOW)
    assert render_plan(secret_job(), estimate=None, now=NOW.replace(tzinfo=None)) == aware
    disabled = render_plan(secret_job(enabled=False), estimate=None, now=NOW)
    assert "disabled" in disabled
    assert "next " not in disabled


def test_a_schedule_that_cannot_be_read_is_said_not_raised() -> None:
    for schedule in (
        {"cron": "61 * * * *", "timezone": "UTC"},
        {"cron": "0 9 * * *", "timezone": "Mars/Base"},
    ):
        broken = Plan(kind="job", name="x", settings=Frozen({"schedule": schedule}))
        assert "cannot compute the next fire times" in render_plan(broken, estimate=None, now=NOW)


def test_triggers_conditions_and_alerts() -> None:
    text = render_plan(secret_job(), estimate=None, now=NOW)
    shows(
        text,
        "triggers\n  - file_created · path /data/input/*.json",
        'conditions\n  - data_available · check "SELECT COUNT(*) FROM new_data" · threshold 100',
        "alerts\n  - when error_rate > 0.05: email · recipients [ops@example.com]",
    )


def test_secrets_print_as_their_digest_and_never_as_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_VALUE)
    monkeypatch.setenv("DB_PASSWORD", SECRET_VALUE)
    plan = secret_job()
    shown = f"(sensitive, sha256:{digest(SECRET_VALUE)}) from env OPENAI_API_KEY"
    text = render_plan(plan, estimate=estimate(plan, prices=PRICES), now=NOW)
    shows(
        text,
        f"api_key {shown}",
        f"headers {{X-Key: (sensitive, sha256:{digest(SECRET_VALUE)})",
        f"token = {shown}",
        f"api key {shown}",
        "(sensitive, unset) from env DB_PASSWORD",
    )
    for output in (text, render_dot(plan), render_mermaid(plan), to_json(plan)):
        assert SECRET_VALUE not in output


def test_color_only_when_asked() -> None:
    plan = multi_prompt_job()
    assert "\x1b[1m" in render_plan(plan, estimate=None, now=NOW, color=True)
    assert "\x1b[" not in render_plan(plan, estimate=None, now=NOW)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"),
        (1.5, "1.5s"),
        (0.25, "0.25s"),
        (60, "1m"),
        (90, "1m30s"),
        (120, "2m"),
        (3600, "1h"),
        (3725, "1h2m5s"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_retry_schedules_of_each_backoff() -> None:
    def shown(retry: Retry) -> str:
        plan = Plan(kind="job", name="r", nodes=(call("c", CLEANER, retry=retry),))
        line = next(
            line.strip() for line in render_plan(plan, estimate=None, now=NOW).splitlines() if "retry" in line
        )
        schedule, _, origin = line.partition(" · from ")
        assert origin == "default", "a call whose provenance says nothing got the default"
        return schedule

    assert (
        shown(Retry(max_retries=4, initial_delay=30, max_delay=90))
        == "retry 4x: +30s, +1m, +1m30s, +1m30s (jitter)"
    )
    assert (
        shown(Retry(max_retries=3, backoff="linear", initial_delay=1.5, jitter=False))
        == "retry 3x: +1.5s, +3s, +4.5s"
    )
    assert (
        shown(Retry(max_retries=2, backoff="fixed", initial_delay=120, max_delay=300))
        == "retry 2x: +2m, +2m (jitter)"
    )
    assert shown(Retry(max_retries=2, backoff="fixed", initial_delay=120)) == "retry 2x: +1m, +1m (jitter)"
    assert shown(Retry()) == "no retry"


# --- drawings --------------------------------------------------------------------------------------------------


def _drawn(plan: Plan, prefix: str = "") -> tuple[list[str], list[tuple[str, str, str]]]:
    """Every node and edge a drawing must show: nested job nodes as `job/node`, job edges between the jobs."""
    nodes: list[str] = []
    edges = [(prefix + e.source, prefix + e.target, e.carries) for e in plan.edges]
    for node in plan.nodes:
        if isinstance(node, JobStep):
            inner_nodes, inner_edges = _drawn(node.plan, f"{prefix}{node.id}/")
            nodes += inner_nodes
            edges += inner_edges
        else:
            nodes.append(prefix + node.id)
    return nodes, edges


def _mermaid_id(key: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_dot_is_deterministic_and_draws_every_node_and_edge(name: str) -> None:
    plan = PLANS[name]()
    dot = render_dot(plan)
    assert dot == render_dot(PLANS[name]()) == render_dot(from_json(to_json(plan)))
    assert dot.startswith(f'digraph "{plan.name}" {{\n') and dot.endswith("}\n")
    nodes, edges = _drawn(plan)
    for node in nodes:
        assert re.search(rf'^\s+"{re.escape(node)}" \[label="', dot, re.MULTILINE), node
    jobs = {n.id: n.plan for n in plan.nodes if isinstance(n, JobStep)}
    for tail, head, carries in edges:
        if tail in jobs:
            assert f'ltail="cluster {tail}", lhead="cluster {head}"' in dot
            continue
        label = "" if carries in ("items", "after") else f' [label="{carries}"]'
        assert f'  "{tail}" -> "{head}"{label};' in dot


@pytest.mark.parametrize("name", sorted(PLANS))
def test_mermaid_is_deterministic_and_draws_every_node_and_edge(name: str) -> None:
    plan = PLANS[name]()
    chart = render_mermaid(plan)
    assert chart == render_mermaid(PLANS[name]()) == render_mermaid(from_json(to_json(plan)))
    assert chart.startswith("flowchart TD\n")
    nodes, edges = _drawn(plan)
    for node in nodes:
        assert re.search(rf"^\s+{_mermaid_id(node)}[\[({{]", chart, re.MULTILINE), node
    for tail, head, carries in edges:
        link = "-->" if carries in ("items", "after") else f'-->|"{carries}"|'
        assert f"  {_mermaid_id(tail)} {link} {_mermaid_id(head)}" in chart
    # Ids are plain words; labels hold no raw quote or angle bracket that Mermaid would read as syntax.
    for line in chart.splitlines()[1:]:
        label = re.search(r'"(.*)"', line)
        if label:
            assert not re.search(r'["<>]', label.group(1).replace("<br/>", "")), line


def test_drawings_cluster_parallel_groups_and_pipeline_jobs() -> None:
    stack_dot, stack_chart = render_dot(stack_job()), render_mermaid(stack_job())
    group = stack_dot[stack_dot.index('subgraph "cluster group stack.review"') :]
    assert '"stack.check"' in group[: group.index("}")] and '"stack.summary"' in group[: group.index("}")]
    assert 'subgraph n_group_stack_review["parallel group stack.review"]' in stack_chart
    assert "#quot;negative#quot;" in stack_chart and "#lt; 0.5" in stack_chart
    assert '\\"negative\\"' in stack_dot
    pipe_dot, pipe_chart = render_dot(pipeline()), render_mermaid(pipeline())
    assert 'subgraph "cluster collect"' in pipe_dot and 'label="job review_sentiment (collect)";' in pipe_dot
    assert 'subgraph n_collect["job review_sentiment (collect)"]' in pipe_chart
    assert 'subgraph n_report["job report_job (report)"]' in pipe_chart


def test_mermaid_ids_never_collide_or_shadow_keywords() -> None:
    plan = Plan(
        kind="job",
        name="k",
        nodes=(Split(id="end", split_by="x"), Split(id="a.b", split_by="x"), Split(id="a_b", split_by="x")),
        edges=(Edge(source="end", target="a.b"), Edge(source="a.b", target="a_b")),
    )
    chart = render_mermaid(plan)
    assert "n_end{{" in chart and "n_a_b{{" in chart and "n_a_b_2{{" in chart
    assert "  n_end --> n_a_b\n  n_a_b --> n_a_b_2\n" in chart


# --- the JSON Schema -------------------------------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((REPO / "schema" / "plan.schema.json").read_text(encoding="utf-8"))
    return schema


def test_published_plan_schema_is_the_generators_output() -> None:
    published = (REPO / "schema" / "plan.schema.json").read_text(encoding="utf-8")
    assert published == plan_schema.render(), (
        "schema/plan.schema.json is stale: regenerate it with "
        "`python -c \"from sleipnir.compiler.plan_schema import write; write('schema/')\"`"
    )
    jsonschema.Draft7Validator.check_schema(_schema())


def test_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = plan_schema.write(str(tmp_path))
    assert path.read_text(encoding="utf-8") == plan_schema.render()
    assert [p.name for p in tmp_path.iterdir()] == ["plan.schema.json"]


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_validates_against_the_schema(name: str) -> None:
    data = json.loads(to_json(PLANS[name]()))
    jsonschema.Draft7Validator(_schema()).validate(data)
    assert jsonschema_rs.Draft7Validator(_schema()).is_valid(data)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("id"), "id"),
        (lambda d: d.update(format_version=1), "format_version"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["nodes"][1].update(kind="prompt_call"), "kind"),
        (lambda d: d["nodes"][1].update(scope="batch"), "scope"),
        (lambda d: d["nodes"][1].pop("model"), "model"),
        (lambda d: d["nodes"][1]["retry"].update(backoff="random"), "backoff"),
        (lambda d: d["nodes"][1]["options"]["api_key"].update(digest="not-hex"), "digest"),
        (lambda d: d["nodes"][1]["options"]["api_key"].pop("names"), "names"),
        (lambda d: d["nodes"][1]["options"]["headers"]["X-Key"].update(value="sk-leaked"), "value"),
        (lambda d: d["edges"][0].update(carries="stuff"), "carries"),
        (lambda d: d["nodes"][0]["options"].update(connection={"$secret": "plain text"}), "connection"),
    ],
)
def test_the_schema_is_strict_on_structure(change: Any, where: str) -> None:
    data = json.loads(to_json(secret_job()))
    assert [n["kind"] for n in data["nodes"]] == ["source", "prompt", "sink"]
    change(data)
    errors = list(jsonschema.Draft7Validator(_schema()).iter_errors(data))
    assert errors, where
    assert not jsonschema_rs.Draft7Validator(_schema()).is_valid(data)


def test_free_form_config_stays_free_form() -> None:
    data = json.loads(to_json(multi_prompt_job()))
    data["nodes"][1]["options"]["anything"] = {"nested": [1, "two", None, {"deep": True}]}
    data["settings"]["custom"] = [{"a": 1}]
    jsonschema.Draft7Validator(_schema()).validate(data)
