"""The YAML loader: spans, anchors and merges, and every way a file can be refused safely."""

from __future__ import annotations

import itertools
import textwrap
import time
from pathlib import Path

import pytest

from sleipnir.compiler import check
from sleipnir.compiler.diagnostics import Diagnostic, Diagnostics
from sleipnir.compiler.loader import ALIAS_EXPANSION_LIMIT, decode, load, locate, node_span
from sleipnir.compiler.span import Span


def load_text(text: str, file: str = "t.yaml") -> tuple[list[object], list[Diagnostic]]:
    sink = Diagnostics()
    documents = load(textwrap.dedent(text).lstrip("\n"), file, sink)
    return [d.value for d in documents], list(sink)


def codes(diagnostics: list[Diagnostic]) -> list[str]:
    return [d.code for d in diagnostics]


def primary(diagnostic: Diagnostic) -> Span:
    assert diagnostic.primary is not None
    return diagnostic.primary.span


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["job:", "  name: lol", "  params:", "    a: &a [" + ", ".join(['"lol"'] * width) + "]"]
    for previous, name in itertools.pairwise("abcdefghijklmnopqrstuvwxyz"[:levels]):
        lines.append(f"    {name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]")
    return "\n".join(lines) + "\n"


# Spans


def test_spans_of_keys_and_values() -> None:
    text = "job:\n  name: spans\n  prompts:\n    - name: classifier\n      temperature: 0.5\n"
    sink = Diagnostics()
    (document,) = load(text, "spans.yaml", sink)
    assert not sink

    key, value = locate(document.root, ("job", "name"))
    assert key is not None
    assert node_span("spans.yaml", key) == Span(file="spans.yaml", line=2, column=3, end_line=2, end_column=7)
    assert node_span("spans.yaml", value) == Span(
        file="spans.yaml", line=2, column=9, end_line=2, end_column=14
    )

    key, value = locate(document.root, ("job", "prompts", 0, "temperature"))
    assert key is not None
    assert node_span("spans.yaml", key) == Span(
        file="spans.yaml", line=5, column=7, end_line=5, end_column=18
    )
    assert node_span("spans.yaml", value) == Span(
        file="spans.yaml", line=5, column=20, end_line=5, end_column=23
    )

    # A sequence item is its own key; a missing step stops at the deepest node that exists.
    key, value = locate(document.root, ("job", "prompts", 0))
    assert key is value
    assert node_span("spans.yaml", value).line == 4
    key, value = locate(document.root, ("job", "prompts", 0, "missing"))
    assert node_span("spans.yaml", value).line == 4


def test_block_value_spans_cover_their_lines() -> None:
    sink = Diagnostics()
    (document,) = load("job:\n  description: |\n    one\n    two\n  name: x\n", "b.yaml", sink)
    _, value = locate(document.root, ("job", "description"))
    span = node_span("b.yaml", value)
    assert (span.line, span.column) == (2, 16)
    assert span.end_line == 5


def test_multi_document_lines_count_from_the_top_of_the_file() -> None:
    # Empty documents (`---` on its own, a trailing `---`) are skipped, not reported.
    sink = Diagnostics()
    documents = load("job:\n  name: a\n---\n---\njob:\n  name: b\n---\n", "m.yaml", sink)
    assert [d.value for d in documents] == [{"job": {"name": "a"}}, {"job": {"name": "b"}}]
    assert [d.index for d in documents] == [0, 2]
    assert not sink
    _, value = locate(documents[1].root, ("job", "name"))
    assert node_span("m.yaml", value).line == 6


# Anchors, aliases and merges


def test_anchors_aliases_and_merge_keys_give_the_right_values() -> None:
    values, diagnostics = load_text(
        """
        job:
          name: merged
          error_handling:
            on_prompt_failure: &retry
              strategy: retry
              max_retries: 3
              backoff: exponential
            on_output_error:
              <<: *retry
              max_retries: 1
            on_input_error:
              <<: [*retry, {log: true, strategy: fail}]
              strategy: skip
          prompts:
            - &first {name: classifier, version: 1.0.0}
            - *first
        """
    )
    assert diagnostics == []
    (job,) = values
    assert isinstance(job, dict)
    handling = job["job"]["error_handling"]
    assert handling["on_output_error"] == {"strategy": "retry", "max_retries": 1, "backoff": "exponential"}
    # Explicit keys win over merged ones; the first merged mapping wins over later ones.
    assert handling["on_input_error"] == {
        "strategy": "skip",
        "max_retries": 3,
        "backoff": "exponential",
        "log": True,
    }
    assert job["job"]["prompts"] == [{"name": "classifier", "version": "1.0.0"}] * 2


def test_a_merge_of_a_scalar_is_refused() -> None:
    _, diagnostics = load_text("job:\n  name: m\n  <<: 5\n")
    assert codes(diagnostics) == ["invalid-merge"]
    assert primary(diagnostics[0]).line == 3


def test_span_lookup_follows_merge_keys() -> None:
    sink = Diagnostics()
    (document,) = load("base: &b\n  timeout: 30\njob:\n  <<: *b\n  name: x\n", "s.yaml", sink)
    _, value = locate(document.root, ("job", "timeout"))
    assert node_span("s.yaml", value).line == 2


# Duplicate keys


def test_duplicate_key_names_both_places() -> None:
    _, diagnostics = load_text("job:\n  name: a\n  description: x\n  name: b\n")
    (duplicate,) = diagnostics
    assert duplicate.code == "duplicate-key"
    assert "`name`" in duplicate.message
    assert (primary(duplicate).line, primary(duplicate).column) == (4, 3)
    (first,) = duplicate.secondary
    assert (first.span.line, first.span.column) == (2, 3)
    assert first.text


# Alias bombs, tags and other hostile input


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.perf_counter()
    values, diagnostics = load_text(billion_laughs())
    elapsed = time.perf_counter() - started
    assert codes(diagnostics) == ["alias-bomb"]
    assert values == []
    assert f"{ALIAS_EXPANSION_LIMIT:,}" in diagnostics[0].message
    assert elapsed < 5, f"took {elapsed:.2f} s"


def test_billion_laughs_through_check_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs(), encoding="utf-8")
    started = time.perf_counter()
    result = check([str(path)])
    assert time.perf_counter() - started < 5
    assert [d.code for d in result.diagnostics] == ["alias-bomb"]


def test_merge_key_bomb_of_empty_mappings_is_refused_quickly() -> None:
    # Every level merges the previous one nine times; no level holds a value, only merges.
    lines = ["job:", "  name: merges", "  params:", "    a: &a {}"]
    for previous, name in itertools.pairwise("abcdefghij"):
        lines.append(f"    {name}: &{name} {{<<: [" + ", ".join([f"*{previous}"] * 9) + "]}")
    started = time.perf_counter()
    _, diagnostics = load_text("\n".join(lines) + "\n")
    assert codes(diagnostics) == ["alias-bomb"]
    assert time.perf_counter() - started < 5


def test_many_honest_aliases_stay_under_the_limit() -> None:
    values, diagnostics = load_text(billion_laughs(levels=3, width=9))
    assert diagnostics == []
    (document,) = values
    assert isinstance(document, dict)
    assert len(document["job"]["params"]["c"]) == 9
    assert document["job"]["params"]["c"][0][0] == ["lol"] * 9


@pytest.mark.parametrize(
    "value",
    [
        '!!python/object/apply:os.system ["touch {target}"]',
        "!!python/object/apply:os.system\n      args: ['touch {target}']",
        "!!python/object/new:os.system ['touch {target}']",
        "!!python/name:os.system",
        "!!python/module:os",
        "!custom 'touch {target}'",
        "!!set {{a, b}}",
    ],
)
def test_no_tag_can_run_code(value: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    text = f"job:\n  name: tagged\n  params:\n    x: {value.format(target=target)}\n"
    path = tmp_path / "tagged.yaml"
    path.write_text(text, encoding="utf-8")
    result = check([str(path)])
    assert not target.exists()
    assert "unsupported-tag" in [d.code for d in result.diagnostics]
    (tag,) = [d for d in result.diagnostics if d.code == "unsupported-tag"]
    assert primary(tag).line == 4


def test_standard_tags_are_accepted() -> None:
    values, diagnostics = load_text(
        'job:\n  name: !!str 12\n  params: !!map {n: !!int "3", f: !!float "1.5"}\n'
    )
    assert diagnostics == []
    assert values == [{"job": {"name": "12", "params": {"n": 3, "f": 1.5}}}]


def test_non_string_key_is_refused() -> None:
    _, diagnostics = load_text("job:\n  name: k\n  ? [a, b]\n  : 1\n")
    assert codes(diagnostics) == ["non-string-key"]
    assert primary(diagnostics[0]).line == 3


# Encodings, tabs and syntax errors


def test_non_utf8_input_points_at_the_bad_byte() -> None:
    sink = Diagnostics()
    data = b"job:\n  name: enc\n  description: caf\xe9\n"
    assert decode(data, "enc.yaml", sink) is None
    (diagnostic,) = sink
    assert diagnostic.code == "invalid-encoding"
    assert primary(diagnostic) == Span.point("enc.yaml", 3, 19)
    assert "0xe9" in diagnostic.message


def test_non_utf8_file_through_check(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"# caf\xc3\xa9 is fine in UTF-8\njob:\n  name: enc\n  description: na\xefve\n")
    result = check([str(path)])
    (diagnostic,) = result.diagnostics
    assert diagnostic.code == "invalid-encoding"
    assert (primary(diagnostic).line, primary(diagnostic).column) == (4, 18)


def test_a_byte_order_mark_is_dropped() -> None:
    sink = Diagnostics()
    assert decode("\ufeffjob:\n".encode(), "bom.yaml", sink) == "job:\n"
    assert not sink


def test_tab_indent_is_reported_at_its_line() -> None:
    _, diagnostics = load_text("job:\n  name: tabs\n  input:\n\tpath: x\n")
    (diagnostic,) = diagnostics
    assert diagnostic.code == "tab-indent"
    assert primary(diagnostic) == Span.point("t.yaml", 4, 1)


def test_tab_after_spaces_is_reported_at_the_tab() -> None:
    _, diagnostics = load_text("job:\n  name: tabs\n  input:\n    \tpath: x\n")
    assert codes(diagnostics) == ["tab-indent"]
    assert (primary(diagnostics[0]).line, primary(diagnostics[0]).column) == (4, 5)


def test_a_tab_inside_a_value_is_fine() -> None:
    values, diagnostics = load_text('job:\n  name: tabs\n  description: "a\\tb"\n  query: x\ty\n')
    assert diagnostics == []
    assert values == [{"job": {"name": "tabs", "description": "a\tb", "query": "x\ty"}}]


def test_syntax_error_is_reported_at_its_line() -> None:
    _, diagnostics = load_text("job:\n  name: syntax\n  description: [unclosed\n  version: 1.0.0\n")
    (diagnostic,) = diagnostics
    assert diagnostic.code == "yaml-syntax"
    assert primary(diagnostic).line == 4
    # The context (where the flow sequence opened) is a secondary label.
    assert [label.span.line for label in diagnostic.secondary] == [3]


def test_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    values, diagnostics = load_text("job:\n  name: a\n---\njob:\n  name: [b\n")
    assert values == [{"job": {"name": "a"}}]
    assert codes(diagnostics) == ["yaml-syntax"]


def test_control_characters_are_a_diagnostic_not_an_exception() -> None:
    _, diagnostics = load_text("job:\n  name: \x07bell\n")
    assert codes(diagnostics) == ["yaml-syntax"]


# Scalars keep their YAML meaning, except where YAML 1.1 surprises


def test_timestamps_stay_strings() -> None:
    values, diagnostics = load_text(
        "job:\n  name: t\n  params:\n    day: 2024-01-01\n    at: 2024-01-01T09:30:00Z\n    spaced: 2001-12-14 21:59:43.10 -5\n"
    )
    assert diagnostics == []
    assert values == [
        {
            "job": {
                "name": "t",
                "params": {
                    "day": "2024-01-01",
                    "at": "2024-01-01T09:30:00Z",
                    "spaced": "2001-12-14 21:59:43.10 -5",
                },
            }
        }
    ]


def test_yes_and_on_keys_stay_strings() -> None:
    values, diagnostics = load_text(
        "job:\n  name: k\n  params:\n    yes: 1\n    on: 2\n    off: 3\n    true: 4\n    12: 5\n    null: 6\n"
    )
    assert diagnostics == []
    (document,) = values
    assert isinstance(document, dict)
    assert list(document["job"]["params"]) == ["yes", "on", "off", "true", "12", "null"]


def test_plain_scalars_get_their_types() -> None:
    values, _ = load_text("a: 1\nb: 1.5\nc: true\nd: ~\ne: 1.0.0\nf: '3'\n")
    assert values == [{"a": 1, "b": 1.5, "c": True, "d": None, "e": "1.0.0", "f": "3"}]


def test_a_recursive_alias_is_refused() -> None:
    _, diagnostics = load_text("job:\n  name: r\n  params: &p\n    self: *p\n")
    assert codes(diagnostics) == ["alias-bomb"]


def test_deep_nesting_within_libyaml_limits_is_a_diagnostic() -> None:
    text = "job:\n  name: deep\n  params:\n    x: " + "[" * 600 + "]" * 600 + "\n"
    values, diagnostics = load_text(text)
    assert values == []
    assert codes(diagnostics) == ["alias-bomb"]
    assert "nest more than 200 levels" in diagnostics[0].message
