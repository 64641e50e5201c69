"""The reader: rows from the source into a bounded queue of items, skipping what is already done.

Rows are read a batch at a time in a worker thread. Each row gets its key (`input.key`, else one detected from
the first row), and an item whose key the ledger has as done (or that this run already read) is counted as
already done and not queued. The queue holds at most twice the concurrency, so memory stays flat however many
rows the source has. The reader reads ahead whatever the `batch_strategy`: `sequential` orders the writes
(`writer.py`), not the reads, so the concurrency slots never drain at a batch boundary.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from ...compiler.ir import Plan, Source
from ...compiler.ir.common import suffix_format
from ..io import IOContext, Row, RowError, sources
from ..io.counting import counter_for
from .calls import ItemWorker
from .context import RunContext
from .ledger import FAILED, FINAL, Ledger
from .writer import Batch, Item, Writer


class Reader:
    """Feeds the item queue from the source, a batch at a time, until the source ends or the run stops."""

    def __init__(self, run: RunContext, ledger: Ledger, writer: Writer, worker: ItemWorker, *, resume: bool, answers: bool) -> None:
        self.run = run
        self.ledger = ledger
        self.writer = writer
        self.worker = worker
        self.ledger_has_items = resume
        """A run with nothing recorded before has nothing to look up: every key it reads is new to the ledger."""
        self.ledger_has_answers = answers
        concurrency, size = run.shape.concurrency, max(1, run.shape.source.batch_size)
        self.open_limit = -(-4 * concurrency // size) + 2
        """Batches read and not yet written, at most: the workers (2 x concurrency) and the queue (as many) hold
        at most 4 x concurrency items, so the slots stay full."""

    async def read(self, source: Any, queue: asyncio.Queue[Any]) -> None:
        run = self.run
        if run.no_input:
            await self._read_once(queue)
            return
        iterator = source.batches(run.shape.source.batch_size)
        partition = run.options.partition
        index = 0 if partition is None else partition.first
        """Row numbers are the whole source's, a partition's (the `dask` engine) included."""
        number = 0
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
                    items.append(Item(index=index, key=self._key(entry, index), row=entry, fingerprint=self.worker.fingerprint(entry)))
                index += 1
            run.progress.read = index
            todo = await self._not_done(items)
            number += 1
            batch = Batch(number, len(todo))
            if not todo:
                if limit is not None and index >= limit:
                    break
                continue
            # Read no further ahead than the items the workers and the queue can hold, in batches, and two more.
            await self.writer.room(self.open_limit)
            self.writer.open.append(batch)
            for entry in todo:
                if isinstance(entry, RowError):
                    await self.writer.input_error(batch, entry.message, key=key_of(entry), row={"raw": entry.raw})
                else:
                    await queue.put((batch, entry))
                if run.stopping is not None:
                    break
            if limit is not None and index >= limit:
                break

    async def _read_once(self, queue: asyncio.Queue[Any]) -> None:
        """A job without input: one item, with an empty row, keyed by the run's scope or id."""
        run = self.run
        item = Item(index=0, key=run.options.scope or run.run_id, row={}, fingerprint=self.worker.fingerprint({}))
        run.progress.read = 1
        todo = await self._not_done([item])
        if todo:
            batch = Batch(1, 1)
            self.writer.open.append(batch)
            await queue.put((batch, item))

    async def _not_done(self, items: list[Item | RowError]) -> list[Item | RowError]:
        """The items to do: those never done, those that failed, and those whose work changed (stale)."""
        keys = [key_of(i) for i in items]
        if not keys:
            return items
        run = self.run
        statuses: dict[str, tuple[str, str | None]] = {}
        if self.ledger_has_items:
            statuses = await asyncio.to_thread(self.ledger.statuses, run.scope, keys)
        todo: list[Item | RowError] = []
        in_flight = self.writer.in_flight_keys
        for item in items:
            key = key_of(item)
            status, done_by = statuses.get(key, ("", None))
            if key in in_flight:
                # The same key earlier in this run (a repeated row): each key is written once.
                run.progress.already_done += 1
                continue
            if status in FINAL:
                fingerprint = item.fingerprint if isinstance(item, Item) else None
                if done_by is None or done_by == fingerprint or run.options.keep_stale:
                    run.progress.already_done += 1
                    continue
                run.progress.stale += 1
            in_flight.add(key)
            todo.append(item)
        if run.options.retry_failed:
            # Only the failures are redone: items never tried are left for a normal run.
            todo = [i for i in todo if statuses.get(key_of(i), ("", None))[0] == FAILED]
        if self.ledger_has_answers:
            wanted = [i.key for i in todo if isinstance(i, Item)]
            recorded = await asyncio.to_thread(self.ledger.answers, run.scope, wanted) if wanted else {}
            for entry in todo:
                if isinstance(entry, Item):
                    entry.recorded = recorded.get(entry.key)
        return todo

    def _key(self, row: Row, index: int) -> str:
        return _row_key(self.run, row, index)


@dataclass(frozen=True, slots=True, kw_only=True)
class Survey:
    """What a run would do, found without calling anything (`run-job --dry-run`)."""

    total: int
    new: int
    stale: int
    failed: int
    done: int

    @property
    def to_call(self) -> int:
        return self.new + self.stale + self.failed

    def describe(self) -> str:
        return (
            f"would call {self.to_call} of {self.total} items: {self.new} new, {self.stale} stale, "
            f"{self.failed} failed before; {self.done} already done"
        )


async def survey(run: RunContext, ledger: Ledger | None, worker: ItemWorker, source: Any) -> Survey:
    """Read the whole source (or the one item of a job without input) and sort its items as the reader would:
    new, stale (their work changed), failed before, or done."""
    options = run.options
    counts = {"new": 0, "stale": 0, "failed": 0, "done": 0}
    batches = iter([[{}]]) if source is None else source.batches(run.shape.source.batch_size)
    index = 0
    while options.limit is None or index < options.limit:
        raw = await asyncio.to_thread(next, batches, None)
        if raw is None:
            break
        raw = raw if options.limit is None else raw[: options.limit - index]
        rows = [(str(options.scope or run.run_id) if source is None else _row_key(run, entry, index + i), entry) for i, entry in enumerate(raw)]
        index += len(raw)
        recorded = {} if options.fresh or ledger is None else await asyncio.to_thread(ledger.statuses, run.scope, [k for k, _ in rows])
        for key, entry in rows:
            status, done_by = recorded.get(key, ("", None))
            if status in FINAL and not isinstance(entry, RowError):
                fingerprint = worker.fingerprint(entry)
                if done_by is None or done_by == fingerprint or options.keep_stale:
                    counts["done"] += 1
                else:
                    counts["stale"] += 1
            elif status == FAILED:
                counts["failed"] += 1
            elif options.retry_failed:
                counts["done"] += 1  # `--retry-failed` leaves items never tried for a normal run
            else:
                counts["new"] += 1
    return Survey(total=index, **counts)


def _row_key(run: RunContext, entry: Row | RowError, index: int) -> str:
    if isinstance(entry, RowError):
        return f"row {entry.index}"
    if run.key_field == "row":
        return str(index)
    value = entry.get(run.key_field)
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
        if node.source == "run_input" and input_path is None:
            total = 1
        elif input_path is not None:
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
