"""Lowering to the plan: prompt chains, stacks, phases and pipelines become the DAG the runtime runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sleipnir.compiler.ir import Merge, Plan, PromptCall, Reduce, Sink, Source, Split, from_json, to_json
from sleipnir.compiler.planner import PlanResult, plan

ENV = {"OPENAI_API_KEY": "sk-test-not-real"}


def workspace(tmp_path: Path, files: dict[str, str], manifest: str = "name: lowering\n") -> Path:
    (tmp_path / "sleipnir.yaml").write_text(manifest, encoding="utf-8")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return tmp_path


def planned(tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch, **options: object) -> PlanResult:
    monkeypatch.chdir(tmp_path)
    options.setdefault("environ", ENV)
    return plan(target, **options)  # type: ignore[arg-type]


def only(result: PlanResult) -> Plan:
    assert result.ok, [(d.code, d.message) for d in result.diagnostics]
    [single] = result.plans
    assert from_json(to_json(single)) == single
    return single


def edges(p: Plan) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.carries) for e in p.edges}


def test_prompts_chain_per_item_and_fill_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: chained
              input:
                path: data/rows.csv
              prompts:
                - name: text_cleaner
                  version: 1.0.0
                - name: sentiment_analyzer
                  temperature: 0.3
              output:
                table: results
            """
        },
    )
    p = only(planned(tmp_path, "chained", monkeypatch))
    assert [n.id for n in p.nodes] == ["input", "text_cleaner", "sentiment_analyzer", "output"]
    assert edges(p) == {
        ("input", "text_cleaner", "items"),
        ("text_cleaner", "sentiment_analyzer", "items"),
        ("sentiment_analyzer", "output", "items"),
    }
    source, _, sentiment, sink = p.nodes
    assert isinstance(source, Source) and source.source == "file" and source.options["format"] == "csv"
    assert (source.batch_size, source.batch_strategy) == (100, "sequential")
    assert isinstance(sentiment, PromptCall)
    assert sentiment.version == "2.1.0", "the newest version when none is given"
    assert sentiment.options["temperature"] == 0.3 and sentiment.provenance["temperature"] == "job.yaml:9"
    assert sentiment.options["max_tokens"] == 400 and sentiment.provenance["max_tokens"] == "prompt sentiment_analyzer@2.1.0"
    assert sentiment.provider == "openai" and sentiment.timeout == 120.0 and sentiment.provenance["timeout"] == "default"
    assert isinstance(sink, Sink) and (sink.destination, sink.mode) == ("database", "upsert")
    assert sink.options["connection"] == "default" and sink.dead_letter == ".sleipnir/dead_letter/chained.jsonl"
    assert [c.name for c in p.resources.connections] == ["default"]
    assert {(m.name, m.version) for m in p.resources.prompts} == {("text_cleaner", "1.0.0"), ("sentiment_analyzer", "2.1.0")}
    assert all(m.user for m in p.resources.prompts), "the runtime gets the templates, not a file to read"


def test_a_stack_expands_inline_with_namespaced_ids_and_spans_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: stacked
              stack: sentiment_analysis_stack
              profiles:
                cheap:
                  model: mock
            """
        },
    )
    p = only(planned(tmp_path, "stacked", monkeypatch, profile="cheap"))
    stack = "sentiment_analysis_stack"
    calls = [n for n in p.nodes if isinstance(n, PromptCall)]
    assert {c.id for c in calls} == {f"{stack}.{s}" for s in ("clean", "sentiment", "complaint", "summary", "sentiment_check")}
    by_id = {c.id: c for c in calls}
    assert by_id[f"{stack}.complaint"].when == 'sentiment.label == "negative"'
    assert by_id[f"{stack}.summary"].group == by_id[f"{stack}.sentiment_check"].group == f"{stack}.review"
    assert by_id[f"{stack}.sentiment"].output == "sentiment" and by_id[f"{stack}.sentiment"].namespace == stack
    for call in calls:
        assert call.span is not None and call.span.file.endswith("stacks/sentiment_analysis_stack/1.0.0.yaml")
        assert (call.model, call.provider) == ("mock", "mock"), "a profile's shorthand reaches stack steps"
        assert call.provenance["model"] == "profile cheap"
    assert edges(p) >= {
        (f"{stack}.complaint", f"{stack}.summary", "items"),
        (f"{stack}.complaint", f"{stack}.sentiment_check", "items"),
        (f"{stack}.summary", "output", "items"),
        (f"{stack}.sentiment_check", "output", "items"),
    }
    levels = [[n.id for n in level] for level in p.levels()]
    assert levels[-2] == [f"{stack}.sentiment_check", f"{stack}.summary"], "a parallel group is one level"


def test_map_reduce_passes_outputs_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: mr
              phases:
                - name: map
                  prompt: item_processor
                - name: reduce
                  prompt: aggregator
            """
        },
    )
    p = only(planned(tmp_path, "mr", monkeypatch))
    assert [n.id for n in p.nodes] == ["input", "map", "reduce.collect", "reduce", "output"]
    gather = p.node("reduce.collect")
    assert isinstance(gather, Reduce) and gather.collects == ("map",)
    mapped, reduced = p.node("map"), p.node("reduce")
    assert isinstance(mapped, PromptCall) and (mapped.scope, mapped.parallel) == ("item", True)
    assert isinstance(reduced, PromptCall) and (reduced.scope, reduced.parallel) == ("all", False)
    assert ("reduce", "output", "collection") in edges(p)


def test_fan_out_groups_then_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: fan
              phases:
                - name: fan_out
                  split_by: category
                - name: process
                  prompt: category_analyzer
                - name: fan_in
                  prompt: result_merger
            """
        },
    )
    p = only(planned(tmp_path, "fan", monkeypatch))
    split, process, merge = p.node("fan_out"), p.node("process"), p.node("fan_in.collect")
    assert isinstance(split, Split) and split.split_by == "category"
    assert isinstance(process, PromptCall) and process.scope == "group"
    assert isinstance(merge, Merge) and merge.collects == ("process",)
    assert edges(p) >= {("fan_out", "process", "groups"), ("process", "fan_in.collect", "groups")}
    assert ("fan_in.collect", "fan_in", "collection") in edges(p)


PIPELINE_JOBS = {
    f"jobs/{name}.yaml": f"job:\n  name: {name}\n  prompts:\n    - name: classifier\n"
    for name in ("collect", "process", "report")
}


def test_both_pipeline_forms_lower_to_the_same_job_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            **PIPELINE_JOBS,
            "sequence.yaml": "pipeline:\n  name: seq\n  jobs: [collect, process, report]\n",
            "graph.yaml": """
            pipeline:
              name: dag
              jobs:
                - {id: collect, name: collect}
                - {id: process, name: process, depends_on: [collect]}
                - {id: report, name: report, depends_on: [process]}
            """,
        },
    )
    sequence = only(planned(tmp_path, "seq", monkeypatch))
    graph = only(planned(tmp_path, "dag", monkeypatch))
    assert edges(sequence) == edges(graph) == {("collect", "process", "after"), ("process", "report", "after")}
    assert [n.id for n in sequence.nodes] == [n.id for n in graph.nodes]
    assert sequence.nodes[0].plan == graph.nodes[0].plan  # type: ignore[attr-defined]


def test_retry_policy_from_the_shorthand_and_from_error_handling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "jobs.yaml": """
            job:
              name: shorthand
              prompts: [{name: classifier}]
              execution: {retry_on_failure: 3}
            ---
            job:
              name: explicit
              prompts: [{name: classifier}]
              error_handling:
                on_prompt_failure: {strategy: retry, max_retries: 4, backoff: linear, initial_delay: 2, max_delay: 5}
            ---
            job:
              name: skipping
              prompts: [{name: classifier}]
              error_handling:
                on_prompt_failure: {strategy: skip}
            """
        },
    )
    calls = {}
    for name in ("shorthand", "explicit", "skipping"):
        call = only(planned(tmp_path, name, monkeypatch)).node("classifier")
        assert isinstance(call, PromptCall)
        calls[name] = call
    assert calls["shorthand"].retry.delays == (1.0, 2.0, 4.0) and calls["shorthand"].on_failure == "fail"
    assert calls["explicit"].retry.delays == (2.0, 4.0, 5.0, 5.0)
    assert calls["skipping"].retry.max_retries == 0 and calls["skipping"].on_failure == "skip"


def test_provider_is_chosen_from_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: providers
              prompts:
                - {name: classifier, model: gpt-4o}
                - {name: analyzer, model: mock}
                - {name: validator, model: local/llama3}
            """
        },
        manifest="name: p\nproviders:\n  local:\n    base_url: http://127.0.0.1:8000/v1\n",
    )
    p = only(planned(tmp_path, "providers", monkeypatch))
    chosen = {n.id: (n.provider, n.model) for n in p.nodes if isinstance(n, PromptCall)}
    assert chosen == {"classifier": ("openai", "gpt-4o"), "analyzer": ("mock", "mock"), "validator": ("local", "llama3")}
    local = next(pr for pr in p.resources.providers if pr.name == "local")
    assert local.protocol == "openai" and local.base_url == "http://127.0.0.1:8000/v1"


def test_param_file_and_environment_overrides_keep_their_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: layered
              params:
                since: "2024-01-01"
              input:
                query: "SELECT * FROM t WHERE d > '${since}'"
              prompts: [{name: classifier}]
            """,
            ".params/overrides.yaml": "input.batch_size: 7\nsince: '2025-02-02'\n",
        },
    )
    p = only(
        planned(
            tmp_path,
            "layered",
            monkeypatch,
            param_files=[".params/overrides.yaml"],
            environ={**ENV, "SLEIPNIR_PARAM_EXECUTION__CONCURRENCY": "3"},
        )
    )
    source = p.node("input")
    assert isinstance(source, Source) and source.batch_size == 7
    assert source.provenance["batch_size"] == "--param-file .params/overrides.yaml"
    assert source.options["query"] == "SELECT * FROM t WHERE d > ?"
    assert source.options["bound"] == ("2025-02-02",)
    assert source.provenance["query"] == "--param-file .params/overrides.yaml"
    assert p.settings["execution"]["concurrency"] == 3
    assert {s.key: s.origin for s in p.parameters} == {"since": "--param-file .params/overrides.yaml"}


def test_unknown_target_suggests_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, PIPELINE_JOBS)
    result = planned(tmp_path, "colect", monkeypatch)
    [problem] = result.diagnostics
    assert problem.code == "unknown-target" and problem.help == "did you mean `collect`?"
    assert not result.plans


def test_an_unknown_target_is_named_beside_a_broken_file_that_stops_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken file may be the one that defines the name asked for: its error is shown, and the name that is
    not there is said too, not left to be guessed."""
    workspace(tmp_path, {**PIPELINE_JOBS, "jobs/broken.yaml": "job: [unclosed\n"})
    result = planned(tmp_path, "colect", monkeypatch)
    codes = [d.code for d in result.diagnostics if d.severity == "error"]
    assert codes[-1] == "unknown-target" and len(codes) == 2, codes
    problem = result.diagnostics[-1]
    assert problem.help == "did you mean `collect`?"
    assert "a file with errors (above) may be the one that defines it" in problem.notes
    assert not result.plans
    assert [d.code for d in planned(tmp_path, "collect", monkeypatch).diagnostics if d.severity == "error"] == []


def test_a_file_target_plans_every_job_in_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path, PIPELINE_JOBS)
    result = planned(tmp_path, "jobs/report.yaml", monkeypatch)
    assert [p.name for p in result.plans] == ["report"]


def test_the_retry_schedule_and_call_timeout_say_where_they_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(
        tmp_path,
        {
            "job.yaml": """
            job:
              name: retried
              input:
                path: data/rows.jsonl
              prompts:
                - name: text_cleaner
                  version: 1.0.0
                  model: local/llama
              output:
                path: out.jsonl
              profiles:
                production:
                  error_handling:
                    on_prompt_failure:
                      strategy: retry
                      max_retries: 5
            """
        },
        manifest="name: lowering\nproviders:\n  local:\n    base_url: http://127.0.0.1:8000/v1\n    structured_output: json_object\n    timeout: 300\n",
    )
    default = only(planned(tmp_path, "job.yaml", monkeypatch))
    [call] = [n for n in default.nodes if isinstance(n, PromptCall)]
    assert call.retry.max_retries == 3 and call.provenance["retry"] == "default"
    assert call.timeout == 300.0 and call.provenance["timeout"] == "sleipnir.yaml providers.local.timeout"
    [provider] = default.resources.providers
    assert provider.structured_output == "json_object" and provider.timeout == 300.0
    production = only(planned(tmp_path, "job.yaml", monkeypatch, profile="production"))
    [call] = [n for n in production.nodes if isinstance(n, PromptCall)]
    assert call.retry.max_retries == 5 and call.provenance["retry"] == "profile production"
    module = production.resources.prompt("text_cleaner", "1.0.0")
    assert module.sent_schema is not None and module.strict
