"""Named, versioned documents: what references resolve against (the stdlib plus the workspace's own)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .documents import Document

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semantic versions: a release sorts after its pre-releases; non-semver sorts first."""
    match = _SEMVER.match(version)
    if not match:
        return (-1, -1, -1, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


@dataclass(slots=True)
class Registry:
    """Documents by kind, name and version. Workspace documents shadow stdlib ones of the same name and version."""

    entries: dict[str, dict[str, dict[str, Document]]] = field(default_factory=dict)

    @classmethod
    def build(cls, documents: Iterable[Document]) -> Registry:
        """A registry of `documents`; for a repeated kind/name/version the first one wins."""
        registry = cls()
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
        versions = self.entries.get(kind, {}).get(name)
        if not versions:
            return None
        if version is None:
            return versions[max(versions, key=version_key)]
        return versions.get(version)
