"""Prometheus metrics of runs: served by `sleipnir serve`, written to a textfile or pushed after a one-off run.

Every series is labelled by `job` (and a small fixed word: a status, an outcome, a token kind, a reason), never
by run id or item, so the number of series grows with the number of jobs and nothing else.

A job's `monitoring.metrics` list chooses what it exports; `SERIES` maps each name to its series. Four series are
exported for every job whatever it lists, because they say whether the job runs at all:
`sleipnir_runs_total{job,status}`, `sleipnir_last_run_timestamp_seconds{job}`,
`sleipnir_runs_skipped_total{job,reason}` and `sleipnir_runs_held_total{job,reason}`.

A one-off `run-job` has no server to scrape, so it writes a node-exporter textfile (`.sleipnir/metrics/<job>.prom`)
or pushes to a Pushgateway. The textfile's counters carry on from the file's previous values, so they count
every run of the job as counters should. A push replaces the job's group on the Pushgateway, so there the
counters hold the last run's values and the `sleipnir_last_run_*` gauges are the series to alert on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from filelock import FileLock
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
    write_to_textfile,
)
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ...compiler.ir.common import mask_passwords
from ..io.dbconn import mask_secrets, mask_url

__all__ = [
    "ALWAYS",
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "RUN_STATUSES",
    "SERIES",
    "RunMetrics",
    "default_textfile",
    "export_after_run",
    "push",
    "write_textfile",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of `RunMetrics.exposition()` (Prometheus text format 0.0.4)."""

SERIES: Mapping[str, tuple[str, ...]] = {
    "execution_time": ("sleipnir_last_run_duration_seconds", "sleipnir_run_duration_seconds"),
    "token_usage": ("sleipnir_tokens_total",),
    "success_rate": ("sleipnir_last_run_success_rate",),
    "error_rate": ("sleipnir_last_run_error_rate",),
    "items_processed": ("sleipnir_items_total",),
    "retries": (
        "sleipnir_retries_total",
        "sleipnir_rate_limit_requests_per_minute",
        "sleipnir_rate_limited_total",
        "sleipnir_rate_decreases_total",
    ),
    "cost": ("sleipnir_cost_dollars_total",),
}
"""The series each `monitoring.metrics` name exports."""

ALWAYS = (
    "sleipnir_runs_total",
    "sleipnir_last_run_timestamp_seconds",
    "sleipnir_runs_skipped_total",
    "sleipnir_runs_held_total",
)
"""The series every job exports, whatever its `monitoring.metrics` lists."""

RUN_STATUSES = ("succeeded", "failed", "interrupted", "timed_out")
"""The final statuses of a run. Each has its series from a job's first run, so a first failure is a rise from 0."""

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)
"""Upper bounds, in seconds, of `sleipnir_run_duration_seconds`: runs take from seconds to a day."""

_OUTCOMES = (("succeeded", "items_processed"), ("skipped", "items_skipped"), ("failed", "items_failed"))
_TOKEN_KINDS = (("prompt", "prompt_tokens"), ("completion", "completion_tokens"))
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

log = logging.getLogger(__name__)


class RunMetrics:
    """The run metrics of any number of jobs, in one registry (a new one unless `registry` is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs = Counter("sleipnir_runs", "Runs finished, by final status.", ["job", "status"], registry=r)
        self.items = Counter(
            "sleipnir_items", "Items a run finished, by outcome.", ["job", "outcome"], registry=r
        )
        self.tokens = Counter("sleipnir_tokens", "Tokens used, by kind.", ["job", "kind"], registry=r)
        self.retries = Counter("sleipnir_retries", "Calls that were retried.", ["job"], registry=r)
        self.rate = Gauge(
            "sleipnir_rate_limit_requests_per_minute",
            "The adaptive rate limiter's rate at the end of the job's last run, by provider (absent: unlimited).",
            ["job", "provider"],
            registry=r,
        )
        self.rate_limited = Counter(
            "sleipnir_rate_limited", "Calls a provider answered 429 or 503.", ["job", "provider"], registry=r
        )
        self.rate_decreases = Counter(
            "sleipnir_rate_decreases", "Times the rate limiter slowed a provider down.", ["job", "provider"], registry=r
        )
        self.cost = Counter(
            "sleipnir_cost_dollars", "Estimated cost at the price table's list prices.", ["job"], registry=r
        )
        self.skipped_runs = Counter(
            "sleipnir_runs_skipped",
            "Scheduled runs not started, by reason (a run still going at the next fire time).",
            ["job", "reason"],
            registry=r,
        )
        self.held_runs = Counter(
            "sleipnir_runs_held", "Runs a condition held back, by condition.", ["job", "reason"], registry=r
        )
        self.last_duration = Gauge(
            "sleipnir_last_run_duration_seconds", "Wall time of the job's last run.", ["job"], registry=r
        )
        self.last_success_rate = Gauge(
            "sleipnir_last_run_success_rate", "Items of the last run that succeeded, 0 to 1.", ["job"], registry=r
        )
        self.last_error_rate = Gauge(
            "sleipnir_last_run_error_rate",
            "Items of the last run that failed or were skipped, 0 to 1.",
            ["job"],
            registry=r,
        )
        self.last_timestamp = Gauge(
            "sleipnir_last_run_timestamp_seconds", "When the job's last run ended (Unix time).", ["job"], registry=r
        )
        self.duration = Histogram(
            "sleipnir_run_duration_seconds", "Wall time of runs.", ["job"], buckets=DURATION_BUCKETS, registry=r
        )

    def observe(
        self,
        job: str,
        status: str,
        metrics: Mapping[str, Any],
        cost: float | None,
        *,
        selected: Collection[str] | None = None,
    ) -> None:
        """Count one finished run. `metrics` is `RunResult.metrics`; `cost` is None when no price is known.

        `selected` is the job's `monitoring.metrics` (None: all of them); see `SERIES`.
        """
        chosen = SERIES.keys() if selected is None else selected
        for known in RUN_STATUSES:
            self.runs.labels(job=job, status=known)
        self.runs.labels(job=job, status=status).inc()
        self.last_timestamp.labels(job=job).set_to_current_time()
        if "execution_time" in chosen:
            seconds = _number(metrics, "execution_time")
            self.last_duration.labels(job=job).set(seconds)
            self.duration.labels(job=job).observe(seconds)
        if "success_rate" in chosen:
            self.last_success_rate.labels(job=job).set(_number(metrics, "success_rate"))
        if "error_rate" in chosen:
            self.last_error_rate.labels(job=job).set(_number(metrics, "error_rate"))
        if "items_processed" in chosen:
            for outcome, key in _OUTCOMES:
                self.items.labels(job=job, outcome=outcome).inc(_number(metrics, key))
        if "token_usage" in chosen:
            for kind, key in _TOKEN_KINDS:
                self.tokens.labels(job=job, kind=kind).inc(_number(metrics, key))
        if "retries" in chosen:
            self.retries.labels(job=job).inc(_number(metrics, "retries"))
            self._limits(job, metrics.get("rate_limits"))
        # An unknown price gives no series rather than a cost of 0 that looks measured.
        if "cost" in chosen and cost is not None:
            self.cost.labels(job=job).inc(max(0.0, cost))

    def _limits(self, job: str, limits: Any) -> None:
        """Why a run slowed: each provider's rate, 429s and decreases (with the retries they caused)."""
        if not isinstance(limits, Mapping):
            return
        for provider, limit in limits.items():
            if not isinstance(limit, Mapping):
                continue
            rate = limit.get("requests_per_minute")
            if isinstance(rate, int | float):
                self.rate.labels(job=job, provider=provider).set(rate)
            else:
                with contextlib.suppress(KeyError):
                    self.rate.remove(job, provider)
            self.rate_limited.labels(job=job, provider=provider).inc(_number(limit, "rate_limited"))
            self.rate_decreases.labels(job=job, provider=provider).inc(_number(limit, "decreases"))

    def skipped(self, job: str, reason: str) -> None:
        """Count a scheduled run not started; `reason` is a fixed word such as `overlap`, never free text."""
        self.skipped_runs.labels(job=job, reason=reason).inc()

    def held(self, job: str, reason: str) -> None:
        """Count a run held back by a condition; `reason` names it (`data_available`, `time_window`)."""
        self.held_runs.labels(job=job, reason=reason).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, for `/metrics` (Content-Type `CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _number(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


# -- one-off runs -------------------------------------------------------------------------------------------


def default_textfile(root: str, job: str) -> Path:
    """`<root>/.sleipnir/metrics/<job>.prom`: the textfile of a job's one-off runs."""
    return Path(root) / ".sleipnir" / "metrics" / f"{_UNSAFE_FILE_CHARS.sub('_', job)}.prom"


def write_textfile(
    path: str | os.PathLike[str],
    job: str,
    status: str,
    metrics: Mapping[str, Any],
    cost: float | None,
    *,
    selected: Collection[str] | None = None,
) -> None:
    """Write the run to a node-exporter textfile, atomically (temp file and rename), making its folder.

    Counters and the histogram add to the values already in the file, so the file counts every run of the job;
    the gauges describe this run. Concurrent writers of one file take turns (a filelock `<file>.lock` beside it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    run = RunMetrics()
    run.observe(job, status, metrics, cost, selected=selected)
    with FileLock(f"{target}.lock"):
        previous = _previous_samples(target)
        write_to_textfile(str(target), _Accumulated(run.registry, previous))


def push(
    url: str,
    job: str,
    status: str,
    metrics: Mapping[str, Any],
    cost: float | None,
    *,
    selected: Collection[str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Push the run to the Pushgateway at `url`, grouped by job (`PUT /metrics/job/<job>`).

    A user and password in `url` are sent as HTTP basic auth. Raises `OSError` (an unreachable gateway or an
    HTTP error) or `ValueError` (a URL it cannot use).
    """
    run = RunMetrics()
    run.observe(job, status, metrics, cost, selected=selected)
    gateway, handler = _gateway(url)
    push_to_gateway(gateway, job=job, registry=run.registry, timeout=timeout, handler=handler)


def export_after_run(
    settings_monitoring: Mapping[str, Any],
    *,
    root: str,
    job: str,
    status: str,
    metrics: Mapping[str, Any],
    cost: float | None,
) -> str | None:
    """Export a one-off run as the job's `monitoring` settings ask; a line saying what was done, or None.

    `textfile`, and `prometheus` too (a one-off run has no server to be scraped), write `default_textfile`;
    `pushgateway` pushes to `pushgateway_url`; `none` does nothing. A failure is logged and described in the
    returned line, never raised: the run itself is over and stays as it ended.
    """
    export_to = settings_monitoring.get("export_to") or "none"
    selected = settings_monitoring.get("metrics")
    if export_to in ("textfile", "prometheus"):
        path = default_textfile(root, job)
        shown = _shown_path(path, root)
        try:
            write_textfile(path, job, status, metrics, cost, selected=selected)
        except OSError as error:
            return _failed(f"metrics not written to {shown}: {error.strerror or error}")
        return f"metrics written to {shown}"
    if export_to == "pushgateway":
        url = settings_monitoring.get("pushgateway_url")
        if not isinstance(url, str) or not url.strip():
            return _failed("metrics not pushed: `monitoring.pushgateway_url` is not set")
        try:
            push(url, job, status, metrics, cost, selected=selected)
        except (OSError, ValueError) as error:
            return _failed(f"metrics not pushed to {mask_url(url)}: {mask_secrets(str(error), url)}")
        return f"metrics pushed to {mask_url(url)} (job {job})"
    return None


def _failed(message: str) -> str:
    message = mask_passwords(message)
    log.warning(message)
    return message


def _shown_path(path: Path, root: str) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _gateway(url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """The gateway URL without its user part, and a handler that sends that user as basic auth."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return url, default_handler
    host = parts.netloc.rpartition("@")[2]
    username, password = unquote(parts.username), unquote(parts.password or "")

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return urlunsplit(parts._replace(netloc=host)), handler


# -- counters that carry on in a textfile ----------------------------------------------------------------------

_SampleKey = tuple[str, frozenset[tuple[str, str]]]


def _previous_samples(path: Path) -> dict[_SampleKey, float]:
    """Every sample of the textfile at `path`; none when there is no file or it is not in the text format."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        log.warning("metrics textfile %s not read, counting from zero: %s", path, error)
        return {}
    try:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    except ValueError as error:
        log.warning("metrics textfile %s not parsed, counting from zero: %s", path, error)
        return {}


class _Accumulated(Collector):
    """A collector: `current`'s families, with counter and histogram samples added to `previous` ones."""

    def __init__(self, current: CollectorRegistry, previous: Mapping[_SampleKey, float]) -> None:
        self.current = current
        self.previous = previous

    def collect(self) -> Iterator[Metric]:
        for family in self.current.collect():
            if family.type not in ("counter", "histogram") or not self.previous:
                yield family
                continue
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                before = self.previous.get((sample.name, frozenset(sample.labels.items())))
                if before is None:
                    value = sample.value
                elif sample.name.endswith("_created"):
                    value = before  # the series was created by the first run, not this one
                else:
                    value = sample.value + before
                merged.add_sample(sample.name, sample.labels, value)
            yield merged
