"""The reader: rows from the source into a bounded queue of items, skipping what is already done.

Rows are read a batch at a time in a worker thread. Each row gets its key (`input.key`, else one detected from
the first row), and an item whose key the ledger has as done (or that this run already read) is counted as
already done and not queued. The queue holds at most twice the concurrency, so memory stays flat however many
rows the source has. `batch_strategy: sequential` reads the next batch only after the last is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from ...compiler.ir import Plan, Source
from ...compiler.ir.common import suffix_format
from ..io import IOContext, Row, RowError, sources
from ..io.counting import counter_for
from .context import RunContext
from .ledger import FAILED, FINAL, Ledger
from .writer import Batch, Item, Writer


class Reader:
    """Feeds the item queue from the source, a batch at a time, until the source ends or the run stops."""

    def __init__(self, run: RunContext, ledger: Ledger, writer: Writer, *, resume: bool) -> None:
        self.run = run
        self.ledger = ledger
        self.writer = writer
        self.ledger_has_items = resume
        """A run with nothing recorded before has nothing to look up: every key it reads is new to the ledger."""

    async def read(self, source: Any, queue: asyncio.Queue[Any]) -> None:
        run = self.run
        iterator = source.batches(run.shape.source.batch_size)
        index = 0
        number = 0
        sequential = run.shape.source.batch_strategy == "sequential"
        limit = run.options.limit
        while run.stopping is None:
            raw = await asyncio.to_thread(next, iterator, None)
            if raw is None:
                break
            if limit is not None:
                raw = raw[: max(0, limit - index)]
            items: list[Item | RowError] = []
            for entry in raw:
                if isinstance(entry, RowError):
                    items.append(entry)
                else:
                    items.append(Item(index=index, key=self._key(entry, index), row=entry))
                index += 1
            run.progress.read = index
            todo = await self._not_done(items)
            number += 1
            batch = Batch(number, len(todo))
            if not todo:
                if limit is not None and index >= limit:
                    break
                continue
            self.writer.open.append(batch)
            for entry in todo:
                if isinstance(entry, RowError):
                    await self.writer.input_error(batch, entry.message, key=key_of(entry), row={"raw": entry.raw})
                else:
                    await queue.put((batch, entry))
                if run.stopping is not None:
                    break
            if sequential:
                await self._wait(batch)
            if limit is not None and index >= limit:
                break

    async def _wait(self, batch: Batch) -> None:
        while not batch.done.is_set() and self.run.stopping is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await batch.done.wait()

    async def _not_done(self, items: list[Item | RowError]) -> list[Item | RowError]:
        keys = [key_of(i) for i in items]
        if not keys:
            return items
        statuses: dict[str, str] = {}
        if self.ledger_has_items:
            statuses = await asyncio.to_thread(self.ledger.statuses, self.run.scope, keys)
        todo: list[Item | RowError] = []
        in_flight = self.writer.in_flight_keys
        for item in items:
            key = key_of(item)
            status = statuses.get(key)
            if status in FINAL or key in in_flight:
                # Done before, or the same key earlier in this run (a repeated row): each key is written once.
                self.run.progress.already_done += 1
            else:
                in_flight.add(key)
                todo.append(item)
        if self.run.options.retry_failed:
            # Only the failures are redone: items never tried are left for a normal run.
            todo = [i for i in todo if statuses.get(key_of(i)) == FAILED]
        return todo

    def _key(self, row: Row, index: int) -> str:
        key_field = self.run.key_field
        if key_field == "row":
            return str(index)
        value = row.get(key_field)
        return str(index) if value is None else str(value)


def key_of(item: Item | RowError) -> str:
    """An item's key; a row that could not be read is keyed by its row number."""
    return item.key if isinstance(item, Item) else f"row {item.index}"


def detect_key_field(node: Source, context: IOContext, input_path: str | None) -> str:
    """Without `input.key`: an `id` field, else the first `*_id` field of the first row, else the row number."""
    source = sources.make_source(node, context=context, input_path=input_path)
    try:
        first = next(iter(source.batches(1)), [])
    finally:
        source.close()
    row = next((r for r in first if not isinstance(r, RowError)), None)
    if row is None:
        return "row"
    return "id" if "id" in row else next((k for k in row if k.endswith("_id")), "row")


def count_items(plan: Plan, node: Source, context: IOContext, *, input_path: str | None, limit: int | None, environ: Any) -> int | None:
    """How many items the source has, when that is cheap to know (for the progress bar), else None."""
    total: int | None = None
    try:
        if input_path is not None:
            total = _count_path(input_path, suffix_format(input_path))
        elif node.source == "file":
            total = _count_file(node, context.root)
        elif node.source in ("database", "sqlite", "postgresql"):
            total = counter_for(plan, environ)(node, context.root)
    except Exception:
        total = None  # the bar then shows a count without a total; the run itself reports a bad source
    if total is not None and limit is not None:
        total = min(total, limit)
    return total


def _count_file(node: Source, root: str) -> int | None:
    """Rows in a file source, cheaply (lines for JSON Lines and CSV), for the progress bar."""
    path = str(node.options.get("path") or "")
    if not path:
        return None
    full = path if os.path.isabs(path) else os.path.join(root, path)
    return _count_path(full, str(node.options.get("format") or suffix_format(path)))


def _count_path(full: str, fmt: str) -> int | None:
    try:
        if fmt == "json":
            return None
        with open(full, "rb") as file:
            lines = sum(1 for line in file if line.strip())
        return max(0, lines - 1) if fmt == "csv" else lines
    except OSError:
        return None
