"""Running one job's plan: rows stream from the source through the prompt calls to the sink.

The immutable `Plan` is kept apart from the mutable run state (`context.RunContext`): items move through
pending (not yet read), ready (queued), in flight, and then succeeded, skipped or failed; the counts are in
`Progress`, the outcomes in the ledger. `JobRun` sets the run up and hands the work to collaborators with one
job each:

- the reader (`reader.py`) reads the source into a bounded queue, skipping what is already done;
- workers take items from the queue, and the item worker (`calls.py`) makes each item's chain of prompt
  calls; there are twice as many workers as `execution.concurrency` slots, so that an item waiting out a retry
  never leaves a slot idle (the slots bound the calls in flight);
- the writer (`writer.py`) writes each batch to the sink when all its items are done, then records it in the
  ledger;
- the gatherer (`gather.py`) makes the `reduce` and `fan_in` calls once every item is done.

A stop (a `fail` strategy, Ctrl-C, SIGTERM, `execution.timeout`) stops reading and ends every wait for a turn
at a rate limiter or for a retry at once. A signal gives the calls in flight `RunOptions.grace` seconds, then
cancels them; `execution.timeout` cancels them at once. A second signal exits the process at once (what was
written is durable: batches are fsynced and recorded after, publishing is a rename). Whatever is done is written
and recorded; items cut short are left for a resume, and a stopped or timed-out run publishes the rows it
finished to a file sink's target, merged by key (`FileSink.publish_finished`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...compiler.ir import Plan
from ...compiler.ir.common import workspace_paths_of
from ..io import IOContext, SinkError, SourceError, sinks, sources
from ..io.dbconn import DatabaseError, parse_database_url
from ..io.deadletter import DeadLetter
from ..io.partitions import partition_source
from ..providers.base import ProviderError
from ..secrets import MissingSecret, reveal
from .answers import AnswerWriter
from .cache import ResponseCache
from .calls import ItemFailed, ItemWorker
from .collector import paced
from .context import CallsStopped, RunContext
from .gather import Gatherer
from .ledger import Ledger
from .reader import Reader, Survey, count_items, detect_key_field, survey
from .state import Hooks, ItemFailure, Progress, RunOptions, RunResult, RunStopped, chain_hooks, verdict
from .writer import Batch, Item, Writer

__all__ = [
    "DEFAULT_STATE",
    "Hooks",
    "ItemFailure",
    "JobRun",
    "Progress",
    "RunOptions",
    "RunResult",
    "RunStopped",
    "chain_hooks",
    "run_job",
]

DEFAULT_STATE = ".sleipnir/state.db"
BOUND = 2
"""What a kill can lose, the calls in flight plus the answers not yet committed (`AnswerWriter.budget`), is at
most this many times `execution.concurrency` in a local run: the workers never wait for their own commits, so
grouped commits cost no throughput."""
LEASE_SECONDS = 0.5
"""How often a run of a partition that another run holds tries its lease again (`JobRun._lease`)."""
PARTITION_BOUND = 1
"""The same bound in a `dask` worker's run of a partition: a worker killed costs at most its concurrency in
calls. A call that waits for a unit has the answers waiting committed at once (`Budget`'s `short`)."""


class JobRun:
    """One run of one job plan."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.context = RunContext(plan, options)
        self.plan = plan
        self.options = options
        self.run_id = self.context.run_id
        self.result = self.context.result
        self.progress = self.context.progress
        self.signalled = False
        self.item_worker: ItemWorker | None = None
        """The run's item worker once it runs (its rate limiters: a `dask` worker shares their pauses)."""

    @property
    def stopping(self) -> RunStopped | None:
        return self.context.stopping

    def stop(self, reason: str, message: str) -> None:
        """Stop the run from outside (serve, when it shuts down): no new items; what is in flight finishes."""
        self.context.stop(reason, message)

    # -- the run ------------------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run the job to its end (or its stop); the result says how it went."""
        with paced():
            return await self._run()

    async def _run(self) -> RunResult:
        run = self.context
        started = time.monotonic()
        hooks = self.options.hooks
        part = self.options.partition
        """A `dask` worker runs one partition, under its lease; the driver holds the lock, records the run and
        publishes."""
        distributed = part is None and not run.no_input and (self.options.engine or run.shape.engine) == "dask"
        worker = self.item_worker = ItemWorker(run)
        ledger: Ledger | None = None
        sink = None
        complete = False
        try:
            context = self._io_context()
            worker.prepare()
            if self.options.cache:
                worker.cache = ResponseCache(Path(self.plan.root) / ".sleipnir" / "cache.db")
            ledger = await asyncio.to_thread(self._open_ledger, context)
            if part is not None:
                await self._lease(ledger, part.number)
            if part is None and not await asyncio.to_thread(ledger.lock, run.scope):
                raise RunStopped(
                    "failed",
                    f"another run of `{self.plan.name}` over the same input is in progress (its state is "
                    f"{self.options.state or DEFAULT_STATE}); wait for it to end, or stop it, and run again",
                )
            if part is None:
                await asyncio.to_thread(self._compare_work, ledger, worker)
            node = run.shape.source
            if not run.key_field:
                run.key_field = part.key_field if part is not None else ""
            if not run.key_field:
                run.key_field = await asyncio.to_thread(detect_key_field, node, context, self.options.input_path)
            sink = sinks.make_sink(run.shape.sink, key_field=run.key_field, context=context)
            if part is not None and hasattr(sink, "use_partition_spool"):
                sink.use_partition_spool(part.number)
            self.result.dead_letter = run.shape.sink.dead_letter
            context.inside(run.shape.sink.dead_letter, SinkError)
            deadletter = DeadLetter(run.shape.sink.dead_letter, self.plan.root, plan_id=self.plan.id, job=self.plan.name)
            resume = not self.options.fresh and await asyncio.to_thread(ledger.has_items, run.scope)
            answers = not self.options.fresh and await asyncio.to_thread(ledger.has_answers, run.scope)
            # A local run on a SQLite store commits its answers from the loop, and writes its batches there too when
            # its sink writes local files (`answers.py`, `writer.py`).
            in_loop = part is None and not ledger.postgres
            if self.options.record_answers:
                bound = PARTITION_BOUND if part is not None else BOUND
                worker.answers = AnswerWriter(ledger, run.scope, bound=bound * run.shape.concurrency, inline=in_loop)
            writer = Writer(run, sink, deadletter, ledger, inline=in_loop and getattr(sink, "local", False))
            await writer.start(resume)
            if resume and part is None:
                run.notice("resuming: items already done are skipped (pass --fresh to start over)")
            # The sink is open before the source: a SQLite sink switches its file to WAL, which a reader holding
            # the same file would block.
            source = None
            if part is not None:
                source = partition_source(node, context, input_path=self.options.input_path, partition=part)
                self.progress.total = part.size
            else:
                if not (run.no_input or distributed):
                    source = sources.make_source(node, context=context, input_path=self.options.input_path)
                self.progress.total = await asyncio.to_thread(
                    count_items, self.plan, node, context, input_path=self.options.input_path, limit=self.options.limit, environ=run.environ
                )
            if hooks.on_start:
                hooks.on_start(run_id=self.run_id, plan=self.plan)
            if part is None:
                await asyncio.to_thread(ledger.start_run, self.run_id, self.plan.id, self.plan.name)
            with self._signals(), self._expiry():
                if distributed:
                    from ..distributed.driver import distribute

                    await distribute(self, context, sink, resume=resume)
                else:
                    reader = Reader(run, ledger, writer, worker, resume=resume, answers=answers)
                    await self._stream(source, reader, worker, writer)
                if run.shape.collecting and run.stopping is None and part is None:
                    with contextlib.suppress(CallsStopped):  # a stop while a gather call waited: raised below
                        await self._deadline(Gatherer(run, worker, ledger, sink).collect())
            if run.stopping is not None:
                raise run.stopping
            # `--retry-failed` leaves items never tried undone on purpose: its output is not the whole run yet.
            complete = not self.options.retry_failed and part is None
            self.result.status, why = verdict(self.progress, run.shape.max_error_rate)
            self.result.message = why or self.result.message
        except RunStopped as stop:
            self.result.status, self.result.message = stop.reason, stop.message
        except (SourceError, SinkError, MissingSecret, ProviderError, DatabaseError, ValueError) as error:
            self.result.status, self.result.message = "failed", str(error)
        except Exception as error:  # a fault of ours, or a hook's: recorded as failed, never left `running`
            self.result.status, self.result.message = "failed", f"the run ended on an error: {type(error).__name__}: {error}"
            raise
        except asyncio.CancelledError:  # the run's task cancelled from outside (the caller, serve's second signal)
            self.result.status = "interrupted"
            self.result.message = "cancelled: what is done is written; run the same command to resume"
            raise
        finally:
            self.progress.limits = worker.limits()
            await worker.aclose()
            if sink is not None:
                try:
                    await asyncio.to_thread(sink.close, complete=complete)
                    publish = getattr(sink, "publish_finished", None)
                    if publish is not None and part is None and self.result.status in ("interrupted", "timed_out"):
                        await asyncio.to_thread(publish)
                except SinkError as error:
                    self.result.status, self.result.message = "failed", str(error)
            self.result.wall_time = time.monotonic() - started
            if ledger is not None:
                with contextlib.suppress(Exception):
                    if part is None:
                        await asyncio.to_thread(ledger.finish_run, self.run_id, self.result.status, run.summary())
                    await asyncio.to_thread(ledger.close)
        self._announce()
        return self.result

    async def survey(self) -> Survey:
        """What the run would call, without calling anything: new, stale, failed-before and done items."""
        run = self.context
        worker = ItemWorker(run)
        worker.prepare()
        context = self._io_context()
        url = context.connection(self.options.state or DEFAULT_STATE)
        database = parse_database_url(url, root=self.plan.root)
        # A dry run leaves no trace: with no state store yet, nothing was done before.
        fresh = database.path is not None and not Path(database.path).exists()
        ledger = None if fresh else await asyncio.to_thread(Ledger, url, self.plan.root)
        source = None
        try:
            node = run.shape.source
            if not run.key_field:
                run.key_field = await asyncio.to_thread(detect_key_field, node, context, self.options.input_path)
            if not run.no_input:
                source = sources.make_source(node, context=context, input_path=self.options.input_path)
            return await survey(run, ledger, worker, source)
        finally:
            if source is not None:
                await asyncio.to_thread(source.close)
            if ledger is not None:
                await asyncio.to_thread(ledger.close)
            await worker.aclose()

    def _announce(self) -> None:
        hooks = self.options.hooks
        if self.result.ok:
            if hooks.on_notify and self.context.shape.sink.options.get("on_complete") == "notify":
                hooks.on_notify(job=self.plan.name, run_id=self.run_id, result=self.result)
            if hooks.on_complete:
                hooks.on_complete(result=self.result)
        elif hooks.on_error:
            hooks.on_error(error=self.result.message or self.result.status, result=self.result)

    def _io_context(self) -> IOContext:
        environ = self.context.environ
        connections = {c.name: str(reveal(c.url, environ)) for c in self.plan.resources.connections}
        given = self.options.input_path
        run = {
            "run.id": self.run_id,
            "run.date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "trigger.file_stem": Path(given).stem if given else "",
        }
        return IOContext(
            root=self.plan.root,
            environ=environ,
            connections=connections,
            job=self.plan.name,
            run=run,
            paths=workspace_paths_of(self.plan),
        )

    def _compare_work(self, ledger: Ledger, worker: ItemWorker) -> None:
        """Name the calls whose work changed since the job's last run, then remember this run's."""
        scope = self.context.scope
        before = {} if self.options.fresh else ledger.work(scope)
        changed = sorted(call for call, fingerprint in worker.work.items() if before and before.get(call) != fingerprint)
        if changed:
            self.result.changed_prompts = changed
            self.context.notice(
                f"changed since the last run: {', '.join(changed)}; items done before are redone "
                "(--keep-stale keeps their results)"
            )
        ledger.set_work(scope, worker.work)

    async def _lease(self, ledger: Ledger, number: int) -> None:
        """Take the partition's lease in the state store (`Ledger.lock`), waiting while another run of the
        partition holds it: Dask may run one partition twice at once (a worker presumed dead that still runs it, a
        task retried), and two runs must not call the same items. The second runs once the first lets go (it
        ends, or its process or its connection does), and finds its items done (a stop ends the wait)."""
        run = self.context
        waited = time.monotonic()
        while not await asyncio.to_thread(ledger.lock, f"{run.scope}:partition:{number}"):
            if run.stopping is not None:
                raise run.stopping
            await asyncio.sleep(LEASE_SECONDS)
        waited = time.monotonic() - waited
        if waited >= LEASE_SECONDS:
            run.notice(f"partition {number} ran elsewhere at the same time: it ran here after that run ended ({waited:.1f} s later)")

    def _open_ledger(self, context: IOContext) -> Ledger:
        url = context.connection(self.options.state or DEFAULT_STATE)
        ledger = Ledger(url, self.plan.root)
        if self.options.fresh:
            ledger.reset(self.context.scope)
        return ledger

    # -- stops --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _expiry(self) -> Iterator[None]:
        """`execution.timeout`: at the deadline the run stops and its calls in flight are cancelled at once."""
        timeout = self.context.shape.timeout
        if not timeout:
            yield
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout) - (time.monotonic() - self.progress.started)
        handle = loop.call_at(deadline, self._expire, timeout)
        try:
            yield
        finally:
            handle.cancel()

    def _expire(self, timeout: Any) -> None:
        self.context.stop("timed_out", f"the job passed its execution.timeout of {timeout}s")
        self.context.halt()

    async def _deadline(self, work: Any) -> None:
        timeout = self.context.shape.timeout
        if not timeout:
            await work
            return
        remaining = float(timeout) - (time.monotonic() - self.progress.started)
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await work
        except TimeoutError:
            self.context.stop("timed_out", f"the job passed its execution.timeout of {timeout}s")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.options.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stop_on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _stop_on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        run = self.context
        if self.signalled:
            # A second signal: out at once. Batches are fsynced before they are recorded and a publish is a
            # rename, so what is finished stays durable and nothing is left half-written.
            os._exit(130)
        self.signalled = True
        grace = self.options.grace
        run.stop("interrupted", f"stopped by {name}: what is done is written; run the same command to resume")
        run.notice(f"{name}: stopping; calls in flight get {grace:g}s to finish (a second {name} exits at once)")
        asyncio.get_running_loop().call_later(grace, run.halt)

    # -- streaming items ----------------------------------------------------------------------------------

    async def _stream(self, source: Any, reader: Reader, worker: ItemWorker, writer: Writer) -> None:
        run = self.context
        concurrency = run.shape.concurrency
        queue: asyncio.Queue[tuple[Batch, Item] | None] = asyncio.Queue(maxsize=concurrency * 2)
        # What a kill can lose is bounded by the answer writer's budget (`BOUND`, `PARTITION_BOUND`); workers never
        # wait for their own commit.
        workers = [asyncio.create_task(self._work(queue, worker, writer)) for _ in range(2 * concurrency)]
        reporter = asyncio.create_task(self._report())
        try:
            await reader.read(source, queue)
        finally:
            for _ in workers:
                await queue.put(None)
            results = await asyncio.gather(*workers, return_exceptions=True)
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            # A stop leaves batches with items never started: write what is done of them.
            await writer.flush_open()
            if source is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(source.close)
            for outcome in results:
                if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                    raise outcome
        run.progress_now()

    async def _work(self, queue: asyncio.Queue[Any], worker: ItemWorker, writer: Writer) -> None:
        """One worker: items from the queue, through their calls, to the writer."""
        run = self.context
        progress = run.progress
        task = asyncio.current_task()
        assert task is not None
        while True:
            entry = await queue.get()
            if entry is None:
                return
            batch, item = entry
            if run.stopping is not None:
                continue  # never started: left for a resume
            progress.in_flight += 1
            run.calling.add(task)
            commits: list[asyncio.Future[None]] = []
            try:
                outputs, attempts, commits = await worker.outputs(item.row, key=item.key, recorded=item.recorded)
            except ItemFailed as failed:
                writer.failed(batch, item, failed.stage, failed.message, failed.attempts, failed.strategy)
                await writer.finished(batch)
                continue
            except CallsStopped:
                continue  # cut short by a stop: left for a resume
            except asyncio.CancelledError:
                if not run.halted or task.cancelling() > 1:
                    raise
                task.uncancel()  # the stop's grace period ended this item's calls: left for a resume
                continue
            finally:
                run.calling.discard(task)
                progress.in_flight -= 1
            # The item is acknowledged (counted, and its batch written) once its answers commit; its worker goes
            # on to the next item meanwhile, within the budget.
            writer.succeeded(batch, item, outputs, attempts, commit=commits[-1] if commits else None)
            await writer.finished(batch)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_every)
            self.context.progress_now()


def run_job(plan: Plan, options: RunOptions | None = None) -> RunResult:
    """Run a job plan to its end (a fresh event loop); see `JobRun`."""
    return asyncio.run(JobRun(plan, options or RunOptions()).run())
