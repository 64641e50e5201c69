"""A plan -> what running it would take: items, prompt calls, tokens and dollars, each saying how it was reckoned.

- Items: a file source's rows are counted here (jsonl: non-empty lines; json: the top-level array; csv: rows
  after the header), its path relative to the plan's root. Other sources are counted by the caller's
  `count_items` (the CLI passes a runtime-side `COUNT(*)` for `--estimate`; the compiler opens no database).
- Calls: a per-item call runs once an item; a per-group call once a group (the distinct values of the split
  field, when the file has that field; else once an item, an upper bound); a call over all, once. A call with a
  `when` is counted as if it always ran, an upper bound.
- Tokens: four characters a token, over the prompt module's templates plus the input it reads (the average row,
  a group's rows, or every row); the completion is the call's `max_tokens`, else 256.
- Pipelines: each job is estimated, in order, and the figures summed; a job reading the file an earlier job
  writes gets that job's row count (a row an item, or one row for a collection), not the file's current rows.
- Cost: from the price table (`stdlib/prices.yaml`, overridden by the workspace's `prices.yaml`); a model
  without a price leaves the total unknown and is named in `unpriced`.
"""

from __future__ import annotations

import csv
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostics
from .ir import JobStep, Plan, PromptCall, Sink, Source, Split
from .ir.common import suffix_format
from .loader import decode, load, locate, node_span
from .workspace import PRICES_FILE, display_path

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 256
GUESSED_ROW_CHARS = 400
"""The row size assumed when the rows cannot be read (a database or an API): about a paragraph."""

ItemCounter = Callable[[Source, str], int | None]
"""(source, plan root) -> the number of items the source yields, or None when it cannot tell."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """What a model costs, in USD per 1 million tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEstimate:
    """One model's share of an estimate."""

    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    """None when the price table has no price for the model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """What a plan would take to run. A None figure is unknown; `items_basis` and `notes` say why."""

    items: int | None
    items_basis: str
    """Where the item count came from: `data/reviews.jsonl: 1,204 rows`, or `unknown: database source, ...`."""
    calls: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    """USD; None when the items are unknown or any model has no price."""
    models: tuple[ModelEstimate, ...] = ()
    """Per model, sorted by name (empty when the items are unknown)."""
    upper_bound: bool = False
    """Whether `calls` (and so tokens and cost) count calls that may not run: `when` calls, or group calls
    counted once an item."""
    notes: tuple[str, ...] = ()
    """How the figures were reckoned, in words, for `plan` to print."""
    unpriced: tuple[str, ...] = ()
    """Models the plan calls that have no price."""
    jobs: tuple[tuple[str, Estimate], ...] = ()
    """A pipeline's estimate of each job, by node id; the pipeline's figures are their sums."""

    @property
    def tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


def estimate(
    plan: Plan,
    *,
    count_items: ItemCounter | None = None,
    prices: Mapping[str, Price] | None = None,
    to_call: int | None = None,
) -> Estimate:
    """Estimate `plan`. Without `prices`, reads `load_prices(plan.root)`, which raises `ValueError` for a
    malformed workspace `prices.yaml` (call it first to report that as a diagnostic). `to_call`, for a job, is
    how many of its items a run would call (read from the state store by the caller): the calls and cost are
    for those, sized as the source's rows are."""
    table = load_prices(plan.root) if prices is None else prices
    if plan.kind == "pipeline":
        return _pipeline(plan, count_items, table)
    return _job(plan, count_items, table, to_call=to_call)


# --------------------------------------------------------------------------------------------------------------
# Jobs and pipelines


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rows:
    """What a file source's rows tell: how many, their size, and how many distinct values a split field has."""

    count: int | None
    basis: str
    chars: float = GUESSED_ROW_CHARS
    """Average characters a row."""
    measured: bool = False
    groups: Mapping[str, int] | None = None


def _job(
    plan: Plan,
    count_items: ItemCounter | None,
    prices: Mapping[str, Price],
    written: Mapping[str, _Written] | None = None,
    *,
    to_call: int | None = None,
) -> Estimate:
    calls = [node for node in plan.nodes if isinstance(node, PromptCall)]
    source = next((node for node in plan.nodes if isinstance(node, Source)), None)
    splits = _split_of(plan)
    rows = _rows(plan, source, tuple(sorted(set(splits.values()))), count_items, written or {})
    if to_call is not None:
        rows = replace(rows, count=to_call, basis=f"{to_call:,} items a run would call; {rows.basis}")
    if rows.count is None:
        return Estimate(
            items=None,
            items_basis=rows.basis,
            calls=None,
            prompt_tokens=None,
            completion_tokens=None,
            cost=None,
        )
    items = rows.count
    notes: list[str] = []
    if not rows.measured and calls:
        notes.append(f"rows guessed at {GUESSED_ROW_CHARS} characters each")
    upper = False
    shares: list[ModelEstimate] = []
    for call in calls:
        runs, rows_read = items, 1.0
        if call.scope == "all":
            runs, rows_read = 1, float(items)
        elif call.scope == "group":
            field = splits.get(call.id)
            groups = rows.groups.get(field) if rows.groups is not None and field is not None else None
            if groups is None:
                upper = True
                notes.append(
                    f"{call.id}: one group an item (the split field is not in the input), an upper bound"
                )
            else:
                runs, rows_read = groups, items / groups if groups else 0.0
        if call.when:
            upper = True
            notes.append(f"{call.id}: counted as if its `when` always holds, an upper bound")
        prompt_tokens = runs * math.ceil(
            (_template_chars(plan, call) + rows_read * rows.chars) / CHARS_PER_TOKEN
        )
        completion_tokens = runs * _completion_tokens(call)
        price = Price(input=0, output=0) if _is_mock(plan, call) else price_of(prices, call.model)
        shares.append(
            ModelEstimate(
                model=call.model,
                calls=runs,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=price.cost(prompt_tokens, completion_tokens) if price else None,
            )
        )
    return _summed(items, rows.basis, shares, upper, tuple(notes))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Written:
    """A file an earlier job of a pipeline writes, and how many rows it will hold."""

    rows: int
    by: str


def _pipeline(plan: Plan, count_items: ItemCounter | None, prices: Mapping[str, Price]) -> Estimate:
    # Jobs in order, so a job reading a file an earlier job writes gets that job's row count: the file may
    # not exist yet, and if it does it holds the last run's rows, not this run's.
    written: dict[str, _Written] = {}
    parts: list[tuple[str, Estimate]] = []
    for node in (n for level in plan.levels() for n in level):
        if isinstance(node, JobStep):
            part = _job(node.plan, count_items, prices, written)
            parts.append((node.id, part))
            output = _written_by(node.plan, part)
            if output is not None:
                written[output[0]] = _Written(rows=output[1], by=node.id)
    jobs = tuple(parts)
    unknown = [job_id for job_id, part in jobs if part.calls is None]
    if unknown:
        return Estimate(
            items=None,
            items_basis=f"unknown for {', '.join(unknown)}",
            calls=None,
            prompt_tokens=None,
            completion_tokens=None,
            cost=None,
            jobs=jobs,
        )
    shares = [share for _, part in jobs for share in part.models]
    notes = tuple(f"{job_id}: {note}" for job_id, part in jobs for note in part.notes)
    summed = _summed(None, "per job", shares, any(part.upper_bound for _, part in jobs), notes)
    return replace(summed, jobs=jobs)


def _summed(
    items: int | None, basis: str, shares: Iterable[ModelEstimate], upper: bool, notes: tuple[str, ...]
) -> Estimate:
    """The estimate whose figures are the sums of `shares`, merged by model."""
    merged: dict[str, ModelEstimate] = {}
    for share in shares:
        before = merged.get(share.model)
        if before is not None:
            cost = None if before.cost is None or share.cost is None else before.cost + share.cost
            share = ModelEstimate(
                model=share.model,
                calls=before.calls + share.calls,
                prompt_tokens=before.prompt_tokens + share.prompt_tokens,
                completion_tokens=before.completion_tokens + share.completion_tokens,
                cost=cost,
            )
        merged[share.model] = share
    models = tuple(merged[name] for name in sorted(merged))
    unpriced = tuple(m.model for m in models if m.cost is None)
    return Estimate(
        items=items,
        items_basis=basis,
        calls=sum(m.calls for m in models),
        prompt_tokens=sum(m.prompt_tokens for m in models),
        completion_tokens=sum(m.completion_tokens for m in models),
        cost=None if unpriced else sum(m.cost or 0.0 for m in models),
        models=models,
        upper_bound=upper,
        notes=notes,
        unpriced=unpriced,
    )


def _completion_tokens(call: PromptCall) -> int:
    max_tokens = call.options.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        return max_tokens
    return DEFAULT_COMPLETION_TOKENS


def _split_of(plan: Plan) -> dict[str, str]:
    """Per-group call id -> the field its groups are split by (the nearest `Split` before it)."""
    found: dict[str, str] = {}
    if not any(isinstance(node, PromptCall) and node.scope == "group" for node in plan.nodes):
        return found
    import networkx as nx  # only for a plan with per-group calls: a job's estimate imports no graph library

    graph = plan.graph()
    for node in plan.nodes:
        if isinstance(node, PromptCall) and node.scope == "group":
            splits = [graph.nodes[a]["node"] for a in nx.ancestors(graph, node.id)]
            nearest = [s for s in splits if isinstance(s, Split)]
            if nearest:
                # The nearest split is the one with the most ancestors of its own.
                chosen = max(nearest, key=lambda s: (len(nx.ancestors(graph, s.id)), s.id))
                found[node.id] = chosen.split_by
    return found


def _template_chars(plan: Plan, call: PromptCall) -> int:
    try:
        module = plan.resources.prompt(call.prompt, call.version)
    except KeyError:
        return 0
    return len(module.system or "") + len(module.user)


def _is_mock(plan: Plan, call: PromptCall) -> bool:
    protocols = {p.name: p.protocol for p in plan.resources.providers}
    return protocols.get(call.provider, call.provider) == "mock"


_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def price_of(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of `model`: its own entry, else its undated name's (`gpt-4o-2024-08-06` is `gpt-4o`)."""
    return prices.get(model) or prices.get(_SNAPSHOT.sub("", model))


# --------------------------------------------------------------------------------------------------------------
# Items


def _written_by(plan: Plan, part: Estimate) -> tuple[str, int] | None:
    """(path, rows) of the file a job writes: a row an item, or one row when it writes one collection."""
    sink = next((n for n in plan.nodes if isinstance(n, Sink)), None)
    if (
        sink is None
        or part.items is None
        or sink.destination != "file"
        or not isinstance(sink.options.get("path"), str)
    ):
        return None
    collected = any(e.target == sink.id and e.carries == "collection" for e in plan.edges)
    return posixpath.normpath(sink.options["path"]), 1 if collected else part.items


def _rows(
    plan: Plan,
    source: Source | None,
    fields: tuple[str, ...],
    count_items: ItemCounter | None,
    written: Mapping[str, _Written],
) -> _Rows:
    if source is None:
        return _Rows(count=None, basis="unknown: the plan has no input")
    path = source.options.get("path")
    earlier = (
        written.get(posixpath.normpath(path)) if source.source == "file" and isinstance(path, str) else None
    )
    if earlier is not None:
        return _Rows(count=earlier.rows, basis=f"{path}: {earlier.rows:,} rows written by {earlier.by}")
    if source.source == "file":
        return _file_rows(plan.root, source, fields)
    if source.source == "run_input":
        return _Rows(count=1, basis="1 item (no input): the prompts run once; `--input FILE` gives items instead")
    counted = count_items(source, plan.root) if count_items is not None else None
    if counted is None:
        hint = "" if count_items is not None else ", pass --estimate to count them"
        return _Rows(count=None, basis=f"unknown: {source.source} source{hint}")
    return _Rows(count=counted, basis=f"{source.source} source: {counted:,} rows")


def _file_rows(root: str, source: Source, fields: tuple[str, ...]) -> _Rows:
    written = source.options.get("path")
    if not isinstance(written, str):
        return _Rows(count=None, basis="unknown: the file source has no path")
    path = Path(root) / written
    fmt = source.options.get("format") or suffix_format(written)
    try:
        count, chars, groups = _scan(path, str(fmt), fields)
    except FileNotFoundError:
        return _Rows(count=None, basis=f"unknown: {written} does not exist yet")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        return _Rows(count=None, basis=f"unknown: cannot read {written}: {_reason(error)}")
    noun = "row" if count == 1 else "rows"
    return _Rows(
        count=count,
        basis=f"{written}: {count:,} {noun}",
        chars=chars / count if count else 0.0,
        measured=True,
        groups=groups,
    )


def _reason(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(error)


def _scan(path: Path, fmt: str, fields: tuple[str, ...]) -> tuple[int, int, dict[str, int]]:
    """(rows, characters, field -> distinct values) of a data file; a field no row has is left out."""
    count = chars = 0
    seen: dict[str, set[str]] = {field: set() for field in fields}
    present: set[str] = set()
    for text, value in _read(path, fmt, parse=bool(fields)):
        count += 1
        chars += len(text)
        for field in fields:
            found = _field(value, field)
            if found is not _MISSING:
                present.add(field)
            seen[field].add(json.dumps(found, sort_keys=True, default=str) if found is not _MISSING else "")
    return count, chars, {field: len(values) for field, values in seen.items() if field in present}


_MISSING = object()


def _field(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _read(path: Path, fmt: str, *, parse: bool) -> Iterator[tuple[str, Any]]:
    """(text, value) for each row of the file; the value is parsed only when `parse`."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                text = line.strip()
                if text:
                    yield text, _json_line(text, number) if parse else None
    elif fmt == "json":
        with path.open(encoding="utf-8") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(f"not valid JSON at line {error.lineno}") from None
        if not isinstance(data, list):
            raise ValueError("the top level is not an array")
        for item in data:
            yield json.dumps(item, ensure_ascii=False), item
    elif fmt == "csv":
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None) or []
            for row in reader:
                if row:
                    yield ",".join(row), dict(zip(header, row, strict=False))
    else:
        raise ValueError(f"rows of format {fmt!r} are not counted")


def _json_line(text: str, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"line {number} is not valid JSON") from None


# --------------------------------------------------------------------------------------------------------------
# Prices


def load_prices(root: str) -> dict[str, Price]:
    """The price table: the stdlib's `prices.yaml`, overridden model by model by `<root>/prices.yaml`.

    Raises `ValueError("file:line:column: message")` when the workspace's file is not a valid price table.
    """
    stdlib = resources.files("sleipnir.stdlib") / PRICES_FILE
    prices = parse_prices(stdlib.read_text(encoding="utf-8"), f"stdlib/{PRICES_FILE}")
    path = Path(root) / PRICES_FILE
    if path.is_file():
        shown = display_path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ValueError(f"{shown}: cannot read: {error.strerror or error}") from None
        sink = Diagnostics()
        text = decode(data, shown, sink)
        _raise_first(sink)
        prices.update(parse_prices(text or "", shown))
    return prices


def parse_prices(text: str, file: str) -> dict[str, Price]:
    """A price table from YAML text: `model: {input: USD per 1M tokens, output: USD per 1M tokens}`."""
    sink = Diagnostics()
    documents = load(text, file, sink)
    _raise_first(sink)
    if not documents:
        return {}
    if len(documents) > 1:
        raise ValueError(f"{node_span(file, documents[1].root)}: a price table is one YAML document")
    document = documents[0]
    table = document.value

    def fail(path: tuple[str, ...], message: str, *, at_key: bool = False) -> ValueError:
        key_node, node = locate(document.root, path)
        return ValueError(f"{node_span(file, key_node if at_key and key_node else node)}: {message}")

    if not isinstance(table, dict):
        raise fail((), "a price table maps model names to {input: ..., output: ...} in USD per 1M tokens")
    prices: dict[str, Price] = {}
    for model, entry in table.items():
        if not isinstance(entry, dict):
            raise fail((model,), f"the price of `{model}` must be a mapping {{input: ..., output: ...}}")
        for key in entry:
            if key not in ("input", "output"):
                raise fail(
                    (model, key),
                    f"unknown key `{key}` in the price of `{model}`: the keys are input, output",
                    at_key=True,
                )
        for key in ("input", "output"):
            value = entry.get(key)
            if value is None:
                raise fail((model,), f"the price of `{model}` has no `{key}`")
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
                or not math.isfinite(value)
            ):
                raise fail((model, key), f"`{key}` of `{model}` must be a number >= 0 (USD per 1M tokens)")
        prices[str(model)] = Price(input=float(entry["input"]), output=float(entry["output"]))
    return prices


def _raise_first(sink: Diagnostics) -> None:
    for diagnostic in sink.errors:
        where = diagnostic.primary.span if diagnostic.primary else diagnostic.file
        raise ValueError(f"{where}: {diagnostic.message}")
