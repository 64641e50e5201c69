"""Properties: however a valid document is mangled, `check` returns diagnostics or a clean result, never raises.

Valid job, template, pipeline, stack and prompt texts are mutated structurally (keys dropped, renamed or
retyped, values swapped) and textually (truncated, random characters or bytes inserted), written to a real
file and checked. The check must also be deterministic, and every span it reports must lie inside its file.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleipnir.cli import main
from sleipnir.compiler import CheckResult, check
from sleipnir.compiler.render import RENDERERS

JOB = """\
job:
  name: sentiment_analysis_job
  version: 1.0.0
  description: Analyze sentiment of customer reviews
  params:
    table: reviews
  input:
    source: database
    query: "SELECT review_text, review_id FROM ${table} WHERE processed = false"
    batch_size: 100
  prompts:
    - name: sentiment_analyzer
      version: 2.1.0
      model: gpt-4
      temperature: 0.7
      max_tokens: 500
      parameters:
        include_reasoning: true
        confidence_threshold: 0.8
  output:
    destination: database
    table: sentiment_results
    format: json
    on_complete: notify
  execution:
    concurrency: 10
    retry_on_failure: 3
    timeout: 300
  error_handling:
    on_prompt_failure:
      strategy: retry
      max_retries: 3
      backoff: exponential
  schedule:
    cron: "0 2 * * *"
    timezone: Europe/Paris
  conditions:
    - type: time_window
      start: "09:00"
      end: "17:00"
  alerts:
    - condition: error_rate > 0.05
      action: email
      recipients: [admin@example.com]
"""

TEMPLATE = """\
template:
  name: analysis_template
  parameters:
    - name: input_table
      type: string
      required: true
    - name: model_name
      type: string
      default: gpt-3.5-turbo
  job:
    name: ${job_name}
    input:
      source: database
      query: "SELECT * FROM ${input_table}"
    prompts:
      - name: sentiment_analyzer
        model: ${model_name}
"""

PIPELINE = """\
job:
  name: collector
---
job:
  name: processor
  profiles:
    development:
      model: gpt-3.5-turbo
      batch_size: 10
---
pipeline:
  name: collect_and_process
  jobs:
    - id: collect
      name: collector
    - id: process
      name: processor
      depends_on: [collect]
"""

STACK = """\
stack:
  name: review_stack
  version: 1.0.0
  steps:
    - id: sentiment
      prompt: sentiment_analyzer
      version: 2.1.0
    - id: escalate
      prompt: sentiment_analyzer
      when: sentiment.label == "negative" and sentiment.confidence < 0.6
"""

PROMPT = """\
prompt:
  name: review_summary
  version: 1.0.0
  description: Summarise a review in one sentence.
  model:
    name: gpt-4o-mini
    temperature: 0.2
  variables:
    text:
      type: string
      required: true
  template:
    system: You summarise customer reviews.
    user: |
      Summarise:
      {{ text }}
  output:
    format: json
    schema:
      type: object
      properties:
        summary: {type: string}
      required: [summary]
"""

VALID = (JOB, TEMPLATE, PIPELINE, STACK, PROMPT)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Step = str | int
Path_ = tuple[Step, ...]


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path to a mapping entry or a list item below `value`."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


def parent_of(root: Any, path: Path_) -> Any:
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["${X}", "${", "${a.b:-1}", "}", "0 2 * * *", "@daily", "25:00", "1.0.0", "9.9.9", "Mars/Base"]
    ),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
key_names = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    st.sampled_from(
        ["name", "version", "job", "prompts", "modle", "jbo", "depends_on", "<<", "stack", "steps"]
    ),
)
YAML_NOISE = [*":-[]{}&*!|>'\"#%@,?\t\n ${}", "\u00e9", "\u2028", "\ufeff", "\x00", "\x85", "\U0001f600"]
noise = st.text(
    alphabet=st.one_of(st.sampled_from(YAML_NOISE), st.characters(exclude_categories=["Cs"])),
    min_size=1,
    max_size=4,
)


def mutate_structure(draw: st.DrawFn, documents: list[Any]) -> None:
    """Drop, rename or retype a key, or swap two values, in place."""
    everything = [(index, path) for index, document in enumerate(documents) for path in paths(document)]
    if not everything:
        return
    index, path = draw(st.sampled_from(everything))
    root = documents[index]
    parent = parent_of(root, path)
    step = path[-1]
    operation = draw(st.sampled_from(["drop", "rename", "retype", "swap"]))
    if operation == "drop":
        del parent[step]
    elif operation == "rename" and isinstance(parent, dict):
        new_key = draw(key_names)
        parent[new_key] = parent.pop(step)
    elif operation == "retype":
        parent[step] = draw(values)
    elif operation == "swap":
        other_index, other = draw(st.sampled_from(everything))
        other_parent = parent_of(documents[other_index], other)
        nested = other[: len(path)] == path or path[: len(other)] == other
        if not (other_index == index and nested):
            parent[step], other_parent[other[-1]] = (
                copy.deepcopy(other_parent[other[-1]]),
                copy.deepcopy(parent[step]),
            )


def mutate_text(draw: st.DrawFn, text: str) -> str:
    operation = draw(st.sampled_from(["truncate", "insert", "replace"]))
    at = draw(st.integers(min_value=0, max_value=len(text)))
    if operation == "truncate":
        return text[:at]
    inserted = draw(noise)
    return text[:at] + inserted + text[at + (1 if operation == "replace" else 0) :]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The bytes of a mangled valid file."""
    base = draw(st.sampled_from(VALID))
    documents = list(yaml.safe_load_all(base))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        mutate_structure(draw, documents)
    text = yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True) if draw(st.booleans()) else base
    if text == base or draw(st.booleans()):
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            text = mutate_text(draw, text)
    data = text.encode("utf-8")
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + bytes([draw(st.integers(min_value=0x80, max_value=0xFF))]) + data[at:]
    return data


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated")


def check_bytes(folder: Path, data: bytes) -> tuple[Path, CheckResult]:
    path = folder / "mutated.yaml"
    path.write_bytes(data)
    return path, check([str(path)])


def assert_spans_inside(result: CheckResult, path: Path, data: bytes) -> None:
    for diagnostic in result.diagnostics:
        labels = ([diagnostic.primary] if diagnostic.primary else []) + list(diagnostic.secondary)
        for label in labels:
            span = label.span
            source = result.workspace.sources.get(span.file)
            if source is not None:
                lines = len(source.text.splitlines())
            elif Path(span.file).resolve() == path.resolve():
                lines = len(data.splitlines())  # the file did not decode: count its raw lines
            else:
                continue
            assert 1 <= span.line <= lines + 1, f"{diagnostic.code} at line {span.line} of {lines}"
            assert span.column >= 1


def test_the_unmutated_documents_check_clean(folder: Path) -> None:
    for text in VALID:
        _, result = check_bytes(folder, text.encode())
        assert result.ok, [(d.code, d.message) for d in result.diagnostics]


@SETTINGS
@given(data=mutated())
def test_mutated_documents_never_raise(folder: Path, data: bytes) -> None:
    path, result = check_bytes(folder, data)
    assert isinstance(result, CheckResult)
    assert result.ok == (result.errors == 0)
    assert_spans_inside(result, path, data)
    # Deterministic: the same input gives the same diagnostics.
    _, again = check_bytes(folder, data)
    assert again.diagnostics == result.diagnostics
    # Every renderer copes with whatever the check found.
    for render in RENDERERS.values():
        assert isinstance(render(result, False), str)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_the_cli_never_prints_a_traceback(folder: Path, data: bytes) -> None:
    path = folder / "cli.yaml"
    path.write_bytes(data)
    for output_format in ("human", "github"):
        outcome = CliRunner().invoke(main, ["check", "--format", output_format, str(path)])
        assert "Traceback" not in outcome.output
        assert "internal-error" not in outcome.output
        assert outcome.exit_code in (0, 1), outcome.output
