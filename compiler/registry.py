"""Named, versioned documents: what references resolve against (the stdlib plus the workspace's own)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .documents import Document

_IDENTIFIER = r"(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(
    rf"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    rf"(?:-({_IDENTIFIER}(?:\.{_IDENTIFIER})*))?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?\Z"
)
"""SemVer 2.0.0's grammar (section 2 to 10), as the `semver` package's `Version.parse` reads it."""
_MAX_LENGTH = 255
"""The longest version `semver` parses."""

Precedence = tuple[int, int, int, tuple[object, ...]]


def version_key(version: str) -> tuple[int, Precedence | None, str]:
    """Sort key in SemVer 2.0.0 precedence (section 11): numeric identifiers of a pre-release compare as numbers
    (rc.2 < rc.10), and a release sorts after its pre-releases. The order is the `semver` package's (a test
    compares the two on generated versions); importing it cost every check 10 ms.

    A version that is not SemVer (the schema already reports it) sorts before every valid one, by its text, so
    ordering never fails; versions equal in precedence (they differ only in build metadata) sort by their text."""
    found = _SEMVER.match(version) if len(version) <= _MAX_LENGTH else None
    if found is None:
        return (0, None, version)
    major, minor, patch, pre = found.groups()
    # A release (1,) sorts after any pre-release (0, identifiers); numeric identifiers (no leading zeros) before
    # alphanumeric ones, by length then digits; a shorter list of equal identifiers first.
    rank: tuple[object, ...] = (
        (1,)
        if pre is None
        else (0, tuple((0, len(i), i) if i.isdecimal() else (1, 0, i) for i in pre.split(".")))
    )
    return (1, (int(major), int(minor), int(patch), rank), version)


class Named(Protocol):
    """What the registry files a document by: a parsed `Document`, or an index entry that stands for one."""

    @property
    def kind(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...


@dataclass(slots=True)
class Registry:
    """Documents by kind, name and version. Workspace documents shadow stdlib ones of the same name and version.

    An entry may be an index entry rather than a parsed document: `get` then parses it with `materialize`, so a
    check that only asks which names exist never parses the files they are in."""

    entries: dict[str, dict[str, dict[str, Named]]] = field(default_factory=dict)
    materialize: Callable[[Named], Document] | None = None
    ordered: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False, compare=False)
    """Each name's versions, sorted once (2,000 jobs ask for the versions of the same few prompt modules)."""

    @classmethod
    def build(cls, documents: Iterable[Named], materialize: Callable[[Named], Document] | None = None) -> Registry:
        """A registry of `documents`; for a repeated kind/name/version the first one wins."""
        registry = cls(materialize=materialize)
        for document in documents:
            if document.name is None:
                continue
            versions = registry.entries.setdefault(document.kind, {}).setdefault(document.name, {})
            versions.setdefault(document.version or "", document)
        return registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))

    def versions(self, kind: str, name: str) -> list[str]:
        """The versions of `name`, oldest first."""
        return list(self._ordered(kind, name))

    def _ordered(self, kind: str, name: str) -> list[str]:
        found = self.ordered.get((kind, name))
        if found is None:
            found = self.ordered[(kind, name)] = sorted(self.entries.get(kind, {}).get(name, {}), key=version_key)
        return found

    def get(self, kind: str, name: str, version: str | None = None) -> Document | None:
        """The document `name` at `version`, or its newest version when `version` is None."""
        found = self.find(kind, name, version)
        if found is None or isinstance(found, Document):
            return found
        assert self.materialize is not None, "a registry of index entries is built with `materialize`"
        return self.materialize(found)

    def find(self, kind: str, name: str, version: str | None = None) -> Named | None:
        """`get` without parsing: the document or the index entry standing for it."""
        versions = self.entries.get(kind, {}).get(name)
        if not versions:
            return None
        if version is None:
            return versions[self._ordered(kind, name)[-1]]
        return versions.get(version)
