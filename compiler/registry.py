"""Named, versioned documents: what references resolve against (the stdlib plus the workspace's own)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from semver import Version

from .documents import Document


def version_key(version: str) -> tuple[int, Version | None, str]:
    """Sort key in SemVer 2.0.0 precedence (section 11), by the `semver` package: numeric identifiers of a
    pre-release compare as numbers (rc.2 < rc.10), and a release sorts after its pre-releases.

    A version that is not SemVer (the schema already reports it) sorts before every valid one, by its text, so
    ordering never fails; versions equal in precedence (they differ only in build metadata) sort by their text."""
    try:
        return (1, Version.parse(version), version)
    except ValueError:
        return (0, None, version)


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
