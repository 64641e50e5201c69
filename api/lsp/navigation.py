"""Where names are defined and used: what the language server answers go-to-definition, references, hover and
completion from. Pure functions over parsed documents and the compiler's registry; no protocol here.

A `Reference` is a place that names a document: a pipeline's job entry, a job's prompt module, phase or stack,
a stack step's prompt module, and each document's own `name:` (its definition). A version written beside a
name (`version:`, `stack_version:`) refers to the same document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..compiler.documents import KINDS, WORKSPACE, Document
from ..compiler.loader import node_map, node_span
from ..compiler.registry import Named, Registry
from ..compiler.schemas import load as load_schema
from ..compiler.span import Span

NAME_AT_VERSION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*@[0-9][0-9A-Za-z.+-]*")
"""`name@version`, as `create-job-from-template` writes a template's name in the job it makes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A place in a document that names a document of `kind`."""

    kind: str
    name: str
    version: str | None
    """The version written beside the name; None for the newest."""
    span: Span
    definition: bool = False
    """Whether this is the named document's own `name:`."""

    def contains(self, line: int, column: int) -> bool:
        """Whether the 1-based `line`:`column` is on this reference (its end column included, for a cursor
        just after the last character)."""
        span = self.span
        return span.line <= line <= span.end_line and (
            (line > span.line or column >= span.column) and (line < span.end_line or column <= span.end_column)
        )


def references(document: Document) -> list[Reference]:
    """Every reference in `document`, its own name first."""
    found: list[Reference] = []
    body = document.body
    if not isinstance(body, dict) or document.kind == WORKSPACE:
        return found
    nodes = node_map(document)

    def add(kind: str, path: tuple[str | int, ...], holder: Any, name_key: str | int, version_key: str | None) -> None:
        name = holder.get(name_key) if isinstance(holder, dict) else holder
        if not isinstance(name, str) or "${" in name:
            return
        version = _text(holder.get(version_key)) if isinstance(holder, dict) and version_key else None
        for place in (path, (*path[:-1], version_key) if version_key else None):
            if place is not None and place in nodes:
                found.append(
                    Reference(kind=kind, name=name, version=version, span=node_span(document.file, nodes[place][1]))
                )

    if ("name",) in nodes and document.name is not None:
        found.append(
            Reference(
                kind=document.kind,
                name=document.name,
                version=document.version,
                span=node_span(document.file, nodes[("name",)][1]),
                definition=True,
            )
        )
    if document.kind == "pipeline":
        for index, entry in enumerate(_listed(body.get("jobs"))):
            if isinstance(entry, str):
                add("job", ("jobs", index), entry, 0, None)
            elif isinstance(entry, dict):
                add("job", ("jobs", index, "name"), entry, "name", None)
    elif document.kind == "stack":
        for path, step in _steps(body.get("steps"), ("steps",)):
            add("prompt", (*path, "prompt"), step, "prompt", "version")
    job, base = (body, ()) if document.kind == "job" else (body.get("job"), ("job",))
    if document.kind in ("job", "template") and isinstance(job, dict):
        for index, entry in enumerate(_listed(job.get("prompts"))):
            add("prompt", (*base, "prompts", index, "name"), entry, "name", "version")
        for index, phase in enumerate(_listed(job.get("phases"))):
            add("prompt", (*base, "phases", index, "prompt"), phase, "prompt", "version")
        add("stack", (*base, "stack"), job, "stack", "stack_version")
    return found


def _steps(steps: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    for index, step in enumerate(_listed(steps)):
        if isinstance(step, dict) and "parallel" in step:
            yield from _steps(step["parallel"], (*path, index, "parallel"))
        elif isinstance(step, dict):
            yield (*path, index), step


def at(document: Document, line: int, column: int, text: str) -> Reference | None:
    """The reference at the 1-based `line`:`column` of `document`, or a `name@version` written there."""
    for reference in references(document):
        if reference.contains(line, column):
            return reference
    lines = text.splitlines()
    if 0 < line <= len(lines):
        for match in NAME_AT_VERSION.finditer(lines[line - 1]):
            if match.start() < column <= match.end() + 1:
                name, _, version = match.group().partition("@")
                return Reference(
                    kind="",
                    name=name,
                    version=version,
                    span=Span(file=document.file, line=line, column=match.start() + 1, end_line=line,
                              end_column=match.end() + 1),
                )
    return None


def definition(registry: Registry, reference: Reference) -> Named | None:
    """The document `reference` names (a `name@version` of any kind, the first kind that has it)."""
    for kind in (reference.kind,) if reference.kind else KINDS:
        found = registry.find(kind, reference.name, reference.version)
        if found is not None:
            return found
    return None


def name_span(found: Named) -> Span | None:
    """Where the `name:` of a document or index entry is."""
    span = getattr(found, "name_span", None)
    if isinstance(span, Span) or (span is None and not isinstance(found, Document)):
        return span
    assert isinstance(found, Document)
    return found.span_at((*found.base, "name"))


def uses(registry: Registry, target: Named, documents: Iterable[Document]) -> list[Reference]:
    """Every reference among `documents` that resolves to `target` (its own name included)."""
    key = (target.file, target.index)
    found = []
    for document in documents:
        for reference in references(document):
            resolved = definition(registry, reference)
            if resolved is not None and (resolved.file, resolved.index) == key:
                found.append(reference)
    return found


def schema_words(kind: str, path: tuple[str | int, ...]) -> str | None:
    """The reference text (with its link) of the key at `path` of a `kind` document, from its JSON Schema."""
    schema = load_schema(kind)
    node: Any = schema
    for step in path:
        node = _child(schema, node, step)
        if node is None:
            return None
    node = _resolved(schema, node)
    text = node.get("markdownDescription") or node.get("description") if isinstance(node, dict) else None
    return text if isinstance(text, str) else None


def _child(schema: Mapping[str, Any], node: Any, step: str | int) -> Any:
    node = _resolved(schema, node)
    if not isinstance(node, dict):
        return None
    if isinstance(step, int):
        return node.get("items")
    properties = node.get("properties")
    if isinstance(properties, dict) and step in properties:
        return properties[step]
    for combined in ("allOf", "anyOf", "oneOf"):
        for branch in node.get(combined) or ():
            found = _child(schema, branch, step)
            if found is not None:
                return found
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _resolved(schema: Mapping[str, Any], node: Any) -> Any:
    """`node` with `$ref`s followed, and a lone `allOf` branch opened, keeping the outer description."""
    for _ in range(20):
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/definitions/"):
            target = schema["definitions"].get(reference.rsplit("/", 1)[-1], {})
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        branches = node.get("allOf")
        if isinstance(branches, list) and len(branches) == 1 and "properties" not in node:
            node = {**branches[0], **{k: v for k, v in node.items() if k != "allOf"}}
            continue
        return node
    return node


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)
