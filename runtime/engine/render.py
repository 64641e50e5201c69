"""Prompt calls made ready once per plan: templates compiled, variables bound, answers parsed and validated.

Templates render in Jinja's immutable sandbox with strict undefined names and no autoescaping
(spec/prompt.md). Everything that does not depend on the item is done once per call node: the templates are
compiled, a system message that reads only `parameters` is rendered once, and the output schema is compiled into
a jsonschema-rs validator (measured at microseconds a check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jsonschema_rs
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ...compiler.ir import PromptCall, PromptModule, thaw
from ...compiler.ir.sandbox import BoundedBinops
from ..io.dbconn import read_json


class _Sandbox(BoundedBinops, ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded (`compiler/ir/sandbox.py`): a refusal fails the item."""


_ENVIRONMENT = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


class ItemError(Exception):
    """An item a call cannot be made for: a required variable missing, a template reading an undefined name.
    Handled by the job's `on_input_error` policy, before any model is called."""


class ReplyError(Exception):
    """An answer that is not JSON, or fails the module's output schema; retried like a failed call."""


@dataclass(slots=True)
class _Binding:
    name: str
    template: jinja2.Template
    whole: bool
    """The binding is exactly one `{{ expression }}`: the expression's value keeps its type."""


class PreparedCall:
    """A `PromptCall` with its module, ready to render messages for an item and to read the answer."""

    def __init__(self, node: PromptCall, module: PromptModule) -> None:
        self.node = node
        self.module = module
        self.parameters = thaw(node.parameters)
        self.variables = thaw(module.variables)
        self.user = _Fast(_ENVIRONMENT.from_string(module.user))
        self.system = _Fast(_ENVIRONMENT.from_string(module.system)) if module.system else None
        self.fixed_system: str | None = None
        self.fixed_error: ItemError | None = None
        """A system message that reads only `parameters` and fails (the sandbox refused it): every item fails
        with this, as each would have failed rendering it."""
        if module.system and _reads_only(module.system, {"parameters"}):
            try:
                self.fixed_system = self.system.render(parameters=self.parameters) if self.system else None
            except Exception as error:
                self.fixed_error = self._template_error(error)
        self.bindings = [_binding(name, text) for name, text in thaw(node.inputs).items()]
        self.json_output = module.output_format == "json"
        schema = thaw(module.output_schema) if module.output_schema is not None else None
        self.schema: dict[str, Any] | None = schema
        self.validator = jsonschema_rs.validator_for(schema) if schema is not None else None
        sent = thaw(module.sent_schema) if module.sent_schema is not None else None
        self.optional = _optional_paths(schema) if sent is not None and module.strict and schema else None
        """Where strict mode made optional properties nullable: a null there means "absent" (see `parse`)."""
        options = node.options
        self.request_options: dict[str, Any] = {
            "temperature": options.get("temperature"),
            "max_tokens": options.get("max_tokens"),
            "top_p": options.get("top_p"),
            "json_output": self.json_output,
            "output_schema": schema,
            "sent_schema": sent,
            "strict": module.strict,
            "schema_name": module.name,
            "timeout": node.timeout,
        }
        """What every `ChatRequest` of this call shares, built once."""

    def context(self, row: Mapping[str, Any], earlier: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The Jinja context for an item: earlier outputs, `input`, `parameters`, then the variables' bindings."""
        context: dict[str, Any] = dict(earlier)
        context["input"] = row
        context["parameters"] = self.parameters
        if extra:
            context.update(extra)
        for name, spec in self.variables.items():
            if name in row:
                context[name] = row[name]
            elif isinstance(spec, dict) and "default" in spec and name not in context:
                context[name] = spec["default"]
        for binding in self.bindings:
            context[binding.name] = _bind(binding, context)
        for name, spec in self.variables.items():
            if isinstance(spec, dict) and spec.get("required") and name not in context:
                raise ItemError(f"`{self.module.name}` needs the variable `{name}`, which the item does not supply")
        return context

    def messages(self, context: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
        if self.fixed_error is not None:
            raise self.fixed_error
        try:
            user = self.user.render(context)
            system = self.fixed_system if self.fixed_system is not None else (
                self.system.render(context) if self.system else None
            )
        except Exception as error:
            raise self._template_error(error) from None
        if system:
            return ({"role": "system", "content": system}, {"role": "user", "content": user})
        return ({"role": "user", "content": user},)

    def _template_error(self, error: Exception) -> ItemError:
        where = f"`{self.module.name}@{self.module.version}` template"
        if isinstance(error, jinja2.UndefinedError):
            return ItemError(f"{where}: {error.message}")
        if isinstance(error, SecurityError):
            return ItemError(f"{where}: refused by the sandbox: {error}")
        if isinstance(error, jinja2.TemplateError):
            return ItemError(f"{where}: {error}")
        return ItemError(f"{where}: {type(error).__name__}: {error}")

    def parse(self, text: str) -> Any:
        """The answer as the module declares it: parsed and validated JSON, or the text."""
        if not self.json_output:
            return text
        try:
            value = read_json(_unfenced(text))
        except ValueError as error:
            raise ReplyError(f"the answer is not JSON: {error}") from None
        if self.optional:
            value = _without_nulls(value, self.optional)
        if self.validator is not None and not self.validator.is_valid(value):
            first = next(iter(self.validator.iter_errors(value)), None)
            where = "/".join(str(p) for p in first.instance_path) if first is not None else ""
            raise ReplyError(
                f"the answer does not match the output schema of `{self.module.name}@{self.module.version}`"
                + (f" at `{where or '/'}`: {first.message}" if first is not None else "")
            )
        return value


_Optional = dict[str, Any]
"""For an object schema: property -> (its schema allows null, the `_Optional` of its value or None); the key
`[]` holds that of an array's items."""


def _optional_paths(schema: Any) -> _Optional | None:
    """The optional properties of `schema`'s objects, at every depth, for `_without_nulls`; None when none."""
    if not isinstance(schema, dict):
        return None
    found: _Optional = {}
    properties = schema.get("properties")
    if isinstance(properties, dict):
        required = set(schema.get("required") or ())
        for name, sub in properties.items():
            inner = _optional_paths(sub)
            if name not in required or inner:
                found[name] = (name in required or _allows_null(sub), inner)
    items = _optional_paths(schema.get("items"))
    if items:
        found["[]"] = (True, items)
    return found or None


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    kind = schema.get("type")
    if kind is None:
        return "enum" not in schema or None in schema["enum"]
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _without_nulls(value: Any, optional: _Optional) -> Any:
    """`value` without the nulls strict mode let the model give for optional properties that do not allow null
    (the model's way of leaving them out), so that the full schema judges what is left."""
    if isinstance(value, list):
        inner = optional.get("[]")
        return [_without_nulls(v, inner[1]) for v in value] if inner else value
    if not isinstance(value, dict):
        return value
    for name, (null_ok, inner) in optional.items():
        if name not in value:
            continue
        if value[name] is None and not null_ok:
            del value[name]
        elif inner is not None:
            value[name] = _without_nulls(value[name], inner)
    return value


def _unfenced(text: str) -> str:
    """Models sometimes wrap JSON in a Markdown code fence; read through it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


def _reads_only(source: str, names: set[str]) -> bool:
    try:
        return meta.find_undeclared_variables(_ENVIRONMENT.parse(source)) <= names
    except jinja2.TemplateError:
        return False


def _binding(name: str, text: str) -> _Binding:
    stripped = text.strip()
    whole = stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1
    if whole:
        expression = _ENVIRONMENT.compile_expression(stripped[2:-2].strip(), undefined_to_none=False)
        return _Binding(name=name, template=_ExpressionTemplate(expression), whole=True)  # type: ignore[arg-type]
    return _Binding(name=name, template=_ENVIRONMENT.from_string(text), whole=False)


class _Fast:
    """A compiled template rendered through its root function with a shared context: the same output as
    `Template.render`, without copying the context and globals into a new one for every item (about 7 to 3 us
    an item, measured in benchmarks/runtime.py's profiling)."""

    __slots__ = ("blocks", "context_class", "environment", "globals", "name", "root")

    def __init__(self, template: jinja2.Template) -> None:
        self.globals = dict(template.globals)
        """The template's globals as a plain dict: `Template.new_context` hands the context its `ChainMap`, whose
        keys the context copies into a set for every render."""
        self.environment = template.environment
        self.context_class = template.environment.context_class
        self.name = template.name
        self.blocks = template.blocks
        self.root = template.root_render_func

    def render(self, context: Mapping[str, Any] | None = None, **names: Any) -> str:
        values = {**self.globals, **(context or {}), **names}
        # What `new_context(values, shared=True)` makes, with the same globals' keys.
        made = self.context_class(self.environment, values, self.name, self.blocks, globals=self.globals)
        return "".join(self.root(made))


class _ExpressionTemplate:
    def __init__(self, expression: Any) -> None:
        self.expression = expression

    def render(self, context: Mapping[str, Any]) -> Any:
        return self.expression(**context)


def _bind(binding: _Binding, context: Mapping[str, Any]) -> Any:
    try:
        value = binding.template.render(context)
    except jinja2.UndefinedError as error:
        raise ItemError(f"`inputs.{binding.name}`: {error.message}") from None
    except jinja2.TemplateError as error:
        raise ItemError(f"`inputs.{binding.name}`: {error}") from None
    if isinstance(value, jinja2.Undefined):
        raise ItemError(f"`inputs.{binding.name}` reads something the item does not have")
    return value
