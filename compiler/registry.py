"""Named, versioned documents: what references resolve against (the stdlib plus the workspace's own)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .documents import Document

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semantic versions: a release sorts after its pre-releases; non-semver sorts first."""
    match = _SEMVER.match(version)
    if not match:
        return (-1, -1, -1, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


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
        return sorted(self.entries.get(kind, {}).get(name, {}), key=version_key)

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
            return versions[max(versions, key=version_key)]
        return versions.get(version)
