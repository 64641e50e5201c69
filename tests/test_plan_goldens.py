"""Golden plans: every seed example of spec/examples planned to its JSON form, under each of its profiles.

Each example is planned from `spec/examples` (its workspace: `sleipnir.yaml` there has `default_profile:
development`) with a fixed environment, so the developer's own variables never leak in. The plan's JSON, with the
machine's workspace root replaced by `<root>` and the stdlib's folder by `<stdlib>`, must equal
`tests/goldens/plans/<example>[.<profile>].json`; the jobs the pipelines use (`support/jobs.yaml`) are goldens
under `plans/support/<job>[.<profile>].json`. The golden without a profile is planned with no `--profile`, so the
workspace's default applies to the jobs that define it.
`pytest --update-goldens` rewrites the files; review the diff, it is the compiler's output changing.

Every plan is also checked for what holds of any plan: a JSON round trip gives it back, no secret's value is in
the JSON, it validates against `schema/plan.schema.json` (when that file exists), and the IR's invariants hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sleipnir.compiler.ir import JobStep, Plan, from_data, from_json, plan_id, to_json
from sleipnir.compiler.planner import plan

REPO = Path(__file__).parent.parent
EXAMPLES = REPO / "spec" / "examples"
GOLDENS = Path(__file__).parent / "goldens" / "plans"
PLAN_SCHEMA = REPO / "schema" / "plan.schema.json"
STDLIB = Path(str(resources.files("sleipnir.stdlib"))).resolve()

SECRET = "sk-test-not-real"
ENVIRON = {"OPENAI_API_KEY": SECRET, "API_ENDPOINT": "https://llm.example.test/v1"}
"""The whole environment of every plan here: nothing comes from the developer's shell."""

NOT_PLANNABLE = {"job_template.yaml": "a template is expanded into a job first; it has no plan of its own"}
SUPPORT = "support/jobs.yaml"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One golden: an example file (or one job of support/jobs.yaml), under one explicit profile or none."""

    target: str
    """What is planned: a file of spec/examples, or a job's name for the support jobs."""
    golden: str
    """The golden's path below tests/goldens/plans, without `.json`."""
    profile: str | None = None


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(doc, dict)]


def _job_profiles() -> dict[str, list[str]]:
    """Every job of the examples -> the profiles it defines."""
    found: dict[str, list[str]] = {}
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in _documents(path):
            if isinstance(doc.get("job"), dict):
                found[doc["job"]["name"]] = sorted(doc["job"].get("profiles") or {})
    return found


def _profiles(path: Path, jobs: dict[str, list[str]]) -> list[str]:
    """The profiles the jobs of an example define (a pipeline's through its jobs): each gets its own golden."""
    found: set[str] = set()
    for doc in _documents(path):
        if isinstance(doc.get("job"), dict):
            found.update(jobs[doc["job"]["name"]])
        for entry in (doc.get("pipeline") or {}).get("jobs") or []:
            found.update(jobs[entry if isinstance(entry, str) else entry["name"]])
    return sorted(found)


def _cases() -> list[Case]:
    jobs = _job_profiles()
    cases: list[Case] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name == "sleipnir.yaml" or path.name in NOT_PLANNABLE:
            continue
        cases.append(Case(target=path.name, golden=path.stem))
        cases.extend(
            Case(target=path.name, golden=f"{path.stem}.{p}", profile=p) for p in _profiles(path, jobs)
        )
    for doc in _documents(EXAMPLES / SUPPORT):
        name = doc["job"]["name"]
        cases.append(Case(target=name, golden=f"support/{name}"))
        cases.extend(Case(target=name, golden=f"support/{name}.{p}", profile=p) for p in jobs[name])
    return cases


@pytest.fixture(autouse=True)
def _in_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    # `plan` resolves names in the workspace around the current folder.
    monkeypatch.chdir(EXAMPLES)


def _plan(case: Case) -> Plan:
    result = plan(case.target, profile=case.profile, environ=ENVIRON)
    assert result.ok, [f"{d.code}: {d.message}" for d in result.diagnostics]
    matching = [p for p in result.plans if case.target.endswith(".yaml") or p.name == case.target]
    assert len(matching) == 1, [p.name for p in result.plans]
    return matching[0]


def golden_text(planned: Plan) -> str:
    """The plan's JSON with this machine's paths replaced: the workspace root by `<root>`, the installed stdlib
    by `<stdlib>`. Neither is part of the plan id, so the id in a golden is the id on every machine."""
    assert planned.root == str(EXAMPLES.resolve()), planned.root
    text = to_json(planned)
    for path, shown in ((EXAMPLES.resolve(), "<root>"), (STDLIB, "<stdlib>")):
        text = text.replace(json.dumps(str(path))[1:-1], shown)
    assert plan_id(from_data(json.loads(text))) == planned.id, "a machine's path is part of the plan id"
    return text


CASES = _cases()


def test_every_example_is_covered() -> None:
    planned = {c.target for c in CASES}
    for path in EXAMPLES.glob("*.yaml"):
        assert path.name in planned or path.name in NOT_PLANNABLE or path.name == "sleipnir.yaml", path.name
    assert {c.profile for c in CASES if c.target == "configuration_profiles.yaml"} == {
        None,
        "development",
        "production",
        "cost_optimized",
    }
    assert len([c for c in CASES if c.golden.startswith("support/")]) == 11


def test_the_template_is_not_plannable() -> None:
    result = plan("job_template.yaml", environ=ENVIRON)
    assert not result.plans
    assert [d.code for d in result.diagnostics] == ["unknown-target"]


def test_no_stale_goldens() -> None:
    wanted = {f"{c.golden}.json" for c in CASES}
    present = {str(p.relative_to(GOLDENS)) for p in GOLDENS.rglob("*.json")}
    assert present <= wanted, f"goldens without an example: {sorted(present - wanted)}"


SKIPPED = [
    pytest.param(
        Case(target=name, golden=Path(name).stem), id=Path(name).stem, marks=pytest.mark.skip(reason=reason)
    )
    for name, reason in NOT_PLANNABLE.items()
]


@pytest.mark.parametrize("case", [*(pytest.param(c, id=c.golden) for c in CASES), *SKIPPED])
def test_plan_golden(case: Case, update_goldens: bool) -> None:
    planned = _plan(case)
    text = golden_text(planned)
    golden = GOLDENS / f"{case.golden}.json"
    if update_goldens:
        golden.parent.mkdir(parents=True, exist_ok=True)
        temporary = golden.with_suffix(".json.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(golden)
    assert golden.exists(), f"{golden.name} is missing: run pytest --update-goldens to write it"
    assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs; run pytest --update-goldens"


@pytest.mark.parametrize("case", CASES, ids=[c.golden for c in CASES])
def test_plan_invariants(case: Case) -> None:
    planned = _plan(case)
    text = to_json(planned)
    assert SECRET not in text
    back = from_json(text)
    assert back == planned
    assert back.id == planned.id
    assert to_json(back) == text
    if PLAN_SCHEMA.exists():
        schema = json.loads(PLAN_SCHEMA.read_text(encoding="utf-8"))
        jsonschema.Draft7Validator(schema).validate(json.loads(text))
    check_invariants(planned)


def check_invariants(planned: Plan) -> None:
    """What holds of every plan: unique ids, edges between nodes of the plan, nodes in topological order."""
    ids = [node.id for node in planned.nodes]
    assert len(ids) == len(set(ids)), ids
    position = {node_id: index for index, node_id in enumerate(ids)}
    for edge in planned.edges:
        assert edge.source in position and edge.target in position, edge
        assert position[edge.source] < position[edge.target], f"{edge} against the node order {ids}"
    level = {node.id: n for n, nodes in enumerate(planned.levels()) for node in nodes}
    assert set(level) == set(ids)
    for edge in planned.edges:
        assert level[edge.source] < level[edge.target], edge
    for node in planned.nodes:
        if isinstance(node, JobStep):
            check_invariants(node.plan)


def test_default_profile_applies_without_an_explicit_one() -> None:
    # sleipnir.yaml names `development` as the default: the job that defines it gets it, the others none.
    [defaulted] = plan("configuration_profiles.yaml", environ=ENVIRON).plans
    [explicit] = plan("configuration_profiles.yaml", profile="development", environ=ENVIRON).plans
    assert defaulted.profile == "development"
    assert defaulted.id == explicit.id
    [plain] = plan("basic_job.yaml", environ=ENVIRON).plans
    assert plain.profile is None


def test_sleipnir_profile_in_the_environment_picks_the_default() -> None:
    [chosen] = plan(
        "configuration_profiles.yaml", environ={**ENVIRON, "SLEIPNIR_PROFILE": "production"}
    ).plans
    assert chosen.profile == "production"
    [explicit] = plan("configuration_profiles.yaml", profile="production", environ=ENVIRON).plans
    assert chosen.id == explicit.id


# Found reading the goldens: spec/job.md documents every metric as the default.

ALL_METRICS = [
    "execution_time",
    "token_usage",
    "success_rate",
    "error_rate",
    "items_processed",
    "retries",
    "cost",
]


def test_a_job_without_monitoring_records_every_metric() -> None:
    [job] = plan("basic_job.yaml", environ=ENVIRON).plans
    assert list(job.settings["monitoring"]["metrics"]) == ALL_METRICS
