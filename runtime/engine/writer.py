"""The writer: finished items to the sink, the dead letter and the ledger, a batch at a time.

A batch (`input.batch_size`) is written when its last item is done: its rows in input order (whatever order the
calls finished in), then its dead letters, then its outcomes in the ledger. With `batch_strategy: sequential` (the
default) batches are also written in the order they were read: a batch done before an earlier one waits for it. The
reader reads ahead either way, so the concurrency slots stay full across batch boundaries; only the order of the
writes differs. Only then is the batch recorded, so a kill between the write and the record costs no call: on
resume the ledger alone says what is done, and such an item is written again from its recorded answers, replacing
its row by key (`start`).

Where the batch is written: a local run on a SQLite store whose sink writes local files (`local`: a file sink)
writes it from the event loop itself, as the answer writer commits its groups (`answers.py`): a batch of 100 is
about 2 ms of work there (encoding, one fsync, one SQLite transaction), and a worker thread doing the same work
holds the interpreter lock against the busy loop for as long, then waits for it back at each call it makes
(measured in paired runs at 0 ms latency: about 7% more time an item). Any other sink or store, whose writes are
round trips, is written from a worker thread, one hand-off a batch, and so is a batch of more than `INLINE_ROWS`
items.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from typing import Any

from ..io import Row, SinkError
from ..io.deadletter import DeadLetter
from .context import RunContext
from .ledger import DONE, FAILED, SKIPPED, Ledger, Outcome
from .state import ItemFailure

INLINE_ROWS = 1000
"""The largest batch an `inline` writer writes from the event loop (about 15 ms there): a larger one, which would
hold up the calls in flight and a stop's signal for longer, goes to a worker thread."""
SKIPPING = ("skip", "alert", "retry")
"""Failure strategies that send an item to the dead letter and go on."""


@dataclass(slots=True)
class Item:
    index: int
    key: str
    row: Row
    fingerprint: str | None = None
    """The item's work (`ItemWorker.fingerprint`), recorded with its outcome."""
    recorded: dict[str, tuple[str, Any]] | None = None
    """Answers an earlier run recorded for the item: call id -> (request fingerprint, output)."""


class Batch:
    """One batch from the source: its items' results, written when the last one is in."""

    __slots__ = ("commits", "dead", "done", "number", "outcomes", "pending", "rows")

    def __init__(self, number: int, pending: int) -> None:
        self.number = number
        self.pending = pending
        self.commits: set[asyncio.Future[None]] = set()
        """The commits of its items' answers: the batch is written once they are done."""
        self.rows: list[tuple[int, Row]] = []
        """(row number, output row): written in input order, whatever order the calls finished in."""
        self.outcomes: list[Outcome] = []
        self.dead: list[dict[str, Any]] = []
        self.done = asyncio.Event()


class Writer:
    """Records what happened to each item and writes each batch once it is complete."""

    def __init__(self, run: RunContext, sink: Any, deadletter: DeadLetter, ledger: Ledger, *, inline: bool = False) -> None:
        self.run = run
        self.inline = inline
        """Write each batch from the event loop itself, not a worker thread (see the module)."""
        self.sink = sink
        self.deadletter = deadletter
        self.ledger = ledger
        self.open: list[Batch] = []
        """Batches read and not yet written."""
        self.in_flight_keys: set[str] = set()
        """Keys read in this run and not yet recorded: a repeated key is not processed twice."""
        self.in_order = run.shape.source.batch_strategy == "sequential"
        self._lock = asyncio.Lock()
        self._flushing = False
        """A worker is writing the complete batches at the head of `open` (`finished`)."""
        self._room = asyncio.Event()
        run.on_stop.append(self._room.set)  # a stopped run's open batches are never all done: the reader goes on
        self._acknowledging: dict[asyncio.Future[None], int] = {}
        """Items waiting for each commit of answers, to be counted when it is done."""

    async def start(self, resume: bool) -> None:
        """Open the sink and the dead letter. What they hold from a run that was killed between a write and its
        record is not taken as done: the ledger alone says what is done, and such an item is written again from
        its recorded answers (no call is made), replacing its row by key."""
        await asyncio.to_thread(self.sink.open, resume=resume)
        if resume:
            await asyncio.to_thread(self.deadletter.open)

    # -- outcomes -----------------------------------------------------------------------------------------

    def succeeded(
        self, batch: Batch, item: Item, outputs: dict[str, Any], attempts: int, *, commit: asyncio.Future[None] | None = None
    ) -> None:
        """An item done; with `commit`, it is acknowledged (counted) when its answers are committed."""
        run = self.run
        if run.shape.collecting:
            batch.outcomes.append(Outcome(key=item.key, status=DONE, attempts=max(1, attempts), output={"row": item.row, "outputs": outputs}, fingerprint=item.fingerprint, input=item.row, result=outputs))
        else:
            key_field = run.key_field
            row = {key_field: item.row.get(key_field, item.key) if key_field != "row" else item.index}
            for name in run.shape.source.keep:
                if name in item.row:
                    row[name] = item.row[name]
            row.update(outputs)
            batch.rows.append((item.index, row))
            batch.outcomes.append(Outcome(key=item.key, status=DONE, attempts=max(1, attempts), fingerprint=item.fingerprint, input=item.row, result=outputs))
            if run.options.keep_outputs:
                run.result.outputs.append(row)
        if commit is None or commit.done():
            run.progress.succeeded += 1
            return
        batch.commits.add(commit)
        waiting = self._acknowledging.get(commit)
        if waiting is None:
            commit.add_done_callback(self._acknowledge)
        self._acknowledging[commit] = (waiting or 0) + 1

    def _acknowledge(self, commit: asyncio.Future[None]) -> None:
        count = self._acknowledging.pop(commit, 0)
        if not commit.cancelled() and commit.exception() is None:
            self.run.progress.succeeded += count

    def failed(self, batch: Batch, item: Item, stage: str, message: str, attempts: int, strategy: str) -> None:
        run = self.run
        if len(run.result.errors) < 1000:
            run.result.errors.append(ItemFailure(key=item.key, stage=stage, error=message, attempts=attempts))
        hooks = run.options.hooks
        if hooks.on_item_failed:
            outcome = "skipped" if strategy in SKIPPING else "failed"
            hooks.on_item_failed(key=item.key, stage=stage, error=message, attempts=attempts, outcome=outcome)
        if strategy == "alert" or run.shape.alert_on.get({"input": "input_error", "prompt": "prompt_failure"}[stage], False):
            run.alert(stage, item.key, message)
        if strategy in SKIPPING:
            batch.dead.append({"key": item.key, "stage": stage, "input": item.row, "error": message, "attempts": attempts})
            batch.outcomes.append(Outcome(key=item.key, status=SKIPPED, attempts=attempts, error=message, fingerprint=item.fingerprint, input=item.row))
            run.progress.skipped += 1
            return
        batch.outcomes.append(Outcome(key=item.key, status=FAILED, attempts=attempts, error=message, fingerprint=item.fingerprint, input=item.row))
        run.progress.failed += 1
        run.stop("failed", f"item {item.key} failed ({stage}): {message}")

    async def input_error(self, batch: Batch, message: str, *, key: str, row: Row) -> None:
        self.failed(batch, Item(index=-1, key=key, row=row), "input", message, 0, self.run.shape.on_input)
        await self.finished(batch)

    async def finished(self, batch: Batch) -> None:
        """One item of `batch` is done; the last one writes the batch (in order: with every complete batch at
        the head of the open ones)."""
        batch.pending -= 1
        if batch.pending > 0:
            return
        if not self.in_order:
            await self.flush(batch)
            with contextlib.suppress(ValueError):
                self.open.remove(batch)
            self._room.set()
            return
        # One worker at a time writes the complete batches at the head; the others go back to their items (the
        # one writing checks the head again after each write, so it sees a batch another completes meanwhile).
        if self._flushing:
            return
        self._flushing = True
        try:
            while self.open and self.open[0].pending <= 0:
                head = self.open[0]
                await self.flush(head)
                with contextlib.suppress(ValueError):
                    self.open.remove(head)
                self._room.set()
        finally:
            self._flushing = False

    async def room(self, limit: int) -> None:
        """Wait until fewer than `limit` batches are open, or the run stops: the reader reads no further ahead of
        the writes."""
        while len(self.open) >= limit and self.run.stopping is None:
            self._room.clear()
            await self._room.wait()

    # -- writing ------------------------------------------------------------------------------------------

    async def flush_open(self) -> None:
        """After a stop: write what is done of the batches whose other items were never started."""
        for batch in list(self.open):
            await self.flush(batch)

    async def flush(self, batch: Batch) -> None:
        """Write a batch's rows and dead letters durably, then record its outcomes."""
        async with self._lock:
            if batch.done.is_set():
                return
            if batch.commits and not await self._committed(batch):
                return
            rows = [row for _, row in sorted(batch.rows, key=lambda entry: entry[0])]
            dead, outcomes = batch.dead, batch.outcomes
            batch.rows, batch.dead, batch.outcomes = [], [], []
            # The rows, then the dead letters, then the record: in the loop (`inline`), else one hand-off to a
            # worker thread a batch.
            if self.inline and len(outcomes) <= INLINE_ROWS:
                failed = self._write_batch(rows, dead, outcomes)
            else:
                failed = await asyncio.to_thread(self._write_batch, rows, dead, outcomes)
            if failed is not None:
                outcomes = await self._output_error(rows, outcomes, failed)
                await asyncio.to_thread(self.ledger.record, self.run.scope, self.run.run_id, outcomes)
            self.in_flight_keys.difference_update(o.key for o in outcomes)
            if batch.pending <= 0:
                batch.done.set()

    async def _committed(self, batch: Batch) -> bool:
        """Wait for the batch's answers to commit. If the state store failed, the batch is neither written nor
        recorded (its items are redone by a resume) and the run stops."""
        commits, batch.commits = batch.commits, set()
        failures = [r for r in await asyncio.gather(*commits, return_exceptions=True) if isinstance(r, BaseException)]
        if not failures:
            return True
        self.run.stop("failed", f"the answers could not be recorded: {failures[0]}")
        batch.rows, batch.dead, batch.outcomes = [], [], []
        if batch.pending <= 0:
            batch.done.set()
        return False

    def _write_batch(self, rows: list[Row], dead: list[dict[str, Any]], outcomes: list[Outcome]) -> str | None:
        """In a worker thread: write durably, then record. Returns the sink's error instead of recording."""
        if rows:
            try:
                self.sink.write(rows)
            except SinkError as error:
                return str(error)
        if dead:
            self.deadletter.write(dead)
            self.run.progress.dead_lettered += len(dead)
        self.ledger.record(self.run.scope, self.run.run_id, outcomes)
        return None

    async def _output_error(self, rows: list[Row], outcomes: list[Outcome], message: str) -> list[Outcome]:
        run = self.run
        strategy = run.shape.on_output
        if run.shape.alert_on.get("output_error") or strategy == "alert":
            run.alert("output", None, message)
        key_field = run.key_field
        keys = {str(r.get(key_field)) for r in rows}
        run.progress.succeeded -= len(rows)
        if strategy in ("skip", "alert"):
            await asyncio.to_thread(
                self.deadletter.write,
                [{"key": str(r.get(key_field)), "stage": "output", "input": r, "error": message, "attempts": 1} for r in rows],
            )
            run.progress.skipped += len(rows)
            run.progress.dead_lettered += len(rows)
            return [
                replace(o, status=SKIPPED, attempts=1, error=message, output=None, result=None) if o.key in keys else o
                for o in outcomes
            ]
        run.progress.failed += len(rows)
        run.stop("failed", f"the output could not be written: {message}")
        return [o for o in outcomes if o.key not in keys]
