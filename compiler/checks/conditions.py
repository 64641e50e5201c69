"""The meaning of conditions, once parsed: an alert condition compares known metrics in their units
(spec/conditions.md#typing-rules), and a stack step's `when` reads only `input` and the steps before it.
`expressions.py` parses them and turns these problems into diagnostics."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ..ir.common import suggestion_help
from ..ir.expressions import (
    METRICS,
    And,
    Boolean,
    Comparison,
    Condition,
    ConditionVisitor,
    Duration,
    Name,
    Not,
    Number,
    Percentage,
    Region,
    String,
    names,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """A semantic problem in a condition, for the check to turn into a diagnostic."""

    code: str
    message: str
    span: Region
    label: str = ""
    help: str | None = None


# The dimension of an operand. A plain number fits any numeric dimension: seconds for a duration metric,
# a fraction for a rate, a count or an amount of money.
_NUMERIC = {"duration", "rate", "count", "money"}
_NOUNS = {
    "duration": "a duration",
    "rate": "a rate",
    "count": "a count",
    "money": "a cost",
    "number": "a number",
    "percentage": "a percentage",
    "string": "a string",
    "boolean": "a condition",
}


class _AlertTyper(ConditionVisitor[str]):
    """Gives each node its dimension (`rate`, `duration`, `count`, `money`, `number`, `string`, `boolean`)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def visit_Name(self, node: Name) -> str:
        metric = METRICS.get(node.text)
        if metric is None:
            self.problems.append(
                Problem(
                    code="unknown-metric",
                    message=f"unknown metric `{node.text}`",
                    span=node.span,
                    label="not a metric",
                    help=suggestion_help(node.text, METRICS) or f"the metrics are: {', '.join(METRICS)}",
                )
            )
            return "unknown"
        return metric.kind

    def visit_Number(self, node: Number) -> str:
        return "number"

    def visit_Percentage(self, node: Percentage) -> str:
        return "percentage"

    def visit_Duration(self, node: Duration) -> str:
        return "duration"

    def visit_String(self, node: String) -> str:
        return "string"

    def visit_Boolean(self, node: Boolean) -> str:
        return "boolean"

    def visit_Comparison(self, node: Comparison) -> str:
        left, right = self.visit(node.left), self.visit(node.right)
        if "unknown" not in (left, right) and not _comparable(left, right):
            self.problems.append(
                Problem(
                    code="invalid-value",
                    message=f"cannot compare {_NOUNS[left]} with {_NOUNS[right]}",
                    span=node.span,
                    label="mismatched units",
                    help=_unit_help(left, right),
                )
            )
        elif {left, right} == {"rate", "number"}:
            number = node.right if right == "number" else node.left
            if isinstance(number, Number) and not 0 <= number.value <= 1:
                self.problems.append(
                    Problem(
                        code="invalid-value",
                        message=f"a rate is a fraction from 0 to 1, not {number.value:g}",
                        span=number.span,
                        label="out of range",
                        help=f"write `{number.value:g}%` for a percentage, or `{number.value / 100:g}`",
                    )
                )
        return "boolean"

    def visit_Not(self, node: Not) -> str:
        self._condition(node.operand)
        return "boolean"

    def visit_And(self, node: And) -> str:
        for operand in node.operands:
            self._condition(operand)
        return "boolean"

    visit_Or = visit_And

    def _condition(self, node: Condition) -> None:
        kind = self.visit(node)
        if kind not in ("boolean", "unknown"):
            what = f"`{node.text}`" if isinstance(node, Name) else "this"
            self.problems.append(
                Problem(
                    code="invalid-value",
                    message=f"{what} is {_NOUNS[kind]}, not a condition",
                    span=node.span,
                    label="not a condition",
                    help="compare it, as in `error_rate > 0.05`",
                )
            )


def _comparable(left: str, right: str) -> bool:
    if left == right or {left, right} == {"rate", "percentage"}:
        return True
    return "number" in (left, right) and (left in _NUMERIC or right in _NUMERIC)


def _unit_help(left: str, right: str) -> str:
    kinds = {left, right}
    if "duration" in kinds and kinds & {"rate", "percentage"}:
        return "a duration (`10m`, `600`) fits `execution_time`; a rate fits a percentage (`5%`) or a fraction (`0.05`)"
    if "duration" in kinds:
        return "compare a duration metric with a duration (`10m`) or a number of seconds"
    if kinds & {"rate", "percentage"}:
        return "compare a rate with a percentage (`5%`) or a fraction (`0.05`)"
    return "compare a metric with a plain number"


def check_alert_condition(condition: Condition) -> list[Problem]:
    """Problems in an alert condition: unknown metrics, values of the wrong unit, a metric used as a condition."""
    typer = _AlertTyper()
    typer._condition(condition)
    return typer.problems


def check_when(condition: Condition, earlier: Collection[str], steps: Collection[str] = ()) -> list[Problem]:
    """Problems in a stack step's `when`: every name must start with `input` or the id of an earlier step.

    `steps` are all the stack's step ids, to tell a step that runs later from one that does not exist.
    """
    known = ("input", *earlier)
    problems: list[Problem] = []
    for name in names(condition):
        root = name.parts[0]
        if root in known:
            continue
        later = root in steps
        problems.append(
            Problem(
                code="unknown-step",
                message=f"step `{root}` does not run before this step" if later else f"unknown step `{root}`",
                span=Region(start=name.span.start, end=name.span.start + len(root)),
                label="runs later" if later else "not `input` or an earlier step",
                help=(None if later else suggestion_help(root, known))
                or f"a `when` reads `input` and the outputs of earlier steps: {', '.join(known)}",
            )
        )
    return problems
