"""Deterministic values that satisfy a JSON Schema: what the `mock` provider answers with.

`fill(schema, seed, hints)` walks a draft-07 schema and builds a JSON value that validates against it. Every
choice (an enum label, a number, a boolean, an array's length) is read from a byte stream derived from `seed`
with BLAKE2b, never from global random state, so the same seed gives the same value and different seeds give
different values. `hints` maps property names to text the value should echo (a `summary` or `cleaned_text`
field gets a trimmed copy of the input), so the answers look plausible in a quickstart.

The subset covered is what prompt modules use: `type` (one or a list, a non-null type preferred), `properties`,
`required`, `additionalProperties`, `minProperties`/`maxProperties`, `enum`, `const`, `minimum`/`maximum` and
their exclusive forms (draft-04 booleans too), `multipleOf`, `minLength`/`maxLength`, `minItems`/`maxItems`,
`uniqueItems`, `items` (a schema or a tuple of them), `anyOf`/`oneOf` (the first branch that works), `allOf`
(merged), local `$ref`s, `format` (`date`, `date-time`, `time`, `email`, `uri`, `uuid`) and `pattern`: the
first matching strings exrex enumerates (in a fixed order, no randomness) are kept when the schema is compiled,
and the seed picks one; each is checked with `re.search`, and a pattern exrex cannot expand (a lookbehind, a
global flag not at the start) gets plain text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import exrex

__all__ = ["fill"]

_MAX_DEPTH = 8
"""Below this depth arrays get their fewest items and objects only their required properties, so that a
recursive schema (a tree through `$ref`) ends."""

_WORDS = (
    "quality", "delivery", "price", "service", "support", "design", "value", "speed",
    "packaging", "battery", "comfort", "setup", "refund", "warranty", "size", "colour",
)  # fmt: skip
_FORMATS = ("date", "date-time", "time", "email", "uri", "uuid")

_PATTERN_REPEATS = 4
"""The most times exrex repeats an open-ended `*`, `+` or `{n,}` beyond its least."""
_PATTERN_CHOICES = 64
"""How many strings of a pattern are kept to choose from."""
_PATTERN_SCAN = 4096
"""How many strings of a pattern with length limits are looked through for ones within them (once a schema)."""


def fill(schema: Mapping[str, Any], seed: bytes, hints: Mapping[str, str] | None = None) -> Any:
    """A JSON value (dicts, lists, str, int, float, bool, None) that validates against `schema`.

    Deterministic: the value depends only on `schema`, `seed` and `hints`. A string property whose name is in
    `hints` gets that text, trimmed to the schema's length limits; an enum property gets its hint when the hint
    is one of the enum's values. Schemas are treated as immutable: each is compiled once into a generator,
    cached by identity, so filling the same schema again costs a few microseconds.
    """
    entry = _COMPILED.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_COMPILED) >= 256:
            _COMPILED.clear()
        # The entry keeps the schema alive, so its id cannot be reused while the entry exists.
        entry = _COMPILED[id(schema)] = (schema, _Compiler(schema).compile(schema, None))
    return entry[1](_Stream(seed), hints or _NO_HINTS, 0)


class _Stream:
    """The choices of one fill: 32-bit numbers read from BLAKE2b(seed + counter) blocks of 512 bits."""

    __slots__ = ("_bits", "_counter", "_left", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._bits = 0
        self._left = 0

    def draw(self) -> int:
        """The next 32 bits of the stream."""
        if not self._left:
            block = hashlib.blake2b(self._seed + self._counter.to_bytes(4, "big")).digest()
            self._bits = int.from_bytes(block, "big")
            self._counter += 1
            self._left = 16
        self._left -= 1
        value = self._bits & 0xFFFFFFFF
        self._bits >>= 32
        return value

    def below(self, n: int) -> int:
        """A choice in range(n)."""
        return self.draw() % n if n > 1 else 0

    def fraction(self) -> float:
        """A number in the open interval (0, 1)."""
        return (self.draw() + 0.5) / 2**32


_Generator = Callable[[_Stream, Mapping[str, str], int], Any]
"""Makes one value from the stream, the hints and the current depth."""

_NO_HINTS: Mapping[str, str] = {}
_COMPILED: dict[int, tuple[Mapping[str, Any], _Generator]] = {}


class _Compiler:
    """Turns a schema into a tree of generator closures, reading every keyword once."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self._refs: dict[tuple[int, str | None], list[_Generator]] = {}

    def compile(self, schema: Any, name: str | None) -> _Generator:
        if not isinstance(schema, Mapping):  # `true`, or not a schema at all: any value will do
            return _text(name)
        if isinstance(schema.get("$ref"), str):
            return self._ref(schema, name)
        if "const" in schema:
            const = schema["const"]
            return lambda s, h, d: _thaw(const)
        if schema.get("enum"):
            return _enum([_thaw(v) for v in schema["enum"]], name)
        if "allOf" in schema:
            return self.compile(_merge(schema, [self._resolve(part) for part in schema["allOf"]]), name)
        if "anyOf" in schema:
            # Any branch's value satisfies anyOf; the first that is not just `null` reads best.
            branches = [self._resolve(b) for b in schema["anyOf"]]
            chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
            return self.compile(_merge(_without(schema, "anyOf"), [chosen]), name)
        if "oneOf" in schema:
            return self._one_of(schema, name)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema, name)
        if kind == "string":
            return _string(schema, name)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return lambda s, h, d: s.draw() & 1 == 1
        if kind == "null":
            return lambda s, h, d: None
        return _text(name)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow local `$ref`s (`#/definitions/x`, `#/$defs/x`), keeping keywords beside the `$ref`; a ref
        that does not resolve reads as `{}`."""
        for _ in range(32):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target: Any = self._root
            try:
                for part in ref.partition("#")[2].split("/")[1:]:
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target[int(part)] if isinstance(target, Sequence) else target[part]
            except (KeyError, IndexError, ValueError, TypeError):
                target = {}
            schema = {**_without(schema, "$ref"), **(target if isinstance(target, Mapping) else {})}
        return schema

    def _ref(self, schema: Mapping[str, Any], name: str | None) -> _Generator:
        """A `$ref` node compiles once per property name; a recursive schema meets its own node again and gets
        the cell being filled, so compiling ends and the depth limit ends the values."""
        key = (id(schema), name)
        cell = self._refs.get(key)
        if cell is None:
            cell = self._refs[key] = []
            cell.append(self.compile(self._resolve(schema), name))
        return lambda s, h, d: cell[0](s, h, d)

    def _one_of(self, schema: Mapping[str, Any], name: str | None) -> _Generator:
        """The first branch whose value no other branch accepts (checked with jsonschema, which only oneOf
        needs)."""
        from jsonschema import Draft7Validator

        base = _without(schema, "oneOf")
        branches = [self._resolve(b) for b in schema["oneOf"]]
        # Each branch is checked on its own, with the root's definitions at hand for the refs inside it.
        definitions = {k: _thaw(self._root[k]) for k in ("definitions", "$defs") if k in self._root}
        validators = [Draft7Validator({**definitions, **_thaw(b)}) for b in branches]
        generators = [self.compile(_merge(base, [b]), name) for b in branches]

        def generate(s: _Stream, h: Mapping[str, str], d: int) -> Any:
            candidate: Any = None
            for index, make in enumerate(generators):
                candidate = make(s, h, d)
                if not any(v.is_valid(candidate) for i, v in enumerate(validators) if i != index):
                    return candidate
            return candidate

        return generate

    def _object(self, schema: Mapping[str, Any]) -> _Generator:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required") or ())
        names = list(properties) + [r for r in required if r not in properties]
        limit = schema.get("maxProperties")
        if isinstance(limit, int) and len(names) > limit:
            names = [n for n in names if n in required] + [n for n in names if n not in required]
            names = names[: max(limit, len(required))]
        fields = [(n, self.compile(properties.get(n, {}), n)) for n in names]
        # Below the depth limit only the required properties, so that a recursive schema ends.
        deep = [(n, make) for n, make in fields if n in required]
        extra = schema.get("additionalProperties", True)
        wanted = int(schema.get("minProperties", 0)) if extra is not False else 0
        extras = [
            (
                f"extra_{i}",
                self.compile(extra if isinstance(extra, Mapping) else {"type": "string"}, f"extra_{i}"),
            )
            for i in range(len(fields) + 1, wanted + 1)
        ]

        def generate(s: _Stream, h: Mapping[str, str], d: int) -> dict[str, Any]:
            chosen = deep if d >= _MAX_DEPTH else fields
            result = {n: make(s, h, d + 1) for n, make in chosen}
            for n, make in extras:
                if len(result) >= wanted:
                    break
                result[n] = make(s, h, d + 1)
            return result

        return generate

    def _array(self, schema: Mapping[str, Any], name: str | None) -> _Generator:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        items = schema.get("items", {})
        if isinstance(items, Sequence):
            return self._tuple(schema, items, name, low, high)
        make = self.compile(items, _singular(name))
        unique = bool(schema.get("uniqueItems"))
        # Between one and three items where the limits allow, so that lists look like lists; deeper down one
        # (a recursive schema stays a chain, not a tree), and only the fewest below the depth limit.
        ceiling = high if isinstance(high, int) else low + 3

        def generate(s: _Stream, h: Mapping[str, str], d: int) -> list[Any]:
            if d >= _MAX_DEPTH:
                count = low
            else:
                top = min(ceiling, max(low, 3 if d < 4 else 1))
                bottom = min(max(low, 1), top)
                count = bottom + s.below(top - bottom + 1)
            values: list[Any] = []
            seen: set[Any] = set()
            for _ in range(count * 4):
                if len(values) == count:
                    break
                value = make(s, h, d + 1)
                key = (
                    value
                    if isinstance(value, str | int | float | None)
                    else json.dumps(value, sort_keys=True)
                )
                if key not in seen:
                    seen.add(key)
                    values.append(value)
            if len(values) < low and not unique:
                values += [values[-1] if values else make(s, h, d + 1)] * (low - len(values))
            return values

        return generate

    def _tuple(
        self, schema: Mapping[str, Any], items: Sequence[Any], name: str | None, low: int, high: Any
    ) -> _Generator:
        """The tuple form of `items`: one schema per position, then `additionalItems` (unless false)."""
        makers = [self.compile(item, name) for item in items]
        rest = schema.get("additionalItems", {})
        more = self.compile(rest if isinstance(rest, Mapping) else {}, name) if rest is not False else None

        def generate(s: _Stream, h: Mapping[str, str], d: int) -> list[Any]:
            values = [make(s, h, d + 1) for make in makers]
            while more is not None and len(values) < low:
                values.append(more(s, h, d + 1))
            return values[:high] if isinstance(high, int) else values

        return generate


def _without(schema: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}


def _enum(options: list[Any], name: str | None) -> _Generator:
    count = len(options)

    def generate(s: _Stream, h: Mapping[str, str], d: int) -> Any:
        if name is not None and name in h and h[name] in options:
            return h[name]
        return _thaw(options[s.below(count)])

    return generate


def _text(name: str | None) -> _Generator:
    return lambda s, h, d: _short_text(name, s)


def _string(schema: Mapping[str, Any], name: str | None) -> _Generator:
    fmt = schema.get("format")
    pattern = schema.get("pattern")
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    limited = low > 0 or isinstance(high, int)
    matches = _matches(pattern, low, high) if isinstance(pattern, str) else ()

    def generate(s: _Stream, h: Mapping[str, str], d: int) -> str:
        if fmt in _FORMATS:
            text = _formatted(str(fmt), s)
        elif isinstance(pattern, str):
            text = matches[s.below(len(matches))] if matches else _short_text(name, s)
        elif name is not None and name in h:
            text = " ".join(h[name].split())
        else:
            text = _short_text(name, s)
        return _fit(text, low, high) if limited else text

    return generate


def _fit(text: str, low: int, high: Any) -> str:
    """`text` cut to `high` characters (at a word end when that still leaves `low`) or padded to `low`."""
    if isinstance(high, int) and len(text) > high:
        cut = text[:high].rstrip()
        text = cut if len(cut) >= low else text[:high]
    return text + "x" * (low - len(text)) if len(text) < low else text


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, Sequence) and kind:
        return str(next((k for k in kind if k != "null"), kind[0]))
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "minItems" in schema or "maxItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    return None


def _merge(base: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One schema meaning all of `base` and `parts` for the keywords fill reads: properties and required are
    unioned, other keywords of later parts win."""
    merged = dict(base)
    merged.pop("allOf", None)
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**(merged.get("properties") or {}), **value}
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*(merged.get("required") or ()), *value]))
            else:
                merged[key] = value
    return merged


def _thaw(value: Any) -> Any:
    """Plain JSON types from a schema's constants, which a compiled plan keeps as frozen mappings and tuples."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_thaw(v) for v in value]
    return value


def _singular(name: str | None) -> str | None:
    if name is None or not name.endswith("s") or name.endswith("ss"):
        return name
    return name[:-3] + "y" if name.endswith("ies") else name[:-1]


def _short_text(name: str | None, filler: _Stream) -> str:
    word = _WORDS[filler.below(len(_WORDS))]
    return f"{name.replace('_', ' ')}: {word}" if name else word


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive), reading draft-07 numbers and draft-04 booleans."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_open = high_open = False
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(exclusive_low, bool):
        low_open = exclusive_low
    elif isinstance(exclusive_low, int | float) and (low is None or exclusive_low >= low):
        low, low_open = exclusive_low, True
    if isinstance(exclusive_high, bool):
        high_open = exclusive_high
    elif isinstance(exclusive_high, int | float) and (high is None or exclusive_high <= high):
        high, high_open = exclusive_high, True
    return low, low_open, high, high_open


def _integer(schema: Mapping[str, Any]) -> _Generator:
    low, low_open, high, high_open = _bounds(schema)
    lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    if lo is None:
        lo = 0 if hi is None or hi >= 0 else hi - 100
    hi = lo + 100 if hi is None else hi
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:
        first, last = -(-lo // step), hi // step
        if last < first:
            return lambda s, h, d: lo
        return lambda s, h, d: step * (first + s.below(last - first + 1))
    span = max(hi - lo + 1, 1)
    return lambda s, h, d: lo + s.below(span)


def _number(schema: Mapping[str, Any]) -> _Generator:
    low, low_open, high, high_open = _bounds(schema)
    lo = float(low) if low is not None else (float(high) - 100 if high is not None and high < 0 else 0.0)
    hi = float(high) if high is not None else lo + 100

    def inside(value: float) -> bool:
        return lo <= value <= hi and (value > lo or not low_open) and (value < hi or not high_open)

    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        first, last = math.ceil(lo / step), math.floor(hi / step)

        def multiple(s: _Stream, h: Mapping[str, str], d: int) -> float:
            pick = first + s.below(last - first + 1) if last >= first else first
            return next((float(k * step) for k in (pick, first + 1, last - 1) if inside(k * step)), lo)

        return multiple

    def generate(s: _Stream, h: Mapping[str, str], d: int) -> float:
        value = round(lo + (hi - lo) * s.fraction(), 2)
        return value if inside(value) else (lo + hi) / 2

    return generate


def _formatted(fmt: str, filler: _Stream) -> str:
    day, hour, minute = 1 + filler.below(28), filler.below(24), filler.below(60)
    if fmt == "date":
        return f"2024-05-{day:02d}"
    if fmt == "date-time":
        return f"2024-05-{day:02d}T{hour:02d}:{minute:02d}:00Z"
    if fmt == "time":
        return f"{hour:02d}:{minute:02d}:00"
    if fmt == "email":
        return f"user{filler.below(10_000)}@example.com"
    if fmt == "uri":
        return f"https://example.com/{_WORDS[filler.below(len(_WORDS))]}"
    digits = "".join(f"{filler.draw():08x}" for _ in range(4))
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"


def _matches(pattern: str, low: int, high: Any) -> tuple[str, ...]:
    """Up to `_PATTERN_CHOICES` strings `re.search(pattern, s)` accepts, in exrex's fixed order; with length
    limits, those within them when the first `_PATTERN_SCAN` strings hold any. None when exrex cannot expand
    the pattern."""
    limited = low > 0 or isinstance(high, int)
    try:
        compiled = re.compile(pattern)
        found = [
            text
            for text in itertools.islice(
                exrex.generate(pattern, limit=_PATTERN_REPEATS), _PATTERN_SCAN if limited else _PATTERN_CHOICES
            )
            if compiled.search(text)
        ]
    except Exception:  # exrex raises what its parser meets (re.error, RecursionError, ...); the mock never fails
        return ()
    fitting = [t for t in found if len(t) >= low and (not isinstance(high, int) or len(t) <= high)]
    return tuple((fitting or found)[:_PATTERN_CHOICES])
