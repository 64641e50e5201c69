"""A database query's `${...}` substitutions, bound as driver parameters and never pasted into the SQL text.

`bind` reads the query as SQL (string literals, quoted identifiers, comments, dollar-quoted strings, `:name`
placeholders) with each substitution a hole, and decides per hole (the rules are in spec/substitutions.md):

- inside a string literal, the literal becomes a bound value: `'${region}'` is one placeholder, and
  `'EU-${region}%'` the concatenation `('EU-' || ? || '%')`;
- after `FROM`, `JOIN`, `INTO`, `UPDATE`, `TABLE` or `BY`, beside a `.`, or inside double quotes, it is an
  identifier: the value must match the table-name rule (`IDENTIFIER`) and is written into the text;
- anywhere else it is a bound value, typed as a YAML scalar (`${MIN_ID:-0}` binds the integer 0);
- in a comment it is dropped; inside a dollar-quoted string it is an error (there is no way to bind it).

Once one hole is bound, the query's `:name` placeholders are bound by position too, so the driver sees one
style. `BoundQuery.render` writes the dialect's placeholder: `?` for SQLite, `%s` for PostgreSQL (whose driver
then needs every other `%` doubled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ir import Secret
from .ir.expressions import Region
from .overrides import scalar

__all__ = ["DIALECTS", "IDENTIFIER", "BoundQuery", "Hole", "QueryError", "bind", "dialect_of"]

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
"""The rule table names follow (`output.table`), and so must a substitution in an identifier position."""
_QUOTED_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER_KEYWORDS = frozenset({"from", "join", "into", "update", "table", "by"})
_LAST_WORD = re.compile(r"([A-Za-z_]+)\s*$")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_NAMED = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_HOLE = "\x00"
DIALECTS = {"sqlite": "?", "postgresql": "%s"}
"""Each dialect's positional placeholder."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hole:
    """One substitution of the query, resolved."""

    name: str
    value: Any
    """The value: a parameter's own value (an int stays an int), an environment variable's text, or a `Secret`."""
    region: Region
    """Where the substitution stands in the query text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A value the driver binds."""

    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundQuery:
    """A query as SQL text pieces and bound values, in order, not yet in a dialect's placeholder style."""

    pieces: tuple[str | Bound, ...]

    def render(self, dialect: str) -> tuple[str, tuple[Any, ...]]:
        """The SQL text with the dialect's placeholders, and the values to bind, in order."""
        placeholder = DIALECTS[dialect]
        text: list[str] = []
        values: list[Any] = []
        for piece in self.pieces:
            if isinstance(piece, Bound):
                text.append(placeholder)
                values.append(piece.value)
            else:
                text.append(piece.replace("%", "%%") if dialect == "postgresql" else piece)
        return "".join(text), tuple(values)

    def __str__(self) -> str:
        return self.render("sqlite")[0]


class QueryError(Exception):
    """A substitution that cannot be bound safely, at its place in the query."""

    def __init__(self, message: str, region: Region, *, help: str) -> None:
        super().__init__(message)
        self.message = message
        self.region = region
        self.help = help


def dialect_of(source: str, url: str | None) -> str | None:
    """The SQL dialect of a database source, from its `source` kind or its connection's URL; None when the URL
    is hidden in an environment variable."""
    if source in DIALECTS:
        return source
    if url is None or url.startswith("${"):
        return None
    scheme = url.split("://", 1)[0].lower().split("+", 1)[0] if "://" in url else "sqlite"
    return "postgresql" if scheme in ("postgresql", "postgres") else "sqlite" if scheme == "sqlite" else None


def bind(parts: Sequence[str | Hole], parameters: Mapping[str, Any]) -> BoundQuery:
    """The query of `parts` (SQL text and holes) with every hole bound or, in an identifier position, checked
    and written in. `parameters` are the input's `:name` values. Raises `QueryError`."""
    return _Binder(parts, parameters).run()


class _Binder:
    def __init__(self, parts: Sequence[str | Hole], parameters: Mapping[str, Any]) -> None:
        self.holes = [p for p in parts if isinstance(p, Hole)]
        self.parameters = parameters
        self.text = "".join(_HOLE if isinstance(p, Hole) else p for p in parts)
        if self.text.count(_HOLE) != len(self.holes):
            first = self.holes[0].region if self.holes else Region(start=0, end=0)
            raise QueryError("a query cannot hold a NUL character", first, help="remove the NUL character")
        self.out: list[str | Bound] = []
        self.next_hole = 0

    def run(self) -> BoundQuery:
        text, i, n = self.text, 0, len(self.text)
        while i < n:
            char = text[i]
            if char == "'":
                i = self._literal(i)
            elif char == '"':
                i = self._quoted_identifier(i)
            elif text.startswith("--", i) or text.startswith("/*", i):
                end = text.find("\n", i) if char == "-" else text.find("*/", i + 2)
                end = n if end < 0 else end + (0 if char == "-" else 2)
                self._comment(text[i:end])
                i = end
            elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)):
                i = self._dollar_quoted(i, tag.group(0))
            elif text.startswith("::", i):
                self._text("::")
                i += 2
            elif char == ":" and (named := _NAMED.match(text, i)):
                self._named(named.group(1))
                i = named.end()
            elif char == _HOLE:
                self._bare(self._take(), following=text[i + 1 : i + 2])
                i += 1
            else:
                self._text(char)
                i += 1
        return BoundQuery(pieces=tuple(self.out))

    def _take(self) -> Hole:
        hole = self.holes[self.next_hole]
        self.next_hole += 1
        return hole

    def _text(self, text: str) -> None:
        if self.out and isinstance(self.out[-1], str):
            self.out[-1] += text
        else:
            self.out.append(text)

    def _closing(self, start: int, quote: str) -> int:
        """The index of the quote closing the one at `start` (a doubled quote escapes); len(text) if none."""
        text, i = self.text, start + 1
        while True:
            i = text.find(quote, i)
            if i < 0:
                return len(text)
            if text.startswith(quote * 2, i):
                i += 2
                continue
            return i

    def _literal(self, start: int) -> int:
        end = self._closing(start, "'")
        body = self.text[start + 1 : end]
        if _HOLE not in body:
            self._text(self.text[start : end + 1])
            return end + 1
        if end == len(self.text):
            raise QueryError("a substitution in an unclosed string literal", self.holes[self.next_hole].region,
                             help="close the string with `'`")
        pieces: list[str | Bound] = []
        for number, chunk in enumerate(body.split(_HOLE)):
            if number:
                pieces.append(Bound(value=_text_value(self._take().value)))
            if chunk:
                pieces.append(f"'{chunk}'")
        if len(pieces) == 1:
            self.out.append(pieces[0])
        else:
            self._text("(")
            for number, piece in enumerate(pieces):
                if number:
                    self._text(" || ")
                self.out.append(piece) if isinstance(piece, Bound) else self._text(piece)
            self._text(")")
        return end + 1

    def _quoted_identifier(self, start: int) -> int:
        end = self._closing(start, '"')
        chunks = self.text[start : end + 1].split(_HOLE)
        self._text(chunks[0])
        for chunk in chunks[1:]:
            self._text(self._identifier(self._take(), _QUOTED_IDENTIFIER, "a quoted identifier"))
            self._text(chunk)
        return end + 1

    def _comment(self, comment: str) -> None:
        self.next_hole += comment.count(_HOLE)
        self._text(comment.replace(_HOLE, ""))

    def _dollar_quoted(self, start: int, tag: str) -> int:
        close = self.text.find(tag, start + len(tag))
        end = len(self.text) if close < 0 else close + len(tag)
        if _HOLE in self.text[start:end]:
            raise QueryError(
                "a substitution inside a dollar-quoted string cannot be bound",
                self.holes[self.next_hole].region,
                help="write the string in single quotes: `'${...}'` is bound as a value",
            )
        self._text(self.text[start:end])
        return end

    def _named(self, name: str) -> None:
        if name not in self.parameters:
            region = self.holes[0].region
            raise QueryError(
                f"`:{name}` is not in the input's `parameters`",
                region,
                help=f"add `{name}` to `input.parameters`; a query with `${{...}}` binds its `:name` values too",
            )
        value = self.parameters[name]
        self.out.append(Bound(value=list(value) if isinstance(value, tuple) else value))

    def _bare(self, hole: Hole, following: str) -> None:
        before = "".join(p for p in self.out[-1:] if isinstance(p, str)).rstrip()
        word = _LAST_WORD.search(before)
        if before.endswith(".") or following == "." or (word and word.group(1).lower() in _IDENTIFIER_KEYWORDS):
            self._text(self._identifier(hole, IDENTIFIER, "an identifier position"))
        else:
            self.out.append(Bound(value=_typed_value(hole.value)))

    def _identifier(self, hole: Hole, rule: re.Pattern[str], where: str) -> str:
        value = hole.value
        if isinstance(value, Secret):
            raise QueryError(
                f"`${{{hole.name}}}` stands in {where} but its value is a secret",
                hole.region,
                help="a table or column name is written into the query: it cannot come from a secret",
            )
        text = str(_text_value(value))
        if not rule.fullmatch(text):
            raise QueryError(
                f"`${{{hole.name}}}` stands in {where}, and {text!r} is not a table or column name",
                hole.region,
                help="an identifier is letters, digits and `_` (not starting with a digit), optionally "
                "`schema.table`; to compare with a value, quote it: `'${...}'`",
            )
        return text


def _text_value(value: Any) -> Any:
    """A hole's value as text, as it would read pasted: a secret stays a secret, resolved by the runtime."""
    if isinstance(value, Secret | str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)  # as a substitution elsewhere writes a mapping or a list
    return "" if value is None else str(value)


def _typed_value(value: Any) -> Any:
    """A bare hole's value: a parameter keeps its type, environment text reads as a YAML scalar."""
    if isinstance(value, str):
        typed = scalar(value) if value else value
        return typed if isinstance(typed, str | int | float | bool) or typed is None else value
    if isinstance(value, Secret | int | float | bool) or value is None:
        return value
    return _text_value(value)
