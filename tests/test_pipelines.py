"""Pipelines name existing jobs, use unique ids, depend on ids they hold, and never form a cycle."""

from __future__ import annotations

import itertools
import tempfile
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from textpos import position, run_check_alone, where

from sleipnir.compiler import check
from sleipnir.compiler.checks import pipelines
from sleipnir.compiler.diagnostics import Diagnostic

JOB_NAMES = (
    "collect_data_job",
    "preprocess_job",
    "analyze_job",
    "report_job",
    "data_collector",
    "data_processor",
    "data_analyzer",
    "collector",
    "processor_a",
    "processor_b",
    "aggregator",
)
JOBS = "---\n".join(f"job:\n  name: {name}\n" for name in JOB_NAMES)


def run(folder: Path, text: str, *, jobs: str = JOBS) -> tuple[str, list[Diagnostic]]:
    """Check a folder holding the jobs and one pipeline file; return the pipeline text and the diagnostics."""
    text = textwrap.dedent(text).lstrip()
    (folder / "jobs.yaml").write_text(jobs, encoding="utf-8")
    (folder / "pipeline.yaml").write_text(text, encoding="utf-8")
    return text, list(check([str(folder)]).diagnostics)




SEED_PIPELINES = """
pipeline:
  name: full_analysis_pipeline
  jobs:
    - collect_data_job
    - preprocess_job
    - analyze_job
    - report_job
---
pipeline:
  jobs:
    - id: job1
      name: data_collector

    - id: job2
      name: data_processor
      depends_on: [job1]

    - id: job3
      name: data_analyzer
      depends_on: [job2]
---
pipeline:
  jobs:
    - id: job1
      name: collector

    - id: job2a
      name: processor_a
      depends_on: [job1]

    - id: job2b
      name: processor_b
      depends_on: [job1]

    - id: job3
      name: aggregator
      depends_on: [job2a, job2b]
"""


def test_the_seed_pipelines_check_clean(tmp_path: Path) -> None:
    _, diagnostics = run(tmp_path, SEED_PIPELINES)
    assert diagnostics == []


def test_unknown_jobs_suggest_the_closest_name_in_both_forms(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - colect_data_job
            - report_job
        ---
        pipeline:
          name: q
          jobs:
            - id: one
              name: data_colector
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("unknown-job", *position(text, "colect_data_job")),
        ("unknown-job", *position(text, "data_colector")),
    ]
    assert [d.help for d in diagnostics] == [
        "did you mean `collect_data_job`?",
        "did you mean `data_collector`?",
    ]
    assert diagnostics[0].message == "unknown job `colect_data_job`"


def test_a_duplicate_id_names_both_places(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - id: fetch
              name: collector
            - id: fetch
              name: processor_a
        """,
    )
    assert where(diagnostic) == ("duplicate-id", *position(text, "fetch", 2))
    assert [(label.span.line, label.span.column, label.text) for label in diagnostic.secondary] == [
        (*position(text, "fetch"), "first used here")
    ]


def test_a_job_listed_twice_in_sequence_is_a_duplicate(tmp_path: Path) -> None:
    _text, [diagnostic] = run(tmp_path, "pipeline:\n  name: p\n  jobs:\n    - collector\n    - collector\n")
    assert where(diagnostic) == ("duplicate-id", 5, 7)
    assert diagnostic.message == "job `collector` is listed twice"
    assert [label.span.line for label in diagnostic.secondary] == [4]


def test_an_unknown_dependency_suggests_an_id_of_the_pipeline(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - id: collect
              name: collector
            - id: process
              name: processor_a
              depends_on: [colect]
        """,
    )
    assert where(diagnostic) == ("unknown-dependency", *position(text, "colect]"))
    assert diagnostic.help == "did you mean `collect`?"
    assert diagnostic.notes == ("the ids in this pipeline are: collect, process",)


def test_a_cycle_is_printed_as_a_path_at_the_entry_that_closes_it(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - id: a
              name: collector
              depends_on: [c]
            - id: b
              name: processor_a
              depends_on: [a]
            - id: c
              name: processor_b
              depends_on: [b]
        """,
    )
    # The entry read last closes the cycle, and the printed path ends with it.
    assert diagnostic.message == "dependency cycle: b -> a -> c -> b"
    assert where(diagnostic) == ("dependency-cycle", *position(text, "b]"))
    assert [(label.span.line, label.span.column, label.text) for label in diagnostic.secondary] == [
        (*position(text, "a]"), "`b` depends on `a`"),
        (*position(text, "c]"), "`a` depends on `c`"),
    ]


def test_a_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    _text, [diagnostic] = run(
        tmp_path, "pipeline:\n  name: p\n  jobs:\n    - id: a\n      name: collector\n      depends_on: [a]\n"
    )
    assert where(diagnostic) == ("dependency-cycle", 6, 20)
    assert diagnostic.message == "dependency cycle: a -> a"
    assert diagnostic.secondary == ()


def test_each_cycle_is_reported_once(tmp_path: Path) -> None:
    _, diagnostics = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - {id: a, name: collector, depends_on: [b]}
            - {id: b, name: collector, depends_on: [a]}
            - {id: c, name: collector, depends_on: [d, a]}
            - {id: d, name: collector, depends_on: [c]}
            - {id: e, name: collector, depends_on: [e, a]}
        """,
    )
    assert [d.message for d in diagnostics] == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: c -> d -> c",
        "dependency cycle: e -> e",
    ]


def test_mixing_plain_names_and_ids_is_an_error(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        pipeline:
          name: p
          jobs:
            - collector
            - id: next
              name: processor_a
              depends_on: [collector]
        """,
    )
    assert where(diagnostic) == ("invalid-value", *position(text, "id: next"))
    assert diagnostic.message == "a pipeline lists its jobs either as names or as entries with ids, not both"
    assert [label.span.line for label in diagnostic.secondary] == [4]


def test_odd_shapes_that_skip_the_schema_never_raise(tmp_path: Path) -> None:
    # The schema rejects these, so `check` never shows them to the pipeline check; run it on them directly.
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipeline:
              jobs: collector
            ---
            pipeline:
              jobs: [1, null, {id: 3, name: [x]}, {id: a, depends_on: a}, {id: b, depends_on: [1, null, b]}]
            ---
            pipeline: [1]
            ---
            pipeline: {jobs: [{id: a}, a, {name: collector}]}
            """
        ),
        encoding="utf-8",
    )
    sink = run_check_alone(pipelines.check, path)
    assert [d.message for d in sink if d.code == "dependency-cycle"] == ["dependency cycle: b -> b"]


def _pipeline(size: int, edges: list[tuple[int, int]]) -> str:
    """A pipeline of `size` entries where, for each edge (i, j), entry j depends on entry i."""
    lines = ["pipeline:", "  name: generated", "  jobs:"]
    for node in range(size):
        depends_on = ", ".join(f"n{i}" for i, j in edges if j == node)
        lines += [f"    - id: n{node}", "      name: collector", f"      depends_on: [{depends_on}]"]
    return "\n".join(lines) + "\n"


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    size = draw(st.integers(min_value=1, max_value=8))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    return size, edges


@settings(max_examples=30, deadline=None)
@given(dag=dags(), data=st.data())
def test_dags_have_no_cycle_and_one_back_edge_makes_exactly_one(
    dag: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    size, edges = dag
    with tempfile.TemporaryDirectory() as folder:
        _, diagnostics = run(Path(folder), _pipeline(size, edges))
        assert diagnostics == []

        # A back edge against an existing edge, or a self-dependency, closes exactly one cycle.
        i, j = data.draw(st.sampled_from(edges)) if edges else (0, 0)
        _, diagnostics = run(Path(folder), _pipeline(size, [*edges, (j, i)]))
    [diagnostic] = diagnostics
    assert diagnostic.code == "dependency-cycle"
    path = diagnostic.message.removeprefix("dependency cycle: ").split(" -> ")
    assert path[0] == path[-1]
    graph = {(f"n{b}", f"n{a}") for a, b in [*edges, (j, i)]}  # entry b depends on entry a
    assert all(step in graph for step in itertools.pairwise(path))
