"""A template and its parameter values -> a job body: values type-checked, `${...}` filled in, the job validated.

Expansion substitutes the template's declared parameters and `${job_name}` (the `--name`); every other `${...}`
is copied into the job as written, to be resolved when the job runs. A whole-scalar substitution takes the
value with its type (`batch_size: ${batch_size}` gives the integer); inside longer text the value is written as
text. Parameter values are written as they are: a value may itself hold a `${...}`, which the job then resolves
at run time, just as a profile or a `--param` of `run-job` may set a value to a substitution.

The rules are in `spec/template.md`. Problems go to the sink and expansion returns None: no half-made job.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from .diagnostics import Diagnostics, Label
from .documents import Document, Path
from .ir.common import suggestion_help
from .ir.expressions import ExpressionError, Part, Substitution, Text, names_in, parse_substitutions
from .overrides import Override, command_line, scalar
from .schemas import fast_validator
from .span import Span
from .validate import explain_value

__all__ = ["JOB_NAME", "Parameter", "expand", "parameters", "template_overrides"]

JOB_NAME = "job_name"
"""The name every template may use without declaring it: the `--name` of the job being made."""

_ABSENT: Any = object()
"""What an optional parameter with no value and no default gives a whole scalar: the key is left out."""

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}
_NOUNS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "list": "a list",
    "object": "an object",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """One declared template parameter, read from a schema-valid template."""

    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    """None when the template gives no default."""
    enum: tuple[Any, ...] | None = None
    description: str | None = None
    path: Path
    """Where it is declared: `("template", "parameters", 2)`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Value:
    """A parameter's value and where it came from, for messages."""

    value: Any
    origin: str
    """`--param`, `--param-file f.yaml`, `the template's default` or `--name`."""
    span: Span | None


def parameters(template: Document) -> list[Parameter]:
    """The parameters `template` declares, in order; entries that are not well formed are skipped."""
    body = template.body if isinstance(template.body, dict) else {}
    declared = body.get("parameters")
    found = []
    for index, entry in enumerate(declared if isinstance(declared, list) else ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        enum, kind = entry.get("enum"), entry.get("type")
        found.append(
            Parameter(
                name=entry["name"],
                type=kind if isinstance(kind, str) and kind in _TYPES else "string",
                required=entry.get("required") is True,
                default=entry.get("default"),
                enum=tuple(enum) if isinstance(enum, list) else None,
                description=entry.get("description") if isinstance(entry.get("description"), str) else None,
                path=(*template.base, "parameters", index),
            )
        )
    return found


def template_overrides(
    template: Document, params: Sequence[str], param_files: Sequence[str], sink: Diagnostics
) -> list[Override]:
    """The values given for `template`, lowest precedence first: `--param-file`s in order, then `--param`s.

    A `--param` of a string parameter keeps its text as written, so `--param version=1.10` is `1.10` and
    `--param zip=01234` is `01234`, where YAML would read the numbers 1.1 and 668.
    """
    strings = {p.name for p in parameters(template) if p.type == "string"}
    found = command_line((), param_files, {}, sink)
    for text in params:
        for override in command_line((text,), (), {}, sink):
            written = text.partition("=")[2]
            if override.key in strings and not isinstance(override.value, str):
                override = Override(key=override.key, value=written.strip(), origin=override.origin)
            found.append(override)
    return found


def expand(
    template: Document, name: str, overrides: Sequence[Override], sink: Diagnostics
) -> dict[str, Any] | None:
    """The job body `template` makes, named `name`, with `overrides` (lowest precedence first) applied over
    the parameters' defaults; None when anything is wrong, with the problems in `sink`."""
    errors = len(sink.errors)
    declared = parameters(template)
    values = _values(template, declared, overrides, sink)
    values[JOB_NAME] = _Value(value=name, origin="--name", span=None)
    body = template.body.get("job") if isinstance(template.body, dict) else None
    if len(sink.errors) > errors or not isinstance(body, dict):
        return None
    expander = _Expander(template=template, declared={p.name: p for p in declared}, values=values, sink=sink)
    job = expander.value(body, (*template.base, "job"))
    if len(sink.errors) > errors:
        return None
    document = {"job": job}
    if not fast_validator("job").is_valid(document):
        _explain(template, document, expander, sink)
        return None
    assert isinstance(job, dict)
    return job


# --------------------------------------------------------------------------------------------------------------
# Parameter values


def _values(
    template: Document, declared: list[Parameter], overrides: Sequence[Override], sink: Diagnostics
) -> dict[str, _Value]:
    """The checked value of every parameter that has one: its default, then each override in order."""
    by_name = {p.name: p for p in declared}
    values: dict[str, _Value] = {}
    for parameter in declared:
        if parameter.default is not None:
            span = template.span_at((*parameter.path, "default"))
            values[parameter.name] = _Value(
                value=parameter.default, origin="the template's default", span=span
            )
    for override in overrides:
        if override.key == JOB_NAME:
            sink.emit(
                "invalid-param",
                f"`{JOB_NAME}` is the job's name: set it with --name, not {override.origin}",
                override.span,
                file=None if override.span else "<command line>",
                help=f"remove `{JOB_NAME}` from the parameters and pass `--name NAME`",
            )
        elif override.key not in by_name:
            _unknown(template, override, declared, sink)
        else:
            values[override.key] = _Value(value=override.value, origin=override.origin, span=override.span)
    checked: dict[str, _Value] = {}
    for parameter in declared:
        given = values.get(parameter.name)
        if given is None:
            if parameter.required:
                _missing(template, parameter, sink)
            continue
        value = _checked(template, parameter, given, sink)
        if value is not _ABSENT:
            checked[parameter.name] = _Value(value=value, origin=given.origin, span=given.span)
    return checked


def _unknown(template: Document, override: Override, declared: list[Parameter], sink: Diagnostics) -> None:
    names = [p.name for p in declared]
    span = override.span or template.span_at((*template.base, "parameters"), key=True)
    sink.emit(
        "unknown-parameter",
        f"`{override.key}` is not a parameter of template `{template.name or '?'}`",
        span,
        label=f"given by {override.origin}"
        if override.span
        else f"not declared here (given by {override.origin})",
        notes=(f"declared: {', '.join(names)}" if names else "the template declares no parameters",),
        help=suggestion_help(override.key, names)
        or "remove it, or declare it in the template's `parameters`",
    )


def _missing(template: Document, parameter: Parameter, sink: Diagnostics) -> None:
    sink.emit(
        "missing-parameter",
        f"template `{template.name or '?'}` needs parameter `{parameter.name}`",
        template.span_at((*parameter.path, "name")),
        label="required, with no default",
        notes=(parameter.description,) if parameter.description else (),
        help=f"pass `--param {parameter.name}=VALUE`, or set it in a --param-file",
    )


def _checked(template: Document, parameter: Parameter, given: _Value, sink: Diagnostics) -> Any:
    """The value, made to fit the parameter's type where that is plain (a number for a string parameter is its
    text); `_ABSENT` with a diagnostic when it does not fit."""
    value = _plain(given.value)
    if parameter.type == "string" and _is_scalar(value):
        value = _text(value)
    where = _Where(template=template, parameter=parameter, given=given)
    if not _fits(value, parameter.type):
        where.emit(
            sink,
            "invalid-type",
            f"parameter `{parameter.name}` must be {_NOUNS[parameter.type]}, found {_noun(value)}",
            at="type",
            label=f"declared `{parameter.type}` here",
            help=_type_help(parameter),
        )
        return _ABSENT
    if isinstance(value, float) and not math.isfinite(value):
        where.emit(sink, "invalid-value", f"parameter `{parameter.name}` must be a finite number", at="type")
        return _ABSENT
    if parameter.enum is not None and not any(
        _same(value, option, parameter.type) for option in parameter.enum
    ):
        options = [_text(o) if _is_scalar(o) else json.dumps(o) for o in parameter.enum]
        where.emit(
            sink,
            "invalid-value",
            f"parameter `{parameter.name}` must be one of {', '.join(f'`{o}`' for o in options)}, found `{_text(value)}`",
            at="enum",
            label="the allowed values",
            help=suggestion_help(_text(value), options),
        )
        return _ABSENT
    for text in _strings(value):
        try:
            parse_substitutions(text)
        except ExpressionError as error:
            where.emit(
                sink,
                "expression-syntax",
                f"the value of parameter `{parameter.name}` has a bad substitution: {error.message}",
                at="name",
                help=error.help or "write `$${` for a literal `${`",
            )
            return _ABSENT
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class _Where:
    """Places a problem with a value: at the value when it has a place (a --param-file line, the template's
    default), the template's declaration beside it; at the declaration for a --param."""

    template: Document
    parameter: Parameter
    given: _Value

    def emit(
        self, sink: Diagnostics, code: str, message: str, *, at: str, label: str = "", help: str | None = None
    ) -> None:
        declared = self.template.span_at((*self.parameter.path, at))
        label = label or "declared here"
        if self.given.span is None:
            sink.emit(
                code,
                message,
                declared,
                label=label,
                notes=(f"the value comes from {self.given.origin}",),
                help=help,
            )
            return
        sink.emit(
            code,
            message,
            self.given.span,
            label=f"given by {self.given.origin}",
            secondary=(Label(span=declared, text=label),),
            help=help,
        )


def _type_help(parameter: Parameter) -> str:
    examples = {
        "string": "any scalar, such as `reviews`",
        "integer": "a whole number, such as `100`",
        "number": "a number, such as `0.5`",
        "boolean": "`true` or `false`",
        "list": "a YAML list, such as `[a, b]`",
        "object": "a YAML mapping, such as `{a: 1}`",
    }
    return f"give `{parameter.name}` {examples[parameter.type]}"


def _fits(value: Any, kind: str) -> bool:
    """`value` has the parameter type `kind`; a boolean is not an integer or a number here."""
    return isinstance(value, _TYPES[kind]) and isinstance(value, bool) == (kind == "boolean")


def _plain(value: Any) -> Any:
    """`value` with dates as their text, as Sleipnir's loader keeps them: YAML reads `[2024-06-01]` from the
    command line as a list holding a date."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _text(value: Any) -> str:
    """A value as text: YAML's spelling for booleans, compact JSON for lists and objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _noun(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, types in _TYPES.items():
        if isinstance(value, types):
            return _NOUNS[kind]
    return type(value).__name__


def _same(value: Any, option: Any, kind: str) -> bool:
    """Equal as the parameter's type sees it: `true` is not `1`, and a string parameter's `2024` is `"2024"`."""
    if kind == "string" and _is_scalar(option):
        return bool(value == _text(option))
    return isinstance(value, bool) == isinstance(option, bool) and bool(value == option)


def _strings(value: Any) -> Iterable[str]:
    """Every string in `value` that may hold a substitution."""
    if isinstance(value, str):
        if "${" in value:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --------------------------------------------------------------------------------------------------------------
# The job body


@dataclass(slots=True, kw_only=True)
class _Expander:
    """Walks the template's job body, building the job; remembers where each job value came from."""

    template: Document
    declared: Mapping[str, Parameter]
    values: Mapping[str, _Value]
    sink: Diagnostics
    moved: dict[Path, int] = field(default_factory=dict)
    """For a list item that a dropped item before it moved: the list's path (as in the template, under `job`)
    with the item's index in the job -> its index in the template."""

    def value(self, node: Any, path: Path) -> Any:
        if isinstance(node, dict):
            built = {}
            for key, item in node.items():
                made = self.value(item, (*path, key))
                if made is not _ABSENT:
                    built[key] = made
            return built
        if isinstance(node, list):
            items: list[Any] = []
            job_path = self.job_path(path)
            for index, item in enumerate(node):
                made = self.value(item, (*path, index))
                if made is _ABSENT:
                    continue
                if len(items) != index:
                    self.moved[(*job_path, len(items))] = index
                items.append(made)
            return items
        if isinstance(node, str) and "${" in node:
            return self.string(node, path)
        return node

    def job_path(self, path: Path) -> Path:
        """The path in the generated document of the template's `path`, before any item moves."""
        return ("job", *path[len(self.template.base) + 1 :])

    def string(self, text: str, path: Path) -> Any:
        try:
            parts = parse_substitutions(text)
        except ExpressionError:
            return text  # `check` reports it; a template that failed check is not expanded
        if len(parts) == 1 and isinstance(parts[0], Substitution) and self.is_parameter(parts[0].name):
            return self.whole(parts[0], path)
        pieces: list[str] = []
        meaning: list[Part] = []
        for part in parts:
            if isinstance(part, Substitution) and self.is_parameter(part.name):
                filled = self.inside_text(part, path)
                if filled is None:
                    return text
                pieces.append(filled)
                meaning.extend(parse_substitutions(filled))
            else:
                pieces.append(text[part.span.start : part.span.end])  # as written: escapes and defaults kept
                meaning.append(part)
        made = "".join(pieces)
        if _meaning(parse_substitutions(made)) != _meaning(meaning):
            self.sink.emit(
                "invalid-value",
                "a value written into this text changes its meaning",
                self.template.span_at(path),
                label="a `$` here now stands before `${`",
                notes=tuple(self.origins(text)),
                help="a `$` directly before `${` makes the `$${` escape; keep a character between them",
            )
            return text
        return made

    def is_parameter(self, name: str) -> bool:
        return name in self.declared or name == JOB_NAME

    def whole(self, part: Substitution, path: Path) -> Any:
        """The typed value of a scalar that is one parameter's substitution."""
        given = self.values.get(part.name)
        if given is not None and not (given.value == "" and part.default is not None):
            return copy.deepcopy(given.value)
        if part.default is not None:
            return scalar(part.default)
        if part.required_message is not None:
            self.unset(part, path)
        # An optional parameter with no value: the key is left out, so the job's own default applies.
        return _ABSENT

    def inside_text(self, part: Substitution, path: Path) -> str | None:
        """The text a parameter's substitution writes inside longer text; None after a diagnostic."""
        given = self.values.get(part.name)
        if given is not None and not (given.value == "" and part.default is not None):
            return _text(given.value)
        if part.default is not None:
            return part.default
        self.unset(part, path)
        return None

    def unset(self, part: Substitution, path: Path) -> None:
        parameter = self.declared[part.name]
        self.sink.emit(
            "missing-parameter",
            part.required_message or f"parameter `{part.name}` has no value to write here",
            self.template.span_at(path),
            label=f"`{part.name}` is not set",
            secondary=(Label(span=self.template.span_at((*parameter.path, "name")), text="declared here"),),
            help=f"pass `--param {part.name}=VALUE`, or give it a default in the template",
        )

    def given(self, text: str) -> list[str]:
        """The parameters with a value that `text` substitutes, each once, in order."""
        return list(dict.fromkeys(name for name in names_in(text) if name in self.values))

    def origins(self, text: str) -> list[str]:
        """`the value of `x` comes from --param` for each parameter `text` substitutes."""
        return [f"`{name}` comes from {self.values[name].origin}" for name in self.given(text)]


def _meaning(parts: Iterable[Part]) -> list[tuple[str | None, ...]]:
    """What parts say, with adjacent texts joined: two spellings with the same meaning compare equal."""
    meaning: list[tuple[str | None, ...]] = []
    for part in parts:
        if isinstance(part, Text):
            if meaning and meaning[-1][0] == "text":
                meaning[-1] = ("text", f"{meaning[-1][1]}{part.value}")
            elif part.value:
                meaning.append(("text", part.value))
        else:
            meaning.append(("substitution", part.name, part.default, part.required_message))
    return meaning


# --------------------------------------------------------------------------------------------------------------
# Validating the job made


@dataclass(frozen=True, slots=True, kw_only=True)
class _InTemplate:
    """Maps a path of the generated job to the template's job body, for the spans of schema diagnostics."""

    template: Document
    moved: Mapping[Path, int]

    def path(self, path: Path) -> Path:
        steps: list[str | int] = []
        for step in path[1:]:
            steps.append(self.moved.get(("job", *steps, step), step) if isinstance(step, int) else step)
        return (*self.template.base, "job", *steps)

    def span_at(self, path: Path, *, key: bool = False) -> Span:
        return self.template.span_at(self.path(path), key=key)

    def source_text(self, path: Path) -> str:
        return self.template.source_text(self.path(path))


def _explain(template: Document, document: dict[str, Any], expander: _Expander, sink: Diagnostics) -> None:
    """The job schema's complaints, each at the template place that made the value, naming its parameters."""
    located = _InTemplate(template=template, moved=expander.moved)
    found = Diagnostics()
    explain_value("job", document, located, found)
    written = _written_at(template, expander)
    for diagnostic in found:
        text = written.get(diagnostic.primary.span) if diagnostic.primary else None
        if text is not None:
            names = expander.given(text)
            diagnostic = replace(
                diagnostic,
                message=f"the generated job is invalid: {diagnostic.message}",
                notes=(*diagnostic.notes, *expander.origins(text)),
                help="choose a --name that fits here"
                if names == [JOB_NAME]
                else f"give {_listed(n for n in names if n != JOB_NAME)} a value that fits here, or change the template",
            )
        sink.extend([diagnostic])


def _listed(names: Iterable[str]) -> str:
    return " or ".join(f"`{name}`" for name in names)


def _written_at(template: Document, expander: _Expander) -> dict[Span, str]:
    """The span of every string of the template's job that substitutes a parameter -> its text."""
    found: dict[Span, str] = {}
    base = (*template.base, "job")

    def walk(node: Any, path: Path) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                walk(item, (*path, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, (*path, index))
        elif isinstance(node, str) and "${" in node and expander.given(node):
            found[template.span_at(path)] = node

    walk(template.body.get("job"), base)
    return found
