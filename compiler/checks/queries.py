"""A database query's substitutions must be bindable (compiler/sqlquery.py): one in an identifier position whose
value is known here (a job's `params`, or its default) must be a table or column name, and none may stand in a
dollar-quoted string. Values only `plan` knows (the environment, `--param`) are checked again there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..documents import Document, Path
from . import DocumentVisitor
from .expressions import ScalarSpans

if TYPE_CHECKING:
    from ..checker import CheckContext
    from ..ir.expressions import Substitution

_UNKNOWN = "unknown_value"
"""What a value only `plan` knows stands as: it passes every rule, so it is not judged before it is known."""


def check(context: CheckContext) -> None:
    _Queries(context).run()


class _Queries(DocumentVisitor):
    def __init__(self, context: CheckContext) -> None:
        super().__init__(context)
        self.spans = ScalarSpans(context.workspace.sources)

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        given = job.get("input")
        query = given.get("query") if isinstance(given, dict) else None
        if not isinstance(query, str) or "${" not in query:
            return
        from ..ir.expressions import ExpressionError, Substitution, parse_substitutions
        from ..sqlquery import Hole, QueryError, bind  # and with it the plan's classes: only for such a query

        try:
            parts = parse_substitutions(query)
        except ExpressionError:
            return  # the expression check reports it
        written = job.get("params")
        params: dict[str, Any] = written if isinstance(written, dict) else {}
        pieces = [
            p.value if not isinstance(p, Substitution) else Hole(name=p.name, value=_known(p, params), region=p.span)
            for p in parts
        ]
        parameters = given.get("parameters") if isinstance(given, dict) else None
        try:
            bind(pieces, parameters if isinstance(parameters, dict) else _AnyName())
        except QueryError as error:
            self.sink.emit(
                "unsafe-substitution",
                error.message,
                self.spans.span(document, (*path, "input", "query"), error.region),
                label="here",
                help=error.help,
            )


def _known(part: Substitution, params: dict[str, Any]) -> Any:
    value = params.get(part.name.split(".")[0]) if "." not in part.name else None
    if isinstance(value, str) and "${" in value:
        return _UNKNOWN
    if value is None or value == "":
        return part.default if part.default else _UNKNOWN
    return value


class _AnyName(dict[str, Any]):
    """`parameters` when the input has none written: a `:name` is judged by `plan`, not here."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> Any:
        return None
