"""Profile overlays are applied key by key and validated again, with diagnostics at the profile's lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sleipnir.compiler import check
from sleipnir.compiler.overlay import OverlayError, apply

JOB = {
    "name": "j",
    "input": {"source": "file", "path": "in.jsonl"},
    "prompts": [{"name": "text_cleaner"}, {"name": "classifier", "temperature": 0.2}],
    "phases": [{"name": "reduce", "prompt": "aggregator"}, {"name": "fan_out", "split_by": "category"}],
}


def test_shorthand_keys_set_every_prompt_call_and_the_input_batch() -> None:
    result = apply(JOB, "model", "gpt-4")
    assert [p["model"] for p in result["prompts"]] == ["gpt-4", "gpt-4"]
    assert result["phases"][0]["model"] == "gpt-4"
    assert "model" not in result["phases"][1]
    assert apply(JOB, "batch_size", 10)["input"] == {"source": "file", "path": "in.jsonl", "batch_size": 10}
    assert "model" not in JOB["prompts"][0], "apply must not change its argument"


def test_dotted_paths_select_list_entries_by_name_or_position_and_merge_mappings() -> None:
    assert apply(JOB, "prompts.classifier.temperature", 0.9)["prompts"][1]["temperature"] == 0.9
    assert apply(JOB, "prompts.0.model", "m")["prompts"][0]["model"] == "m"
    merged = apply(JOB, "input", {"batch_size": 5})
    assert merged["input"] == {"source": "file", "path": "in.jsonl", "batch_size": 5}
    assert apply(JOB, "execution.concurrency", 4)["execution"] == {"concurrency": 4}


@pytest.mark.parametrize(
    ("key", "step"), [("prompts.classifer.model", "classifer"), ("prompts.7.model", "7"), ("name.x", "")]
)
def test_paths_that_lead_nowhere_are_errors(key: str, step: str) -> None:
    with pytest.raises(OverlayError) as caught:
        apply(JOB, key, 1)
    assert caught.value.step == step


def test_profile_values_get_the_job_files_diagnostics_at_the_profile_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            job:
              name: p
              prompts:
                - name: classifier
              profiles:
                production:
                  execution.concurency: 50
                  temperature: 5
                  prompts.classifer.model: x
                fine:
                  model: gpt-4
                  batch_size: 10
                  prompts.classifier.temperature: 0.1
            """
        ),
        encoding="utf-8",
    )
    found = [(d.code, d.primary.span.line, d.help) for d in check([str(path)]).diagnostics if d.primary]
    assert found == [
        ("unknown-key", 7, "did you mean `concurrency`?"),
        ("invalid-value", 8, None),
        ("unknown-key", 9, "did you mean `classifier`?"),
    ]


def test_a_shorthand_on_a_job_without_prompts_is_still_type_checked(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job:\n  name: p\n  profiles:\n    dev:\n      model: gpt-4\n      temperature: hot\n")
    [diagnostic] = check([str(path)]).diagnostics
    assert (diagnostic.code, diagnostic.primary and diagnostic.primary.span.line) == ("invalid-type", 6)
