"""The input of a job split into partitions, for the `dask` engine: each is a small, serialisable range that a
worker reads itself, so no item travels through the driver.

- A jsonl or csv file is split at row boundaries found in one pass over its bytes (a csv row's quoted line
  breaks are followed, through the csv reader): each partition carries the byte offset, the line and the row
  number where it starts (`sources.Start`), and how many rows it has.
- A database query whose rows all have the item key is split into key ranges (keyset pages): the database
  finds the boundary keys in one window query, and each worker reads `WHERE key > a AND key <= b ORDER BY key`
  over the query, which an index on the key makes cheap. Rows come in key order, and a row's number is its
  place in that order; ties of a repeated key stay in one range.
- Any other source (a json array, an API, a query with rows lacking the key) is split by row number: a worker
  reads the source from its start and passes over the rows before its range without doing anything with them.
  The rows must come in a stable order, as they must for a resume: give a database query an `ORDER BY`.

Row numbers are those of the whole source, so items without a key field are keyed as in a local run.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...compiler import ir
from . import IOContext, Source
from .sources import DatabaseSource, FileSource, Start, make_source


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Rows `first` to `stop` (excluded) of the source; `start` where a jsonl or csv file's partition begins."""

    number: int
    first: int
    stop: int
    start: Start | None = None
    key_field: str = ""
    """The item key field the driver found, so that every worker keys rows alike."""
    keys: tuple[Any, Any] | None = None
    """A database source's key range (above the first, at most the second; None: open that side)."""

    @property
    def size(self) -> int:
        return self.stop - self.first


def split_input(
    node: ir.Source, context: IOContext, *, input_path: str | None, total: int | None, size: int, key_field: str = ""
) -> list[Partition]:
    """The partitions of the job's input, `size` rows each (the last may have fewer). A file found to have rows
    is split where they start, a database query by `key_field` ranges when every row has one; otherwise the
    source's `total` rows are split by row number (one partition when it is not known)."""
    source = make_source(node, context=context, input_path=input_path)
    try:
        if isinstance(source, DatabaseSource) and key_field not in ("", "row"):
            ranged = source.key_bounds(key_field, size)
            if ranged is not None:
                return _key_ranges(*ranged, key_field=key_field)
        if isinstance(source, FileSource) and source.format in ("jsonl", "csv") and source.path.is_file():
            chosen: list[Start] = []
            rows = 0
            for start in _row_starts(source.path, source.format):
                rows += 1
                if start.index % size == 0:
                    chosen.append(start)
            ends = [s.index for s in chosen[1:]] + [rows]
            return [Partition(number=n, first=s.index, stop=e, start=s) for n, (s, e) in enumerate(zip(chosen, ends, strict=True))]
    finally:
        source.close()
    if total is None:
        return [Partition(number=0, first=0, stop=2**62)]
    return [Partition(number=n, first=f, stop=min(total, f + size)) for n, f in enumerate(range(0, total, size))] or [
        Partition(number=0, first=0, stop=0)
    ]


def _key_ranges(bounds: list[tuple[Any, int]], rows: int, *, key_field: str) -> list[Partition]:
    """Partitions between the boundary keys: the first open below, the last open above (rows added since the
    boundaries were found fall in one of them)."""
    parts, after, first = [], None, 0
    for number, (upto, stop) in enumerate([*bounds, (None, rows)]):
        parts.append(Partition(number=number, first=first, stop=stop, key_field=key_field, keys=(after, upto)))
        after, first = upto, stop
    return parts


def _row_starts(path: Path, fmt: str) -> Iterator[Start]:
    """Where each row of a jsonl or csv file starts, found in one pass."""
    return _csv_starts(path) if fmt == "csv" else _jsonl_starts(path)


def _jsonl_starts(path: Path) -> Iterator[Start]:
    offset, index = 0, 0
    with path.open("rb") as lines:
        for number, data in enumerate(lines, start=1):
            if data.strip():
                yield Start(offset=offset, line=number, index=index)
                index += 1
            offset += len(data)


def _csv_starts(path: Path) -> Iterator[Start]:
    at = [0, 0]
    """The byte offset and the number of the last line the csv reader took."""
    with path.open("rb") as handle:

        def lines() -> Iterator[str]:
            for data in handle:
                at[0] += len(data)
                at[1] += 1
                yield data.decode("utf-8", "replace")

        reader = csv.reader(lines())
        if next(reader, None) is None:
            return
        index = 0
        while True:
            start = Start(offset=at[0], line=at[1] + 1, index=index)
            try:
                fields: Any = next(reader)
            except csv.Error:
                fields = [""]  # a row the worker's reader reports as an input error, in its place
            except StopIteration:
                return
            if fields:
                yield start
                index += 1


def partition_source(node: ir.Source, context: IOContext, *, input_path: str | None, partition: Partition) -> Source:
    """The source of one partition: a file read from its start, or any source read past the rows before it."""
    source = make_source(node, context=context, input_path=input_path)
    if isinstance(source, DatabaseSource) and partition.keys is not None:
        return source.keyed(partition.key_field, *partition.keys)
    if isinstance(source, FileSource) and partition.start is not None:
        return _Range(FileSource(path=source.path, format=source.format, shown=source.shown, start=partition.start), 0, partition.size)
    return _Range(source, partition.first, partition.size)


class _Range:
    """`count` rows of `inner` after its first `skip` (the rows passed over are not kept)."""

    def __init__(self, inner: Source, skip: int, count: int) -> None:
        self.inner = inner
        self.skip = skip
        self.count = count

    def batches(self, batch_size: int) -> Iterator[list[Any]]:
        rows = itertools.chain.from_iterable(self.inner.batches(batch_size))
        kept = itertools.islice(rows, self.skip, self.skip + self.count)
        while batch := list(itertools.islice(kept, batch_size)):
            yield batch

    def close(self) -> None:
        self.inner.close()
