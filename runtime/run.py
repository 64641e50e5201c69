"""Running one job's plan: rows stream from the source through the prompt calls to the sink.

The immutable `Plan` is kept apart from the mutable run state: items move through pending (not yet read), ready
(queued), in flight, and then succeeded, skipped or failed; the counts are in `Progress`, the outcomes in the
ledger. What never changes during a run (rendered system messages, compiled templates and schema validators,
provider clients) is prepared once.

- `execution.concurrency` workers take items from a bounded queue, so memory stays flat however many rows the
  source has; a semaphore of the same size bounds the calls in flight (a stack's parallel group makes several
  calls for one item). An item moves on to its next prompt as soon as the previous one is done.
- A batch (`input.batch_size`) is written to the sink when all its items are done, then recorded in the ledger.
  `batch_strategy: sequential` reads the next batch only after that; `parallel` keeps reading.
- `reduce` and `fan_in` wait for every output (kept in memory and in the ledger, so a resume can rebuild them).
- A stop (a `fail` strategy, Ctrl-C, SIGTERM, `execution.timeout`) stops reading, lets the calls in flight end,
  writes what is done, and records it: the run can be resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compiler.ir import Merge, Plan, PromptCall, Provider, Reduce, Sink, Source, Split, thaw
from ..compiler.lower import suffix_format
from . import sinks, sources
from .cache import ResponseCache, cache_key
from .conditions import holds
from .counting import counter_for
from .dbconn import DatabaseError
from .deadletter import DeadLetter
from .io import IOContext, Row, RowError, SinkError, SourceError
from .ledger import DONE, FAILED, FINAL, SKIPPED, Ledger, Outcome
from .limits import Attempts, RateLimiter, with_retries
from .providers.base import ChatRequest, ProviderConfig, ProviderError
from .providers.registry import ProviderPool, resolve_api_key, resolve_endpoint
from .render import ItemError, PreparedCall, ReplyError
from .secrets import MissingSecret, reveal
from .state import Hooks, ItemFailure, Progress, RunOptions, RunResult, RunStopped, chain_hooks

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
DEFAULT_COMPLETION_TOKENS = 256


class _Batch:
    """One batch from the source: its items' results, written when the last one is in."""

    __slots__ = ("dead", "done", "number", "outcomes", "pending", "rows")

    def __init__(self, number: int, pending: int) -> None:
        self.number = number
        self.pending = pending
        self.rows: list[tuple[int, Row]] = []
        """(row number, output row): written in input order, whatever order the calls finished in."""
        self.outcomes: list[Outcome] = []
        self.dead: list[dict[str, Any]] = []
        self.done = asyncio.Event()


@dataclass(slots=True)
class _Item:
    index: int
    key: str
    row: Row


class JobRun:
    """One run of one job plan."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        if plan.kind != "job":
            raise ValueError("JobRun runs a job plan; run a pipeline with PipelineRun")
        self.plan = plan
        self.options = options
        self.environ = options.environ
        self.run_id = uuid.uuid4().hex[:16]
        self.progress = Progress()
        self.result = RunResult(run_id=self.run_id, plan_id=plan.id, job=plan.name, status="running", progress=self.progress)
        self.scope = _ledger_scope(plan.id, options.input_path) + (f":{options.scope}" if options.scope else "")
        """What the ledger keys items under: the plan id, and the `--input` file when one replaces the source."""
        self.source_node = next(n for n in plan.nodes if isinstance(n, Source))
        self.sink_node = next(n for n in plan.nodes if isinstance(n, Sink))
        self.split = next((n for n in plan.nodes if isinstance(n, Split)), None)
        self.gathers = [n for n in plan.nodes if isinstance(n, Reduce | Merge)]
        calls = [n for n in plan.nodes if isinstance(n, PromptCall)]
        levels = [[n for n in level if isinstance(n, PromptCall)] for level in plan.levels()]
        self.item_levels = [[n for n in level if n.scope == "item"] for level in levels]
        self.item_levels = [level for level in self.item_levels if level]
        self.group_levels = [lv for lv in ([n for n in level if n.scope == "group"] for level in levels) if lv]
        self.all_calls = [n for n in calls if n.scope == "all"]
        self.collecting = bool(self.gathers or self.split)
        execution = thaw(plan.settings.get("execution") or {})
        self.concurrency = int(execution.get("concurrency") or 10)
        self.timeout = execution.get("timeout")
        handling = thaw(plan.settings.get("error_handling") or {})
        self.on_input = str((handling.get("on_input_error") or {}).get("strategy", "fail"))
        self.on_output = str((handling.get("on_output_error") or {}).get("strategy", "fail"))
        self.alert_on = {
            stage: bool((handling.get(f"on_{stage}") or {}).get("alert"))
            for stage in ("prompt_failure", "input_error", "output_error")
        }
        self.stopping: RunStopped | None = None
        self.key_field = self.source_node.key or ""
        self.prepared: dict[str, PreparedCall] = {}
        self.pool = ProviderPool()
        self.providers: dict[str, Any] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.served: dict[str, str] = {}
        self.cache: ResponseCache | None = None
        self.in_flight_keys: set[str] = set()
        self.ledger_has_items = True
        """Keys read in this run and not yet recorded: a repeated key is not processed twice."""

    # -- set-up -------------------------------------------------------------------------------------------

    def _context(self) -> IOContext:
        connections = {c.name: str(reveal(c.url, self.environ)) for c in self.plan.resources.connections}
        return IOContext(root=self.plan.root, environ=self.environ, connections=connections, job=self.plan.name)

    def _prepare_calls(self) -> None:
        providers = {p.name: p for p in self.plan.resources.providers}
        job_limits = thaw(self.plan.resources.rate_limit)
        for node in self.plan.nodes:
            if not isinstance(node, PromptCall):
                continue
            self.prepared[node.id] = PreparedCall(node, self.plan.resources.prompt(node.prompt, node.version))
            spec = providers.get(node.provider) or Provider(name=node.provider, protocol=node.provider)
            config = self._provider_config(node, spec)
            self.providers[node.id] = self.pool.get(config)
            # Tokens are counted under the model that answered: a fallback to `mock` costs nothing.
            self.served[node.id] = "mock" if config.protocol == "mock" and spec.protocol != "mock" else node.model
            if node.provider not in self.limiters:
                # One bucket per provider: the job's own limits, else the provider's from sleipnir.yaml.
                self.limiters[node.provider] = RateLimiter(
                    job_limits.get("requests_per_minute") or spec.requests_per_minute,
                    job_limits.get("tokens_per_minute") or spec.tokens_per_minute,
                )

    def _provider_config(self, node: PromptCall, spec: Provider) -> ProviderConfig:
        environ = self.environ
        if spec.protocol == "mock":
            return ProviderConfig(name=spec.name, protocol="mock")
        explicit_key = reveal(node.options.get("api_key"), environ) if node.options.get("api_key") else None
        configured_env = spec.api_key.names[0] if spec.api_key is not None else None
        api_key = resolve_api_key(explicit_key, configured_env, environ)
        endpoint = reveal(node.options.get("endpoint"), environ) if node.options.get("endpoint") else None
        base_url = resolve_endpoint(endpoint, reveal(spec.base_url, environ) if spec.base_url else None, environ)
        reachable = endpoint or spec.base_url or environ.get("OPENAI_BASE_URL")
        if not api_key and not reachable and spec.fallback == "mock":
            self._notice(
                f"no API key for provider `{spec.name}` (set {configured_env or 'OPENAI_API_KEY'}): "
                "calls go to the offline `mock` provider (sleipnir.yaml fallback_provider)"
            )
            return ProviderConfig(name="mock", protocol="mock")
        return ProviderConfig(name=spec.name, protocol=spec.protocol, base_url=base_url, api_key=api_key)

    def _notice(self, text: str) -> None:
        if text in self.result.notices:
            return
        self.result.notices.append(text)
        if self.options.hooks.on_notice:
            self.options.hooks.on_notice(message=text)

    # -- the run ------------------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        started = time.monotonic()
        hooks = self.options.hooks
        ledger: Ledger | None = None
        sink = None
        complete = False
        try:
            context = self._context()
            self._prepare_calls()
            if self.options.cache:
                self.cache = ResponseCache(Path(self.plan.root) / ".sleipnir" / "cache.db")
            ledger = await asyncio.to_thread(self._open_ledger, context)
            self.ledger = ledger
            if not self.key_field:
                self.key_field = await asyncio.to_thread(self._detect_key_field, context)
            sink = sinks.make_sink(self.sink_node, key_field=self.key_field, context=context)
            self.deadletter = DeadLetter(self.sink_node.dead_letter, self.plan.root, plan_id=self.scope, job=self.plan.name)
            resume = not self.options.fresh and await asyncio.to_thread(ledger.has_items, self.scope)
            # A run with nothing recorded before has nothing to look up: every key it reads is new to the ledger.
            self.ledger_has_items = resume
            await self._reconcile(sink, resume)
            # The sink is open before the source: a SQLite sink switches its file to WAL, which a reader holding
            # the same file would block.
            source = sources.make_source(self.source_node, context=context, input_path=self.options.input_path)
            self.progress.total = await asyncio.to_thread(self._count, context)
            if hooks.on_start:
                hooks.on_start(run_id=self.run_id, plan=self.plan)
            await asyncio.to_thread(ledger.start_run, self.run_id, self.scope, self.plan.name)
            with self._signals():
                await self._deadline(self._stream(source, sink))
                if self.collecting and self.stopping is None:
                    await self._deadline(self._collect(sink))
            if self.stopping is not None:
                raise self.stopping
            # `--retry-failed` leaves items never tried undone on purpose: its output is not the whole run yet.
            complete = not self.options.retry_failed
            self.result.status = "succeeded" if self.progress.failed == 0 else "failed"
        except RunStopped as stop:
            self.result.status, self.result.message = stop.reason, stop.message
        except (SourceError, SinkError, MissingSecret, ProviderError, DatabaseError, ValueError) as error:
            self.result.status, self.result.message = "failed", str(error)
        finally:
            with contextlib.suppress(Exception):
                await self.pool.aclose()
            if self.cache is not None:
                self.cache.close()
            if sink is not None:
                try:
                    await asyncio.to_thread(sink.close, complete=complete)
                except SinkError as error:
                    self.result.status, self.result.message = "failed", str(error)
            self.result.wall_time = time.monotonic() - started
            if ledger is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        ledger.finish_run, self.run_id, self.result.status, self._summary()
                    )
                    await asyncio.to_thread(ledger.close)
        if self.result.ok:
            if hooks.on_notify and self.sink_node.options.get("on_complete") == "notify":
                hooks.on_notify(job=self.plan.name, run_id=self.run_id, result=self.result)
            if hooks.on_complete:
                hooks.on_complete(result=self.result)
        elif hooks.on_error:
            hooks.on_error(error=self.result.message or self.result.status, result=self.result)
        return self.result

    def _summary(self) -> dict[str, Any]:
        metrics = self.result.metrics
        return {**metrics, "message": self.result.message}

    def _detect_key_field(self, context: IOContext) -> str:
        """Without `input.key`: an `id` field, else the first `*_id` field of the first row, else the row number."""
        source = sources.make_source(self.source_node, context=context, input_path=self.options.input_path)
        try:
            first = next(iter(source.batches(1)), [])
        finally:
            source.close()
        row = next((r for r in first if not isinstance(r, RowError)), None)
        if row is None:
            return "row"
        return "id" if "id" in row else next((k for k in row if k.endswith("_id")), "row")

    def _open_ledger(self, context: IOContext) -> Ledger:
        url = self.options.state or DEFAULT_STATE
        url = context.connection(url)
        ledger = Ledger(url, self.plan.root)
        if self.options.fresh:
            ledger.reset(self.scope)
        return ledger

    async def _reconcile(self, sink: Any, resume: bool) -> None:
        """What the sink and the dead letter already hold is done, whatever the ledger says (a kill may have
        come between a write and its record)."""
        written = await asyncio.to_thread(sink.open, resume=resume)
        dead = await asyncio.to_thread(self.deadletter.open) if resume else set()
        outcomes = [Outcome(key=k, status=DONE) for k in written] + [Outcome(key=k, status=SKIPPED) for k in dead - written]
        if outcomes and not self.collecting:
            await asyncio.to_thread(self.ledger.record, self.scope, self.run_id, outcomes)
        if resume:
            self._notice("resuming: items already done are skipped (pass --fresh to start over)")

    def _count(self, context: IOContext) -> int | None:
        node = self.source_node
        total: int | None = None
        try:
            if self.options.input_path is not None:
                total = _count_path(self.options.input_path, suffix_format(self.options.input_path))
            elif node.source == "file":
                total = _count_file(node, context.root)
            elif self.options.input_path is None and node.source in ("database", "sqlite", "postgresql"):
                total = counter_for(self.plan, self.environ)(node, context.root)
        except Exception:
            total = None  # the bar then shows a count without a total; the run itself reports a bad source
        if total is not None and self.options.limit is not None:
            total = min(total, self.options.limit)
        return total

    async def _deadline(self, work: Any) -> None:
        if not self.timeout:
            await work
            return
        remaining = float(self.timeout) - (time.monotonic() - self.progress.started)
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await work
        except TimeoutError:
            self.stopping = RunStopped("timed_out", f"the job passed its execution.timeout of {self.timeout}s")

    @contextlib.contextmanager
    def _signals(self) -> Any:
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
        if self.stopping is None:
            name = signal.Signals(sig).name
            self.stopping = RunStopped("interrupted", f"stopped by {name}: the calls in flight finished, what is done is written")
            self._notice(f"{name}: finishing the calls in flight, then stopping (the run can be resumed)")

    # -- streaming items ----------------------------------------------------------------------------------

    async def _stream(self, source: Any, sink: Any) -> None:
        queue: asyncio.Queue[tuple[_Batch, _Item] | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        self.semaphore = asyncio.Semaphore(self.concurrency)
        self.flush_lock = asyncio.Lock()
        open_batches: list[_Batch] = []
        workers = [asyncio.create_task(self._worker(queue, sink, open_batches)) for _ in range(self.concurrency)]
        reporter = asyncio.create_task(self._report())
        try:
            await self._read(source, queue, sink, open_batches)
        finally:
            for _ in workers:
                await queue.put(None)
            results = await asyncio.gather(*workers, return_exceptions=True)
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            # A stop leaves batches with items never started: write what is done of them.
            for batch in list(open_batches):
                await self._flush(batch, sink)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(source.close)
            for outcome in results:
                if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                    raise outcome
        self._progress_now()

    async def _read(self, source: Any, queue: asyncio.Queue[Any], sink: Any, open_batches: list[_Batch]) -> None:
        iterator = source.batches(self.source_node.batch_size)
        index = 0
        number = 0
        sequential = self.source_node.batch_strategy == "sequential"
        limit = self.options.limit
        while self.stopping is None:
            raw = await asyncio.to_thread(next, iterator, None)
            if raw is None:
                break
            if limit is not None:
                raw = raw[: max(0, limit - index)]
            items: list[_Item | RowError] = []
            for entry in raw:
                if isinstance(entry, RowError):
                    items.append(entry)
                else:
                    items.append(_Item(index=index, key=self._key(entry, index), row=entry))
                index += 1
            self.progress.read = index
            todo = await self._not_done(items)
            number += 1
            batch = _Batch(number, len(todo))
            if not todo:
                if limit is not None and index >= limit:
                    break
                continue
            open_batches.append(batch)
            for entry in todo:
                if isinstance(entry, RowError):
                    await self._input_error(batch, entry.message, key=_key_of(entry), row={"raw": entry.raw}, sink=sink, open_batches=open_batches)
                else:
                    await queue.put((batch, entry))
                if self.stopping is not None:
                    break
            if sequential:
                await self._wait(batch)
            if limit is not None and index >= limit:
                break

    async def _wait(self, batch: _Batch) -> None:
        while not batch.done.is_set() and self.stopping is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await batch.done.wait()

    async def _not_done(self, items: list[_Item | RowError]) -> list[_Item | RowError]:
        keys = [_key_of(i) for i in items]
        if not keys:
            return items
        statuses: dict[str, str] = {}
        if self.ledger_has_items:
            statuses = await asyncio.to_thread(self.ledger.statuses, self.scope, keys)
        todo: list[_Item | RowError] = []
        for item in items:
            key = _key_of(item)
            status = statuses.get(key)
            if status in FINAL or key in self.in_flight_keys:
                # Done before, or the same key earlier in this run (a repeated row): each key is written once.
                self.progress.already_done += 1
            else:
                self.in_flight_keys.add(key)
                todo.append(item)
        if self.options.retry_failed:
            # Only the failures are redone: items never tried are left for a normal run.
            todo = [i for i in todo if statuses.get(_key_of(i)) == FAILED]
        return todo

    def _key(self, row: Row, index: int) -> str:
        if self.key_field == "row":
            return str(index)
        value = row.get(self.key_field)
        return str(index) if value is None else str(value)

    async def _worker(self, queue: asyncio.Queue[Any], sink: Any, open_batches: list[_Batch]) -> None:
        while True:
            entry = await queue.get()
            if entry is None:
                return
            batch, item = entry
            if self.stopping is not None:
                continue  # never started: left for a resume
            self.progress.in_flight += 1
            try:
                await self._item(batch, item)
            finally:
                self.progress.in_flight -= 1
            batch.pending -= 1
            if batch.pending == 0:
                await self._flush(batch, sink)
                with contextlib.suppress(ValueError):
                    open_batches.remove(batch)

    async def _item(self, batch: _Batch, item: _Item) -> None:
        earlier: dict[str, Any] = {}
        attempts = 0
        try:
            for level in self.item_levels:
                if len(level) == 1:
                    attempts += await self._step(level[0], item.row, earlier)
                else:
                    counts = await asyncio.gather(*(self._step(node, item.row, dict(earlier), into=earlier) for node in level))
                    attempts += sum(counts)
        except ItemError as error:
            await self._fail_item(batch, item, "input", str(error), attempts, self.on_input)
            return
        except _CallFailed as failed:
            await self._fail_item(batch, item, "prompt", failed.message, failed.attempts, failed.node.on_failure)
            return
        outputs = self._shape(earlier)
        if self.collecting:
            batch.outcomes.append(Outcome(key=item.key, status=DONE, attempts=max(1, attempts), output={"row": item.row, "outputs": outputs}))
        else:
            row = {self.key_field: item.row.get(self.key_field, item.key) if self.key_field != "row" else item.index}
            for name in self.source_node.keep:
                if name in item.row:
                    row[name] = item.row[name]
            row.update(outputs)
            batch.rows.append((item.index, row))
            batch.outcomes.append(Outcome(key=item.key, status=DONE, attempts=max(1, attempts)))
            if self.options.keep_outputs:
                self.result.outputs.append(row)
        self.progress.succeeded += 1

    def _shape(self, earlier: Mapping[str, Any]) -> dict[str, Any]:
        """Output fields: a prompt's output under its name; a stack's under the stack's name, by step id."""
        shaped: dict[str, Any] = {}
        for level in self.item_levels:
            for node in level:
                if node.output not in earlier:
                    continue
                if node.namespace:
                    shaped.setdefault(node.namespace, {})[node.output] = earlier[node.output]
                else:
                    shaped[node.output] = earlier[node.output]
        return shaped

    async def _step(self, node: PromptCall, row: Row, earlier: dict[str, Any], *, into: dict[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> int:
        """One call for an item; its output goes into `earlier` (or `into`). Returns the attempts made."""
        if node.when and not holds(node.when, {**earlier, "input": row}):
            return 0
        prepared = self.prepared[node.id]
        context = prepared.context(row, earlier, extra)
        messages = prepared.messages(context)
        output, attempts = await self._call(node, prepared, messages)
        (into if into is not None else earlier)[node.output] = output
        return attempts

    async def _call(self, node: PromptCall, prepared: PreparedCall, messages: tuple[dict[str, str], ...]) -> tuple[Any, int]:
        request = ChatRequest(model=node.model, messages=messages, **prepared.request_options)
        provider = self.providers[node.id]
        limiter = self.limiters[node.provider]
        served = self.served[node.id]
        progress = self.progress
        estimate = sum(len(m["content"]) for m in messages) // 4 + int(request.max_tokens or DEFAULT_COMPLETION_TOKENS)

        cache = self.cache
        key = cache_key(f"{node.provider}:{served}", request) if cache is not None else ""
        if cache is not None:
            cached = await asyncio.to_thread(cache.get, key)
            if cached is not None:
                with contextlib.suppress(ReplyError):
                    return prepared.parse(cached.text), 0

        async def attempt() -> Any:
            async with self.semaphore:
                if limiter.active:
                    await limiter.acquire(estimate)
                else:
                    limiter._served.append(time.monotonic())
                progress.calls += 1
                try:
                    response = await provider.complete(request)
                except ProviderError as error:
                    if error.kind == "rate_limit":
                        limiter.throttled()
                    raise
            progress.prompt_tokens += response.prompt_tokens
            progress.completion_tokens += response.completion_tokens
            usage = progress.tokens_by_model.setdefault(served, [0, 0])
            usage[0] += response.prompt_tokens
            usage[1] += response.completion_tokens
            parsed = prepared.parse(response.text)
            if cache is not None:
                await asyncio.to_thread(cache.put, key, response)  # only answers that parsed and validated
            return parsed

        def on_retry(error: BaseException, delay: float) -> None:
            progress.retries += 1

        attempts = Attempts()
        try:
            output = await with_retries(node.retry, attempt, attempts, on_retry=on_retry)
        except (ProviderError, ReplyError) as error:
            message = error.message if isinstance(error, ProviderError) else str(error)
            raise _CallFailed(node, f"{node.id}: {message}", attempts.count) from None
        return output, attempts.count

    async def _fail_item(self, batch: _Batch, item: _Item, stage: str, message: str, attempts: int, strategy: str) -> None:
        if len(self.result.errors) < 1000:
            self.result.errors.append(ItemFailure(key=item.key, stage=stage, error=message, attempts=attempts))
        if self.options.hooks.on_item_failed:
            outcome = "skipped" if strategy in ("skip", "alert", "retry") else "failed"
            self.options.hooks.on_item_failed(key=item.key, stage=stage, error=message, attempts=attempts, outcome=outcome)
        if strategy == "alert" or self.alert_on.get({"input": "input_error", "prompt": "prompt_failure"}[stage], False):
            self._alert(stage, item.key, message)
        if strategy in ("skip", "alert", "retry"):
            batch.dead.append({"key": item.key, "stage": stage, "input": item.row, "error": message, "attempts": attempts})
            batch.outcomes.append(Outcome(key=item.key, status=SKIPPED, attempts=attempts, error=message))
            self.progress.skipped += 1
            return
        batch.outcomes.append(Outcome(key=item.key, status=FAILED, attempts=attempts, error=message))
        self.progress.failed += 1
        if self.stopping is None:
            self.stopping = RunStopped("failed", f"item {item.key} failed ({stage}): {message}")

    async def _input_error(self, batch: _Batch, message: str, *, key: str, row: Row, sink: Any, open_batches: list[_Batch]) -> None:
        item = _Item(index=-1, key=key, row=row)
        await self._fail_item(batch, item, "input", message, 0, self.on_input)
        batch.pending -= 1
        if batch.pending == 0:
            await self._flush(batch, sink)
            with contextlib.suppress(ValueError):
                open_batches.remove(batch)

    async def _flush(self, batch: _Batch, sink: Any) -> None:
        """Write a batch's rows and dead letters durably, then record its outcomes."""
        async with self.flush_lock:
            if batch.done.is_set():
                return
            rows = [row for _, row in sorted(batch.rows, key=lambda entry: entry[0])]
            dead, outcomes = batch.dead, batch.outcomes
            batch.rows, batch.dead, batch.outcomes = [], [], []
            # One hand-off to a worker thread a batch: the rows, then the dead letters, then the record.
            failed = await asyncio.to_thread(self._write_batch, sink, rows, dead, outcomes)
            if failed is not None:
                outcomes = await self._output_error(rows, outcomes, failed)
                await asyncio.to_thread(self.ledger.record, self.scope, self.run_id, outcomes)
            self.in_flight_keys.difference_update(o.key for o in outcomes)
            if batch.pending <= 0:
                batch.done.set()

    def _write_batch(self, sink: Any, rows: list[Row], dead: list[dict[str, Any]], outcomes: list[Outcome]) -> str | None:
        """In a worker thread: write durably, then record. Returns the sink's error instead of recording."""
        if rows:
            try:
                sink.write(rows)
            except SinkError as error:
                return str(error)
        if dead:
            self.deadletter.write(dead)
        self.ledger.record(self.scope, self.run_id, outcomes)
        return None

    def _alert(self, stage: str, key: str | None, message: str) -> None:
        """The alert hook (the operations layer sends it by email, Slack or webhook)."""
        if self.options.hooks.on_alert:
            self.options.hooks.on_alert(job=self.plan.name, run_id=self.run_id, stage=stage, key=key, error=message)

    async def _output_error(self, rows: list[Row], outcomes: list[Outcome], message: str) -> list[Outcome]:
        strategy = self.on_output
        if self.alert_on.get("output_error") or strategy == "alert":
            self._alert("output", None, message)
        keys = {str(r.get(self.key_field)) for r in rows}
        if strategy in ("skip", "alert"):
            await asyncio.to_thread(
                self.deadletter.write,
                [{"key": str(r.get(self.key_field)), "stage": "output", "input": r, "error": message, "attempts": 1} for r in rows],
            )
            self.progress.succeeded -= len(rows)
            self.progress.skipped += len(rows)
            return [Outcome(key=o.key, status=SKIPPED, error=message) if o.key in keys else o for o in outcomes]
        self.progress.succeeded -= len(rows)
        self.progress.failed += len(rows)
        if self.stopping is None:
            self.stopping = RunStopped("failed", f"the output could not be written: {message}")
        return [o for o in outcomes if o.key not in keys]

    # -- collections: reduce and fan-out ------------------------------------------------------------------

    async def _collect(self, sink: Any) -> None:
        """After every item: groups per `split_by`, calls per group, then the calls over everything."""
        gathered = await asyncio.to_thread(lambda: list(self.ledger.outputs(self.scope)))
        entries = [(key, value["row"], value["outputs"]) for key, value in gathered]
        rows: list[Row] = []
        if self.split is not None:
            groups: dict[str, list[Row]] = {}
            for _, row, outputs in entries:
                groups.setdefault(str(row.get(self.split.split_by)), []).append({**row, **outputs})
            results = await asyncio.gather(*(self._group(name, members) for name, members in sorted(groups.items())))
            per_group = dict(zip(sorted(groups), results, strict=True))
            if not self.all_calls:
                rows = [{self.key_field: name, **outputs} for name, outputs in per_group.items()]
            else:
                rows = [await self._all({"results": list(per_group.values()), "items": list(per_group.values())})]
        else:
            items = [{**outputs} if outputs else row for _, row, outputs in entries]
            if not self.all_calls:
                rows = [{self.key_field: "all", "items": items}]
            else:
                rows = [await self._all({"items": items})]
        if self.stopping is None and rows:
            try:
                await asyncio.to_thread(sink.write, rows)
            except SinkError as error:
                self.stopping = RunStopped("failed", f"the output could not be written: {error}")
            if self.options.keep_outputs:
                self.result.outputs.extend(rows)

    async def _group(self, name: str, members: list[Row]) -> dict[str, Any]:
        earlier: dict[str, Any] = {}
        extra = {"category": name, "items": members}
        for level in self.group_levels:
            for node in level:
                try:
                    await self._step(node, {"category": name}, earlier, extra=extra)
                except (ItemError, _CallFailed) as error:  # str() of either is its message
                    self.stopping = RunStopped("failed", f"group {name} failed: {error}")
                    raise RunStopped("failed", str(error)) from None
        return {"category": name, **earlier}

    async def _all(self, extra: dict[str, Any]) -> Row:
        earlier: dict[str, Any] = {}
        for node in self.all_calls:
            try:
                await self._step(node, {}, earlier, extra=extra)
            except (ItemError, _CallFailed) as error:  # str() of either is its message
                raise RunStopped("failed", f"{node.id} failed: {error}") from None
        return {self.key_field or "key": "all", **earlier}

    # -- progress -----------------------------------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_every)
            self._progress_now()

    def _progress_now(self) -> None:
        if self.options.hooks.on_progress:
            self.options.hooks.on_progress(progress=self.progress)


def _key_of(item: _Item | RowError) -> str:
    """An item's key; a row that could not be read is keyed by its row number."""
    return item.key if isinstance(item, _Item) else f"row {item.index}"


class _CallFailed(Exception):
    def __init__(self, node: PromptCall, message: str, attempts: int) -> None:
        super().__init__(message)
        self.node = node
        self.message = message
        self.attempts = attempts


def _ledger_scope(plan_id: str, input_path: str | None) -> str:
    if input_path is None:
        return plan_id
    digest = hashlib.sha256(os.path.abspath(input_path).encode()).hexdigest()[:16]
    return f"{plan_id}:input:{digest}"


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


def run_job(plan: Plan, options: RunOptions | None = None) -> RunResult:
    """Run a job plan to its end (a fresh event loop); see `JobRun`."""
    return asyncio.run(JobRun(plan, options or RunOptions()).run())
