"""A plan as people read it: what would run, in what order, with which settings, and where each value came from.

Sections, each left out when it has nothing to say: the header; the resolved parameters and their origins; the
DAG by topological level, a paragraph a node; the providers and connections; the schedule's next three fire
times, in the job's zone and in UTC; the triggers, conditions and alerts; the estimate; a one-line summary.
Secrets print as `(sensitive, sha256:...)` and the environment variables they come from, never a value.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from ..estimate import CHARS_PER_TOKEN, Estimate
from ..ir import (
    JobStep,
    Merge,
    Node,
    Plan,
    PromptCall,
    Reduce,
    Retry,
    Secret,
    Sink,
    Source,
    Split,
)
from ..ir.common import mask_passwords

ENTRY_WIDTH = 80
"""Lists of `key value (origin)` entries wrap at this width, not counting the node's indent."""
FIRE_TIMES = 3
_LONG = 60
_ID_WIDTH = 28
"""Longer strings (queries, templates) are cut to this many characters."""


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def title(self, text: str) -> str:
        return self(text, "1")

    def dim(self, text: str) -> str:
        return self(text, "2")


def render_plan(plan: Plan, *, estimate: Estimate | None, now: datetime, color: bool = False) -> str:
    """The human format of `plan`. `now` is when the next fire times are counted from (naive means UTC)."""
    style = _Style(color)
    blocks = [
        _header(plan, style),
        _parameters(plan, style),
        _dag(plan, style),
        _resources(plan, style),
        _schedule(plan.settings.get("schedule"), now, style),
        _entries("triggers", plan.settings.get("triggers"), _trigger, style),
        _entries("conditions", plan.settings.get("conditions"), _trigger, style),
        _entries("alerts", plan.settings.get("alerts"), _alert, style),
        _estimate(estimate, style) if estimate is not None else "",
        style.title(summary(plan, estimate)),
    ]
    text = mask_passwords("\n\n".join(block for block in blocks if block))
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Header and parameters


def _header(plan: Plan, style: _Style) -> str:
    title = " ".join(part for part in (plan.kind, plan.name, plan.version) if part)
    lines = [style.title(title)]
    if plan.description:
        lines.append(f"  {plan.description.strip()}")
    lines.append(f"  plan {plan.id[:12]} · " + (f"profile {plan.profile}" if plan.profile else "no profile"))
    return "\n".join(lines)


def _parameters(plan: Plan, style: _Style) -> str:
    if not plan.parameters:
        return ""
    rows = [(s.key, show(s.value), s.origin) for s in plan.parameters]
    key_width = max(len(key) for key, _, _ in rows)
    value_width = min(max(len(value) for _, value, _ in rows), _LONG)
    lines = [style.title("parameters")]
    for key, value, origin in rows:
        lines.append(f"  {key.ljust(key_width)} = {value.ljust(value_width)}  {style.dim('<- ' + origin)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# The DAG


def _dag(plan: Plan, style: _Style) -> str:
    levels = plan.levels()
    if not levels:
        return style.title("dag") + "\n  (no nodes)"
    count = len(plan.nodes)
    lines = [
        style.title(f"dag: {count} {_plural(count, 'node')} in {len(levels)} {_plural(len(levels), 'level')}")
    ]
    column = min(max(len(node.id) for node in plan.nodes), _ID_WIDTH) + 2
    describer = _Describer(plan)
    for number, level in enumerate(levels, 1):
        lines.append(f"  level {number}")
        for node in level:
            head, *details = describer.describe(node)
            if len(node.id) > _ID_WIDTH:
                # A long id (a stack step's, namespaced) gets a line of its own rather than a wide column.
                lines.append("    " + style(node.id, "36"))
                details = [head, *details]
            else:
                lines.append("    " + style(node.id.ljust(column), "36") + head)
            lines.extend(" " * (4 + column) + detail for detail in details)
    return "\n".join(lines)


def headline(node: Node) -> str:
    """One line saying what `node` is: `prompt sentiment_analyzer@2.1.0 · gpt-4o via openai · per item`."""
    return _HEADLINES[type(node)](node)


def _source_headline(node: Source) -> str:
    return " ".join([f"source {node.source}", *_location(node.options, ("path", "endpoint"))])


def _location(options: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Where a source reads or a sink writes: its path, table or endpoint, query, format and connection."""
    parts = [_cut(show(options[key])) for key in keys if key in options]
    if "query" in options:
        parts.append(f"query {_quoted(options['query'])}")
    if "format" in options:
        parts.append(f"({options['format']})")
    if "connection" in options:
        parts.append(f"connection {show(options['connection'])}")
    return parts


def _call_headline(node: PromptCall) -> str:
    scope = {"item": "per item", "group": "per group", "all": "once over all"}[node.scope]
    return f"prompt {node.prompt}@{node.version} · {node.model} via {node.provider} · {scope}"


def _sink_headline(node: Sink) -> str:
    return (
        " ".join([f"sink {node.destination}", *_location(node.options, ("path", "table", "endpoint"))])
        + f" · {node.mode}"
    )


def _job_headline(node: JobStep) -> str:
    version = f" {node.plan.version}" if node.plan.version else ""
    return f"job {node.job}{version} · plan {node.plan.id[:12]}"


_HEADLINES: dict[type[Node], Callable[[Any], str]] = {
    Source: _source_headline,
    PromptCall: _call_headline,
    Split: lambda node: f"split by {node.split_by}",
    Reduce: lambda node: f"reduce: collects every output of {', '.join(node.collects)}",
    Merge: lambda node: f"merge: collects every group's outputs of {', '.join(node.collects)}",
    Sink: _sink_headline,
    JobStep: _job_headline,
}


class _Describer:
    """A node's paragraph: its headline, then one line a concern. `visit_<Class>` gives the kind's own lines."""

    def __init__(self, plan: Plan) -> None:
        # The edges into each node, by its id: a dict rather than a networkx graph, imported for nothing else.
        self.into: dict[str, dict[str, str]] = {}
        for edge in plan.edges:
            self.into.setdefault(edge.target, {})[edge.source] = edge.carries
        execution = plan.settings.get("execution")
        self.concurrency = execution.get("concurrency") if isinstance(execution, Mapping) else None
        source = next((n for n in plan.nodes if isinstance(n, Source)), None)
        self.batch_size = source.batch_size if source else None

    def describe(self, node: Node) -> list[str]:
        lines = [headline(node)]
        inputs = self._inputs(node)
        if inputs:
            lines.append(inputs)
        lines.extend(getattr(self, f"visit_{type(node).__name__}", self.generic_visit)(node))
        # Built-in and prompt-module defaults are the baseline; what changed them is what a reviewer looks for.
        baseline = {"default"}
        if isinstance(node, PromptCall):
            baseline.add(f"prompt {node.prompt}@{node.version}")
        origins = [
            f"{_setting(node, key)} ({origin})"
            for key, origin in sorted(node.provenance.items())
            if origin not in baseline and key != "retry"
        ]
        lines.extend(_wrapped("set ", origins))
        return lines

    def _inputs(self, node: Node) -> str:
        edges = self.into.get(node.id, {})
        if not edges:
            return ""
        word = "after" if isinstance(node, JobStep) else "from"
        shown = [
            name if (carries := edges[name]) in ("items", "after") else f"{name} ({carries})" for name in sorted(edges)
        ]
        return f"{word} {', '.join(shown)}"

    def generic_visit(self, node: Node) -> list[str]:
        return []

    def visit_Source(self, node: Source) -> list[str]:
        parts = [f"batch {node.batch_size} {node.batch_strategy}"]
        if node.key:
            parts.append(f"key {node.key}")
        if node.keep:
            parts.append(f"keep {', '.join(node.keep)}")
        return [" · ".join(parts), *_wrapped("", _pairs(node.options, skip=_LOCATION_KEYS))]

    def visit_PromptCall(self, node: PromptCall) -> list[str]:
        run = []
        if not node.parallel:
            run.append("one at a time")
        elif self.concurrency is not None:
            run.append(f"concurrency {self.concurrency}")
        if self.batch_size is not None:
            run.append(f"batch {self.batch_size}")
        run += [f"timeout {duration(node.timeout)}", f"on failure {node.on_failure}"]
        # The retry schedule always says where it came from: the default, a profile, or the job's own line.
        lines = [" · ".join(run), f"{retry_text(node.retry)} · from {node.provenance.get('retry') or 'default'}"]
        if node.when:
            lines.append(f"when {node.when}")
        if node.group:
            lines.append(f"parallel group {node.group}")
        seen_as = f"{node.namespace}.{node.output}" if node.namespace else node.output
        if seen_as != node.id:
            lines.append(f"output {seen_as}")
        lines += _wrapped("options ", _pairs(node.options))
        lines += _wrapped("parameters ", _pairs(node.parameters))
        lines += _wrapped("inputs ", _pairs(node.inputs, between=" = "))
        return lines

    def visit_Sink(self, node: Sink) -> list[str]:
        return [f"dead letter {node.dead_letter}", *_wrapped("", _pairs(node.options, skip=_LOCATION_KEYS))]

    def visit_JobStep(self, node: JobStep) -> list[str]:
        nested = node.plan
        if not nested.nodes:
            return ["(no nodes)"]
        column = min(max(len(n.id) for n in nested.nodes), _ID_WIDTH) + 2
        return [f"{n.id.ljust(column)}{headline(n)}" for level in nested.levels() for n in level]


_LOCATION_KEYS = ("path", "query", "endpoint", "table", "format", "connection")
"""Options the headline already shows."""


def _pairs(values: Mapping[str, Any], *, skip: tuple[str, ...] = (), between: str = " ") -> list[str]:
    """`key value` for each entry, sorted by key, long values cut."""
    return [f"{key}{between}{_cut(show(value))}" for key, value in sorted(values.items()) if key not in skip]


def _setting(node: Node, key: str) -> str:
    """`temperature 0.2`: a provenance key and the value it names on `node`, when it can be found."""
    value = _lookup(node, key)
    if value is _MISSING:
        return key
    shown = _cut(show(value))
    return shown if shown.startswith(key + " ") else f"{key} {shown}"


def _lookup(node: Node, key: str) -> Any:
    """The value a provenance key names on `node`: a field, or an entry of its options, parameters or inputs.

    A key may be written as a document path (`prompts.sentiment_analyzer.temperature`), so shorter and shorter
    tails of it are tried.
    """
    parts = key.split(".")
    for start in range(len(parts)):
        tail = parts[start:]
        for root in (
            node,
            getattr(node, "options", None),
            getattr(node, "parameters", None),
            getattr(node, "inputs", None),
        ):
            found = _walk(root, tail)
            if found is not _MISSING:
                return found
    return _MISSING


_MISSING: Any = object()


def _walk(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, Secret):
            return _MISSING
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif is_dataclass(value) and not isinstance(value, type) and part in {f.name for f in fields(value)}:
            value = getattr(value, part)
        else:
            return _MISSING
    return value


# --------------------------------------------------------------------------------------------------------------
# Resources, schedule, triggers, conditions, alerts


def _resources(plan: Plan, style: _Style) -> str:
    resources = plan.resources
    lines = []
    for provider in resources.providers:
        parts = [f"protocol {provider.protocol}"]
        if provider.base_url is not None:
            parts.append(f"base url {show(provider.base_url)}")
        if provider.api_key is not None:
            parts.append(f"api key {show(provider.api_key)}")
        if provider.requests_per_minute:
            parts.append(f"{provider.requests_per_minute:,} requests/min")
        if provider.tokens_per_minute:
            parts.append(f"{provider.tokens_per_minute:,} tokens/min")
        if provider.protocol != "mock":
            parts.append(f"structured output {provider.structured_output}")
        if provider.timeout:
            parts.append(f"timeout {duration(provider.timeout)}")
        lines += _wrapped(f"  provider {provider.name}: ", parts)
    lines += [f"  connection {c.name}: {show(c.url)}" for c in resources.connections]
    if resources.rate_limit:
        lines.append("  rate limit " + " · ".join(_pairs(resources.rate_limit)))
    return "\n".join([style.title("resources"), *lines]) if lines else ""


def _schedule(schedule: Any, now: datetime, style: _Style) -> str:
    if not isinstance(schedule, Mapping) or not schedule.get("cron"):
        return ""
    cron, zone_name = str(schedule["cron"]), str(schedule.get("timezone") or "UTC")
    extras = [f"{k} {show(schedule[k])}" for k in ("catchup", "catchup_window", "overlap") if k in schedule]
    lines = [style.title("schedule") + f'  "{cron}" in {zone_name}' + "".join(f" · {e}" for e in extras)]
    if schedule.get("enabled") is False:
        lines.append("  disabled: kept and checked, but never runs")
        return "\n".join(lines)
    try:
        times = fire_times(cron, zone_name, now)
    except Exception as error:  # croniter and zoneinfo raise many kinds of error on a value checked earlier
        lines.append(f"  cannot compute the next fire times: {error}")
        return "\n".join(lines)
    in_zone = [
        f"{local:%a %Y-%m-%d %H:%M %Z}" + (f" ({zone_name})" if zone_name != "UTC" else "") for local in times
    ]
    width = max(map(len, in_zone))
    for index, (local, shown) in enumerate(zip(times, in_zone, strict=True)):
        label = "next" if index == 0 else "then"
        in_utc = f"   {local.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC" if zone_name != "UTC" else ""
        lines.append(f"  {label}  {shown.ljust(width)}{in_utc}")
    return "\n".join(lines)


def fire_times(cron: str, timezone: str, now: datetime, count: int = FIRE_TIMES) -> list[datetime]:
    """The next `count` times `cron` fires after `now`, read in `timezone`, as aware datetimes in that zone."""
    zone = zoneinfo.ZoneInfo(timezone)
    start = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    schedule = croniter(cron, start)
    return [schedule.get_next(datetime) for _ in range(count)]


def _entries(title: str, entries: Any, line: Any, style: _Style) -> str:
    if not entries:
        return ""
    return "\n".join([style.title(title), *(f"  - {line(entry)}" for entry in entries)])


def _trigger(entry: Any) -> str:
    """A trigger or condition: its type, then its keys."""
    if not isinstance(entry, Mapping):
        return show(entry)
    rest = [f"{k} {_quoted(v)}" for k, v in entry.items() if k != "type"]
    return " · ".join([str(entry.get("type", "?")), *rest])


def _alert(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return show(entry)
    rest = [f"{k} {_quoted(v)}" for k, v in entry.items() if k not in ("condition", "action")]
    return " · ".join([f"when {entry.get('condition', '?')}: {entry.get('action', '?')}", *rest])


def _quoted(value: Any) -> str:
    """Text with spaces in quotes, so that `check "SELECT COUNT(*) FROM t"` reads as one value."""
    text = _cut(show(value))
    return f'"{text}"' if isinstance(value, str) and " " in value else text


# --------------------------------------------------------------------------------------------------------------
# Estimate and summary


def _estimate(estimate: Estimate, style: _Style) -> str:
    lines = [style.title("estimate")]
    basis = estimate.items_basis.removeprefix("unknown: ")
    if estimate.items is None and estimate.calls is not None:
        lines.append("  items   per job")
    else:
        items = f"{estimate.items:,}" if estimate.items is not None else "unknown"
        lines.append(f"  items   {items.ljust(10)} {style.dim(basis)}")
    if estimate.calls is not None:
        lines.append(f"  calls   {_about(estimate, estimate.calls)}")
    if estimate.tokens is not None:
        split = f"{compact(estimate.prompt_tokens or 0)} prompt + {compact(estimate.completion_tokens or 0)} completion"
        lines.append(
            f"  tokens  {('~' + compact(estimate.tokens)).ljust(10)} "
            + style.dim(f"{split}, {CHARS_PER_TOKEN} characters a token")
        )
    if estimate.calls is not None:
        cost = ("~" + money(estimate.cost)) if estimate.cost is not None else "unknown"
        note = (
            f"no price for {', '.join(estimate.unpriced)}"
            if estimate.unpriced
            else "list prices, see prices.yaml"
        )
        lines.append(f"  cost    {cost.ljust(10)} {style.dim(note)}")
    if estimate.models:
        lines.append(_model_table(estimate))
    for job_id, part in estimate.jobs:
        figures = [
            f"{part.items:,} items" if part.items is not None else part.items_basis.removeprefix("unknown: ")
        ]
        if part.calls is not None:
            figures.append(f"{_about(part, part.calls)} {_plural(part.calls, 'call')}")
        if part.cost is not None:
            figures.append("~" + money(part.cost))
        lines.append(f"  job {job_id}: " + " · ".join(figures))
    lines += [f"  note: {note}" for note in estimate.notes]
    return "\n".join(lines)


def _about(estimate: Estimate, calls: int) -> str:
    """`~1,200`, or `up to 1,200` when some of the calls may not run."""
    return f"{'up to ' if estimate.upper_bound else '~'}{calls:,}"


def _model_table(estimate: Estimate) -> str:
    rows = [("model", "calls", "prompt", "completion", "cost")]
    rows += [
        (
            m.model,
            f"{m.calls:,}",
            compact(m.prompt_tokens),
            compact(m.completion_tokens),
            money(m.cost) if m.cost is not None else "no price",
        )
        for m in estimate.models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def summary(plan: Plan, estimate: Estimate | None) -> str:
    """The closing line: `plan 1a2b3c4d5e6f: 4 nodes, 3 prompt calls per item, 1,204 items, ~3,612 calls, ...`."""
    parts = []
    if plan.kind == "pipeline":
        jobs = [n for n in plan.nodes if isinstance(n, JobStep)]
        nested = [n for job in jobs for n in job.plan.nodes]
        calls = sum(isinstance(n, PromptCall) for n in nested)
        parts += [
            f"{len(jobs)} {_plural(len(jobs), 'job')}",
            f"{len(nested)} {_plural(len(nested), 'node')}",
            f"{calls} prompt {_plural(calls, 'call')}",
        ]
    else:
        parts.append(f"{len(plan.nodes)} {_plural(len(plan.nodes), 'node')}")
        parts.append(_calls_per_scope(plan.nodes))
    if estimate is not None:
        if estimate.items is not None:
            parts.append(f"{estimate.items:,} {_plural(estimate.items, 'item')}")
        if estimate.calls is not None:
            parts.append(f"{_about(estimate, estimate.calls)} {_plural(estimate.calls, 'call')}")
        if estimate.tokens is not None:
            parts.append(f"~{compact(estimate.tokens)} tokens")
        if estimate.cost is not None:
            parts.append("~" + money(estimate.cost))
        elif estimate.unpriced:
            parts.append(f"cost unknown (no price for {', '.join(estimate.unpriced)})")
    return f"plan {plan.id[:12]}: " + ", ".join(parts)


def _calls_per_scope(nodes: Iterable[Node]) -> str:
    scopes = [n.scope for n in nodes if isinstance(n, PromptCall)]
    if not scopes:
        return "no prompt calls"
    shown: list[str] = []
    for scope, label in (("item", "per item"), ("group", "per group"), ("all", "over all")):
        count = scopes.count(scope)
        if count:
            noun = "" if shown else f" prompt {_plural(count, 'call')}"
            shown.append(f"{count}{noun} {label}")
    return ", ".join(shown)


# --------------------------------------------------------------------------------------------------------------
# Values


def show(value: Any) -> str:
    """A value as the plan prints it; a secret shows only its digest and where it comes from."""
    if isinstance(value, Secret):
        return f"{value} from env {', '.join(value.names)}"
    if isinstance(value, Retry):
        return retry_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return mask_passwords(value) if value else '""'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def retry_text(retry: Retry) -> str:
    """`retry 3x: +1s, +2s, +4s (jitter)`, or `no retry`."""
    if not retry.max_retries:
        return "no retry"
    delays = ", ".join(f"+{duration(d)}" for d in retry.delays)
    return f"retry {retry.max_retries}x: {delays}" + (" (jitter)" if retry.jitter else "")


def duration(seconds: float) -> str:
    """Seconds as people write them: `1s`, `1.5s`, `2m`, `1m30s`, `1h5m`."""
    if seconds < 60:
        return f"{_number(seconds)}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{_number(amount)}{unit}" for amount, unit in parts if amount)


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def compact(count: int) -> str:
    """A count in few characters: `950`, `12.3k`, `1.9M`."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + suffix
    return str(count)


def money(usd: float) -> str:
    """`$4.20`, `$1,234.00`, or two significant digits under a cent: `$0.0042`."""
    if usd == 0 or usd >= 0.01:
        return f"${usd:,.2f}"
    return f"${usd:.2g}"


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _LONG else text[: _LONG - 3] + "..."


def _wrapped(lead: str, items: list[str]) -> list[str]:
    """`lead` and the items joined by ` · `, in lines about `ENTRY_WIDTH` wide (continuations indented)."""
    if not items:
        return []
    lines, current = [], lead + items[0]
    for item in items[1:]:
        if len(current) + 3 + len(item) > ENTRY_WIDTH:
            lines.append(current)
            current = " " * len(lead) + item
        else:
            current += " · " + item
    return [*lines, current]


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"
