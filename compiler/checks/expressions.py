"""Expressions parse and make sense: every `${...}` in every string, alert conditions and stack `when`s.

Alert conditions are type-checked lightly against the metrics' kinds (spec/conditions.md#typing-rules); a stack
`when` may read only `input` and the steps that run before it.

A problem is reported at the line and column inside the string: the scalar's node is found again from its path,
and the offset inside its value is walked back through the YAML quoting (escapes, `''`, folded lines, block
indentation) to the source text. Unset variables are not reported here: CI has no secrets (plan and run do that).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from ..diagnostics import Diagnostics
from ..documents import Document, Path
from ..ir.common import RUN_TIME_NAMES, suggestion_help
from ..loader import SourceFile, locate, node_span
from ..span import Span

if TYPE_CHECKING:
    from ..checker import CheckContext
    from ..ir.expressions import ExpressionError, Region

# The expression nodes and parsers (`ir/expressions.py`, its dataclasses 5 ms to import) and the condition checks
# (`conditions.py`) are imported where a document has a string with a `$`, an alert condition or a `when`.

TEMPLATE_NAMES = ("job_name",)
"""Names a template's job body may use besides its declared parameters."""


def check(context: CheckContext) -> None:
    """Parse every substitution, alert condition and stack `when` of the checked documents."""
    spans = ScalarSpans(context.workspace.sources)
    for document in context.documents:
        _check_strings(document, context.sink, spans, strict=context.strict)
        for path, text in _alert_conditions(document):
            _check_condition(document, path, text, None, context.sink, spans)
        if document.kind == "stack":
            for path, text, earlier, steps in _stack_whens(document.body):
                _check_condition(document, path, text, (earlier, steps), context.sink, spans)


def _check_strings(document: Document, sink: Diagnostics, spans: ScalarSpans, *, strict: bool = False) -> None:
    if not _may_hold_dollar(document, spans.sources):
        return
    found: list[tuple[Path, str]] = []
    _strings_with_dollar(document.value, (), found)
    if not found:
        return
    from ..ir.expressions import ExpressionError, Substitution, parse_substitutions
    declared = _template_parameters(document)
    params = _job_params(document) if strict else None
    for path, text in found:
        try:
            parts = parse_substitutions(text)
        except ExpressionError as error:
            _syntax_error(sink, spans.span(document, path, error.region), error)
            continue
        if params is not None and path[:2] != ("job", "profiles"):
            _check_set(document, path, parts, params, sink, spans)
        if declared is None or path[:2] != ("template", "job"):
            continue
        for part in parts:
            if not isinstance(part, Substitution) or part.name in declared:
                continue
            # Other names pass through into the generated job, to be resolved when it runs; only a near miss
            # of a declared parameter is surely a typo.
            hint = suggestion_help(part.name, declared)
            if hint is not None:
                sink.emit(
                    "unknown-parameter",
                    f"`{part.name}` is not a parameter of template `{document.name or '?'}`",
                    spans.span(document, path, part.span),
                    label="not a declared parameter",
                    notes=(f"declared: {', '.join(sorted(declared))}",),
                    help=hint,
                )


def _job_params(document: Document) -> set[str] | None:
    """The names a job's substitutions may use besides the environment: its `params`."""
    if document.kind != "job" or not isinstance(document.body, dict):
        return None
    params = document.body.get("params")
    return set(params) if isinstance(params, dict) else set()


def _check_set(
    document: Document, path: Path, parts: Iterable[Any], params: set[str], sink: Diagnostics, spans: ScalarSpans
) -> None:
    """Under `--strict`, a name that is neither a parameter nor set in the environment, without a default."""
    from ..ir.expressions import Substitution
    for part in parts:
        if not isinstance(part, Substitution) or part.default is not None:
            continue
        if part.name.split(".")[0] in params or os.environ.get(part.name):
            continue
        if part.name in RUN_TIME_NAMES and path[-2:] == ("output", "path"):
            continue  # filled when the run starts
        sink.emit(
            "unset-variable",
            part.required_message or f"`{part.name}` is not set and has no default",
            spans.span(document, path, part.span),
            label="unset",
            help=f"set `{part.name}` in the environment, add it to the job's `params`, or give a default: "
            f"`${{{part.name}:-value}}`",
        )


def _may_hold_dollar(document: Document, sources: Mapping[str, SourceFile]) -> bool:
    """Whether a value of `document` may hold a `$`: its source text has one, or a backslash (a double-quoted
    `\\x24`). Aliases and merges only reach nodes of the same document. One search of the text spares walking
    every value of the documents without substitutions, most of them."""
    try:
        text = sources[document.file].text
    except KeyError:
        return True
    start, end = document.root.start_mark.index, document.root.end_mark.index
    return text.find("$", start, end) >= 0 or text.find("\\", start, end) >= 0


def _strings_with_dollar(value: Any, path: Path, found: list[tuple[Path, str]]) -> None:
    """Append (path, text) for every string value holding a `$`; paths are built only for what is found.

    Keys are not substituted, so they are not walked.
    """
    items: Iterable[tuple[str | int, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        if isinstance(item, str):
            if "$" in item:
                found.append(((*path, key), item))
        elif isinstance(item, dict | list):
            _strings_with_dollar(item, (*path, key), found)


def _template_parameters(document: Document) -> set[str] | None:
    if document.kind != "template" or not isinstance(document.body, dict):
        return None
    declared = set(TEMPLATE_NAMES)
    parameters = document.body.get("parameters")
    for parameter in parameters if isinstance(parameters, list) else ():
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            declared.add(parameter["name"])
    return declared


def _alert_conditions(document: Document) -> Iterable[tuple[Path, str]]:
    body = document.body
    if document.kind == "job":
        job, base = body, document.base
    elif document.kind == "template" and isinstance(body, dict):
        job, base = body.get("job"), (*document.base, "job")
    else:
        return
    alerts = job.get("alerts") if isinstance(job, dict) else None
    for index, alert in enumerate(alerts if isinstance(alerts, list) else ()):
        condition = alert.get("condition") if isinstance(alert, dict) else None
        if isinstance(condition, str):
            yield (*base, "alerts", index, "condition"), condition


def _stack_whens(body: Any) -> Iterable[tuple[Path, str, tuple[str, ...], tuple[str, ...]]]:
    """(path, when, ids of earlier steps, ids of all steps) for every step with a `when`."""
    steps = body.get("steps") if isinstance(body, dict) else None
    if not isinstance(steps, list):
        return
    every = tuple(_ids(steps))
    earlier: list[str] = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        group = step.get("parallel")
        members = (
            [(j, s) for j, s in enumerate(group) if isinstance(s, dict)] if isinstance(group, list) else []
        )
        path: Path = ("stack", "steps", index)
        for place, member in [((*path, "parallel", j), s) for j, s in members] if members else [(path, step)]:
            when = member.get("when")
            if isinstance(when, str):
                yield (*place, "when"), when, tuple(earlier), every
        earlier.extend(_ids([step]))


def _ids(steps: list[Any]) -> Iterable[str]:
    for step in steps:
        if not isinstance(step, dict):
            continue
        if isinstance(step.get("id"), str):
            yield step["id"]
        group = step.get("parallel")
        if isinstance(group, list):
            yield from _ids(group)


def _check_condition(
    document: Document,
    path: Path,
    text: str,
    stack: tuple[tuple[str, ...], tuple[str, ...]] | None,
    sink: Diagnostics,
    spans: ScalarSpans,
) -> None:
    """Parse and check one condition; `stack` is (earlier step ids, all step ids) for a `when`, else None."""
    if "${" in text:
        return  # checked once substituted, at plan time; its `${...}` syntax is checked with every string
    from ..ir.expressions import ExpressionError, parse_condition
    from .conditions import Problem, check_alert_condition, check_when

    try:
        condition = parse_condition(text)
    except ExpressionError as error:
        _syntax_error(sink, spans.span(document, path, error.region), error)
        return
    problems: list[Problem]
    if stack is None:
        problems = check_alert_condition(condition)
    else:
        earlier, every = stack
        problems = check_when(condition, earlier, every)
    for problem in problems:
        sink.emit(
            problem.code,
            problem.message,
            spans.span(document, path, problem.span),
            label=problem.label,
            help=problem.help,
        )


class ScalarSpans:
    """Maps a region inside a scalar's value to its span in the source file."""

    def __init__(self, sources: Mapping[str, SourceFile]) -> None:
        self.sources = sources

    def span(self, document: Document, path: Path, region: Region) -> Span:
        _, node = locate(document.root, path)
        whole = node_span(document.file, node)
        source = self.sources.get(document.file)
        if type(node) is not yaml.ScalarNode or source is None:
            return whole
        start = _source_position(source.text, node, region.start)
        if start is None:
            return whole
        end = _source_position(source.text, node, max(region.end - 1, region.start))
        end_line, end_column = (
            (end[0], end[1] + 1) if end is not None and region.end > region.start else start
        )
        if (end_line, end_column) <= start:
            end_line, end_column = start[0], start[1] + 1
        return Span(
            file=document.file, line=start[0], column=start[1], end_line=end_line, end_column=end_column
        )


def _source_position(text: str, node: yaml.ScalarNode, offset: int) -> tuple[int, int] | None:
    """The 1-based (line, column) in `text` of character `offset` of the scalar `node`'s value, if it can be found.

    Walks the raw source and the value side by side: quoted escapes and `''` stand for one value character,
    and raw characters that do not appear in the value (quotes, the block header, indentation, folded line
    breaks) are stepped over.
    """
    value: str = node.value
    start, end = node.start_mark.index, node.end_mark.index
    raw = text[start:end]
    style = node.style or ""
    if style in ('"', "'"):
        i = 1
    elif style in ("|", ">"):
        i = raw.find("\n") + 1
        if i == 0:
            return None
    else:
        i = 0
    if not raw or (style and not raw.startswith(style)) or offset > len(value):
        return None
    j = 0
    while True:
        if i >= len(raw):
            return None
        char = raw[i]
        if style == '"' and char == "\\":
            if raw.startswith("\n", i + 1) or raw.startswith("\r\n", i + 1):
                i += 2  # an escaped line break stands for nothing
                continue
            width = 2 + {"x": 2, "u": 4, "U": 8}.get(raw[i + 1 : i + 2], 0)
        elif style == "'" and raw.startswith("''", i):
            width = 2
        elif j < len(value) and char == value[j]:
            width = 1
        elif j == len(value):
            break  # past the last character: the end is here
        else:
            i += 1
            continue
        if j == offset:
            break
        i += width
        j += 1
    line = node.start_mark.line + 1 + raw.count("\n", 0, i)
    newline = raw.rfind("\n", 0, i)
    column = i - newline if newline >= 0 else node.start_mark.column + 1 + i
    return line, column


def _syntax_error(sink: Diagnostics, span: Span, error: ExpressionError) -> None:
    sink.emit("expression-syntax", error.message, span, label=error.label, help=error.help)
