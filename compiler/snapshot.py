"""The last `check`'s answer, replayed while nothing it read has changed (`sleipnir check` run again by an editor,
a pre-commit hook or a person after a save).

A snapshot is one JSON file in the cache's folder (so a new compiler never reads an old one's), one per command
(its folder, paths, format and colour, opaque here): what the command printed and its exit code, and for every
file discovery found, in order, its size, modification time, digest and shape (`documents.stream_shape`: each
document's kind, place, start and text up to its last value), and whether the answer mentions it.

`replay` gives the answer again when discovery finds the same files and each is unchanged: by its size and time
(when they are not too recent to trust), else by its digest, else, for a file the answer does not mention, by its
shape. Parsed again without a problem, a file of the same shape holds the same documents, starting where they
did, with the same values: so their schema verdicts, the registry's answers and what the checks find (which
depend on values and on where nodes start, never on comments or where a collection ends) are what they were,
none of it about this file. Anything else (another file list, a changed value, a file with a diagnostic) is no
answer, and the full check runs; a snapshot that does not parse or has another shape is none too. Nothing here
imports the checks, a schema validator or the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import RACY_NS, Cache
from .diagnostics import Diagnostics
from .documents import classify, stream_shape
from .loader import decode, load
from .workspace import discover, display_path

if TYPE_CHECKING:
    from .checker import CheckResult
    from .index import WorkspaceIndex

Command = Mapping[str, Any]
"""What the answer depends on besides the files (JSON values)."""


def remember(index: WorkspaceIndex, result: CheckResult, command: Command, output: str, code: int) -> None:
    """Keep `output` and `code`, the answer of `command`, which checked `index` into `result`; only when every
    file discovery found was read (an unreadable one is a diagnostic without a shape)."""
    layout, cache = index.layout, index.cache
    if cache is None or layout.root is None:
        return
    files = (*index.checked, *index.context, *index.stdlib)
    found = (*layout.checked, *layout.context, *layout.stdlib)
    if [f.path for f in files] != [p.absolute() for p in found]:
        return
    mentioned = set()
    for diagnostic in result.diagnostics:
        mentioned.add(diagnostic.file)
        for label in (diagnostic.primary, *diagnostic.secondary):
            if label is not None:
                mentioned.add(label.span.file)
    snapshot = {
        "command": command,
        "root": str(layout.root),
        "folder": str(layout.folder),
        "lists": [len(layout.checked), len(layout.context), len(layout.stdlib)],
        "files": [
            [
                str(f.path),
                f.size,
                f.mtime,
                f.digest,
                f.shape,
                f.shown not in mentioned and not f.load,
            ]
            for f in files
        ],
        "output": output,
        "code": code,
    }
    _write(cache, command, snapshot)


def replay(paths: Sequence[str], command: Command) -> tuple[str, int] | None:
    """The output and exit code `command` (a check of `paths`) gave last time, when nothing it read has changed
    since; else None."""
    sink = Diagnostics()
    layout = discover(paths, sink)
    if sink.items or layout.root is None:
        return None
    cache = Cache.at(layout.root)
    try:
        # json rather than orjson: orjson's imports (uuid, platform) cost more than it saves on one small file.
        snapshot = json.loads(_file(cache, command).read_bytes())
    except (OSError, ValueError):
        return None
    lists = (layout.checked, layout.context, layout.stdlib)
    try:
        if (
            snapshot["command"] != command
            or snapshot["root"] != str(layout.root)
            or snapshot["folder"] != str(layout.folder)
            or snapshot["lists"] != [len(files) for files in lists]
        ):
            return None
        seen = _unchanged(snapshot["files"], [p for files in lists for p in files], int(snapshot["written"]))
        if seen is None:
            return None
        output, code = snapshot["output"], snapshot["code"]
        if not isinstance(output, str) or not isinstance(code, int):
            return None
    except (KeyError, TypeError, ValueError, IndexError):  # a snapshot of another shape
        return None
    if seen:  # files read again and found the same: their new times, so that the next run need not read them
        _write(cache, command, snapshot)
    return output, code


def _unchanged(files: list[list[Any]], found: list[Path], written: int) -> bool | None:
    """Whether the files (`found`, as the snapshot lists them) are all unchanged: None when one is not, True
    when they are but some had to be read to know it (their entries are then brought up to date)."""
    trusted = written - RACY_NS
    seen = False
    for entry, path in zip(files, found, strict=True):
        name, size, mtime, digest, shape, quiet = entry
        if name != str(path.absolute()):
            return None
        try:
            stat = os.stat(name)
            if stat.st_size == size and stat.st_mtime_ns == mtime and mtime < trusted:
                continue
            with open(name, "rb") as source:
                data = source.read()
        except OSError:
            return None
        now = hashlib.sha1(data).hexdigest()
        if now != digest and not (quiet and shape is not None and _shape_of(path, data) == shape):
            return None
        # Written again when that spares the next run reading it: its entry changed, or it is old enough now.
        fresh = [stat.st_size, stat.st_mtime_ns, now]
        seen = seen or entry[1:4] != fresh or stat.st_mtime_ns < time.time_ns() - RACY_NS
        entry[1:4] = fresh
    return seen


def _shape_of(path: Path, data: bytes) -> str | None:
    """The shape of the file `path` holding `data` (`documents.stream_shape`), or None when reading it finds a
    problem."""
    shown = display_path(path)
    sink = Diagnostics()
    text = decode(data, shown, sink)
    documents = classify(load(text, shown, sink), sink) if text is not None else []
    return None if sink.items or text is None else stream_shape(text, documents)


def _file(cache: Cache, command: Command) -> Path:
    digest = hashlib.sha1(json.dumps(command, sort_keys=True).encode()).hexdigest()[:16]
    return cache.folder / f"check-{digest}.json"


def _write(cache: Cache, command: Command, snapshot: dict[str, Any]) -> None:
    snapshot["written"] = time.time_ns()
    cache.write(_file(cache, command), json.dumps(snapshot, separators=(",", ":")).encode())
