"""The mutable side of a run, kept apart from the immutable plan: its options, its lifecycle hooks, its counts
by bucket (`Progress`) and its result. `runtime/engine/` (the job run and its collaborators) moves items through the buckets; the CLI, the Python
API, `serve`, the log and the alert dispatcher read them through the hooks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..io import Row


class RunStopped(Exception):
    """The run stopped before its end; `reason` says why (`failed`, `interrupted`, `timed_out`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True, kw_only=True)
class Hooks:
    """Lifecycle callbacks, each keyword-only; any may be None."""

    on_start: Callable[..., None] | None = None
    on_progress: Callable[..., None] | None = None
    on_complete: Callable[..., None] | None = None
    on_error: Callable[..., None] | None = None
    on_alert: Callable[..., None] | None = None
    on_item_failed: Callable[..., None] | None = None
    """An item that failed or was skipped: key, stage (`input`, `prompt`, `output`), error, attempts, outcome."""
    on_notify: Callable[..., None] | None = None
    """The job's complete event, fired when `output.on_complete: notify` and the run succeeded."""
    on_notice: Callable[..., None] | None = None
    """A line for the person running the job: a fallback to the mock provider, a resumed run."""


def chain_hooks(*all_hooks: Hooks) -> Hooks:
    """One set of hooks calling each of `all_hooks` in order (a progress bar, a logger, an alert dispatcher)."""

    def chain(name: str) -> Callable[..., None] | None:
        callbacks = [c for h in all_hooks if (c := getattr(h, name)) is not None]
        if len(callbacks) <= 1:
            return callbacks[0] if callbacks else None

        def call(**event: Any) -> None:
            for callback in callbacks:
                callback(**event)

        return call

    return Hooks(**{name: chain(name) for name in Hooks.__dataclass_fields__})


@dataclass(slots=True, kw_only=True)
class RunOptions:
    input_path: str | None = None
    """`--input FILE`: replaces the job's source."""
    limit: int | None = None
    """`--limit N`: only the first N items of the source."""
    fresh: bool = False
    """Forget what earlier runs did (items and recorded answers) and redo everything."""
    retry_failed: bool = False
    keep_stale: bool = False
    """Keep the results of items whose work changed since they were done; only new items are done."""
    record_answers: bool = True
    """Record each answer as it arrives (the benchmark turns it off to measure what it costs)."""
    scope: str | None = None
    """A name for this run's ledger entry beside the plan id: `serve` gives each fire time its own, so that
    runs of one job that overlap (`overlap: allow`) keep apart, and a run cut short resumes at its catch-up."""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    state: str | None = None
    """The ledger: a SQLite path (relative to the root) or a PostgreSQL URL; `.sleipnir/state.db` by default."""
    cache: bool = False
    """Reuse answers of identical earlier calls (`.sleipnir/cache.db`); errors are never cached."""
    keep_outputs: bool = False
    """Keep every output row in the result (the Python API); the CLI streams them only to the sink."""
    hooks: Hooks = field(default_factory=Hooks)
    handle_signals: bool = False
    """Install SIGINT/SIGTERM handlers that stop the run gracefully (the CLI does)."""
    grace: float = 5.0
    """Seconds the calls in flight get to finish after a stop signal (`--grace`)."""
    progress_every: float = 0.2
    """Seconds between progress callbacks."""
    engine: str | None = None
    """`local` or `dask` (`run-job --engine`); None: the plan's `execution.engine`."""
    cluster: ClusterOptions | None = None
    """Where the `dask` engine runs: a scheduler, or a local cluster."""
    limit_share: float = 1.0
    """The share of each provider's configured rate limits this run has: a `dask` worker's is 1/workers."""
    partition: Any = None
    """A `dask` worker's run: the `io.partitions.Partition` it runs (the driver holds the lock, the run's record
    and the publishing)."""
    run_id: str | None = None
    """The run's id; None: a new one. A `dask` worker's run of a partition takes its driver's, so that the items
    are recorded under the run (`sleipnir runs RUN_ID`) and `${run.id}` names what the driver publishes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    """The `dask` engine's cluster (`run-job --scheduler`, `SLEIPNIR_DASK_SCHEDULER`, `dask:` in sleipnir.yaml)."""

    scheduler: str | None = None
    """A Dask scheduler's address (`tcp://host:8786`); None: a local cluster, started and closed by the run."""
    workers: int = 2
    """The local cluster's worker processes."""
    partition_size: int | None = None
    """Items in one partition (one Dask task); None: about four partitions per worker, none smaller than 50 times
    the job's concurrency (`driver.WAVES`)."""
    local: bool = False
    """The scheduler is a local cluster this process started (a pipeline's, shared by its jobs): the
    workspace's SQLite state store may be shared with its workers."""

    @classmethod
    def of(cls, manifest: Mapping[str, Any], environ: Mapping[str, str], scheduler: str | None = None) -> ClusterOptions:
        """The cluster `--scheduler`, else `SLEIPNIR_DASK_SCHEDULER`, else `dask:` in sleipnir.yaml names."""
        settings = manifest.get("dask") or {}
        return cls(
            scheduler=scheduler or environ.get("SLEIPNIR_DASK_SCHEDULER") or settings.get("scheduler") or None,
            workers=int(settings.get("workers") or 2),
            partition_size=settings.get("partition_size"),
        )


@dataclass(slots=True, kw_only=True)
class ItemFailure:
    key: str
    stage: str
    """`input`, `prompt` or `output`."""
    error: str
    attempts: int = 0


@dataclass(slots=True, kw_only=True)
class Progress:
    """The mutable run state: counts by bucket, and the metrics."""

    total: int | None = None
    read: int = 0
    already_done: int = 0
    stale: int = 0
    """Items redone because their work changed since they were done (a model, prompt, parameter or row)."""
    reused: int = 0
    """Answers taken from an earlier run's record instead of being called again."""
    in_flight: int = 0
    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    """Items written to the dead letter (the skipped ones), counted as they are written."""
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_by_model: dict[str, list[int]] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    """Each provider's rate limiter at the end of the run: rate, history, decreases, 429s, pauses."""
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.succeeded + self.skipped + self.failed

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return min(100.0, 100.0 * (self.done + self.already_done) / self.total)


@dataclass(slots=True, kw_only=True)
class RunResult:
    """What a run did."""

    run_id: str
    plan_id: str
    job: str
    status: str
    """`succeeded`, `failed`, `interrupted` or `timed_out`."""
    message: str = ""
    progress: Progress
    wall_time: float = 0.0
    outputs: list[Row] = field(default_factory=list)
    errors: list[ItemFailure] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    changed_prompts: list[str] = field(default_factory=list)
    """The calls whose work changed since the job's last run (their items are stale)."""
    dead_letter: str = ""
    """The dead letter's path, relative to the workspace root."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def metrics(self) -> dict[str, Any]:
        p = self.progress
        processed = p.succeeded + p.skipped + p.failed
        return {
            "execution_time": self.wall_time,
            "items_processed": p.succeeded,
            "items_skipped": p.skipped,
            "items_failed": p.failed,
            "items_already_done": p.already_done,
            "items_stale": p.stale,
            "answers_reused": p.reused,
            "changed_prompts": list(self.changed_prompts),
            "items_dead_lettered": p.dead_lettered,
            "calls": p.calls,
            "retries": p.retries,
            "prompt_tokens": p.prompt_tokens,
            "completion_tokens": p.completion_tokens,
            "token_usage": p.prompt_tokens + p.completion_tokens,
            "success_rate": p.succeeded / processed if processed else 1.0,
            "error_rate": (p.failed + p.skipped) / processed if processed else 0.0,
            "tokens_by_model": {m: {"prompt": t[0], "completion": t[1]} for m, t in p.tokens_by_model.items()},
            "rate_limits": p.limits,
            "items_left": (
                max(0, p.total - p.already_done - processed) if p.total is not None and self.status != "succeeded" else 0
            ),
        }


def verdict(progress: Progress, max_error_rate: float | None) -> tuple[str, str]:
    """The status of a run that went to its end, and why when it failed: an item that failed under a `fail`
    strategy fails it; so does a run in which items were tried and none succeeded, whatever the strategy (every
    item skipped to the dead letter is not a success), and one whose share of failed or skipped items passes
    `execution.max_error_rate`."""
    tried = progress.succeeded + progress.skipped + progress.failed
    if progress.failed:
        return "failed", ""
    if tried and not progress.succeeded:
        return "failed", f"no item succeeded: all {tried:,} were skipped, {progress.dead_lettered:,} to the dead letter"
    rate = (progress.failed + progress.skipped) / tried if tried else 0.0
    if max_error_rate is not None and rate > max_error_rate:
        return "failed", (
            f"{progress.skipped:,} of {tried:,} items were skipped ({rate:.1%}), more than execution.max_error_rate "
            f"({max_error_rate:.1%}); {progress.dead_lettered:,} went to the dead letter"
        )
    return "succeeded", ""
