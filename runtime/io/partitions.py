"""The input of a job split into partitions, for the `dask` engine: each is a small, serialisable range that a
worker reads itself, so no item travels through the driver.

- A jsonl or csv file is split at row boundaries found in one pass over its bytes (a csv row's quoted line
  breaks are followed, through the csv reader): each partition carries the byte offset, the line and the row
  number where it starts (`sources.Start`), and how many rows it has.
- A database query whose rows all have the item key is split into key ranges (keyset pages): the database
  finds the boundary keys in one window query, and each worker reads `WHERE key > a AND key <= b ORDER BY key`
  over the query, which an index on the key makes cheap. Rows come in key order, and a row's number is its
  place in that order; a repeated key's rows stay in one range.
- An API is split into runs of pages. Its pages are found by following each page's next link (a cursor the
  previous page gives), so the driver reads them once, in order, noting each page's URL, its row count and its
  rows' keys; a partition carries the URLs of the pages that hold its rows (`pages`) and how many rows of the
  first belong to the partition before it (`skip`), and its worker GETs those pages alone. A page whose row
  count changed since the driver read it fails the partition (the rows' numbers would no longer be the
  driver's): the API must serve the same pages at the same URLs while the run lasts, as a resume needs anyway.
- Any other source (a json array, a query with rows lacking the key) is split by row number: a worker
  reads the source from its start and passes over the rows before its range without doing anything with them.
  The rows must come in a stable order, as they must for a resume: give a database query an `ORDER BY`.

Row numbers are those of the whole source, so items without a key field are keyed as in a local run.

A key repeated in two partitions is done once, by the first row that has it, as a local run does (its reader
counts a key it already read as done). The driver learns the rows' keys in the pass that splits the input (a
file's rows parsed as they are found; a query's keys read alone, in its order), and a partition carries the
rows that repeat a key of an earlier partition (`repeats`): its worker passes over them, counted as already
done. Repeats within a partition are the worker reader's own. A row without a key is keyed by its number, which
passing over a row before it would shift: a partition with repeats ends before such a row.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...compiler import ir
from . import IOContext, Source
from .sources import DatabaseSource, FileSource, Start, make_source

if TYPE_CHECKING:
    from .api import ApiSource


UNKNOWN_ROWS = 2**62
"""The end of the one partition of a source whose rows were not counted."""


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
    repeats: tuple[int, ...] = ()
    """Rows (their numbers) whose key an earlier partition has: passed over, counted as already done."""
    pages: tuple[tuple[str, int], ...] = ()
    """An API source's pages that hold the partition's rows: each one's URL and row count."""
    skip: int = 0
    """Rows of the first of `pages` before the partition's first (an earlier partition's)."""

    @property
    def size(self) -> int:
        return self.stop - self.first


def split_input(
    node: ir.Source,
    context: IOContext,
    *,
    input_path: str | None,
    total: int | None,
    size: int,
    key_field: str = "",
    spread: int = 0,
) -> list[Partition]:
    """The partitions of the job's input, `size` rows each (the last may have fewer). A file found to have rows
    is split where they start, a database query by `key_field` ranges when every row has one, an API into runs
    of pages (its rows counted as its pages are listed: with `spread`, in about that many partitions of at least
    `size` rows); otherwise the source's `total` rows are split by row number (one partition when it is not
    known)."""
    source = make_source(node, context=context, input_path=input_path)
    try:
        if isinstance(source, DatabaseSource) and key_field not in ("", "row"):
            ranged = source.key_bounds(key_field, size)
            if ranged is not None:
                return _key_ranges(*ranged, key_field=key_field)
            if total is not None and total > size:
                return _split_rows(((None, key) for key in source.keys(key_field)), size)
        if isinstance(source, FileSource) and source.format in ("jsonl", "csv") and source.path.is_file():
            return _split_rows(_row_starts(source.path, source.format, key_field), size)
        if node.source == "api" and input_path is None:
            from .api import ApiSource  # imported by `make_source` already

            if isinstance(source, ApiSource):
                return _split_pages(source, size, key_field, spread)
    finally:
        source.close()
    if total is None:
        return [Partition(number=0, first=0, stop=UNKNOWN_ROWS)]
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


def _split_rows(rows: Iterable[tuple[Start | None, str | None]], size: int) -> list[Partition]:
    """Partitions of `size` rows from each row's start and key (None: the row is keyed by its number), with
    the rows that repeat a key of an earlier partition; a partition with repeats ends before a row keyed by its
    number (see the module)."""
    parts: list[Partition] = []
    owner: dict[str, int] = {}
    """Each key and the partition of its first row."""
    first, begun = 0, None
    repeats: list[int] = []
    index = -1
    for index, (start, key) in enumerate(rows):
        if index == 0 or index - first >= size or (key is None and repeats):
            if index:
                parts.append(Partition(number=len(parts), first=first, stop=index, start=begun, repeats=tuple(repeats)))
            first, begun, repeats = index, start, []
        if key is not None and owner.setdefault(key, len(parts)) != len(parts):
            repeats.append(index)
    if index >= 0:
        parts.append(Partition(number=len(parts), first=first, stop=index + 1, start=begun, repeats=tuple(repeats)))
    return parts


def _split_pages(source: ApiSource, size: int, key_field: str, spread: int) -> list[Partition]:
    """Partitions of an API source's rows (`_split_rows`), each with the pages that hold its rows, found by
    reading every page once (`ApiSource.pages`)."""
    keyed = key_field not in ("", "row")
    listing: list[tuple[str, list[str | None]]] = []
    """Each page's URL and its rows' keys."""
    for url, items in source.pages():
        values = (item.get(key_field) if keyed and type(item) is dict else None for item in items)
        listing.append((url, [None if value is None else str(value) for value in values]))
    pages = [(url, len(keys)) for url, keys in listing]
    rows = ((None, key) for _, keys in listing for key in keys)
    if spread:
        size = max(size, -(-sum(count for _, count in pages) // spread))
    parts = _split_rows(rows, size)
    ends = list(itertools.accumulate(count for _, count in pages))
    """The number of the row after each page's last."""
    placed = []
    for part in parts:
        first = bisect.bisect_right(ends, part.first)
        last = bisect.bisect_left(ends, part.stop)
        skip = part.first - (ends[first - 1] if first else 0)
        placed.append(dataclasses.replace(part, pages=tuple(pages[first : last + 1]), skip=skip))
    return placed


def _row_starts(path: Path, fmt: str, key_field: str) -> Iterator[tuple[Start, str | None]]:
    """Where each row of a jsonl or csv file starts, and its key (None: none, or no key field), found in one pass."""
    return _csv_starts(path, key_field) if fmt == "csv" else _jsonl_starts(path, key_field)


def _jsonl_starts(path: Path, key_field: str) -> Iterator[tuple[Start, str | None]]:
    keyed = key_field not in ("", "row")
    offset, index = 0, 0
    with path.open("rb") as lines:
        for number, data in enumerate(lines, start=1):
            if data.strip():
                yield Start(offset=offset, line=number, index=index), _json_key(data, key_field) if keyed else None
                index += 1
            offset += len(data)


def _json_key(data: bytes, key_field: str) -> str | None:
    """The key of a jsonl row as the reader takes it (`str` of the field's value); None for a row without one."""
    try:
        row = json.loads(data)
    except ValueError:
        return None
    value = row.get(key_field) if type(row) is dict else None
    return None if value is None else str(value)


def _csv_starts(path: Path, key_field: str) -> Iterator[tuple[Start, str | None]]:
    at = [0, 0]
    """The byte offset and the number of the last line the csv reader took."""
    with path.open("rb") as handle:

        def lines() -> Iterator[str]:
            for data in handle:
                at[0] += len(data)
                at[1] += 1
                yield data.decode("utf-8", "replace")

        reader = csv.reader(lines(), strict=True)  # as the worker's reader (`sources._csv_rows`): the same rows
        header = next(reader, None)
        if header is None:
            return
        header[0] = header[0].removeprefix("\ufeff")
        column = header.index(key_field) if key_field in header else None
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
                yield start, fields[column] if column is not None and len(fields) == len(header) else None
                index += 1


def partition_source(node: ir.Source, context: IOContext, *, input_path: str | None, partition: Partition) -> Source:
    """The source of one partition: a file read from its start, a database query's key range, an API's pages, or
    any source read past the rows before it; in each, the rows that repeat an earlier partition's keys passed over."""
    source = make_source(node, context=context, input_path=input_path)
    if isinstance(source, DatabaseSource) and partition.keys is not None:
        return source.keyed(partition.key_field, *partition.keys)
    if partition.pages:
        from .api import ApiSource  # httpx: only when a job reads an API

        assert isinstance(source, ApiSource)
        source = source.listing(partition.pages, index=partition.first - partition.skip)
        return _Range(source, partition.skip, partition.size, first=partition.first, repeats=partition.repeats)
    if isinstance(source, FileSource) and partition.start is not None:
        source = FileSource(path=source.path, format=source.format, shown=source.shown, start=partition.start)
        return _Range(source, 0, partition.size, first=partition.first, repeats=partition.repeats)
    return _Range(source, partition.first, partition.size, first=partition.first, repeats=partition.repeats)


class _Range:
    """`count` rows of `inner` after its first `skip` (the rows passed over are not kept), those numbered in
    `repeats` left out (`first` is the number of the first row kept)."""

    def __init__(self, inner: Source, skip: int, count: int, *, first: int, repeats: tuple[int, ...] = ()) -> None:
        self.inner = inner
        self.skip = skip
        self.count = count
        self.first = first
        self.repeats = frozenset(repeats)

    def batches(self, batch_size: int) -> Iterator[list[Any]]:
        rows = itertools.chain.from_iterable(self.inner.batches(batch_size))
        kept: Iterator[Any] = itertools.islice(rows, self.skip, self.skip + self.count)
        if self.repeats:
            kept = (row for number, row in enumerate(kept, start=self.first) if number not in self.repeats)
        while batch := list(itertools.islice(kept, batch_size)):
            yield batch

    def close(self) -> None:
        self.inner.close()


def passed_over(partition: Partition, read: int, *, finished: bool) -> int:
    """How many of `partition`'s repeats its reader passed over: all when it `finished` the partition, else
    those before the `read` rows it took."""
    if finished:
        return len(partition.repeats)
    end = partition.first + read
    passed = 0
    for number in sorted(partition.repeats):
        if number >= end:
            break
        passed += 1
        end += 1
    return passed
