"""Prompt templates are rendered here, in the runtime's sandbox, with representative values: what the sandbox
refuses (`''.__class__`, a method that changes a value) is `template-unsafe` in `check`, not a failure of every
item at run time.

Representative values come from the module: each variable's and parameter's default, else a value of its declared
type. A name nothing declares renders empty rather than failing, since an `inputs:` binding or an earlier prompt may
supply it; only the sandbox's refusals are reported. Rendering is bounded: `range` is capped at 100 and large repeats
(`'a' * 10**9`) are refused, as the runtime refuses them, so no template makes `check` slow.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from jinja2 import ChainableUndefined, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..documents import Document
from ..ir.sandbox import BoundedBinops
from .prompts import MESSAGES, template_line

if TYPE_CHECKING:
    from ..checker import CheckContext

_TEMPLATE = "<template>"
_SAMPLES: dict[Any, Any] = {"string": "text", "integer": 1, "number": 1.5, "boolean": True, "list": ["text"], "array": ["text"],
                            "object": {"key": "text"}, "null": None}


class _Lenient(ChainableUndefined):
    """Undefined names render empty; an attribute the sandbox refused still fails, as it does at run time."""

    __slots__ = ()

    def _refused(self) -> None:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()

    def __str__(self) -> str:
        self._refused()
        return ""

    def __iter__(self) -> Any:
        self._refused()
        return iter(())

    def __bool__(self) -> bool:
        self._refused()
        return False

    def __len__(self) -> int:
        self._refused()
        return 0


class _CheckSandbox(BoundedBinops, ImmutableSandboxedEnvironment):
    pass


_ENVIRONMENT = _CheckSandbox(undefined=_Lenient, autoescape=False)
_ENVIRONMENT.globals["range"] = lambda *args: range(*args)[:100]


def check(context: CheckContext) -> None:
    for document in context.documents:
        if document.kind == "prompt" and isinstance(document.body, dict):
            _render(context, document)


def _render(context: CheckContext, document: Document) -> None:
    template = document.body.get("template")
    if not isinstance(template, dict):
        return
    values = _representative(document.body)
    for message in MESSAGES:
        source = template.get(message)
        if not isinstance(source, str) or ("{" not in source):
            continue
        try:
            _ENVIRONMENT.from_string(source).render(values)
        except SecurityError as error:
            path = (*document.base, "template", message)
            context.sink.emit(
                "template-unsafe",
                f"the sandbox refuses the {message} template: {error}",
                template_line(context, document, path, _template_lineno(error)),
                label="refused by the sandbox",
                help="templates may read values, not reach into Python objects or change them; "
                "filters such as `join`, `tojson` and `replace` build new values",
            )
        except (UndefinedError, TemplateError, RecursionError, MemoryError):
            continue
        except Exception:
            continue


def _template_lineno(error: BaseException) -> int:
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == _TEMPLATE]
    return (lines[-1] or 1) if lines else 1


def _representative(body: dict[str, Any]) -> dict[str, Any]:
    variables = {str(k): _sample(v) for k, v in (body.get("variables") or {}).items()} if isinstance(
        body.get("variables"), dict
    ) else {}
    declared = body.get("parameters")
    parameters = {str(k): _sample(v) for k, v in declared.items()} if isinstance(declared, dict) else {}
    row = dict(variables)
    return {**variables, "input": row, "parameters": parameters, "items": [row], "results": [row], "category": "text"}


def _sample(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return "text"
    if "default" in spec:
        return spec["default"]
    kind = spec.get("type")
    return _SAMPLES.get(kind if isinstance(kind, str) else None, "text")
