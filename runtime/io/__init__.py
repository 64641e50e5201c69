"""The source and sink seams: small synchronous protocols (the runtime calls them from a worker thread), built
from plan nodes by name through the `sleipnir.sources` and `sleipnir.sinks` entry-point groups.

A source yields rows in batches, streaming; a row it cannot read is a `RowError` in its place, so that the
`on_input_error` policy decides, and nothing is dropped in silence. A sink writes batches durably and can say,
when a run resumes, which item keys it already holds, so that no output row is ever written twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...compiler.ir.common import WorkspacePaths

Row = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RowError:
    """An input row that could not be read: a bad JSON line, a CSV row with missing columns."""

    index: int
    """The row number in the source, from 0."""
    raw: str
    """The text as read, for the dead letter (truncated to a few KB)."""
    message: str
    """What is wrong, with the place: `data/in.jsonl:12: invalid JSON: ...`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IOContext:
    """What sources and sinks need beyond their node: where relative paths are, the environment (for auth),
    and the workspace's connections, already resolved to URLs (`default` is the workspace database)."""

    root: str
    environ: Mapping[str, str] = field(default_factory=dict)
    connections: Mapping[str, str] = field(default_factory=dict)
    job: str = "job"
    run: Mapping[str, str] = field(default_factory=dict)
    """What only the run knows, for `${run.id}`, `${run.date}` and `${trigger.file_stem}` in an output path."""
    paths: WorkspacePaths | None = None
    """Where the job's files may be (the workspace and the folders it allows); None: anywhere (a bare test)."""

    def with_run_values(self, text: str) -> str:
        """`text` with `${run.id}`, `${run.date}` and `${trigger.file_stem}` filled in (`$${` stays a literal `${`)."""
        if "${" not in text:
            return text
        filled = text.replace("$${", "\0")
        for name, value in self.run.items():
            filled = filled.replace("${" + name + "}", value)
        return filled.replace("\0", "${")

    def connection(self, name: str) -> str:
        """The URL of a connection name, or `name` itself when it is already a URL or a path."""
        return self.connections.get(name, name)

    def inside(self, path: str, error: type[Exception]) -> None:
        """Raise `error` when `path` leads outside the workspace and every allowed folder (symlinks resolved
        now: `plan` checked the path, but a link may have changed since)."""
        reason = self.paths.escape(path) if self.paths is not None else None
        if reason is not None:
            raise error(f"{path} {reason} (list its folder in sleipnir.yaml `paths: allow:` to use it)")


class SourceError(Exception):
    """A source that cannot be read at all (missing file, refused connection, failed query); the run fails."""


class SinkError(Exception):
    """A sink that cannot be written (full disk, refused connection); `on_output_error` decides."""


class Source(Protocol):
    def batches(self, batch_size: int) -> Iterator[list[Row | RowError]]:
        """Rows in batches of at most `batch_size`, in a stable order (row numbers key items without a key)."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    def open(self, *, resume: bool) -> set[str]:
        """Prepare to write. With `resume`, keep what an earlier run wrote (repairing a torn last record) and
        return the item keys already written; without it, start empty (a `replace` sink is truncated only when
        the run completes, atomically). Raises `SinkError`."""
        ...

    def write(self, rows: list[Row]) -> None:
        """Write a batch durably (flushed and fsynced, or committed) before returning. Raises `SinkError`.

        The runtime writes each item key at most once a run, a resumed run included (what `open` returned is
        never written again), so a sink may publish its spool as it is."""
        ...

    def close(self, *, complete: bool) -> None:
        """Finish: with `complete`, publish the result (an atomic rename for whole-file formats)."""
        ...
