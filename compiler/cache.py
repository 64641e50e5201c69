"""The on-disk check cache, `.sleipnir/cache/`: one JSON entry per source file, in a folder named by the compiler;
a store of many entries at once (a cold check's) puts them in one pack file instead (`PACKED_FROM`).

The folder's name is a digest of the compiler's version, its source and its schemas (`compiler_key`), so a new
compiler never reads an old compiler's entries. An entry is written to a temporary file and renamed into place,
so a reader sees a whole entry or none; an entry that does not parse or does not have the expected shape is a
miss. JSON rather than pickle: the folder sits in the user's workspace, and reading it must never run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from .workspace import package_folder

CACHE_FOLDER = Path(".sleipnir") / "cache"
"""Where the cache lives, under the workspace root."""
FORMAT = 2
"""The entry format; part of the compiler key."""
PACK = "pack.json"
"""Entries stored together (`Cache.store`): source -> entry, one file."""
PACKED_FROM = 8
"""A store of this many entries or more is written as one pack, not one file each: creating a file cost about
0.45 ms here (ext4), so a cold check of 84 files spent about 38 ms, a twentieth of it, creating entries."""
RACY_NS = 2_000_000_000
"""A file modified this close before its entry was written may have changed again within the same clock tick:
its size and time are not trusted, its digest is compared."""


@cache
def compiler_key() -> str:
    """A digest of everything that decides a check's answer besides the files: the compiler's own source
    files and grammars (which a new version changes) and the schemas it validates with, each by its name, size
    and modification time. Those rather than the version number keep an edited development install from
    trusting old entries; rather than their text, since reading 1 MB of source was 1.5 ms of every check."""
    digest = hashlib.sha1(f"{FORMAT}".encode())
    for package in ("sleipnir.compiler", "sleipnir.schema"):
        folder = str(package_folder(package))
        for here, subfolders, files in os.walk(folder):
            subfolders[:] = sorted(s for s in subfolders if s != "__pycache__")  # not listed: a third of the time
            for name in sorted(files):
                if name.endswith((".py", ".lark", ".json")):
                    stat = os.stat(os.path.join(here, name))
                    digest.update(f"{here[len(folder):]}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


class Cache:
    """Entries by source file, on disk under `folder`, and in memory for a long-lived process (the language
    server) so that an unchanged file is never read twice."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / compiler_key()
        self.memory: dict[str, dict[str, Any]] = {}
        self._packed: dict[str, Any] | None = None
        """The pack's entries, read when first asked for."""
        self.made = False
        """Whether this process made (or found) the folder: one `mkdir` a run, not one per entry."""
        self._own: set[str] = set()
        """Sources with an entry file of their own, read or written by this process: a pack that stores their
        entries deletes those files, so that later checks do not read an entry the pack's supersedes."""

    @classmethod
    def at(cls, root: Path) -> Cache:
        """The cache of the workspace at `root`."""
        return cls(root / CACHE_FOLDER)

    def _file(self, source: str) -> Path:
        return self.folder / (hashlib.sha1(source.encode()).hexdigest() + ".json")

    def get(self, source: str) -> dict[str, Any] | None:
        """The entry of the file at absolute path `source`, or None (absent, unreadable or corrupt): its own file's
        or the pack's, whichever was written last (the reader judges whether it still holds for the file)."""
        entry = self.memory.get(source)
        if entry is not None:
            return entry
        own = _entry(self._read(self._file(source)), source)
        if own is not None:
            self._own.add(source)
        packed = _entry(self._pack().get(source), source)
        if own is None or (packed is not None and _written(packed) > _written(own)):
            own = packed
        if own is not None:
            self.memory[source] = own
        return own

    def _read(self, file: Path) -> Any:
        import orjson  # imported when an entry is read: a replayed check (`snapshot`) reads none

        try:
            return orjson.loads(file.read_bytes())  # half json's time; its errors are ValueErrors
        except (OSError, ValueError):
            return None

    def _pack(self) -> dict[str, Any]:
        if self._packed is None:
            packed = self._read(self.folder / PACK)
            self._packed = packed if isinstance(packed, dict) else {}
        return self._packed

    def store(self, entries: dict[str, dict[str, Any]]) -> None:
        """Store the entries (source -> entry): a few in a file each (`put`); from `PACKED_FROM` on, in the pack,
        with the entries it held. Two processes storing at once: the last pack written wins, and the other's
        entries are misses the next time, never wrong answers (every entry is judged against its file). Entries
        of files that are gone are left out."""
        if len(entries) < PACKED_FROM:
            for source, entry in entries.items():
                self.put(source, entry)
            return
        # The pack keeps the entries it held of files that are still there: a workspace whose files are renamed
        # or deleted does not make every later check read their entries.
        packed = {source: entry for source, entry in self._pack().items() if os.path.exists(source)}
        for source, entry in entries.items():
            entry["source"] = source
            self.memory[source] = packed[source] = entry
        self._packed = packed
        if self.write(self.folder / PACK, _encoded(packed)):
            for source in self._own.intersection(entries):
                self._own.discard(source)
                with contextlib.suppress(OSError):
                    self._file(source).unlink()

    def put(self, source: str, entry: dict[str, Any]) -> None:
        """Store `entry` for `source`, atomically. A cache that cannot be written is no error: it stays cold."""
        entry["source"] = source
        self.memory[source] = entry
        self._own.add(source)
        # orjson: a tenth of json.dumps's time on an entry (and json.dump's pure-Python encoder was a fifth of a
        # cold check of 2,000 jobs). What it refuses (a lone surrogate) goes to json.
        self.write(self._file(source), _encoded(entry))

    def write(self, target: Path, data: bytes) -> bool:
        """Write `data` to `target` in the cache's folder, atomically, and say whether it was written; a folder that
        cannot be written is no error."""
        try:
            if not self.made:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.made = True
            # A name no other writer uses (tempfile would cost 20 ms of imports on every check).
            temporary = self.folder / f".entry-{os.getpid()}-{os.urandom(6).hex()}.tmp"
            try:
                with open(temporary, "xb") as out:
                    out.write(data)
                os.replace(temporary, target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        except OSError:
            self.made = False  # the folder may have been removed meanwhile (a long-lived language server)
            return False
        return True


def _entry(data: Any, source: str) -> dict[str, Any] | None:
    return data if isinstance(data, dict) and data.get("source") == source else None


def _written(entry: dict[str, Any]) -> int:
    written = entry.get("written")
    return written if isinstance(written, int) else 0


def _encoded(entry: dict[str, Any]) -> bytes:
    import orjson

    try:
        return orjson.dumps(entry)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(entry, separators=(",", ":")).encode()  # ASCII: surrogates escaped
