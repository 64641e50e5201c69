"""What `sleipnir list` lists and what `--select NAME|GLOB|tag:T` picks, read from the workspace index.

A selector is a document's name (`score`), a glob over names (`score_*`), or `tag:T`. Only prompt modules
have `tags:`; a job, template or stack matches `tag:T` when it or a prompt module it uses has the tag, and a
pipeline when one of its jobs does (spec/cli.md#select). Reading the index parses only the documents whose
tags or references are asked for: the names come from the index (and its cache) alone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .checker import CheckResult, check_some, gc_paused, index_workspace
from .diagnostics import Diagnostic, Diagnostics
from .documents import Document
from .index import Documents, Indexed, WorkspaceIndex
from .ir.common import suggestion_help
from .workspace import stdlib_root

__all__ = ["KINDS", "TAG", "Entry", "Selection", "check_chosen", "entries", "matches", "select", "workspace_index"]

KINDS = ("job", "pipeline", "prompt", "template", "stack")
"""The kinds `list` shows and `--select` picks from."""
TAG = "tag:"


@dataclass(frozen=True, slots=True)
class Entry:
    """One document as `list` shows it."""

    kind: str
    name: str
    version: str | None
    file: str
    line: int | None
    tags: tuple[str, ...]
    """Its own tags (a prompt module's), then those of the prompt modules it uses."""
    stdlib: bool


@dataclass(frozen=True, slots=True)
class Selection:
    """The documents the selectors picked, and the selectors that picked nothing (with a did-you-mean each)."""

    chosen: tuple[Entry, ...]
    unmatched: tuple[tuple[str, str | None], ...]


def _shown(file: str, stdlib: bool) -> str:
    """A stdlib file as `stdlib/<path inside it>`, not where it happens to be installed."""
    if not stdlib:
        return file
    try:
        return str(Path("stdlib") / Path(file).absolute().relative_to(stdlib_root().absolute()))
    except ValueError:
        return file


def _indexed(index: WorkspaceIndex, *, stdlib: bool) -> Iterable[tuple[Indexed, bool]]:
    for file in (*index.checked, *index.context):
        for indexed in file.documents:
            yield indexed, False
    if stdlib:
        for file in index.stdlib:
            for indexed in file.documents:
                yield indexed, True


def _own_tags(document: Document) -> tuple[str, ...]:
    body = document.body if isinstance(document.body, dict) else {}
    tags = body.get("tags")
    return tuple(str(t) for t in tags) if isinstance(tags, list) else ()


def _tags(index: WorkspaceIndex, indexed: Indexed) -> tuple[str, ...]:
    document = index.document(indexed)
    found: dict[str, None] = dict.fromkeys(_own_tags(document))
    if indexed.kind != "prompt":
        from .planner import documents_used  # the planner is imported only when tags are asked for

        for used in documents_used(document, index.registry, {}):
            if used.kind == "prompt":
                found.update(dict.fromkeys(_own_tags(used)))
    return tuple(found)


def entries(
    index: WorkspaceIndex, kinds: Sequence[str] = KINDS, *, stdlib: bool = False, tags: bool = True
) -> list[Entry]:
    """The named documents of the workspace (and of the stdlib with `stdlib`) of `kinds`, by kind and name;
    without `tags`, nothing is parsed."""
    found = []
    for indexed, in_stdlib in _indexed(index, stdlib=stdlib):
        if indexed.kind not in kinds or indexed.name is None:
            continue
        found.append(
            Entry(
                kind=indexed.kind,
                name=indexed.name,
                version=indexed.version,
                file=_shown(indexed.file, in_stdlib),
                line=indexed.name_span.line if indexed.name_span is not None else None,
                tags=_tags(index, indexed) if tags and indexed.valid else (),
                stdlib=in_stdlib,
            )
        )
    return sorted(found, key=lambda e: (KINDS.index(e.kind) if e.kind in KINDS else 99, e.name, e.version or ""))


def select(index: WorkspaceIndex, selectors: Sequence[str], kinds: Sequence[str] = KINDS) -> Selection:
    """The documents of `kinds` in the workspace that any of `selectors` picks, in `entries` order."""
    wants_tags = any(s.startswith(TAG) for s in selectors)
    listed = entries(index, kinds, tags=wants_tags)
    chosen: dict[tuple[str, str, str | None], Entry] = {}
    unmatched = []
    for selector in selectors:
        picked = [e for e in listed if matches(e, selector)]
        if not picked:
            unmatched.append((selector, _suggestion(selector, listed)))
        for entry in picked:
            chosen.setdefault((entry.kind, entry.name, entry.version), entry)
    return Selection(chosen=tuple(e for e in listed if (e.kind, e.name, e.version) in chosen), unmatched=tuple(unmatched))


def matches(entry: Entry, selector: str) -> bool:
    """Whether `selector` (NAME, GLOB or tag:T) picks `entry`."""
    if selector.startswith(TAG):
        return selector[len(TAG) :] in entry.tags
    return fnmatch.fnmatchcase(entry.name, selector)


def _suggestion(selector: str, listed: Sequence[Entry]) -> str | None:
    if selector.startswith(TAG):
        tags = {t for e in listed for t in e.tags}
        found = suggestion_help(selector[len(TAG) :], tags)
        return found.replace("`", f"`{TAG}", 1) if found else None
    return suggestion_help(selector, {e.name for e in listed})


def workspace_index(paths: Sequence[str] = ()) -> WorkspaceIndex:
    """The index of the workspace around the current folder (or of `paths`), from its check cache when fresh."""
    with gc_paused():
        return index_workspace(paths, Diagnostics(), cache=True)


def check_chosen(index: WorkspaceIndex, chosen: Sequence[Entry], before: Sequence[Diagnostic], *, strict: bool) -> CheckResult:
    """`check --select`: the files of the chosen documents, of every document they use, and the manifest,
    checked; the diagnostics `before` (reading the index) kept for those files."""
    from .planner import documents_used

    used: set[str] = set()
    for entry in chosen:
        document = index.registry.get(entry.kind, entry.name, entry.version)
        used.add(entry.file)
        if document is not None:
            used.update(d.file for d in documents_used(document, index.registry, {}))
    if index.workspace.manifest is not None:
        used.add(index.workspace.manifest.file)
    files = [f for f in index.checked if f.shown in used]
    result = check_some(index, files, [d for d in before if d.path is None or d.path in used], strict=strict)
    # The summary counts the documents checked: those of the files checked, not the whole workspace's.
    return replace(result, workspace=replace(result.workspace, documents=Documents(index, files)))
