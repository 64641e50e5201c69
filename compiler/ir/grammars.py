"""The parsers of the two expression languages (`expressions.py` has their nodes): lark grammars shipped beside
this module (`substitution.lark`, `condition.lark`), built once per process with LALR. They are strict (no
shift/reduce conflict, no terminal collision), which a test proves once rather than every process paying for the
check. An inline transformer builds frozen, typed nodes straight from the parse, each with its span; parse errors
become an `ExpressionError` with a terse message, a help line and the offsets inside the string, so a check can
point at the exact column. The rules are in `spec/substitutions.md` and `spec/conditions.md`.

Imported only by `expressions.py`'s parse functions, when there is something to parse: lark costs 45 ms to import.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal, cast

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .common import DURATION_UNITS
from .expressions import (
    And,
    Boolean,
    Comparison,
    Condition,
    Duration,
    ExpressionError,
    Name,
    Not,
    Number,
    Operator,
    Or,
    Part,
    Percentage,
    Region,
    String,
    Substitution,
    Text,
)

_HERE = Path(__file__).parent


def substitutions(text: str) -> tuple[Part, ...]:
    """The parts of `text`, parsed. Raises `ExpressionError`."""
    try:
        parts: Any = _substitution_parser().parse(text)  # the transformer's result, not a tree
    except UnexpectedInput as error:
        raise _substitution_error(text, error) from None
    return tuple(parts)


def condition(text: str) -> Condition:
    """The condition `text`, parsed. Raises `ExpressionError`."""
    try:
        parsed: Any = _condition_parser().parse(text)  # the transformer's result, not a tree
    except UnexpectedInput as error:
        raise _condition_error(text, error) from None
    return cast(Condition, parsed)


class _SubstitutionBuilder(Transformer[Token, Any]):
    """Builds the typed parts during the LALR parse (an inline transformer: no tree is built)."""

    def start(self, children: list[Token | Substitution]) -> tuple[Part, ...]:
        parts: list[Part] = []
        pieces: list[Token] = []
        for child in [*children, None]:
            if isinstance(child, Token):
                pieces.append(child)
                continue
            if pieces:  # adjacent text, `$` and `$${` tokens make one Text
                value = "".join("${" if t.type == "ESCAPE" else str(t) for t in pieces)
                parts.append(Text(value=value, span=Region(start=_start(pieces[0]), end=_end(pieces[-1]))))
                pieces = []
            if child is not None:
                parts.append(child)
        return tuple(parts)

    def substitution(self, children: list[Token]) -> Substitution:
        opening, name, closing = children
        return Substitution(name=str(name), span=Region(start=_start(opening), end=_end(closing)))

    def default(self, children: list[Token]) -> Substitution:
        return _modified(children, "default")

    def required(self, children: list[Token]) -> Substitution:
        return _modified(children, "required_message")


def _modified(children: list[Token], field: Literal["default", "required_message"]) -> Substitution:
    opening, name, _, *literal, closing = children
    nested = next((t for t in literal if t.type == "OPEN"), None)
    if nested is not None:
        raise _nested(_start(nested))
    text = "".join(str(t) for t in literal)
    span = Region(start=_start(opening), end=_end(closing))
    if field == "default":
        return Substitution(name=str(name), default=text, span=span)
    return Substitution(name=str(name), required_message=text, span=span)


def _nested(position: int) -> ExpressionError:
    return ExpressionError(
        "a substitution cannot be nested inside a default or message",
        Region(start=position, end=position + 2),
        label="nested `${`",
        help="a default is literal text; set the variable instead, or write `$${` in the text for a literal `${`",
    )


def _start(token: Token) -> int:
    return token.start_pos or 0


def _end(token: Token) -> int:
    return token.end_pos or 0


# Spans are read from the tokens, which always carry their offsets. `propagate_positions` is off: with an inline
# transformer a rule's children are already-built nodes whose positions lark cannot see, and it makes every
# parse two to three times slower (measured: 77 against 44 us for a 13-token string). `strict` is off too: its
# collision check (interegular) made building the two parsers cost 280 ms of CPU in every process that parses an
# expression, against 41 ms without it. Strictness is a property of the grammar files, not of the input, so a
# test (tests/test_expressions.py::test_grammars_are_strict_lalr) builds them strict instead. lark's `cache`
# would avoid the build too, but it unpickles from a predictable name in the shared temporary folder, which is no
# place to load code from.
_OPTIONS: dict[str, Any] = {"parser": "lalr", "strict": False, "propagate_positions": False}


def _build(grammar_file: str, transformer: Transformer[Token, Any]) -> Lark:
    grammar = (_HERE / grammar_file).read_text(encoding="utf-8")
    return Lark(grammar, transformer=transformer, **_OPTIONS)


@functools.cache
def _substitution_parser() -> Lark:
    return _build("substitution.lark", _SubstitutionBuilder())


_NAME_HELP = "a name is letters, digits and `_`, not starting with a digit, with `.` between parts: `${sentiment.label}`"


def _substitution_error(text: str, error: UnexpectedInput) -> ExpressionError:
    position = _error_position(text, error)
    # The open substitution's tokens: everything from the first `${` after the last finished substitution.
    stack = _flattened(_value_stack(error))
    last = max((i for i, v in enumerate(stack) if isinstance(v, Substitution)), default=-1)
    at = next((i for i in range(last + 1, len(stack)) if _is(stack[i], "OPEN")), None)
    current: list[Token] = [t for t in stack[at:] if isinstance(t, Token)] if at is not None else []
    if not current:  # cannot happen: outside `${` every text parses
        return ExpressionError(
            "invalid substitution", Region(start=position, end=min(position + 1, len(text)))
        )
    nested = next((t for t in current[1:] if t.type == "OPEN"), None)
    if nested is not None:
        return _nested(_start(nested))
    opening, previous = current[0], current[-1]
    open_at = _start(opening)
    token = error.token if isinstance(error, UnexpectedToken) else None
    closing = text.find("}", open_at)
    if token is None or token.type == "$END" or closing < 0:
        return ExpressionError(
            "unclosed `${`: expected `}`",
            Region(start=open_at, end=open_at + 2),
            label="this `${` is never closed",
            help="close the substitution with `}`; write `$${` for a literal `${`",
        )
    if previous.type == "OPEN" and token.type == "CLOSE":
        return ExpressionError(
            "empty substitution `${}`",
            Region(start=open_at, end=position + 1),
            label="no name",
            help="put a variable name inside, as in `${NAME}`, or write `$${}` for a literal `${}`",
        )
    if previous.type == "NAME" and text.startswith(":", position):
        return ExpressionError(
            f"unknown substitution modifier `{text[position : position + 2]}`",
            Region(start=position, end=min(position + 2, closing)),
            help="use `${NAME:-default}` for a default, or `${NAME:?message}` for a required value",
        )
    if previous.type == "NAME" and text.startswith("-", position):
        return ExpressionError(
            "a default needs `:-`",
            Region(start=position, end=position + 1),
            help=f"write `${{{previous}:{text[position:closing]}}}`",
        )
    return ExpressionError(
        f"invalid variable name `{text[open_at + 2 : closing]}`",
        Region(start=position, end=position + 1),
        label="not allowed in a name",
        help=_NAME_HELP,
    )


_UNIT_NAMES = {
    **dict.fromkeys(("sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
    **dict.fromkeys(("wk", "wks", "week", "weeks"), "w"),
    **dict.fromkeys(("msec", "msecs", "millisecond", "milliseconds"), "ms"),
}
"""Spelled-out units, for the help line of an unknown unit."""


_KEYWORDS = ("and", "or")
"""Where a value is due the lexer does not look for `and`/`or`, so it reads them as a name: refuse that name."""


def _keyword_as_value(token: Token) -> ExpressionError:
    return ExpressionError(f"expected a value, found `{token}`", _region(token), label="missing operand")


def _region(node: Condition | Token) -> Region:
    if isinstance(node, Token):
        return Region(start=_start(node), end=_end(node))
    return node.span


def _joined(first: Condition | Token, last: Condition | Token) -> Region:
    return Region(start=_region(first).start, end=_region(last).end)


class _ConditionBuilder(Transformer[Token, Any]):
    """Builds condition nodes during the LALR parse."""

    def start(self, children: list[Condition]) -> Condition:
        return children[0]

    def name(self, children: list[Token]) -> Name:
        (token,) = children
        if token in _KEYWORDS:
            raise _keyword_as_value(token)
        return Name(parts=tuple(str(token).split(".")), span=_region(token))

    def quantity(self, children: list[Token]) -> Number | Percentage | Duration:
        (token,) = children
        text = str(token)
        end = len(text) - len(text.lstrip("-"))
        while end < len(text) and (text[end].isdigit() or text[end] == "."):
            end += 1
        digits, unit = text[:end], text[end:]
        value = float(digits)
        region = _region(token)
        if not unit:
            return Number(value=value, span=region)
        if unit == "%":
            return Percentage(value=value / 100, span=region)
        if unit in DURATION_UNITS:
            return Duration(seconds=value * DURATION_UNITS[unit], span=region)
        raise ExpressionError(
            f"unknown unit `{unit}` in `{text}`",
            Region(start=region.start + end, end=region.end),
            label="not a unit",
            help=f"write `{digits}{_UNIT_NAMES[unit.lower()]}`"
            if unit.lower() in _UNIT_NAMES
            else f"durations take {', '.join(DURATION_UNITS)}; a percentage takes %",
        )

    def string(self, children: list[Token]) -> String:
        (token,) = children
        return String(value=_unquote(str(token)), span=_region(token))

    def true(self, children: list[Token]) -> Boolean:
        return Boolean(value=True, span=_region(children[0]))

    def false(self, children: list[Token]) -> Boolean:
        return Boolean(value=False, span=_region(children[0]))

    def group(self, children: list[Token | Condition]) -> Condition:
        inner = children[1]
        assert not isinstance(inner, Token)
        return inner

    def comparison(self, children: list[Token | Condition]) -> Comparison:
        left, operator, right = children
        assert not isinstance(left, Token) and isinstance(operator, Token) and not isinstance(right, Token)
        # The grammar's COMPARE terminal has exactly the six operators.
        return Comparison(
            left=left, operator=cast(Operator, str(operator)), right=right, span=_joined(left, right)
        )

    def negation(self, children: list[Token | Condition]) -> Not:
        keyword, operand = children
        assert not isinstance(operand, Token)
        return Not(operand=operand, span=_joined(keyword, operand))

    def conjunction(self, children: list[Token | Condition]) -> And:
        operands = tuple(c for c in children if not isinstance(c, Token))
        return And(operands=operands, span=_joined(operands[0], operands[-1]))

    def disjunction(self, children: list[Token | Condition]) -> Or:
        operands = tuple(c for c in children if not isinstance(c, Token))
        return Or(operands=operands, span=_joined(operands[0], operands[-1]))


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(_ESCAPES.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


@functools.cache
def _condition_parser() -> Lark:
    return _build("condition.lark", _ConditionBuilder())


_OPERATORS = "`>`, `>=`, `<`, `<=`, `==` or `!=`"
_OPERAND_TOKENS = {"NAME", "QUANTITY", "STRING", "TRUE", "FALSE", "NOT", "LPAR"}
_WANTS_OPERAND = {"COMPARE", "AND", "OR", "NOT", "LPAR"}
_MISTAKES = {
    "=": "use `==` to test equality",
    "=>": "use `>=`",
    "=<": "use `<=`",
    "<>": "use `!=`",
    "===": "use `==`",
    "&&": "use `and`",
    "&": "use `and`",
    "||": "use `or`",
    "|": "use `or`",
    "!": "use `not`",
}


def _condition_error(text: str, error: UnexpectedInput) -> ExpressionError:
    position = _error_position(text, error)
    stack = _value_stack(error)
    previous = stack[-1] if stack else None
    # After an operator, keyword or `(` the parser wants a value; after a value it wants an operator.
    wants_operand = previous is None or (isinstance(previous, Token) and previous.type in _WANTS_OPERAND)
    after = f" after `{previous}`" if wants_operand and previous is not None else ""
    open_parens = [t for t in stack if isinstance(t, Token) and t.type == "LPAR"]

    if _is(previous, "NAME") and previous in _KEYWORDS:
        return _keyword_as_value(previous)
    if isinstance(error, UnexpectedCharacters):
        # `===` or `>==`: the characters the lexer refused continue the operator before them.
        if isinstance(previous, Token) and previous.type == "COMPARE" and _end(previous) == position:
            position = _start(previous)
        return _bad_character(text, position)
    token = error.token if isinstance(error, UnexpectedToken) else None
    kind = token.type if token is not None else "$END"
    shown = str(token) if token is not None else ""
    here = Region(start=position, end=min(position + max(len(shown), 1), len(text)) if text else 0)
    if kind == "$END" or position >= len(text):
        if not text.strip():
            return ExpressionError(
                "empty condition",
                Region(start=0, end=len(text)),
                help="write a comparison such as `error_rate > 0.05`",
            )
        if wants_operand:
            where = _region(previous) if isinstance(previous, Token) else _at_end(text)
            return ExpressionError(
                f"expected a value{after}", where, label="nothing follows", help="complete the condition"
            )
        if open_parens:
            paren = open_parens[-1]
            return ExpressionError(
                "unclosed `(`: expected `)`",
                _region(paren),
                label="this `(` is never closed",
                help="close it with `)`",
            )
        return ExpressionError("unexpected end of condition", _at_end(text))
    if kind == "RPAR" and not open_parens:
        return ExpressionError(
            "unmatched `)`", here, label="no `(` opens this", help="remove it, or add the `(`"
        )
    if wants_operand:
        if kind == "COMPARE" and isinstance(previous, Token) and previous.type == "COMPARE":
            operator = text[_start(previous) : _end(token)] if token is not None else shown
            return ExpressionError(
                f"invalid operator `{operator}`",
                Region(start=_start(previous), end=position + len(shown)),
                label="not an operator",
                help=_MISTAKES.get(operator.replace(" ", ""), f"compare with {_OPERATORS}"),
            )
        if kind == "RPAR" and isinstance(previous, Token) and previous.type == "LPAR":
            return ExpressionError("empty parentheses", Region(start=_start(previous), end=position + 1))
        if previous is None:
            return ExpressionError(
                f"expected a value before `{shown}`",
                here,
                label="missing operand",
                help="a condition starts with a value or a name",
            )
        return ExpressionError(f"expected a value{after}, found `{shown}`", here, label="missing operand")
    chained = isinstance(previous, Comparison) or (
        len(stack) >= 2 and isinstance(stack[-2], Token) and stack[-2].type == "COMPARE"
    )
    if kind == "COMPARE" and chained:
        return ExpressionError(
            "comparisons cannot be chained",
            here,
            label="second comparison",
            help="join two comparisons with `and`: `a > 1 and a < 5`",
        )
    if kind in _OPERAND_TOKENS:
        return ExpressionError(
            f"expected an operator before `{shown}`",
            here,
            label="missing operator",
            help=f"compare with {_OPERATORS}, or join conditions with `and` / `or`",
        )
    return ExpressionError(f"unexpected `{shown}`", here)


def _bad_character(text: str, position: int) -> ExpressionError:
    char = text[position]
    if char in "\"'":
        return ExpressionError(
            "unclosed string",
            Region(start=position, end=len(text)),
            label="this string is never closed",
            help=f"close it with {char}",
        )
    end = position
    while end < len(text) and text[end] in "=<>!&|":
        end += 1
    operator = text[position:end]
    if operator:
        return ExpressionError(
            f"invalid operator `{operator}`",
            Region(start=position, end=end),
            label="not an operator",
            help=_MISTAKES.get(operator, f"compare with {_OPERATORS}"),
        )
    return ExpressionError(f"unexpected character `{char}`", Region(start=position, end=position + 1))


def _at_end(text: str) -> Region:
    end = len(text.rstrip())
    return Region(start=max(end - 1, 0), end=end)


def _error_position(text: str, error: UnexpectedInput) -> int:
    if isinstance(error, UnexpectedToken) and error.token.type == "$END":
        return len(text)
    position = error.pos_in_stream
    return position if isinstance(position, int) and 0 <= position <= len(text) else len(text)


def _is(item: Any, kind: str) -> bool:
    return isinstance(item, Token) and item.type == kind


def _flattened(stack: list[Any]) -> list[Any]:
    """The parser's value stack with lark's internal `__..._star` helper trees opened up."""
    flat: list[Any] = []
    for item in stack:
        if isinstance(item, Tree) and str(item.data).startswith("__"):
            flat.extend(_flattened(item.children))
        else:
            flat.append(item)
    return flat


def _value_stack(error: UnexpectedInput) -> list[Any]:
    parser = getattr(error, "interactive_parser", None)
    if parser is None:
        return []
    return list(parser.parser_state.value_stack)


