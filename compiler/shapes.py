"""The shapes Sleipnir's document model is written in: `Key`s with a type, range, enum or pattern and one short
markdown text, gathered in `Record`s and `Kind`s. `schemas.build` turns them into draft-07 JSON Schemas;
`compiler/model.py` writes every document kind with them. Nothing here reads YAML or validates anything.

Substitutions: any scalar whose type is not plain string (numbers, booleans, enums, patterned strings) may also
be a whole `${...}` substitution, rendered as `anyOf: [<typed>, {"$ref": "#/definitions/substitution"}]`.
`validate.py` knows that branch and leaves it out of its explanations, and reads `x-expected` beside a `pattern`
to say what the pattern means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

DOCS_BASE = "https://sleipnir.dev/"
"""The stable base URL of the published spec and schemas; links are `DOCS_BASE + "spec/job.md#input"`."""
SCHEMA_BASE = f"{DOCS_BASE}schema/"
"""Where the schema files are published: `SCHEMA_BASE + "job.schema.json"`."""
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

SUBSTITUTION_REF = "#/definitions/substitution"

# Patterns stay in the subset Python `re` and Rust `regex` read alike: no lookarounds, no backreferences, no `\d`.
SUBSTITUTION_PATTERN = r"^\$\{[^}]+\}$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
SEMVER_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
URL_PATH_PATTERN = r"^/"

SUBSTITUTION: JSON = {
    "type": "string",
    "pattern": SUBSTITUTION_PATTERN,
    "x-expected": "a whole ${...} substitution",
    "description": "A whole ${...} substitution, such as ${BATCH:-100}: resolved from params, --param or the "
    "environment when the job runs.",
}


# --- Where a key is documented ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """Where the keys being rendered are documented."""

    page: str
    """The kind's spec page: `job` for `spec/job.md`."""
    target: str | None = None
    """The link target relative to `spec/`, such as `job.md#input`; None at a body's top level, where each key
    finds its own section."""

    def link(self) -> str:
        return f"{DOCS_BASE}spec/{self.target or f'{self.page}.md'}"

    def under(self, key: Key) -> Place:
        """The place of `key`'s value: its own anchor (its name) at a body's top level, else the one it sits in."""
        return self if self.target is not None else Place(self.page, f"{self.page}.md#{key.name}")


class Definitions:
    """The `definitions` of one schema document, filled in as shapes refer to shared bodies."""

    def __init__(self) -> None:
        self.schemas: dict[str, JSON] = {"substitution": dict(SUBSTITUTION)}

    def ref(self, name: str) -> JSON:
        if name not in self.schemas:
            from .model import KINDS  # the kinds are written in these shapes: imported when first referred to

            kind = KINDS[name]
            self.schemas[name] = {}  # reserve the slot first, so the order of definitions is the order of use
            self.schemas[name] = {"description": _plain(kind.about), **kind.body.bare(Place(name), self)}
        return {"$ref": f"#/definitions/{name}"}


# --- Shapes ----------------------------------------------------------------------------------------------------


class Shape:
    """A value's type. `bare` is the typed schema; `schema` adds the substitution branch where one applies."""

    __slots__ = ()

    @property
    def substitutable(self) -> bool:
        """Whether the value may instead be a whole `${...}` substitution (every typed non-plain-string scalar)."""
        return False

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        raise NotImplementedError

    def schema(self, place: Place, definitions: Definitions) -> JSON:
        bare = self.bare(place, definitions)
        return {"anyOf": [bare, {"$ref": SUBSTITUTION_REF}]} if self.substitutable else bare

    def children(self) -> tuple[Key, ...]:
        """The keys declared inside this shape, for walking the model."""
        return ()


class Scalar(Shape):
    """A typed scalar other than a plain string: it may always be a whole substitution instead."""

    __slots__ = ()

    @property
    def substitutable(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Text(Shape):
    """A string; with a `pattern` it is a patterned string, which may also be a whole substitution."""

    pattern: str | None = None
    expected: str | None = None
    """A human phrase for the pattern, used in diagnostics: "a time of day as HH:MM"."""
    examples: tuple[str, ...] = ()

    @property
    def substitutable(self) -> bool:
        return self.pattern is not None

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        schema: JSON = {"type": "string"}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
            schema["x-expected"] = self.expected or f"a string matching `{self.pattern}`"
        if self.examples:
            schema["examples"] = list(self.examples)
        return schema


@dataclass(frozen=True, slots=True, kw_only=True)
class Integer(Scalar):
    minimum: int | None = None
    maximum: int | None = None

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return _ranged({"type": "integer"}, self.minimum, self.maximum, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Number(Scalar):
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return _ranged({"type": "number"}, self.minimum, self.maximum, self.exclusive_minimum)


@dataclass(frozen=True, slots=True)
class Boolean(Scalar):
    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Choice(Scalar):
    """One of a few strings, written as in the formats: `Choice("json|jsonl|csv")`."""

    options: str

    @property
    def values(self) -> list[str]:
        return self.options.split("|")

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {"type": "string", "enum": self.values}


@dataclass(frozen=True, slots=True)
class Anything(Shape):
    """Any value at all: a free-form place."""

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {}


@dataclass(frozen=True, slots=True)
class ListOf(Shape):
    item: Shape

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {"type": "array", "items": self.item.schema(place, definitions)}

    def children(self) -> tuple[Key, ...]:
        return self.item.children()


@dataclass(frozen=True, slots=True)
class MapOf(Shape):
    """A mapping from names the user chooses to values of one shape (a free-form place when that is `Anything`)."""

    values: Shape
    keys: Text | None = None

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        schema: JSON = {"type": "object"}
        if self.keys is not None:
            schema["propertyNames"] = self.keys.bare(place, definitions)
        values = self.values.schema(place, definitions)
        schema["additionalProperties"] = values if values else True
        return schema

    def children(self) -> tuple[Key, ...]:
        return self.values.children()


@dataclass(frozen=True, slots=True)
class Record(Shape):
    """A mapping with a fixed set of keys; any other key is an error."""

    keys: tuple[Key, ...]

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        schema: JSON = {
            "type": "object",
            "properties": {key.name: key.schema(place.under(key), definitions) for key in self.keys},
        }
        required = [key.name for key in self.keys if key.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema

    def children(self) -> tuple[Key, ...]:
        return self.keys


@dataclass(frozen=True, slots=True)
class Either(Shape):
    """One of several forms, each with a phrase that names it (shown in editors and in diagnostics)."""

    forms: tuple[tuple[str, Shape], ...]

    @property
    def substitutable(self) -> bool:
        return any(shape.substitutable for _, shape in self.forms)

    def schema(self, place: Place, definitions: Definitions) -> JSON:
        branches = [{"description": about, **shape.bare(place, definitions)} for about, shape in self.forms]
        if self.substitutable:
            branches.append({"$ref": SUBSTITUTION_REF})
        return {"anyOf": branches}

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return self.schema(place, definitions)

    def children(self) -> tuple[Key, ...]:
        return tuple(key for _, shape in self.forms for key in shape.children())


@dataclass(frozen=True, slots=True)
class ByKey(Shape):
    """A mapping whose form is chosen by whether `key` is present (draft-07 `if`/`then`/`else`).

    Unlike `anyOf`, a typo in either form gets its own precise diagnostic instead of "matches no form".
    """

    key: str
    present: Record
    absent: Record

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {
            "type": "object",
            "if": {"required": [self.key]},
            "then": self.present.bare(place, definitions),
            "else": self.absent.bare(place, definitions),
        }

    def children(self) -> tuple[Key, ...]:
        return (*self.present.keys, *self.absent.keys)


@dataclass(frozen=True, slots=True)
class Body(Shape):
    """Another kind's body, shared through `definitions` (a template's `job` is a job body)."""

    kind: str

    def bare(self, place: Place, definitions: Definitions) -> JSON:
        return {"allOf": [definitions.ref(self.kind)]}


def _ranged(schema: JSON, minimum: float | None, maximum: float | None, above: float | None) -> JSON:
    if minimum is not None:
        schema["minimum"] = minimum
    if above is not None:
        schema["exclusiveMinimum"] = above
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


# --- Keys and kinds --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a record: its name, shape and meaning."""

    name: str
    shape: Shape
    about: str
    """Markdown: the plain `description` is this with backticks dropped."""
    required: bool = field(default=False, kw_only=True)
    default: Any = field(default=None, kw_only=True)
    """The value used when the key is absent (None: no default, or one that depends on other keys)."""

    def schema(self, place: Place, definitions: Definitions) -> JSON:
        shape = self.shape.schema(place, definitions)
        branches = shape.get("anyOf")
        if isinstance(branches, list) and branches[-1] == {"$ref": SUBSTITUTION_REF} and len(branches) == 2:
            # The typed branch carries the description too: diagnostics about it quote the branch they fail.
            branches[0] = {"description": _plain(self.about), **branches[0]}
        schema: JSON = {
            "description": _plain(self.about),
            "markdownDescription": f"{self.about}\n\n[reference]({place.link()})",
            **shape,
        }
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """A document kind (or the workspace manifest) and how its schema file presents it."""

    name: str
    title: str
    about: str
    body: Record
    keyed: bool = True
    """True for the kinds known by a top-level key; False for `sleipnir.yaml`, whose body is the whole document."""


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


def record(*keys: Key) -> Record:
    return Record(keys)


def either(*forms: tuple[str, Shape]) -> Either:
    return Either(forms)


def walk(shape: Shape, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Key]]:
    """Every key declared in `shape` and below it, with its path of key names."""
    found = []
    for key in shape.children():
        found.append(((*path, key.name), key))
        found.extend(walk(key.shape, (*path, key.name)))
    return found
