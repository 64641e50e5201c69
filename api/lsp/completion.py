"""What to offer at the cursor: job names in a pipeline, prompt module and stack names and their versions in a
job or stack, profile names for `default_profile`.

The text being typed rarely parses, so the place is read from the text itself: the key on the cursor's line
(block or flow style) and the keys of the lines it is nested under.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..compiler.documents import Document
from ..compiler.registry import Registry

_KEY_AT_END = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^\s,{}\[\]:]*)$")
_ITEM_AT_END = re.compile(r"^(\s*)-\s*([^\s,{}\[\]:]*)$")
_PARENT = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*:")
_NAMED_BY = {"version": ("name", "prompt"), "stack_version": ("stack",)}


@dataclass(frozen=True, slots=True)
class Offer:
    label: str
    detail: str


def complete(text: str, line: int, character: int, registry: Registry, documents: Iterable[Document]) -> list[Offer]:
    """The completions at 0-based `line`:`character` of `text`."""
    lines = text.splitlines()
    if line >= len(lines):
        return []
    before = lines[line][:character]
    item = _ITEM_AT_END.match(before)
    key_match = _KEY_AT_END.search(before)
    parent = _parent(lines, line)
    if item and parent == "jobs":
        return _names(registry, "job")
    if key_match is None:
        return []
    key = key_match.group(1)
    if key == "name" and parent == "jobs":
        return _names(registry, "job")
    if (key == "name" and parent == "prompts") or key == "prompt":
        return _names(registry, "prompt")
    if key == "stack":
        return _names(registry, "stack")
    if key in _NAMED_BY:
        named = _sibling(lines, line, _NAMED_BY[key])
        kind = "stack" if key == "stack_version" else "prompt"
        if named:
            return [Offer(v, f"{kind} {named} {v}") for v in reversed(registry.versions(kind, named)) if v]
        return []
    if key in ("default_profile", "profile"):
        return [Offer(name, "profile") for name in _profiles(documents)]
    return []


def _names(registry: Registry, kind: str) -> list[Offer]:
    offers = []
    for name in registry.names(kind):
        versions = [v for v in registry.versions(kind, name) if v]
        offers.append(Offer(name, f"{kind} {versions[-1]}" if versions else kind))
    return offers


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _parent(lines: list[str], line: int) -> str | None:
    """The key the cursor's line is nested under: the nearest line above that is indented less."""
    here = lines[line]
    indent = _indent(here)
    for above in range(line - 1, -1, -1):
        text = lines[above]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if _indent(text) < indent:
            match = _PARENT.match(text)
            if match and not text.rstrip().endswith(":") and text.lstrip().startswith("-"):
                # `- name: x` above at a smaller indent is an entry of the list we are in: keep climbing.
                indent = _indent(text)
                continue
            if match:
                return match.group(2)
            indent = _indent(text)
    return None


def _sibling(lines: list[str], line: int, keys: tuple[str, ...]) -> str | None:
    """The value of one of `keys` in the same list entry or mapping as the cursor's line (or on it, in flow
    style: `{name: analyzer, version: `)."""
    flow = re.search(rf"\b(?:{'|'.join(keys)})\s*:\s*([A-Za-z0-9_.-]+)", lines[line])
    if flow:
        return flow.group(1)
    indent = _indent(lines[line])
    for step in (-1, 1):
        position = line + step
        while 0 <= position < len(lines):
            text = lines[position]
            stripped = text.lstrip(" ")
            current = _indent(text) + (2 if stripped.startswith("- ") else 0)
            if stripped and current < indent:
                break
            match = re.match(rf"^\s*(?:-\s+)?(?:{'|'.join(keys)})\s*:\s*([A-Za-z0-9_.-]+)", text)
            if match and current == indent:
                return match.group(1)
            if step == 1 and stripped.startswith("- ") and current <= indent:
                break
            if step == -1 and stripped.startswith("- ") and current == indent:
                break
            position += step
    return None


def _profiles(documents: Iterable[Document]) -> list[str]:
    names: set[str] = set()
    for document in documents:
        body = document.body
        job = body.get("job") if document.kind == "template" and isinstance(body, dict) else body
        profiles = job.get("profiles") if document.kind in ("job", "template") and isinstance(job, dict) else None
        if isinstance(profiles, dict):
            names.update(str(name) for name in profiles)
    return sorted(names)
