"""The arithmetic bound of the template sandbox, shared by `check` (which compiles and renders prompt templates)
and the runtime (which renders them per item): `'a' * 10**9` is refused in both, rather than allocating a
gigabyte, and Jinja no longer folds such an expression into a constant while compiling.
"""

from __future__ import annotations

from typing import Any

from jinja2.exceptions import SecurityError

__all__ = ["REPEAT_LIMIT", "BoundedBinops", "TooLarge"]

REPEAT_LIMIT = 10_000
"""The largest repeat count (`'a' * n`) and the largest exponent times 100 a template may compute."""


class TooLarge(SecurityError):
    """A repeat or a power past `REPEAT_LIMIT`: refused, as the runtime's sandbox refuses it."""


class BoundedBinops:
    """Sandbox arithmetic with a bound: `*` and `**` go through `call_binop` (which also keeps Jinja from folding
    `'a' * 10**9` into a constant while compiling, a gigabyte before anything renders)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > REPEAT_LIMIT // 100:
                raise TooLarge(f"the power {right} is too large")
            return left**right
        if any(isinstance(v, str | list | tuple) for v in (left, right)) and any(
            isinstance(v, int) and v > REPEAT_LIMIT for v in (left, right)
        ):
            raise TooLarge(f"repeating a value more than {REPEAT_LIMIT:,} times is refused")
        return left * right
