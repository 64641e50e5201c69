"""References to prompt modules and stacks resolve by name and version, with "did you mean" on a miss."""

from __future__ import annotations

import textwrap
from pathlib import Path

from textpos import position, run_check_alone, where

from sleipnir.compiler import check
from sleipnir.compiler.checks import references
from sleipnir.compiler.diagnostics import Diagnostic


def prompt(name: str, version: str) -> str:
    return textwrap.dedent(
        f"""
        prompt:
          name: {name}
          version: {version}
          description: The {name} module, for tests.
          template:
            user: Work on this item.
        """
    ).lstrip()


def stack(name: str, version: str, prompt_name: str = "tone_probe") -> str:
    return textwrap.dedent(
        f"""
        stack:
          name: {name}
          version: {version}
          steps:
            - id: first
              prompt: {prompt_name}
        """
    ).lstrip()


LIBRARY = "---\n".join(
    [
        prompt("tone_probe", "1.0.0"),
        prompt("tone_probe", "1.10.0"),
        prompt("tone_probe", "1.2.0"),
        prompt("summary_writer", "1.0.0"),
        stack("review_flow", "1.0.0"),
        stack("review_flow", "2.0.0"),
    ]
)


def run(tmp_path: Path, text: str, *, library: str = LIBRARY) -> tuple[str, list[Diagnostic]]:
    """Check a workspace of the library and one document file; return the document text and the diagnostics."""
    text = textwrap.dedent(text).lstrip()
    (tmp_path / "library.yaml").write_text(library, encoding="utf-8")
    (tmp_path / "subject.yaml").write_text(text, encoding="utf-8")
    return text, list(check([str(tmp_path)]).diagnostics)




SEED_PROMPTS = "---\n".join(
    [
        prompt("sentiment_analyzer", "2.0.0"),
        prompt("sentiment_analyzer", "2.1.0"),
        *(
            prompt(name, "1.0.0")
            for name in (
                "classifier",
                "preprocessor",
                "validator",
                "report_generator",
                "text_cleaner",
                "item_processor",
                "aggregator",
                "category_analyzer",
                "result_merger",
            )
        ),
        prompt("analyzer", "2.0.0"),
        stack("sentiment_analysis_stack", "1.0.0", "sentiment_analyzer"),
    ]
)

SEED_JOBS = """
job:
  name: sentiment_analysis_job
  version: 1.0.0
  description: Analyze sentiment of customer reviews
  input:
    source: database
    query: "SELECT review_text, review_id FROM reviews WHERE processed = false"
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
---
job:
  name: simple_classification
  prompts:
    - name: classifier
      version: 1.0.0
---
job:
  name: multi_stage_analysis
  prompts:
    - name: preprocessor
      version: 1.0.0
    - name: analyzer
      version: 2.0.0
    - name: validator
      version: 1.0.0
---
job:
  name: advanced_analysis
  stack: sentiment_analysis_stack
  stack_version: 1.0.0
---
job:
  name: api_analysis
  prompts:
    - name: analyzer
      api_key: ${OPENAI_API_KEY}
      endpoint: ${API_ENDPOINT}
---
job:
  name: map_reduce_analysis
  phases:
    - name: map
      prompt: item_processor
      parallel: true
    - name: reduce
      prompt: aggregator
      parallel: false
---
job:
  name: fan_out_analysis
  phases:
    - name: fan_out
      split_by: category
    - name: process
      prompt: category_analyzer
      parallel: true
    - name: fan_in
      prompt: result_merger
---
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
      - name: analyzer
        model: ${model_name}
"""


def test_the_seed_examples_resolve(tmp_path: Path) -> None:
    _, diagnostics = run(tmp_path, SEED_JOBS, library=SEED_PROMPTS)
    assert diagnostics == []


def test_a_missing_version_means_the_newest(tmp_path: Path) -> None:
    _, diagnostics = run(tmp_path, "job:\n  name: j\n  prompts:\n    - name: tone_probe\n")
    assert diagnostics == []


def test_an_unknown_prompt_suggests_the_closest_name(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        job:
          name: j
          prompts:
            - name: tone_prob
              version: 1.0.0
        """,
    )
    assert where(diagnostic) == ("unknown-prompt", *position(text, "tone_prob"))
    assert diagnostic.message == "unknown prompt module `tone_prob`"
    assert diagnostic.help == "did you mean `tone_probe`?"


def test_an_unknown_prompt_version_lists_the_versions_newest_last(tmp_path: Path) -> None:
    text, [diagnostic] = run(
        tmp_path,
        """
        job:
          name: j
          prompts:
            - name: tone_probe
              version: 3.0.0
        """,
    )
    assert where(diagnostic) == ("unknown-prompt-version", *position(text, "3.0.0"))
    assert diagnostic.notes == ("the versions of `tone_probe` are: 1.0.0, 1.2.0, 1.10.0",)
    assert diagnostic.help is not None and "`version: 1.10.0`, the newest" in diagnostic.help


def test_phase_prompts_resolve_with_their_versions(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        job:
          name: j
          phases:
            - name: map
              prompt: summary_writr
            - name: reduce
              prompt: tone_probe
              version: 9.9.9
            - name: fan_in
              version: 1.0.0
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("unknown-prompt", *position(text, "summary_writr")),
        ("unknown-prompt-version", *position(text, "9.9.9")),
        ("missing-key", *position(text, "version", 2)),
    ]
    assert diagnostics[0].help == "did you mean `summary_writer`?"
    assert diagnostics[2].message == "version needs prompt"


def test_an_unknown_stack_suggests_the_closest_name(tmp_path: Path) -> None:
    _text, [diagnostic] = run(tmp_path, "job:\n  name: j\n  stack: review_flw\n  stack_version: 1.0.0\n")
    assert where(diagnostic) == ("unknown-stack", 3, 10)
    assert diagnostic.help == "did you mean `review_flow`?"


def test_an_unknown_stack_version_suggests_the_newest(tmp_path: Path) -> None:
    _, [diagnostic] = run(tmp_path, "job:\n  name: j\n  stack: review_flow\n  stack_version: 1.5.0\n")
    assert where(diagnostic) == ("unknown-stack-version", 4, 18)
    assert diagnostic.notes == ("the versions of `review_flow` are: 1.0.0, 2.0.0",)
    assert (
        diagnostic.help
        == "use `stack_version: 2.0.0`, the newest, or leave out `stack_version` to take the newest"
    )


def test_stack_version_needs_stack(tmp_path: Path) -> None:
    _, [diagnostic] = run(tmp_path, "job:\n  name: j\n  stack_version: 1.0.0\n")
    assert where(diagnostic) == ("missing-key", 3, 3)
    assert diagnostic.message == "stack_version needs stack"


def test_a_job_uses_either_prompts_or_a_stack(tmp_path: Path) -> None:
    _, [diagnostic] = run(
        tmp_path, "job:\n  name: j\n  prompts:\n    - name: tone_probe\n  stack: review_flow\n"
    )
    assert where(diagnostic) == ("invalid-value", 5, 3)
    assert diagnostic.message == "a job uses either `prompts` or `stack`, not both"
    assert [(label.span.line, label.text) for label in diagnostic.secondary] == [(3, "`prompts` given here")]


def test_a_name_of_the_other_kind_says_so(tmp_path: Path) -> None:
    _, [diagnostic] = run(tmp_path, "job:\n  name: j\n  prompts:\n    - name: review_flow\n")
    assert diagnostic.code == "unknown-prompt"
    assert diagnostic.notes == ("`review_flow` is a stack, not a prompt module",)


def test_stack_steps_resolve_inside_parallel_groups(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        stack:
          name: checked_flow
          version: 1.0.0
          steps:
            - id: first
              prompt: tone_probe
              version: 1.2.0
            - id: both
              parallel:
                - id: left
                  prompt: summary_writer
                - id: right
                  prompt: tone_prbe
            - id: last
              prompt: tone_probe
              version: 2.0.0
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("unknown-prompt", *position(text, "tone_prbe")),
        ("unknown-prompt-version", *position(text, "2.0.0")),
    ]
    assert diagnostics[0].help == "did you mean `tone_probe`?"


def test_templates_skip_substitutions_and_check_literal_names(tmp_path: Path) -> None:
    text, diagnostics = run(
        tmp_path,
        """
        template:
          name: t
          parameters:
            - name: module
            - name: module_version
          job:
            name: ${job_name}
            prompts:
              - name: ${module}
              - name: tone_probe
                version: ${module_version}
              - name: summary_writter
            stack: ${stack_name}
        """,
    )
    assert [where(d) for d in diagnostics] == [
        ("unknown-prompt", *position(text, "summary_writter")),
        ("invalid-value", *position(text, "stack:")),
    ]


def test_odd_shapes_that_skip_the_schema_never_raise(tmp_path: Path) -> None:
    # The schema rejects these, so `check` never shows them to the reference check; run it on them directly.
    path = tmp_path / "subject.yaml"
    path.write_text(
        textwrap.dedent(
            """
            job:
              name: j
              prompts: tone_probe
              phases: {map: x}
              stack: [a]
              stack_version: {x: 1}
            ---
            job:
              name: k
              prompts: [1, null, {name: 5, version: [1]}, {version: 1.0}]
              phases: [1, {prompt: [x]}, {version: 2}]
            ---
            stack:
              name: s
              steps: [1, {parallel: 7}, {parallel: [{prompt: null}]}, {prompt: tone_probe, version: true}]
            ---
            stack: 5
            ---
            template:
              name: t
              job: [1]
            """
        ),
        encoding="utf-8",
    )
    sink = run_check_alone(references.check, path)
    assert {d.code for d in sink} == {"invalid-value", "missing-key", "unknown-prompt"}
