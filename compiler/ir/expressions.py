"""Sleipnir's two expression languages: `${...}` substitutions inside strings, and conditions.

This module holds their typed nodes and what reads them; the parsing is in `grammars.py`, imported only when a
text holds a `${` or a condition is parsed, so that a workspace without either never imports lark (45 ms).
Parses are cached by text: offsets are relative to the text, so the same `${API_KEY}` in 2,000 jobs is parsed
once.
The rules are in `spec/substitutions.md` and `spec/conditions.md`.

Offsets here are 0-based character positions inside the expression's own text (`Region`); mapping them to a
line and column in a YAML file is the caller's job (`compiler/checks/expressions.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from .common import DURATION_UNITS

__all__ = [
    "DURATION_UNITS",
    "METRICS",
    "And",
    "Boolean",
    "Comparison",
    "Condition",
    "ConditionVisitor",
    "Duration",
    "ExpressionError",
    "Metric",
    "Name",
    "Not",
    "Number",
    "Or",
    "Part",
    "Percentage",
    "Region",
    "String",
    "Substitution",
    "Text",
    "UnsetVariableError",
    "format",
    "is_whole_substitution",
    "names",
    "names_in",
    "parse_condition",
    "parse_substitutions",
    "resolve",
]

@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """Where a node sits inside its expression's text: 0-based character offsets, the end exclusive."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad region {self.start}..{self.end}")

    @property
    def column(self) -> int:
        """The 1-based column of the start, for a single-line text."""
        return self.start + 1


class ExpressionError(Exception):
    """A substitution or condition that does not parse; `region` is where, inside the expression's text."""

    def __init__(self, message: str, region: Region, *, help: str | None = None, label: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.region = region
        self.help = help
        self.label = label

    @property
    def column(self) -> int:
        return self.region.column


# --------------------------------------------------------------------------------------------------------------
# Substitutions


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """Literal text between substitutions; `$${` escapes are already turned into `${` in `value`."""

    value: str
    span: Region
    """The source text this came from, escapes included."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Substitution:
    """One `${NAME}`, `${NAME:-default}` or `${NAME:?message}`."""

    name: str
    """A name with optional dotted parts: `BATCH`, `sentiment.label`."""
    default: str | None = None
    """The text after `:-` (possibly empty); None when there is no default."""
    required_message: str | None = None
    """The text after `:?` (possibly empty: a required variable with the standard message); None if not required."""
    span: Region
    """From the `$` of `${` to the closing `}`."""

    def __post_init__(self) -> None:
        if self.default is not None and self.required_message is not None:
            raise ValueError("a substitution has a default or a required message, not both")


Part = Text | Substitution


def parse_substitutions(text: str) -> tuple[Part, ...]:
    """The parts of `text`: literal text and `${...}` substitutions, in order. Raises `ExpressionError`.

    Text without a `${` costs a membership test: only strings that may hold a substitution reach the parser.
    """
    if "${" not in text:
        return (Text(value=text, span=Region(start=0, end=len(text))),) if text else ()
    return _parse_substitutions(text)


@functools.lru_cache(maxsize=16384)
def _parse_substitutions(text: str) -> tuple[Part, ...]:
    from . import grammars  # lark is imported only when some text holds a `${`

    return grammars.substitutions(text)


def format(parts: Sequence[Part]) -> str:
    """The source text of `parts`: `format(parse_substitutions(s)) == s` for every `s` that parses."""
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, Text):
            pieces.append(part.value.replace("${", "$${"))
        elif part.default is not None:
            pieces.append(f"${{{part.name}:-{part.default}}}")
        elif part.required_message is not None:
            pieces.append(f"${{{part.name}:?{part.required_message}}}")
        else:
            pieces.append(f"${{{part.name}}}")
    return "".join(pieces)


def is_whole_substitution(text: str) -> bool:
    """True when `text` is exactly one substitution, so that its value takes its YAML type when resolved."""
    if not (text.startswith("${") and text.endswith("}")):
        return False
    try:
        parts = parse_substitutions(text)
    except ExpressionError:
        return False
    return len(parts) == 1 and isinstance(parts[0], Substitution)


def names_in(text: str) -> tuple[str, ...]:
    """The names `text` substitutes, in order, repeats included; () when it does not parse."""
    if "${" not in text:
        return ()
    try:
        parts = parse_substitutions(text)
    except ExpressionError:
        return ()
    return tuple(part.name for part in parts if isinstance(part, Substitution))


class UnsetVariableError(Exception):
    """A substitution whose name is unset (or empty) and has no default."""

    def __init__(self, substitution: Substitution) -> None:
        message = substitution.required_message or f"`{substitution.name}` is not set and has no default"
        super().__init__(message)
        self.substitution = substitution
        self.message = message


def resolve(parts: Sequence[Part], lookup: Callable[[str], str | None]) -> str:
    """The text of `parts` with every name looked up; shell rules: a default also replaces an empty value.

    Raises `UnsetVariableError` for a name that `lookup` does not know (None) and that has no default.
    """
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, Text):
            pieces.append(part.value)
            continue
        value = lookup(part.name)
        if part.default is not None and not value:
            value = part.default
        if value is None or (part.required_message is not None and not value):
            raise UnsetVariableError(part)
        pieces.append(value)
    return "".join(pieces)


# --------------------------------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True, slots=True, kw_only=True)
class Name:
    """A metric (`error_rate`) or a step output (`sentiment.label`)."""

    parts: tuple[str, ...]
    span: Region

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Number:
    """A plain number; compared with a duration metric it counts seconds."""

    value: float
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class Percentage:
    """`5%`, kept as the fraction 0.05."""

    value: float
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class Duration:
    """`10m`, `30s`, `2h`, `1d`, kept in seconds."""

    seconds: float
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class String:
    """A quoted string, escapes resolved."""

    value: str
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class Boolean:
    value: bool
    span: Region


Operand = Name | Number | Percentage | Duration | String | Boolean

Operator = Literal[">", ">=", "<", "<=", "==", "!="]


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    left: Condition
    operator: Operator
    right: Condition
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class Not:
    operand: Condition
    span: Region


@dataclass(frozen=True, slots=True, kw_only=True)
class And:
    operands: tuple[Condition, ...]
    span: Region

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("`and` joins at least two conditions")


@dataclass(frozen=True, slots=True, kw_only=True)
class Or:
    operands: tuple[Condition, ...]
    span: Region

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("`or` joins at least two conditions")


Condition = Operand | Comparison | Not | And | Or



def parse_condition(text: str) -> Condition:
    """The condition `text` as a typed tree. Raises `ExpressionError`."""
    return _parse_condition(text)


@functools.lru_cache(maxsize=4096)
def _parse_condition(text: str) -> Condition:
    from . import grammars

    return grammars.condition(text)


# --------------------------------------------------------------------------------------------------------------
# Walking conditions, and the metrics alerts read

T = TypeVar("T")


class ConditionVisitor(Generic[T]):
    """Dispatches on the node class to `visit_<Class>`; `generic_visit` handles the rest."""

    def visit(self, node: Condition) -> T:
        method: Callable[[Any], T] = getattr(self, f"visit_{type(node).__name__}", self.generic_visit)
        return method(node)

    def generic_visit(self, node: Condition) -> T:
        raise NotImplementedError(type(node).__name__)


class _Names(ConditionVisitor[Iterator[Name]]):
    def visit_Name(self, node: Name) -> Iterator[Name]:
        yield node

    def visit_Comparison(self, node: Comparison) -> Iterator[Name]:
        yield from self.visit(node.left)
        yield from self.visit(node.right)

    def visit_Not(self, node: Not) -> Iterator[Name]:
        yield from self.visit(node.operand)

    def visit_And(self, node: And) -> Iterator[Name]:
        for operand in node.operands:
            yield from self.visit(operand)

    visit_Or = visit_And

    def generic_visit(self, node: Condition) -> Iterator[Name]:
        return iter(())


def names(condition: Condition) -> Iterator[Name]:
    """Every name in `condition`, left to right."""
    return _Names().visit(condition)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """A metric an alert condition may read."""

    name: str
    kind: Literal["duration", "rate", "count", "money"]
    description: str


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(name="execution_time", kind="duration", description="Wall time of the run, in seconds."),
        Metric(name="token_usage", kind="count", description="Tokens used, prompt and completion."),
        Metric(name="prompt_tokens", kind="count", description="Tokens sent in prompts."),
        Metric(name="completion_tokens", kind="count", description="Tokens received in completions."),
        Metric(
            name="success_rate", kind="rate", description="Items that succeeded, as a fraction from 0 to 1."
        ),
        Metric(name="error_rate", kind="rate", description="Items that failed, as a fraction from 0 to 1."),
        Metric(name="items_processed", kind="count", description="Items that went through every prompt."),
        Metric(name="items_failed", kind="count", description="Items that failed."),
        Metric(name="retries", kind="count", description="Calls that were retried."),
        Metric(
            name="cost", kind="money", description="Estimated cost of the run, in the price table's currency."
        ),
    )
}
"""The metrics alert conditions may compare, and what each measures."""
