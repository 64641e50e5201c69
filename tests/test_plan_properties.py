"""Properties of planning, over generated jobs and pipelines written into fresh workspaces.

- Compiling is deterministic: twice gives byte-identical JSON, and the same workspace in another folder gives the
  same plan id (only `root` differs).
- A plan survives its JSON round trip.
- Precedence: of a job file, a profile, `SLEIPNIR_PARAM_*`, `--param-file` and `--param` setting one value, the
  highest layer present wins, and the prompt call's provenance names it.
- `$${` escaping: `format(parse_substitutions(s)) == s`, and a planned string holds `${` where `$${` was written.
- Nodes come in topological order, and `Plan.levels()` puts every edge's source before its target.
- Mangled job documents plan or give diagnostics, never an exception.

Each example gets its own temporary workspace (function-scoped fixtures do not reset between hypothesis examples)
and is planned from its root, as `plan` resolves names in the workspace around the current folder. Every plan is
made with an explicit environment, never the developer's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import re
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_plan_goldens import check_invariants
from test_properties import paths
from textpos import position

from sleipnir.compiler.ir import JobStep, Plan, PromptCall, Secret, Sink, Source, from_json, to_data, to_json
from sleipnir.compiler.ir.common import mask_passwords
from sleipnir.compiler.ir.expressions import ExpressionError, Substitution, Text, format, parse_substitutions
from sleipnir.compiler.planner import PlanResult, plan

SECRET = "sk-test-not-real"
ENVIRON = {"OPENAI_API_KEY": SECRET}
PROMPTS = (
    "aggregator",
    "analyzer",
    "category_analyzer",
    "classifier",
    "item_processor",
    "preprocessor",
    "report_generator",
    "result_merger",
    "sentiment_analyzer",
    "text_cleaner",
    "validator",
)
"""The stdlib's prompt modules."""


def examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# --------------------------------------------------------------------------------------------------------------
# Workspaces


def dump(kind: str, body: Mapping[str, Any]) -> str:
    return yaml.safe_dump({kind: dict(body)}, sort_keys=False, allow_unicode=True)


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for name, text in {"sleipnir.yaml": "name: generated\n", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def workspace(files: Mapping[str, str]) -> Iterator[Path]:
    """A fresh workspace holding `files` (and a `sleipnir.yaml`), as the current folder."""
    with tempfile.TemporaryDirectory(prefix="sleipnir-plan-") as folder:
        root = Path(folder).resolve()
        write_files(root, files)
        with contextlib.chdir(root):
            yield root


def planned(target: str | None = None, **options: Any) -> Plan:
    """The one plan of `target`; fails with the diagnostics when there is none."""
    result = plan(target, **{"environ": ENVIRON, **options})
    assert result.ok and len(result.plans) == 1, [(d.code, d.message) for d in result.diagnostics]
    return result.plans[0]


# --------------------------------------------------------------------------------------------------------------
# Generated jobs and pipelines

prompt_names = st.sampled_from(PROMPTS)
temperatures = st.integers(min_value=0, max_value=20).map(lambda n: n / 10)


@st.composite
def prompt_entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": draw(prompt_names)}
    if draw(st.booleans()):
        entry["temperature"] = draw(temperatures)
    if draw(st.booleans()):
        entry["max_tokens"] = draw(st.integers(min_value=1, max_value=4000))
    if draw(st.booleans()):
        entry["model"] = draw(st.sampled_from(["gpt-4o", "mock", "openai/gpt-4", "mock-fast"]))
    return entry


@st.composite
def stack_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A stack of single steps and parallel groups, each step reading a stdlib prompt."""
    steps: list[dict[str, Any]] = []
    for index in range(draw(st.integers(min_value=1, max_value=5))):
        if draw(st.booleans()):
            width = draw(st.integers(min_value=1, max_value=3))
            members = [{"id": f"s{index}_{k}", "prompt": draw(prompt_names)} for k in range(width)]
            group: dict[str, Any] = {"parallel": members}
            if draw(st.booleans()):
                group["id"] = f"group{index}"
            steps.append(group)
        else:
            steps.append({"id": f"s{index}", "prompt": draw(prompt_names)})
    return {"name": "generated_stack", "version": "1.0.0", "steps": steps}


@st.composite
def phase_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = []
    for name in draw(
        st.lists(
            st.sampled_from(["map", "reduce", "fan_out", "process", "fan_in", "enrich"]),
            min_size=1,
            max_size=6,
        )
    ):
        if name == "fan_out":
            found.append({"name": name, "split_by": "category"})
            continue
        phase: dict[str, Any] = {"name": name, "prompt": draw(prompt_names)}
        if draw(st.booleans()):
            phase["parallel"] = draw(st.booleans())
        found.append(phase)
    return found


@st.composite
def job_workspaces(draw: st.DrawFn) -> dict[str, str]:
    """The files of a workspace with one job `generated` (and the stack it runs, if any)."""
    files: dict[str, str] = {}
    body: dict[str, Any] = {"name": "generated"}
    if draw(st.booleans()):
        body["params"] = {"folder": draw(st.sampled_from(["data", "in", "x"]))}
        body["input"] = {
            "path": "${folder}/items.jsonl",
            "batch_size": draw(st.integers(min_value=1, max_value=500)),
        }
    shape = draw(st.sampled_from(["prompts", "stack", "phases", "none"]))
    if shape == "prompts":
        body["prompts"] = draw(st.lists(prompt_entries(), min_size=1, max_size=5))
    elif shape == "stack":
        files["stacks/generated_stack.yaml"] = dump("stack", draw(stack_documents()))
        body["stack"] = "generated_stack"
    elif shape == "phases":
        body["phases"] = draw(phase_lists())
    if draw(st.booleans()):
        body["output"] = {"path": "out/${BATCH_NAME:-results}.jsonl"}
    if draw(st.booleans()):
        body["execution"] = {"concurrency": draw(st.integers(min_value=1, max_value=50))}
    files["jobs/generated.yaml"] = dump("job", body)
    return files


@st.composite
def pipeline_workspaces(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A pipeline over a random DAG (entries listed in a random order), and each entry's dependencies."""
    count = draw(st.integers(min_value=1, max_value=7))
    ids = [f"step{i}" for i in range(count)]
    depends = {
        ids[i]: draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=3)) if i else []
        for i in range(count)
    }
    entries = []
    for node_id in draw(st.permutations(ids)):
        entry: dict[str, Any] = {"id": node_id, "name": f"job{ids.index(node_id) % 3}"}
        if depends[node_id]:
            entry["depends_on"] = depends[node_id]
        entries.append(entry)
    # Each stage reads a file, as a stage after another must when its prompts need a row (`missing-input`).
    jobs = "---\n".join(
        dump("job", {"name": f"job{n}", "input": {"source": "file", "path": f"data/job{n}.jsonl"}, "prompts": [{"name": PROMPTS[n]}]})
        for n in range(3)
    )
    files = {
        "jobs.yaml": jobs,
        "pipeline.yaml": dump("pipeline", {"name": "generated_pipeline", "jobs": entries}),
    }
    return files, depends


# --------------------------------------------------------------------------------------------------------------
# Determinism and the JSON form


@examples(25)
@given(files=job_workspaces())
def test_compiling_twice_gives_the_same_plan_and_another_folder_the_same_id(files: dict[str, str]) -> None:
    with workspace(files) as root:
        first, second = planned("generated"), planned("generated")
    assert first.id == second.id
    assert to_json(first) == to_json(second)
    with workspace(files) as elsewhere:
        moved = planned("generated")
    assert elsewhere != root and moved.root == str(elsewhere) and first.root == str(root)
    assert moved.id == first.id
    assert to_json(moved).replace(str(elsewhere), str(root)) == to_json(first)


@examples(25)
@given(files=job_workspaces())
def test_a_job_plan_survives_its_json_round_trip(files: dict[str, str]) -> None:
    with workspace(files):
        original = planned("generated")
    text = to_json(original)
    back = from_json(text)
    assert back == original
    assert back.id == original.id
    assert to_json(back) == text
    assert SECRET not in text


@examples(20)
@given(generated=pipeline_workspaces())
def test_a_pipeline_plan_survives_its_json_round_trip(
    generated: tuple[dict[str, str], dict[str, list[str]]],
) -> None:
    files, _ = generated
    with workspace(files):
        original = planned("generated_pipeline")
    back = from_json(to_json(original))
    assert back == original and back.id == original.id


# --------------------------------------------------------------------------------------------------------------
# Precedence

LAYERS = ("file", "profile", "env", "param_file", "param")
"""Lowest first: the job (or stack) file, the profile, SLEIPNIR_PARAM_*, --param-file, --param."""


def tuned_job(where: str, values: Mapping[str, float]) -> tuple[dict[str, str], str, str]:
    """A job whose one prompt call may set `temperature` in its file (`values["file"]`) and in a profile; its
    files, the id of the call's node, and the origin the file layer shows."""
    temperature = f"\n      temperature: {values['file']}" if "file" in values else ""
    profile = (
        f"\n  profiles:\n    tuned:\n      temperature: {values['profile']}" if "profile" in values else ""
    )
    files: dict[str, str] = {}
    if where == "prompts":
        body, node, line = (
            f"  prompts:\n    - name: classifier{temperature}",
            "classifier",
            "jobs/tuned.yaml:5",
        )
    elif where == "phases":
        body, node, line = (
            f"  phases:\n    - name: map\n      prompt: classifier{temperature}",
            "map",
            "jobs/tuned.yaml:6",
        )
    else:
        files["stacks/tuned_stack.yaml"] = (
            f"stack:\n  name: tuned_stack\n  version: 1.0.0\n  steps:\n    - id: score\n      prompt: classifier{temperature}\n"
        )
        body, node, line = "  stack: tuned_stack", "tuned_stack.score", "stacks/tuned_stack.yaml:"
    files["jobs/tuned.yaml"] = f"job:\n  name: tuned\n{body}{profile}\n"
    return files, node, line


@examples(60)
@given(
    present=st.sets(st.sampled_from(LAYERS)),
    values=st.lists(st.integers(min_value=0, max_value=20), min_size=5, max_size=5, unique=True),
    where=st.sampled_from(["prompts", "phases", "stack"]),
)
def test_the_highest_layer_present_sets_the_value_and_is_named_as_its_origin(
    present: set[str], values: list[int], where: str
) -> None:
    value = {layer: n / 10 for layer, n in zip(LAYERS, values, strict=True) if layer in present}
    files, node_id, file_origin = tuned_job(where, value)
    with tempfile.TemporaryDirectory(prefix="sleipnir-params-") as outside, workspace(files):
        environ = dict(ENVIRON)
        param_files: list[str] = []
        if "env" in value:
            environ["SLEIPNIR_PARAM_TEMPERATURE"] = str(value["env"])
        if "param_file" in value:
            param_file = Path(outside, "overrides.yaml")
            param_file.write_text(f"temperature: {value['param_file']}\n", encoding="utf-8")
            param_files.append(str(param_file))
        result = planned(
            "tuned",
            profile="tuned" if "profile" in value else None,
            params=[f"temperature={value['param']}"] if "param" in value else [],
            param_files=param_files,
            environ=environ,
        )
        call = result.node(node_id)
        assert isinstance(call, PromptCall)
        origins = {
            "file": file_origin,
            "profile": "profile tuned",
            "env": "env SLEIPNIR_PARAM_TEMPERATURE",
            "param_file": f"--param-file {param_files[0]}" if param_files else "",
            "param": "--param",
        }
        winner = max(present, key=LAYERS.index, default=None)
        if winner is None:
            assert call.options["temperature"] == 0, "the classifier module's own default"
            assert call.provenance["temperature"] == "prompt classifier@1.0.0"
        else:
            assert call.options["temperature"] == value[winner]
            assert call.provenance["temperature"].startswith(origins[winner])
            if winner != "file" or where != "stack":
                assert call.provenance["temperature"] == origins[winner]
        assert result.parameters == (), "temperature is a shorthand, not a parameter"


def test_a_param_wins_over_every_other_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _, _ = tuned_job("prompts", {"file": 0.1, "profile": 0.2})
    write_files(tmp_path / "ws", files)
    (tmp_path / "late.yaml").write_text("temperature: 0.4\n", encoding="utf-8")
    (tmp_path / "early.yaml").write_text("temperature: 0.9\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "ws")
    result = planned(
        "tuned",
        profile="tuned",
        params=["temperature=0.5"],
        param_files=[str(tmp_path / "early.yaml"), str(tmp_path / "late.yaml")],
        environ={**ENVIRON, "SLEIPNIR_PARAM_TEMPERATURE": "0.3"},
    )
    call = result.node("classifier")
    assert (call.options["temperature"], call.provenance["temperature"]) == (0.5, "--param")
    # Without the --param, the later of two parameter files wins.
    result = planned(
        "tuned",
        profile="tuned",
        param_files=[str(tmp_path / "early.yaml"), str(tmp_path / "late.yaml")],
        environ={**ENVIRON, "SLEIPNIR_PARAM_TEMPERATURE": "0.3"},
    )
    call = result.node("classifier")
    assert (call.options["temperature"], call.provenance["temperature"]) == (
        0.4,
        f"--param-file {tmp_path / 'late.yaml'}",
    )


# --------------------------------------------------------------------------------------------------------------
# `$${` escaping

escape_text = st.lists(
    st.sampled_from(
        ["$", "{", "}", "$${", "${", "a", "_b", " ", ":-", ":?", "/", ".", "${A}", "${B:-x$}", "${C:?m}"]
    ),
    max_size=12,
).map("".join)


@examples(300)
@given(text=escape_text | st.text(alphabet="${}ab:-?. ", max_size=16))
def test_format_inverts_parse_substitutions(text: str) -> None:
    try:
        parts = parse_substitutions(text)
    except ExpressionError:
        assume(False)
    assert format(parts) == text
    assert parse_substitutions(format(parts)) == parts


literal_text = st.lists(
    st.sampled_from(["$", "{", "}", "$${", "$$", "a", "-", "_"]), min_size=1, max_size=10
).map("".join)


@examples(30)
@given(text=literal_text)
def test_an_escaped_output_path_plans_to_its_literal_text(text: str) -> None:
    try:
        parts = parse_substitutions(text)
    except ExpressionError:
        assume(False)
    assume(not any(isinstance(part, Substitution) for part in parts))
    path = f"out/{text}.jsonl"
    with workspace({"jobs/escaped.yaml": dump("job", {"name": "escaped", "output": {"path": path}})}):
        sink = planned("escaped").node("output")
    assert isinstance(sink, Sink)
    expected = "out/" + "".join(p.value for p in parts if isinstance(p, Text)) + ".jsonl"
    assert sink.options["path"] == expected == path.replace("$${", "${")


# --------------------------------------------------------------------------------------------------------------
# Topological order


@examples(40)
@given(files=job_workspaces())
def test_job_nodes_are_in_topological_order_and_levels_respect_every_edge(files: dict[str, str]) -> None:
    with workspace(files):
        job = planned("generated")
    check_invariants(job)
    graph = job.graph()
    assert job.nodes[0].id == "input" and job.nodes[-1].id == "output"
    for node in job.nodes:
        assert nx.has_path(graph, "input", node.id) and nx.has_path(graph, node.id, "output"), node.id
    body = yaml.safe_load(files["jobs/generated.yaml"])["job"]
    if "prompts" in body:
        chain = ["input", *(n.id for n in job.nodes if isinstance(n, PromptCall)), "output"]
        assert [n.id for n in job.nodes] == chain
        assert {(e.source, e.target) for e in job.edges} == set(itertools.pairwise(chain))
    if "stack" in body:
        steps = yaml.safe_load(files["stacks/generated_stack.yaml"])["stack"]["steps"]
        layers = [["input"]]
        for step in steps:
            layers.append([f"generated_stack.{m['id']}" for m in step.get("parallel", [step])])
        layers.append(["output"])
        wanted = {(a, b) for before, after in itertools.pairwise(layers) for a in before for b in after}
        assert {(e.source, e.target) for e in job.edges} == wanted
        assert [sorted(n.id for n in level) for level in job.levels()] == [sorted(layer) for layer in layers]


@examples(30)
@given(generated=pipeline_workspaces())
def test_pipeline_jobs_follow_their_dependencies(
    generated: tuple[dict[str, str], dict[str, list[str]]],
) -> None:
    files, depends = generated
    with workspace(files):
        pipeline = planned("generated_pipeline")
    check_invariants(pipeline)
    assert {(e.source, e.target, e.carries) for e in pipeline.edges} == {
        (d, node, "after") for node, before in depends.items() for d in before
    }
    depth = {node.id: n for n, level in enumerate(pipeline.levels()) for node in level}
    for node, before in depends.items():
        assert depth[node] == (1 + max(depth[d] for d in before) if before else 0)
    for node in pipeline.nodes:
        assert isinstance(node, JobStep) and node.plan.name == node.job


# --------------------------------------------------------------------------------------------------------------
# Never crashing

BASE_JOB = {
    "name": "mangled",
    "description": "A job with something of everything",
    "params": {"table": "reviews", "limit": 10},
    "input": {
        "source": "database",
        "query": "SELECT * FROM ${table} LIMIT ${limit}",
        "batch_size": "${BATCH:-50}",
    },
    "prompts": [
        {"name": "text_cleaner", "version": "1.0.0"},
        {
            "name": "sentiment_analyzer",
            "temperature": 0.3,
            "api_key": "${OPENAI_API_KEY}",
            "parameters": {"include_reasoning": True},
        },
    ],
    "output": {"path": "out/${table}-$${literal}.jsonl", "mode": "append"},
    "execution": {"concurrency": 4, "retry_on_failure": 2, "rate_limit": {"requests_per_minute": 60}},
    "error_handling": {"on_prompt_failure": {"strategy": "retry", "max_retries": 2}},
    "profiles": {"dev": {"model": "mock", "batch_size": 5, "execution.concurrency": 2}},
    "schedule": {"cron": "0 2 * * *", "enabled": "${SCHEDULE_ON:-true}"},
    "alerts": [{"condition": "error_rate > 0.05", "action": "email", "recipients": ["ops@example.com"]}],
}
PHASED_JOB = {
    "name": "mangled",
    "input": {"path": "data/items.jsonl"},
    "phases": [
        {"name": "fan_out", "split_by": "category"},
        {"name": "process", "prompt": "category_analyzer"},
        {"name": "fan_in", "prompt": "result_merger"},
    ],
}
STACK_JOB = {
    "name": "mangled",
    "stack": "sentiment_analysis_stack",
    "stack_version": "1.0.0",
    "profiles": {"dev": {"temperature": 0.1}},
}

garbage = st.one_of(
    st.sampled_from(
        [
            "${",
            "${}",
            "${1x}",
            "${A:-${B}}",
            "${A-b}",
            "${A:x}",
            "$${",
            "${UNSET}",
            "${OPENAI_API_KEY}",
            "${A:?}",
        ]
    ),
    st.text(alphabet="${}:-?ab_1 .", max_size=10).map(lambda s: "${" + s),
)
replacement = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just([]),
    st.just({}),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "name", "path"]), st.integers(), max_size=2),
    garbage,
)


@st.composite
def mangled_jobs(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(draw(st.sampled_from([BASE_JOB, PHASED_JOB, STACK_JOB])))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        found = list(paths(body))
        if not found:
            break
        where = draw(st.sampled_from(found))
        parent: Any = body
        for step in where[:-1]:
            parent = parent[step]
        operation = draw(st.sampled_from(["drop", "retype", "garbage", "add"]))
        if operation == "drop":
            del parent[where[-1]]
        elif operation == "retype":
            parent[where[-1]] = draw(replacement)
        elif operation == "garbage":
            parent[where[-1]] = draw(garbage)
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["model", "temperature", "extra", "path", "api_key", "token"]))] = (
                draw(replacement)
            )
    return body


@examples(80)
@given(
    body=mangled_jobs(),
    profile=st.sampled_from([None, "dev", "nope"]),
    params=st.lists(
        st.sampled_from(
            [
                "temperature=hot",
                "temperature=0.4",
                "table=${X}",
                "input.batch_size=abc",
                "prompts.9.model=x",
                "=",
                "nokey",
                "limit=${BATCH:-3}",
                "model=mock",
                "execution.concurrency=0",
                "output.path=$${x}",
            ]
        ),
        max_size=3,
    ),
)
def test_mangled_jobs_give_plans_or_diagnostics_never_an_exception(
    body: dict[str, Any], profile: str | None, params: list[str]
) -> None:
    with workspace({"jobs/mangled.yaml": dump("job", body)}):
        result = plan("mangled", profile=profile, params=params, environ=ENVIRON)
    assert isinstance(result, PlanResult)
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert result.plans or errors, "no plan needs a reason"
    assert not (result.plans and errors)
    assert result.ok == (not errors)
    for made in result.plans:
        check_invariants(made)
        text = to_json(made)
        assert SECRET not in text
        assert from_json(text) == made


# --------------------------------------------------------------------------------------------------------------
# Substitutions, secrets and pipeline parameters


class Folder:
    """A workspace in a test's own folder, which is the current folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def job(self, text: str) -> str:
        """Writes `text`, dedented, as `jobs/job.yaml`; returns what it wrote."""
        text = textwrap.dedent(text).lstrip()
        write_files(self.root, {"jobs/job.yaml": text})
        return text

    def files(self, files: Mapping[str, str]) -> None:
        write_files(self.root, files)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Folder:
    monkeypatch.chdir(tmp_path)
    return Folder(tmp_path)


@pytest.mark.parametrize(
    "scalar",
    [
        '"SELECT * FROM t WHERE id > ${MIN_ID}"',
        "'SELECT * FROM t WHERE id > ${MIN_ID}'",
        "SELECT * FROM t WHERE id > ${MIN_ID}",
    ],
    ids=["double-quoted", "single-quoted", "plain"],
)
def test_an_unset_variable_without_default_is_reported_at_its_place(here: Folder, scalar: str) -> None:
    text = here.job(
        f"""
        job:
          name: unset_job
          input:
            source: database
            query: {scalar}
        """,
    )
    result = plan("unset_job", environ=ENVIRON)
    assert not result.plans
    [diagnostic] = result.diagnostics
    assert diagnostic.code == "unset-variable"
    assert diagnostic.primary is not None
    span = diagnostic.primary.span
    assert (span.file, span.line, span.column) == ("jobs/job.yaml", *position(text, "${MIN_ID}"))
    assert "MIN_ID" in diagnostic.message
    # Set in the environment, the same job plans.
    [job] = plan("unset_job", environ={**ENVIRON, "MIN_ID": "7"}).plans
    assert job.node("input").options["query"] == "SELECT * FROM t WHERE id > ?"
    assert job.node("input").options["bound"] == (7,)


def test_a_whole_scalar_substitution_keeps_its_yaml_type(here: Folder) -> None:
    here.job(
        """
        job:
          name: typed
          input:
            path: data/${DAY:-today}.jsonl
            batch_size: ${BATCH:-100}
          execution:
            concurrency: ${CONCURRENCY:-8}
        """,
    )
    job = planned("typed")
    source = job.node("input")
    assert isinstance(source, Source)
    assert source.batch_size == 100 and type(source.batch_size) is int
    assert source.options["path"] == "data/today.jsonl"
    assert job.settings["execution"]["concurrency"] == 8
    source = planned("typed", environ={**ENVIRON, "BATCH": "7", "DAY": "2024-06-01"}).node("input")
    assert isinstance(source, Source)
    assert (source.batch_size, source.options["path"]) == (7, "data/2024-06-01.jsonl")


SECRET_FORM = re.compile(r"^\(sensitive, sha256:[0-9a-f]{8}\)$")


def test_an_api_key_from_the_environment_is_a_secret_and_never_in_the_json(here: Folder) -> None:
    here.job(
        """
        job:
          name: keyed
          prompts:
            - name: analyzer
              api_key: ${OPENAI_API_KEY}
        """,
    )
    job = planned("keyed")
    key = job.node("analyzer").options["api_key"]
    assert isinstance(key, Secret)
    assert SECRET_FORM.match(str(key)), str(key)
    assert key.digest == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert (key.ref, key.names) == ("${OPENAI_API_KEY}", ("OPENAI_API_KEY",))
    assert job.node("analyzer").provenance["api_key"] == "env OPENAI_API_KEY"
    text = to_json(job)
    assert SECRET not in text and SECRET not in repr(job)
    assert from_json(text) == job


LEAKY_JOB = """
job:
  name: leaky
  params:
    region: eu
  input:
    query: "SELECT * FROM t WHERE region = '${region}'"
  prompts:
    - name: analyzer
      api_key: sk-abc
"""


def assert_literal_secret_refused(result: PlanResult, text: str) -> None:
    assert not result.plans
    [diagnostic] = result.diagnostics
    assert diagnostic.code == "literal-secret"
    assert diagnostic.primary is not None
    assert diagnostic.primary.span.line == position(text, "sk-abc")[0]
    assert "sk-abc" not in diagnostic.message


@pytest.mark.parametrize(
    "text",
    [LEAKY_JOB, "job:\n  name: leaky\n  prompts:\n    - name: analyzer\n      api_key: sk-abc\n"],
    ids=["with-substitutions", "without-substitutions"],
)
def test_a_literal_api_key_is_refused(here: Folder, text: str) -> None:
    # Without a `${` anywhere the resolver once did not run at all, and the key went into the plan as is.
    text = here.job(text)
    assert_literal_secret_refused(plan("leaky", environ=ENVIRON), text)


def test_a_secret_looking_variable_seals_the_string_it_is_used_in(here: Folder) -> None:
    here.job(
        """
        job:
          name: tokened
          prompts:
            - name: analyzer
              endpoint: https://llm.example.test/${MY_SERVICE_TOKEN}/v1
        """,
    )
    token = "tok-abcdef-123456"
    job = planned("tokened", environ={**ENVIRON, "MY_SERVICE_TOKEN": token})
    endpoint = job.node("analyzer").options["endpoint"]
    assert isinstance(endpoint, Secret)
    assert endpoint.ref == "https://llm.example.test/${MY_SERVICE_TOKEN}/v1"
    assert endpoint.names == ("MY_SERVICE_TOKEN",)
    assert SECRET_FORM.match(str(endpoint))
    assert token not in to_json(job)


PIPELINE_FILES = {
    "jobs.yaml": textwrap.dedent(
        """
        job:
          name: loader
          params:
            table: job_default
            region: job_default
          input:
            query: "SELECT * FROM ${table} WHERE region = '${region}'"
        """
    ).lstrip(),
    "pipeline.yaml": textwrap.dedent(
        """
        pipeline:
          name: regional
          params:
            table: from_pipeline
            region: from_pipeline
          jobs:
            - id: first
              name: loader
              params:
                table: from_entry
            - id: second
              name: loader
              depends_on: [first]
        """
    ).lstrip(),
}


def query_of(pipeline: Plan, entry: str) -> tuple[str, dict[str, str]]:
    step = pipeline.node(entry)
    assert isinstance(step, JobStep)
    options = step.plan.node("input").options
    query = options["query"]
    for value in options.get("bound", ()):  # the values bound in place of `'${region}'`, shown where they stand
        query = query.replace("?", f"'{value}'", 1)
    return query, {s.key: s.origin for s in step.plan.parameters}


def test_pipeline_params_reach_its_jobs_entry_params_win_and_a_param_wins_over_both(here: Folder) -> None:
    here.files(PIPELINE_FILES)
    pipeline = planned("regional")
    query, origins = query_of(pipeline, "first")
    assert query == "SELECT * FROM from_entry WHERE region = 'from_pipeline'"
    assert origins == {
        "table": "pipeline entry first (pipeline.yaml:10)",
        "region": "pipeline (pipeline.yaml:5)",
    }
    query, origins = query_of(pipeline, "second")
    assert query == "SELECT * FROM from_pipeline WHERE region = 'from_pipeline'"
    assert origins == {"table": "pipeline (pipeline.yaml:4)", "region": "pipeline (pipeline.yaml:5)"}

    pipeline = planned("regional", params=["table=cli"])
    for entry in ("first", "second"):
        query, origins = query_of(pipeline, entry)
        assert query == "SELECT * FROM cli WHERE region = 'from_pipeline'"
        assert origins["table"] == "--param"
    # The job alone keeps its own params.
    [job] = plan("loader", environ=ENVIRON).plans
    assert job.node("input").options["query"] == "SELECT * FROM job_default WHERE region = ?"
    assert job.node("input").options["bound"] == ("job_default",)


# --------------------------------------------------------------------------------------------------------------
# Regressions: each of these once failed, and says what it guards

MODULE_FILES = {
    "sleipnir.yaml": "name: moved\n",
    "prompts/echo.yaml": 'prompt:\n  name: echo\n  version: 1.0.0\n  description: Echo the item.\n  template:\n    user: "{{ input }}"\n',
    "jobs/echo_job.yaml": "job:\n  name: echo_job\n  prompts:\n    - name: echo\n",
}


def test_the_plan_id_does_not_depend_on_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module's file is a display path, relative to the current folder: it must not reach the hash.
    write_files(tmp_path, MODULE_FILES)
    monkeypatch.chdir(tmp_path)
    from_root = planned("echo_job")
    monkeypatch.chdir(tmp_path / "jobs")
    from_subfolder = planned("echo_job")
    assert from_root.id == from_subfolder.id


def test_the_plan_id_does_not_depend_on_a_secrets_value(here: Folder) -> None:
    # The runtime keys resume state by the id: a rotated key must not orphan a failed run.
    here.job("job:\n  name: keyed\n  prompts:\n    - name: analyzer\n")
    before = planned("keyed", environ={"OPENAI_API_KEY": "sk-old-not-real"})
    after = planned("keyed", environ={"OPENAI_API_KEY": "sk-new-not-real"})
    assert before.id == after.id


def test_a_pipelines_json_and_job_ids_are_plain_json_of_its_data_with_passwords_masked(here: Folder) -> None:
    """The pipeline writer walks each job plan once for its line and its id, and splices the resources the jobs
    share (prompt modules, providers) into both as bytes: the result is what plain `json` writes of `to_data`,
    masked, and each id the SHA-256 of the masked canonical JSON, here with a password in a shared provider."""
    here.files(
        {
            "sleipnir.yaml": "name: shared\nproviders:\n  openai:\n    base_url: https://user:PlantedPw@llm.example/v1\n",
            "jobs/a.yaml": "job:\n  name: a\n  prompts:\n    - name: analyzer\n",
            "jobs/b.yaml": "job:\n  name: b\n  prompts:\n    - name: analyzer\n    - name: classifier\n",
            "pipelines/p.yaml": "pipeline:\n  name: p\n  jobs: [a, b]\n",
        }
    )
    pipeline = planned("p")
    text = to_json(pipeline)
    assert "PlantedPw" not in text and text.count("user:***@") == 2
    written = json.loads(text)
    canonical = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
    steps = [n for n in pipeline.nodes if isinstance(n, JobStep)]
    for step in steps:
        hashed = mask_passwords(json.dumps(to_data(step.plan, for_hash=True), **canonical))
        assert step.plan.id == hashlib.sha256(hashed.encode()).hexdigest()
        assert written["plans"][step.plan.id] == json.loads(mask_passwords(json.dumps(to_data(step.plan), **canonical)))
    assert sorted(written["plans"]) == sorted(s.plan.id for s in steps)
    assert written["id"] == pipeline.id == from_json(text).id


def test_an_escaped_string_keeps_its_file_provenance(here: Folder) -> None:
    # A string with escapes and no substitution once got the origin "", and lost its provenance.
    here.job("job:\n  name: escaped\n  output:\n    path: out/$${HOME}.jsonl\n")
    sink = planned("escaped").node("output")
    assert sink.options["path"] == "out/${HOME}.jsonl"
    assert sink.provenance.get("path") == "jobs/job.yaml:4"


def test_a_substitution_default_is_attributed_to_the_file(here: Folder) -> None:
    here.job(
        "job:\n  name: batched\n  input:\n    path: in.jsonl\n    batch_size: ${BATCH:-100}\n",
    )
    # BATCH is unset: the value is the file's default, not the environment's.
    source = planned("batched").node("input")
    assert source.provenance["batch_size"] == "jobs/job.yaml:5"


def test_a_stack_step_setting_is_attributed_to_its_own_line(here: Folder) -> None:
    files, node_id, _ = tuned_job("stack", {"file": 0.7})
    here.files(files)
    call = planned("tuned").node(node_id)
    assert call.provenance["temperature"] == "stacks/tuned_stack.yaml:7", "the line of `temperature: 0.7`"


def test_the_prompt_failure_policy_keeps_its_log_and_alert_switches(here: Folder) -> None:
    here.job(
        """
        job:
          name: quiet
          prompts:
            - name: classifier
          error_handling:
            on_prompt_failure:
              strategy: skip
              log: false
              alert: true
        """,
    )
    # The settings once kept only the strategy of the job's policy, with the default switches.
    policy = planned("quiet").settings["error_handling"]["on_prompt_failure"]
    assert (policy["strategy"], policy["log"], policy["alert"]) == ("skip", False, True)


SCHEDULED_PIPELINE = {
    "jobs.yaml": "job:\n  name: nightly_job\n",
    "pipeline.yaml": textwrap.dedent(
        """
        pipeline:
          name: nightly
          schedule:
            cron: "0 1 * * *"
            enabled: ${SCHEDULE_ON:-true}
          jobs:
            - nightly_job
        """
    ).lstrip(),
}


def test_a_pipeline_schedule_gets_the_same_defaults_as_a_jobs(here: Folder) -> None:
    here.files(SCHEDULED_PIPELINE)
    # spec/schedules.md: a pipeline's schedule has a job's keys, and so its defaults.
    assert planned("nightly").settings["schedule"]["catchup_window"] == "1d"


def test_substitutions_in_a_pipeline_schedule_are_resolved(here: Folder) -> None:
    here.files(SCHEDULED_PIPELINE)
    # A whole-scalar substitution takes its YAML type in a pipeline as in a job.
    assert planned("nightly").settings["schedule"]["enabled"] is True


def test_a_param_that_uses_another_param_gets_its_resolved_value(here: Folder) -> None:
    here.job(
        """
        job:
          name: chained
          params:
            base: ${ROOT_DIR:-data}
            folder: ${base}/in
            literal: "$${x}"
            tagged: "pre-${literal}"
          input:
            path: ${folder}/items.jsonl
          output:
            path: "out/${tagged}.jsonl"
        """,
    )
    # Params were once resolved against the params as written: `${base}` gave `${ROOT_DIR:-data}`.
    job = planned("chained")
    assert job.node("input").options["path"] == "data/in/items.jsonl"
    assert job.node("output").options["path"] == "out/pre-${x}.jsonl"


def test_a_plan_with_list_params_survives_its_json_round_trip(here: Folder) -> None:
    here.job(
        """
        job:
          name: listy
          params:
            ids: [1, 2]
            settings: {depth: 1, tags: [x, y]}
          input:
            query: "SELECT * FROM t WHERE id IN (${ids})"
        """,
    )
    # A list param was kept as a list, while from_json gives a tuple: the round trip and hash failed.
    job = planned("listy")
    assert from_json(to_json(job)) == job
    assert hash(job) == hash(from_json(to_json(job)))


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@given(value=_JSON_VALUES, indent=st.sampled_from([None, 2, 4]))
def test_the_plan_json_writer_writes_what_json_writes(value: Any, indent: int | None) -> None:
    """The plan's JSON goes through orjson where orjson writes the same bytes, and through `json` otherwise
    (floats such as `1e-05`, NaN, integers beyond 64 bits, lone surrogates): either way, `json`'s bytes."""
    from sleipnir.compiler.ir import serial

    written = serial._dumps(serial._pair(value)[0], indent)
    if indent is None:
        assert written == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        assert written == json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)
