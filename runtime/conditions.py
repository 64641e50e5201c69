"""Evaluating conditions (spec/conditions.md) over values: a stack step's `when` over the item and earlier
outputs, and (for operations) an alert's condition over a run's metrics.

A name reads a dotted path in the values; a name that reads nothing (a skipped step's output, a missing field)
makes its comparison false, so `not (x == 1)` is true when `x` is missing only through the `not`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..compiler.ir.expressions import (
    And,
    Boolean,
    Comparison,
    Condition,
    ConditionVisitor,
    Duration,
    Name,
    Not,
    Number,
    Or,
    Percentage,
    String,
    parse_condition,
)

_MISSING: Any = object()
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Evaluator(ConditionVisitor[Any]):
    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values

    def visit_Name(self, node: Name) -> Any:
        value: Any = self.values
        for part in node.parts:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                return _MISSING
        return value

    def visit_Number(self, node: Number) -> Any:
        return node.value

    def visit_Percentage(self, node: Percentage) -> Any:
        return node.value

    def visit_Duration(self, node: Duration) -> Any:
        return node.seconds

    def visit_String(self, node: String) -> Any:
        return node.value

    def visit_Boolean(self, node: Boolean) -> Any:
        return node.value

    def visit_Comparison(self, node: Comparison) -> bool:
        left, right = self.visit(node.left), self.visit(node.right)
        if left is _MISSING or right is _MISSING:
            return False
        try:
            return bool(_OPERATORS[node.operator](left, right))
        except TypeError:
            return False

    def visit_Not(self, node: Not) -> bool:
        return not self._truth(node.operand)

    def visit_And(self, node: And) -> bool:
        return all(self._truth(operand) for operand in node.operands)

    def visit_Or(self, node: Or) -> bool:
        return any(self._truth(operand) for operand in node.operands)

    def _truth(self, node: Condition) -> bool:
        value = self.visit(node)
        return value is not _MISSING and bool(value)


def holds(condition: str | Condition, values: Mapping[str, Any]) -> bool:
    """Whether `condition` is true over `values` (parsed once per text; parses are cached)."""
    parsed = parse_condition(condition) if isinstance(condition, str) else condition
    return bool(_Evaluator(values)._truth(parsed))
