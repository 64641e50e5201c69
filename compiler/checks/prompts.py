"""Prompt modules: their Jinja templates compile, read declared names, and their output schemas are valid.

A Jinja error knows its line inside the template string only; `template_line` maps it back to the line of the
YAML file, exactly for literal block scalars (`|`, the recommended style) and as closely as the style allows
for the others. A template name that nothing declares but that is close to a declared one is a warning, since
it renders as an error for every item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from ..documents import Document
from ..ir.common import suggestion_help
from ..ir.sandbox import BoundedBinops
from ..loader import locate, node_span
from ..span import Span
from ..strict_schema import strict_form

if TYPE_CHECKING:
    from ..checker import CheckContext

MESSAGES = ("system", "user")
"""The template keys of a prompt module, in the order they are sent."""

JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

class _CompileSandbox(BoundedBinops, SandboxedEnvironment):
    pass


_ENVIRONMENT = _CompileSandbox(undefined=StrictUndefined, autoescape=False)
"""Like the runtime's: compiling with the same filters and tests finds an unknown filter before a run does."""


CONTEXT_NAMES = frozenset({"input", "parameters", "items", "category", "results"})
"""Names a run binds beside the declared variables: the row, the parameters, and the phase bindings."""


def check(context: CheckContext) -> None:
    for document in context.documents:
        if document.kind != "prompt" or not isinstance(document.body, dict):
            continue
        _check_templates(context, document)
        _check_output_schema(context, document)


def _check_templates(context: CheckContext, document: Document) -> None:
    template = document.body.get("template")
    if not isinstance(template, dict):
        return
    for message in MESSAGES:
        source = template.get(message)
        if not isinstance(source, str):
            continue
        path = (*document.base, "template", message)
        try:
            tree = _ENVIRONMENT.parse(source)
            # code generation, not parsing, is where an unknown filter or test is found
            _ENVIRONMENT.compile(tree, name=f"{document.name}.{message}")
        except TemplateSyntaxError as error:
            span = template_line(context, document, path, error.lineno)
            reason = error.message or "invalid template"
            context.sink.emit(
                "template-syntax",
                f"Jinja syntax error in the {message} template: {reason}",
                span,
                label=reason if len(reason) <= 40 else "the error is on this line",
                help="see https://jinja.palletsprojects.com/en/stable/templates/ for the template syntax",
            )
        except RecursionError:
            context.sink.emit(
                "template-syntax",
                f"the {message} template is nested too deeply to compile",
                document.span_at(path),
            )
        else:
            _check_names(context, document, path, tree)


def _check_names(
    context: CheckContext, document: Document, path: tuple[str | int, ...], tree: nodes.Template
) -> None:
    """Warn about a name that is not declared but is close to one that is: a typo renders as an error per item.

    Other undeclared names pass: an `inputs:` binding or an earlier prompt may supply them when the module runs.
    """
    variables = _names_of(document.body.get("variables"))
    parameters = _names_of(document.body.get("parameters"))
    prompts = set(context.registry.names("prompt"))
    undeclared = (
        meta.find_undeclared_variables(tree) - variables - CONTEXT_NAMES - prompts - set(_ENVIRONMENT.globals)
    )
    close_to = sorted({*variables, *CONTEXT_NAMES, *prompts} - {document.name or ""})
    reported: set[str] = set()
    for name_node in tree.find_all(nodes.Name):
        name = name_node.name
        if name not in undeclared or name in reported:
            continue
        hint = (
            f"read the parameter as `parameters.{name}`"
            if name in parameters
            else suggestion_help(name, close_to)
        )
        if hint is None:
            continue
        reported.add(name)
        _warn(
            context,
            document,
            path,
            name_node.lineno,
            name,
            f"`{name}`, which is not a declared variable",
            hint,
        )
    if "parameters" in variables or not isinstance(document.body.get("parameters"), dict):
        return  # without a `parameters:` block there is nothing to hold the names against
    for attribute in tree.find_all(nodes.Getattr):
        target = attribute.node
        name = attribute.attr
        if not isinstance(target, nodes.Name) or target.name != "parameters" or name in parameters:
            continue
        if f"parameters.{name}" in reported:
            continue
        reported.add(f"parameters.{name}")
        hint = suggestion_help(name, parameters) or f"declare `{name}` under `parameters:`"
        _warn(
            context,
            document,
            path,
            attribute.lineno,
            name,
            f"`parameters.{name}`, which is not declared",
            hint,
        )


def _warn(
    context: CheckContext,
    document: Document,
    path: tuple[str | int, ...],
    lineno: int,
    name: str,
    what: str,
    hint: str,
) -> None:
    context.sink.emit(
        "unknown-template-variable",
        f"the template reads {what}",
        _name_span(template_line(context, document, path, lineno), context, document, name),
        label="not declared",
        help=hint,
        notes=("a name the run does not bind is an error for every item that renders it",),
    )


def _names_of(declared: Any) -> set[str]:
    return {str(name) for name in declared} if isinstance(declared, dict) else set()


def _name_span(line: Span, context: CheckContext, document: Document, name: str) -> Span:
    """The span of `name` on the line `line`, or the whole line when it cannot be found there."""
    source = context.workspace.sources.get(document.file)
    text = source.line(line.line) if source else ""
    match = re.search(rf"(?<![A-Za-z0-9_.]){re.escape(name)}(?![A-Za-z0-9_])", text[line.column - 1 :])
    if match is None:
        match = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text[line.column - 1 :])
    if match is None:
        return line
    column = line.column + match.start()
    return Span(
        file=line.file, line=line.line, column=column, end_line=line.line, end_column=column + len(name)
    )


def template_line(
    context: CheckContext, document: Document, path: tuple[str | int, ...], lineno: int
) -> Span:
    """The span of line `lineno` (1-based, inside the template string) in the YAML file."""
    _, node = locate(document.root, path)
    whole = node_span(document.file, node)
    if not isinstance(node, yaml.ScalarNode):
        return whole
    style = node.style or ""
    first = node.start_mark.line + 1  # 1-based line of the key's value
    if style in ("|", ">"):
        first += 1  # a block scalar's content starts on the line after its indicator
    # Literal blocks keep every line break, so the mapping is exact; folded, quoted and plain scalars fold
    # some breaks away, so clamp to the scalar's own lines.
    last = max(first, node.end_mark.line + (0 if node.end_mark.column == 0 else 1))
    line = min(max(first + max(lineno, 1) - 1, first), last)
    source = context.workspace.sources.get(document.file)
    text = source.line(line) if source else ""
    if not text.strip():
        return Span.point(document.file, line, 1) if source else whole
    start = len(text) - len(text.lstrip()) + 1
    if line == whole.line:
        start = max(start, whole.column)
    return Span(file=document.file, line=line, column=start, end_line=line, end_column=len(text.rstrip()) + 1)


def _check_output_schema(context: CheckContext, document: Document) -> None:
    output = document.body.get("output")
    if not isinstance(output, dict) or "schema" not in output:
        return
    schema = output["schema"]
    path = (*document.base, "output", "schema")
    if not isinstance(schema, dict | bool):
        context.sink.emit(
            "invalid-output-schema",
            "the output schema must be a JSON Schema object",
            document.span_at(path),
            label=f"this is a {type(schema).__name__}",
            help="write the schema as a mapping, such as `{type: object, properties: {...}}`",
        )
        return
    validator = _validator_class(context, document, schema, path)
    if validator is None:
        return
    meta = validator(validator.META_SCHEMA, format_checker=validator.FORMAT_CHECKER)
    try:
        found = list(meta.iter_errors(schema))
    except RecursionError:
        context.sink.emit(
            "invalid-output-schema", "the output schema is nested too deeply", document.span_at(path)
        )
        return
    # One diagnostic per place: the most relevant of the errors found at each keyword.
    by_place: dict[tuple[str | int, ...], list[schema_exceptions.ValidationError]] = {}
    for error in found:
        by_place.setdefault(tuple(error.absolute_path), []).append(error)
    for errors in by_place.values():
        error = schema_exceptions.best_match(errors)
        if error is None:
            continue
        context.sink.emit(
            "invalid-output-schema",
            f"the output schema is not a valid JSON Schema: {_explain(error)}",
            document.span_at((*path, *error.absolute_path)),
            label=_label(error),
            help=_help(error),
            notes=(f"checked against the {_draft_name(validator)} meta-schema",),
        )
    if not found and isinstance(schema, dict) and output.get("format", "json") == "json":
        _check_strict_form(context, document, schema, path)


def _check_strict_form(
    context: CheckContext, document: Document, schema: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    """Say how the schema sent to a server with structured outputs differs from the one written."""
    form = strict_form(schema)
    if not form.changes:
        return
    if form.strict:
        code, message, label = "strict-schema-changed", "strict structured outputs are sent a changed form of this output schema", "changed for strict mode"
        help = "replies are still validated against the schema as written; make optional properties required to send it unchanged"
    else:
        code, message, label = "strict-schema-unsupported", "structured outputs cannot take this output schema in strict mode", "sent with `strict: false`"
        help = "the server is asked to follow the schema without the strict guarantee; every reply is still validated against it"
    context.sink.emit(code, message, document.span_at(path), label=label, notes=form.changes, help=help)


def _validator_class(
    context: CheckContext, document: Document, schema: dict[str, Any] | bool, path: tuple[str | int, ...]
) -> Any:
    """The validator class for the schema's `$schema` (draft 2020-12 without one); None after a diagnostic."""
    if not isinstance(schema, dict) or "$schema" not in schema:
        return validators.validator_for(schema, default=validators.Draft202012Validator)
    uri = schema["$schema"]
    known = _known_dialects()
    if isinstance(uri, str) and uri.rstrip("#") in known:
        return known[uri.rstrip("#")]
    context.sink.emit(
        "invalid-output-schema",
        f"unknown JSON Schema dialect `{uri}`" if isinstance(uri, str) else "`$schema` must be a URI string",
        document.span_at((*path, "$schema")),
        label="not a known `$schema`",
        notes=("known dialects: " + ", ".join(sorted(known)),),
        help=suggestion_help(uri, known) if isinstance(uri, str) else None,
    )
    return None


def _known_dialects() -> dict[str, Any]:
    dialects: dict[str, Any] = {}
    for validator in _all_validators():
        meta = validator.META_SCHEMA
        uri = meta.get("$schema") or meta.get("id") or meta.get("$id")
        if isinstance(uri, str):
            dialects[uri.rstrip("#")] = validator
    return dialects


def _all_validators() -> Iterable[Any]:
    return (
        validators.Draft3Validator,
        validators.Draft4Validator,
        validators.Draft6Validator,
        validators.Draft7Validator,
        validators.Draft201909Validator,
        validators.Draft202012Validator,
    )


def _draft_name(validator: Any) -> str:
    digits = str(validator.__name__).removeprefix("Draft").removesuffix("Validator")
    return f"draft {digits[:4]}-{digits[4:]}" if len(digits) == 6 else f"draft-{int(digits):02d}"


def _is_type_error(error: schema_exceptions.ValidationError) -> bool:
    """The error is about a `type` keyword's value: one name, or a name in a list of names."""
    place = list(error.absolute_path)
    if place and isinstance(place[-1], int):
        place.pop()
    return bool(place) and place[-1] == "type" and error.validator in ("anyOf", "enum", "type")


def _explain(error: schema_exceptions.ValidationError) -> str:
    if _is_type_error(error):
        return f"{_shown(error.instance)} is not a JSON type"
    if error.validator == "format" and error.validator_value == "regex":
        return f"{_shown(error.instance)} is not a valid regular expression"
    return error.message


def _label(error: schema_exceptions.ValidationError) -> str:
    if _is_type_error(error):
        return "not a JSON type"
    return f"fails `{error.validator}`" if isinstance(error.validator, str) else ""


def _help(error: schema_exceptions.ValidationError) -> str | None:
    if _is_type_error(error):
        names = error.instance if isinstance(error.instance, list) else [error.instance]
        for name in names:
            if isinstance(name, str) and name not in JSON_TYPES:
                hint = suggestion_help(name, JSON_TYPES)
                if hint:
                    return hint
        return f"use one of: {', '.join(JSON_TYPES)}"
    return None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"`{value!r}`"
