"""The on-disk check cache, `.sleipnir/cache/`: one JSON entry per source file, in a folder named by the compiler.

The folder's name is a digest of the compiler's version, its source and its schemas (`compiler_key`), so a new
compiler never reads an old compiler's entries. An entry is written to a temporary file and renamed into place,
so a reader sees a whole entry or none; an entry that does not parse or does not have the expected shape is a
miss. JSON rather than pickle: the folder sits in the user's workspace, and reading it must never run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from .workspace import package_folder

CACHE_FOLDER = Path(".sleipnir") / "cache"
"""Where the cache lives, under the workspace root."""
FORMAT = 1
"""The entry format; part of the compiler key."""


@cache
def compiler_key() -> str:
    """A digest of everything that decides a check's answer besides the files: the compiler's own source
    files and grammars (which a new version changes) and the schemas it validates with. Hashing the source
    rather than reading the version number also keeps an edited development install from trusting old entries."""
    digest = hashlib.sha1(f"{FORMAT}".encode())
    for package in ("sleipnir.compiler", "sleipnir.schema"):
        folder = str(package_folder(package))
        found: list[str] = []
        for here, subfolders, files in os.walk(folder):
            subfolders[:] = [s for s in subfolders if s != "__pycache__"]  # not listed: a third of the time
            found.extend(os.path.join(here, name) for name in files if name.endswith((".py", ".lark", ".json")))
        for path in sorted(found):
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as source:
                digest.update(source.read())
    return digest.hexdigest()[:20]


class Cache:
    """Entries by source file, on disk under `folder`, and in memory for a long-lived process (the language
    server) so that an unchanged file is never read twice."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / compiler_key()
        self.memory: dict[str, dict[str, Any]] = {}
        self.made = False
        """Whether this process made (or found) the folder: one `mkdir` a run, not one per entry."""

    @classmethod
    def at(cls, root: Path) -> Cache:
        """The cache of the workspace at `root`."""
        return cls(root / CACHE_FOLDER)

    def _file(self, source: str) -> Path:
        return self.folder / (hashlib.sha1(source.encode()).hexdigest() + ".json")

    def get(self, source: str) -> dict[str, Any] | None:
        """The entry of the file at absolute path `source`, or None (absent, unreadable or corrupt)."""
        entry = self.memory.get(source)
        if entry is not None:
            return entry
        try:
            data = orjson.loads(self._file(source).read_bytes())  # half json's time; its errors are ValueErrors
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("source") != source:
            return None
        self.memory[source] = data
        return data

    def put(self, source: str, entry: dict[str, Any]) -> None:
        """Store `entry` for `source`, atomically. A cache that cannot be written is no error: it stays cold."""
        entry["source"] = source
        self.memory[source] = entry
        try:
            if not self.made:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.made = True
            # A name no other writer uses (tempfile would cost 20 ms of imports on every check).
            temporary = self.folder / f".entry-{os.getpid()}-{os.urandom(6).hex()}.tmp"
            try:
                # orjson: a tenth of json.dumps's time on an entry (and json.dump's pure-Python encoder was a
                # fifth of a cold check of 2,000 jobs). What it refuses (a lone surrogate) goes to json.
                with open(temporary, "xb") as out:
                    out.write(_encoded(entry))
                os.replace(temporary, self._file(source))
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        except OSError:
            self.made = False  # the folder may have been removed meanwhile (a long-lived language server)
            return


def _encoded(entry: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(entry)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(entry, separators=(",", ":")).encode()  # ASCII: surrogates escaped
