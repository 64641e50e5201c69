"""The prompt module check: Jinja errors point at their file line, output schemas must be valid JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sleipnir.cli import main
from sleipnir.compiler.checker import check
from sleipnir.compiler.diagnostics import Diagnostic

HEADER = """\
prompt:
  name: triage
  version: 1.0.0
  description: Route a support ticket to a team.
  model:
    name: gpt-4o-mini
    temperature: 0
  variables:
    text:
      type: string
      required: false
  parameters:
    teams:
      type: list
      default: [billing, shipping, other]
"""

OUTPUT = """\
  output:
    format: json
    schema:
      type: object
      properties:
        team: {type: string}
      required: [team]
      additionalProperties: false
"""


def _check(tmp_path: Path, text: str) -> list[Diagnostic]:
    path = tmp_path / "triage.yaml"
    path.write_text(text, encoding="utf-8")
    return list(check([str(path)]).diagnostics)


def _line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_good_prompt_checks_clean(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    system: You route tickets to one of {{ parameters.teams | join(', ') }}.\n"
        "    user: |\n"
        "      {% if text is defined %}{{ text }}{% else %}{{ input | tojson }}{% endif %}\n"
    ) + OUTPUT
    assert _check(tmp_path, text) == []


def test_syntax_error_in_a_block_scalar_points_at_its_file_line(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    system: You route tickets.\n"
        "    user: |\n"
        "      Ticket:\n"
        "      {{ text }}\n"
        "\n"
        "      Teams:\n"
        "      {% for team in parameters.teams %}- {{ team }\n"
        "      {% endfor %}\n"
    ) + OUTPUT
    [diagnostic] = _check(tmp_path, text)
    assert diagnostic.code == "template-syntax"
    assert diagnostic.primary is not None
    span = diagnostic.primary.span
    assert span.line == _line_of(text, "{{ team }")
    assert span.column == 7  # the template line's first character, past the block's indentation
    assert "unexpected '}'" in diagnostic.message and "user template" in diagnostic.message


def test_syntax_error_in_a_folded_or_keep_block_stays_inside_the_block(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    user: |+\n"
        "      first line\n"
        "      {% if text %}\n"
    ) + OUTPUT
    [diagnostic] = _check(tmp_path, text)
    assert diagnostic.code == "template-syntax"
    assert diagnostic.primary is not None
    assert diagnostic.primary.span.line == _line_of(text, "{% if text %}")
    assert "endif" in diagnostic.message


def test_syntax_error_in_a_one_line_system_message(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    system: 'You route tickets to {{ parameters.teams | join(\", \") }.'\n"
        "    user: '{{ input | tojson }}'\n"
    ) + OUTPUT
    [diagnostic] = _check(tmp_path, text)
    assert diagnostic.code == "template-syntax" and "system template" in diagnostic.message
    assert diagnostic.primary is not None
    assert (diagnostic.primary.span.line, diagnostic.primary.span.column) == (_line_of(text, "system:"), 13)


def test_unknown_filter_is_a_template_error(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    user: |\n"
        "      {{ input | to_json }}\n"
    ) + OUTPUT
    [diagnostic] = _check(tmp_path, text)
    assert diagnostic.code == "template-syntax" and "to_json" in diagnostic.message
    assert diagnostic.primary is not None and diagnostic.primary.span.line == _line_of(text, "to_json")


def test_every_message_with_an_error_is_reported(tmp_path: Path) -> None:
    text = HEADER + (
        "  template:\n"
        "    system: |\n"
        "      {% if %}\n"
        "    user: |\n"
        "      {{ }}\n"
    ) + OUTPUT
    diagnostics = _check(tmp_path, text)
    assert [d.code for d in diagnostics] == ["template-syntax", "template-syntax"]
    assert [d.primary.span.line for d in diagnostics if d.primary] == [
        _line_of(text, "{% if %}"),
        _line_of(text, "{{ }}"),
    ]


BAD_SCHEMA = HEADER + """\
  template:
    user: "{{ input | tojson }}"
  output:
    format: json
    schema:
      type: object
      properties:
        team:
          type: strnig
        confidence:
          type: number
      required: [team]
"""


def test_a_bad_output_schema_points_at_the_bad_keyword(tmp_path: Path) -> None:
    [diagnostic] = _check(tmp_path, BAD_SCHEMA)
    assert diagnostic.code == "invalid-output-schema"
    assert diagnostic.primary is not None
    span = diagnostic.primary.span
    assert (span.line, span.column) == (_line_of(BAD_SCHEMA, "type: strnig"), 17)
    assert "`strnig` is not a JSON type" in diagnostic.message
    assert diagnostic.help == "did you mean `string`?"


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ("      type: object\n      required: team\n", "required: team"),
        ("      type: object\n      properties:\n        a: {minimum: low}\n", "minimum: low"),
        ("      type: object\n      pattern: '[unclosed'\n", "pattern:"),
    ],
    ids=["required-not-a-list", "minimum-not-a-number", "bad-regex"],
)
def test_output_schema_errors_point_at_their_value(tmp_path: Path, schema: str, needle: str) -> None:
    text = HEADER + '  template:\n    user: "{{ input | tojson }}"\n  output:\n    schema:\n' + schema
    [diagnostic] = _check(tmp_path, text)
    assert diagnostic.code == "invalid-output-schema"
    assert diagnostic.primary is not None and diagnostic.primary.span.line == _line_of(text, needle)


def test_an_unknown_schema_dialect_is_reported(tmp_path: Path) -> None:
    text = HEADER + (
        '  template:\n    user: "{{ input | tojson }}"\n  output:\n    schema:\n'
        "      $schema: http://json-schema.org/draft-07/schema\n"
        "      type: object\n"
        "---\n"
    ) + HEADER.replace("triage", "triage_two") + (
        '  template:\n    user: "{{ input | tojson }}"\n  output:\n    schema:\n'
        "      $schema: http://json-schema.org/draft-7/schema\n"
        "      type: object\n"
    )
    [diagnostic] = [d for d in _check(tmp_path, text) if d.code == "invalid-output-schema"]
    assert "draft-7" in diagnostic.message
    assert diagnostic.help == "did you mean `http://json-schema.org/draft-07/schema`?"


def test_an_output_schema_that_is_not_a_mapping(tmp_path: Path) -> None:
    text = HEADER + '  template:\n    user: "{{ input | tojson }}"\n  output:\n    schema: [team]\n'
    codes = {d.code for d in _check(tmp_path, text)}
    # the document schema may reject it first; either way it is reported once, as one problem
    assert codes in ({"invalid-output-schema"}, {"invalid-type"})


def test_the_cli_renders_prompt_errors_without_a_traceback(tmp_path: Path) -> None:
    text = HEADER + "  template:\n    user: |\n      hello\n      {{ text \n" + OUTPUT
    path = tmp_path / "triage.yaml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(BAD_SCHEMA.replace("triage", "triage_schema"), encoding="utf-8")

    result = CliRunner().invoke(main, ["check", "--color", "never", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error[template-syntax]" in result.output
    assert f"triage.yaml:{_line_of(text, '{{ text')}:" in result.output
    assert "error[invalid-output-schema]" in result.output
    assert "did you mean `string`?" in result.output


NAMES = HEADER + """\
  template:
    system: |
      Teams: {{ teams | join(", ") }}; also {{ parameters.team }}.
    user: |
      {{ txt }}
      {{ text_clener.cleaned_text }}
      {{ input.text }} {{ text_cleaner.cleaned_text }} {{ ticket_history }} {{ range(2) | list }}
"""


def test_a_name_close_to_a_declared_one_is_a_warning(tmp_path: Path) -> None:
    diagnostics = _check(tmp_path, NAMES)
    found = [(d.code, d.severity.value, d.help) for d in diagnostics]
    assert found == [
        ("unknown-template-variable", "warning", "read the parameter as `parameters.teams`"),
        ("unknown-template-variable", "warning", "did you mean `teams`?"),
        ("unknown-template-variable", "warning", "did you mean `text`?"),
        ("unknown-template-variable", "warning", "did you mean `text_cleaner`?"),
    ]
    spans = [(s.line, s.column, s.end_column) for s in (d.primary.span for d in diagnostics if d.primary)]
    assert spans == [_place(NAMES, "{{ teams", "teams"), _place(NAMES, ".team }", "team"),
                     _place(NAMES, "{{ txt", "txt"), _place(NAMES, "text_clener", "text_clener")]


def _place(text: str, context: str, name: str) -> tuple[int, int, int]:
    """(line, first column, end column) of `name` inside the first occurrence of `context`."""
    line = _line_of(text, context)
    column = text.splitlines()[line - 1].index(context) + context.index(name) + 1
    return (line, column, column + len(name))


def test_template_name_warnings_fail_only_under_strict(tmp_path: Path) -> None:
    path = tmp_path / "triage.yaml"
    path.write_text(NAMES, encoding="utf-8")
    relaxed = CliRunner().invoke(main, ["check", "--color", "never", str(path)])
    strict = CliRunner().invoke(main, ["check", "--color", "never", "--strict", str(path)])
    assert relaxed.exit_code == 0 and "warning[unknown-template-variable]" in relaxed.output
    assert strict.exit_code == 1
