"""Mutations of real documents for the fuzz test of `check` and `plan` (tests/test_fuzz.py).

A case is one YAML file of `spec/examples` or `examples`, mutated the way an attacker or a careless user would:
a scalar retyped or replaced by hostile text (unicode, NUL bytes, `${...}`, SQL, Jinja, a megabyte), a key
dropped or renamed, deep nesting, an explicit tag (`!!float`, `!!python/object`), an alias bomb, a cut-off file,
and `--param` overrides with the same values. The case runs `check` and `plan` in-process on a copy of its
workspace: any exception is what the CLI reports as `error[internal-error]`.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from sleipnir.compiler.checker import check
from sleipnir.compiler.planner import plan

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "spec" / "examples", REPO / "examples")
ENVIRON = {"OPENAI_API_KEY": "sk-fuzz", "DATABASE_URL": "sqlite:///fuzz.db", "API_TOKEN": "token", "DAY": "today"}

HOSTILE_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "${HOME}",
    "${env.HOME}",
    "${",
    "${A:-${B}}",
    "$${x}",
    "x' OR '1'='1",
    "'; DROP TABLE reviews; --",
    "{{ ''.__class__.__mro__ }}",
    "{% for i in range(10) %}{{ i }}{% endfor %}",
    "../../../../etc/passwd",
    "/etc/passwd",
    "postgresql://user:pw@127.0.0.1:1/db",
    "ünïcødé ☃ \U0001d518 \u202e",
    "\ufeff",
    "1e999",
    "-0",
    "nan",
    ".inf",
    "0x1F",
    "2024-01-01",
    "true",
    "null",
    "~",
    "1.0.0",
    "*/5 * * * *",
    "99999999999999999999999999",
)
TAGS = ("!!float", "!!int", "!!bool", "!!str", "!!null", "!!binary", "!!timestamp", "!!python/object:os.system",
        "!!python/name:os.system", "!custom", "!!map", "!!seq", "!!set", "!!omap")


def documents() -> list[Path]:
    """Every YAML file of the roots, in a stable order."""
    return sorted(p for root in ROOTS for p in root.rglob("*.yaml") if ".sleipnir" not in p.parts)


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=40),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.builds(Long, st.sampled_from([1_000, 100_000, 1_000_000])),
        st.builds(Deep, st.sampled_from([1, 50, 500, 5_000, 100_000])),
        st.lists(st.sampled_from(HOSTILE_TEXT), max_size=3),
        st.dictionaries(st.sampled_from(("name", "version", "x", "${A}", "")), st.sampled_from(HOSTILE_TEXT), max_size=2),
    )


@dataclass(frozen=True, slots=True)
class Long:
    """A string of `size` characters, made only when applied: hypothesis prints the mutation, not a megabyte."""

    size: int


@dataclass(frozen=True, slots=True)
class Deep:
    """Flow sequences nested `depth` deep, written into the text after dumping (a dumper would recurse)."""

    depth: int


_DEEP = re.compile(r"'?__deep_(\d+)__'?")


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True, slots=True)
class Mutation:
    """What to do to a document: at the `choice`-th place (modulo the number of places), `kind`."""

    kind: str
    choice: int
    value: Any
    tag: str
    cut: float


def mutations() -> st.SearchStrategy[Mutation]:
    return st.builds(
        Mutation,
        kind=st.sampled_from(("replace", "drop", "rename", "retype", "tag", "cut", "bomb", "duplicate", "nest")),
        choice=st.integers(min_value=0, max_value=10_000),
        value=scalars(),
        tag=st.sampled_from(TAGS),
        cut=st.floats(min_value=0, max_value=1),
    )


def mutate(text: str, mutation: Mutation) -> str:
    """`text` mutated; structural mutations fall back to text ones when the document does not load."""
    kind = mutation.kind
    if kind == "tag":
        lines = text.splitlines()
        places = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
        if places:
            i = places[mutation.choice % len(places)]
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: {mutation.tag} {value}"
        return "\n".join(lines) + "\n"
    if kind == "cut":
        return text[: int(len(text) * mutation.cut)]
    if kind == "bomb":
        return 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(12)
        ) + text
    if kind == "duplicate":
        lines = text.splitlines()
        i = mutation.choice % max(len(lines), 1)
        return "\n".join([*lines[: i + 1], *lines[i : i + 1], *lines[i + 1 :]]) + "\n"
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text + "\n" + str(mutation.value)[:100]
    places = list(_places(value, ()))
    if not places:
        return text
    path = places[mutation.choice % len(places)]
    value = _apply(value, path, mutation)
    try:
        dumped = yaml.safe_dump(value, allow_unicode=True, sort_keys=False, width=10_000)
    except (yaml.YAMLError, RecursionError, ValueError):
        return text
    return _DEEP.sub(lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), dumped)


def _places(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _places(item, (*path, index))


def _apply(root: Any, path: tuple[Any, ...], mutation: Mutation) -> Any:
    *head, last = path
    holder = root
    for step in head:
        holder = holder[step]
    current = holder[last]
    if mutation.kind == "drop":
        del holder[last]
    elif mutation.kind == "rename" and isinstance(holder, dict):
        holder[f"{last}_" if isinstance(last, str) else last] = holder.pop(last)
    elif mutation.kind == "retype":
        holder[last] = [current] if not isinstance(current, list) else {"x": current}
    elif mutation.kind == "nest":
        holder[last] = _nested(200) if mutation.choice % 2 else {"a": {"b": {"c": current}}}
    elif isinstance(mutation.value, Long):
        holder[last] = "x" * mutation.value.size
    elif isinstance(mutation.value, Deep):
        holder[last] = f"__deep_{mutation.value.depth}__"
    else:
        holder[last] = mutation.value
    return root


@dataclass(frozen=True, slots=True)
class Outcome:
    seconds: float
    error: BaseException | None


@contextmanager
def workspace_copy(tmp: Path) -> Iterator[dict[Path, Path]]:
    """A copy of each root under `tmp`: original file -> its copy."""
    copies: dict[Path, Path] = {}
    for root in ROOTS:
        target = tmp / root.relative_to(REPO).as_posix().replace("/", "_")
        shutil.copytree(root, target, ignore=shutil.ignore_patterns(".sleipnir", "*.db"))
        for original in root.rglob("*.yaml"):
            copies[original] = target / original.relative_to(root)
    yield copies


def run_case(copy: Path, text: str, params: list[str]) -> Outcome:
    """Write `text` to `copy`, then check and plan it; the original text is put back afterwards."""
    original = copy.read_bytes()
    copy.write_text(text, encoding="utf-8", errors="surrogatepass")
    started = time.monotonic()
    try:
        check([str(copy)])
        plan(str(copy), params=params, environ=ENVIRON)
    except Exception as error:
        return Outcome(seconds=time.monotonic() - started, error=error)
    finally:
        copy.write_bytes(original)
    return Outcome(seconds=time.monotonic() - started, error=None)
