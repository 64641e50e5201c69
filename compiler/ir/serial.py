"""The plan's JSON form: deterministic (sorted keys, nodes in topological order, ties by id), read back by
`from_json` so that `from_json(to_json(p)) == p`, and hashed without spans, provenance and the root into the plan
id. The JSON Schema of this form is `schema/plan.schema.json`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any

import orjson

from ..span import Span
from .common import mask_passwords
from .plan import (
    FORMAT_VERSION,
    NODE_KINDS,
    SECRET_KEY,
    Connection,
    Edge,
    Frozen,
    JobStep,
    Node,
    Plan,
    PromptModule,
    Provider,
    Resources,
    Retry,
    Secret,
    Setting,
)


def ordered(nodes: tuple[Node, ...], edges: tuple[Edge, ...]) -> tuple[tuple[Node, ...], tuple[Edge, ...]]:
    """Nodes in topological order (ties by id) and edges sorted: the canonical order of a plan.

    Kahn's algorithm with a heap, as networkx's `lexicographical_topological_sort` does, without building a graph
    for each of the thousands of small job plans a pipeline has. Raises `ValueError` on a cycle.
    """
    canonical = tuple(sorted(edges, key=lambda e: (e.source, e.target, e.carries)))
    chain = len(edges) == len(nodes) - 1 and all(
        e.source == a.id and e.target == b.id for e, a, b in zip(edges, nodes, nodes[1:], strict=False)
    )
    if chain and len({node.id for node in nodes}) == len(nodes):
        return nodes, canonical  # each node after the one before (most jobs): the only order there is
    by_id = {node.id: node for node in nodes}
    waiting = dict.fromkeys(by_id, 0)
    after: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for edge in edges:
        waiting[edge.target] += 1
        after[edge.source].append(edge.target)
    ready = [node_id for node_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node_id = heapq.heappop(ready)
        order.append(node_id)
        for target in after[node_id]:
            waiting[target] -= 1
            if waiting[target] == 0:
                heapq.heappush(ready, target)
    if len(order) != len(by_id):
        raise ValueError("the plan's edges form a cycle")
    return tuple(by_id[i] for i in order), canonical


def to_data(plan: Plan, *, for_hash: bool = False) -> dict[str, Any]:
    """The plan as JSON-ready data. `for_hash` leaves out spans, provenance and the root.

    A pipeline's job steps hold their job plan's id; `plans` holds each job plan once, by id (it is not part of
    the hash: the ids in the steps already are)."""
    memo = _Memo(splice=False)
    data: dict[str, Any] = _plan_pair(plan, memo)[for_hash]
    if plan.kind == "pipeline" and not for_hash:
        data["plans"] = {job_id: _plan_pair(job, memo)[0] for job_id, job in sorted(_job_plans(plan, memo).items())}
    return data


def to_json(plan: Plan, *, indent: int | None = 2) -> str:
    """The plan's JSON form: deterministic, byte for byte, for the same inputs. The password of any URL in it is
    masked (`user:***@`): the plan carries secrets only as references, and a literal one is `check`'s warning
    (read back, such a plan holds `***`, and the runtime cannot connect with it)."""
    return "".join(iter_json(plan, indent=indent))


def iter_json(plan: Plan, *, indent: int | None = 2) -> Iterator[str]:
    """`to_json` in pieces, for writing as it is made: a pipeline's job plans one at a time, each on one line
    (thousands of them would take seconds through json's indenting encoder, which is pure Python). Each piece is
    whole JSON text, so each has its URL passwords masked as `to_json` says."""
    for piece in iter_json_bytes(plan, indent=indent):
        yield piece.decode()


def iter_json_bytes(plan: Plan, *, indent: int | None = 2) -> Iterator[bytes]:
    """`iter_json`, UTF-8: for a binary stream, which a 2,000-job pipeline's 16 MB then reach without being
    decoded and encoded again."""
    # Each job plan is walked once, for its id and its line together; the lines wait, compact and with markers
    # for the shared resources, until the head (which needs every id) is written. They wait end to end in one
    # buffer: 2,000 small blocks among the walks' freed ones kept twice their size in memory.
    memo = _Memo(splice=True)
    kept = bytearray()
    lines: dict[str, tuple[int, int]] = {}
    for node in plan.nodes:
        if type(node) is JobStep and id(node.plan) not in memo.ids:
            job_id, data = _identity(node.plan, memo)
            memo.ids[id(node.plan)] = job_id
            start = len(kept)
            kept += _compact(data)
            lines[job_id] = (start, len(kept))  # two plans with one id: the last one's, as `to_data` keeps
    identity, head = _identity(plan, _Memo(splice=False, ids=memo.ids))
    if plan.kind != "pipeline":
        yield mask_passwords(_dumps({"id": identity, **head}, indent) + "\n").encode()
        return
    marker = f"plans-{identity}"
    text = _dumps({"id": identity, **head, "plans": marker}, indent)
    before, after = text.split(json.dumps(marker))
    yield mask_passwords(before + "{").encode()
    pad = "\n" + " " * (2 * indent) if indent else ""
    for number, job_id in enumerate(sorted(lines)):
        start, end = lines[job_id]
        key = f"{',' if number else ''}{pad}{json.dumps(job_id)}: ".encode()
        yield memo.spliced(kept[start:end], hashed=False, lead=key)
    yield mask_passwords(("\n" + " " * indent if indent else "") + "}" + after + "\n").encode()


def plan_id(plan: Plan) -> str:
    return _identity(plan, _Memo(splice=True))[0]


def _identity(plan: Plan, memo: _Memo) -> tuple[str, dict[str, Any]]:
    """The plan's id and its JSON data (with `memo.splice`, the shared resources in it stand as markers)."""
    data, hashed = _plan_pair(plan, memo)
    # Masked as `to_json` masks, so the JSON of a plan with a literal password still carries its own id.
    return hashlib.sha256(memo.spliced(_compact(hashed), hashed=True)).hexdigest(), data


class _Memo:
    """What one serialisation computes once: each job plan's id, and (with `splice`, for compact JSON) the JSON
    of each shared resource. Lowering makes one `PromptModule` and `Provider` per workspace and shares it among
    the jobs that use it; in a 2,000-job pipeline their copies were 60% of the job plans' JSON. With `splice`,
    a shared resource is encoded once, stands as a marker string in each plan's data, and `spliced` puts its
    text in place of the marker: the same bytes `json.dumps` would write there."""

    __slots__ = ("hash_texts", "ids", "kept", "numbers", "opening", "prefix", "splice", "texts", "urls")

    def __init__(self, *, splice: bool, ids: dict[int, str] | None = None) -> None:
        self.splice = splice
        self.ids: dict[int, str] = {} if ids is None else ids
        self.numbers: dict[int, int] = {}
        self.texts: list[bytes] = []
        self.hash_texts: list[bytes] = []
        self.urls: list[bool] = []
        """Whether each resource's text (or its text for the id) may hold a URL with a password."""
        self.kept: list[Any] = []
        """The resources encoded: alive as long as the memo, so that no other object takes their `id`."""
        # A control character and a random part: no string of a plan is written as this.
        self.prefix = f"\x00{os.urandom(8).hex()}:"
        self.opening = json.dumps(self.prefix)[:-1].encode()
        """How every marker begins as JSON writes it (quoted, its control character escaped); its number and
        closing quote follow."""

    def resource(self, item: Any) -> _Pair:
        if not self.splice:
            return _pair(item)
        number = self.numbers.get(id(item))
        if number is None:
            number = self.numbers[id(item)] = len(self.texts)
            data, hashed = _pair(item)
            self.texts.append(_compact(data))
            self.hash_texts.append(_compact(hashed))
            self.urls.append(b"://" in self.texts[-1] or b"://" in self.hash_texts[-1])
            self.kept.append(item)
        marker = f"{self.prefix}{number}"
        return marker, marker

    def spliced(self, text: bytes | bytearray, *, hashed: bool, lead: bytes = b"") -> bytes:
        """Compact JSON `text` with each marker replaced by its resource's text (for the id, or not), passwords
        masked, after the text `lead` (which holds no URL). A URL cannot span a marker's edges (`[` or `,`
        before it, `{` after), so `text` and the resources say whether the whole may hold one: then, and only
        then, is it searched for passwords."""
        texts = self.hash_texts if hashed else self.texts
        parts = text.split(self.opening)
        url = b"://" in text
        pieces = [lead, parts[0]]
        for part in parts[1:]:
            end = part.index(b'"')
            number = int(part[:end])
            pieces += (texts[number], part[end + 1 :])
            url = url or self.urls[number]
        whole = b"".join(pieces)
        return mask_passwords(whole.decode()).encode() if url else whole


def _compact(data: Any) -> bytes:
    """`_dumps(data, None)`, UTF-8 (a lone surrogate, which only `json` writes, cannot be: it raises, as writing or
    hashing it always did)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError
        return _dumps(data, None).encode()


def _dumps(data: Any, indent: int | None) -> str:
    """`json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False)`, compact without `indent`, byte for
    byte; through orjson, about five times faster on a plan, where it writes the same bytes (`_pair` wraps the
    floats it would write otherwise, and integers beyond 64 bits, keys that are not text and lone surrogates
    make it refuse): anything it refuses goes to `json`."""
    if indent in (None, 2):
        try:
            return orjson.dumps(data, option=_INDENTED if indent else orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # orjson.JSONEncodeError
            pass
    if indent is None:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False)


_INDENTED = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2


class _Float(float):
    """A float orjson would write otherwise than `json` (NaN, infinities, `1e-05`): orjson refuses the subclass,
    `json` writes it as the float it is."""


def _job_plans(plan: Plan, memo: _Memo) -> dict[str, Plan]:
    """A pipeline's job plans by id, each once (two entries that run the same plan share it)."""
    return {_job_id(node.plan, memo): node.plan for node in plan.nodes if isinstance(node, JobStep)}


def _job_id(plan: Plan, memo: _Memo) -> str:
    """A job plan's id, computed once per serialisation (the plan objects live as long as the memo does)."""
    found = memo.ids.get(id(plan))
    if found is None:
        found = memo.ids[id(plan)] = _identity(plan, memo)[0]
    return found


# Each value is walked once for both of its forms: `_Pair` is (its JSON data, its data for the id). The two share
# every part that the id does not leave out, so most of a plan is made once.
_Pair = tuple[Any, Any]

_SKIPPED_FOR_HASH = {"span", "provenance", "root", "origin", "file"}
"""Where things came from, not what runs: left out of the plan id, so that it is the same from any folder."""
_SHARED = ("prompts", "providers")
"""The resources lowering shares among plans (see `_Memo`)."""


def _plan_pair(value: Plan | Resources, memo: _Memo) -> _Pair:
    """A plan, or its resources: its nodes, and the resources lowering shares, through `memo`."""
    data: dict[str, Any] = {}
    hashed: dict[str, Any] = {}
    for name, kept in _fields_of(type(value)):
        item = getattr(value, name)
        if name == "nodes":
            pair = _unzipped([_node_pair(node, memo) for node in item])
        elif name in _SHARED:
            pair = _unzipped([memo.resource(shared) for shared in item])
        elif type(item) is Resources:
            pair = _plan_pair(item, memo)
        else:
            pair = _pair(item)
        data[name] = pair[0]
        if kept:
            hashed[name] = pair[1]
    return data, hashed


def _unzipped(pairs: list[_Pair]) -> _Pair:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _node_pair(node: Node, memo: _Memo) -> _Pair:
    data: dict[str, Any] = {"kind": node.kind}
    hashed: dict[str, Any] = {"kind": node.kind}
    plain = _PLAIN
    for name, kept in _fields_of(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind in plain:
            data[name] = value
            if kept:
                hashed[name] = value
        elif kind is Plan:
            data[name] = hashed[name] = _job_id(value, memo)
        else:
            data[name], other = _pair(value)
            if kept:
                hashed[name] = other
    return data, hashed


_PLAIN = frozenset({str, int, bool, type(None)})
"""Values written as they are. Floats are not: `_pair` looks at each (a plan has few)."""


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, bool], ...]:
    """The fields of a plan class, each with whether the id holds it; looked up once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple((f.name, f.name not in _SKIPPED_FOR_HASH) for f in fields(cls))
    return found


def _pair(value: Any) -> _Pair:
    # Exact types first: a 2,000-job pipeline has a million values, and ABC isinstance checks were half the
    # time of writing its JSON.
    kind = type(value)
    if kind in _PLAIN:
        return value, value
    if kind is float:
        if 1e-4 <= abs(value) < 1e16 or (math.isfinite(value) and "e" not in repr(value)):
            return value, value  # repr writes no exponent in that range: no need to ask it
        wrapped = _Float(value)
        return wrapped, wrapped
    if kind is Frozen:
        return _mapping_pair(value._items)
    if kind is tuple or kind is list:
        return _sequence_pair(value)
    convert = _CONVERTERS.get(kind)
    if convert is None:
        convert = _CONVERTERS[kind] = _converter(kind)
    return convert(value)


def _mapping_pair(value: Mapping[Any, Any]) -> _Pair:
    data: dict[str, Any] = {}
    differs: dict[str, Any] | None = None
    plain = _PLAIN
    for key, item in value.items():
        if type(key) is not str:
            key = str(key)
        if type(item) in plain:
            data[key] = item
            continue
        data[key], other = _pair(item)
        if other is not data[key]:
            differs = {} if differs is None else differs
            differs[key] = other
    return (data, data) if differs is None else (data, {**data, **differs})


def _sequence_pair(value: list[Any] | tuple[Any, ...]) -> _Pair:
    data: list[Any] = []
    differs: dict[int, Any] | None = None
    plain = _PLAIN
    for position, item in enumerate(value):
        if type(item) in plain:
            data.append(item)
            continue
        mine, other = _pair(item)
        data.append(mine)
        if other is not mine:
            differs = {} if differs is None else differs
            differs[position] = other
    if differs is None:
        return data, data
    hashed = list(data)
    for position, other in differs.items():
        hashed[position] = other
    return data, hashed


def _secret_pair(value: Secret) -> _Pair:
    # A rotated key must not change the plan id that resume state is keyed by.
    return (
        {SECRET_KEY: str(value), "ref": value.ref, "names": list(value.names), "digest": value.digest},
        {SECRET_KEY: "", "ref": value.ref, "names": list(value.names)},
    )


def _span_pair(value: Span) -> _Pair:
    data = {
        "file": value.file,
        "line": value.line,
        "column": value.column,
        "end_line": value.end_line,
        "end_column": value.end_column,
    }
    return data, data


def _dataclass_pair(value: Any) -> _Pair:
    data: dict[str, Any] = {}
    hashed: dict[str, Any] = {}
    same = True
    plain = _PLAIN
    for name, kept in _fields_of(type(value)):
        item = getattr(value, name)
        if type(item) in plain:
            mine = other = item
        else:
            mine, other = _pair(item)
        data[name] = mine
        if kept:
            hashed[name] = other
            same = same and other is mine
        else:
            same = False
    return (data, data) if same else (data, hashed)


def _as_is(value: Any) -> _Pair:
    return value, value


def _converter(kind: type) -> Callable[[Any], _Pair]:
    """How values of type `kind` become JSON data: decided once per type (the isinstance checks against ABCs
    were a tenth of writing a 2,000-job pipeline's JSON)."""
    if issubclass(kind, Secret):
        return _secret_pair
    if issubclass(kind, Span):
        return _span_pair
    if issubclass(kind, Mapping):
        return _mapping_pair
    if issubclass(kind, list | tuple):
        return _sequence_pair
    if hasattr(kind, "__dataclass_fields__"):
        return _dataclass_pair
    return _as_is


_CONVERTERS: dict[type, Callable[[Any], _Pair]] = {}


def from_json(text: str) -> Plan:
    """A plan from its JSON form. Raises `ValueError` for JSON that is not a plan of this format version."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a Sleipnir plan of format version {FORMAT_VERSION}")
    plan = from_data(data)
    if "id" in data and data["id"] != plan.id:
        raise ValueError("the plan's id does not match its content: it was edited or is corrupt")
    return plan


def from_data(data: Mapping[str, Any]) -> Plan:
    """A plan from `to_data`'s output."""
    try:
        return _plan_from(data, _JobPlans(data.get("plans") or {}))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"malformed plan: {error!r}") from error


class _JobPlans:
    """A pipeline's `plans` table, each job plan read once however many steps run it."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.table = table
        self.read: dict[str, Plan] = {}

    def __getitem__(self, job_id: str) -> Plan:
        found = self.read.get(job_id)
        if found is None:
            found = self.read[job_id] = _plan_from(self.table[job_id], self)
        return found


def _plan_from(data: Mapping[str, Any], plans: _JobPlans) -> Plan:
    resources = data.get("resources") or {}
    return Plan(
        format_version=data["format_version"],
        kind=data["kind"],
        name=data["name"],
        version=data.get("version"),
        description=data.get("description"),
        root=data.get("root", "."),
        profile=data.get("profile"),
        parameters=tuple(
            Setting(key=s["key"], value=_value(s["value"]), origin=s["origin"]) for s in data.get("parameters", ())
        ),
        nodes=tuple(_node_from(n, plans) for n in data.get("nodes", ())),
        edges=tuple(Edge(**e) for e in data.get("edges", ())),
        resources=Resources(
            prompts=tuple(_module_from(m) for m in resources.get("prompts", ())),
            providers=tuple(_provider_from(p) for p in resources.get("providers", ())),
            connections=tuple(Connection(name=c["name"], url=_value(c["url"])) for c in resources.get("connections", ())),
            rate_limit=Frozen(resources.get("rate_limit") or {}),
        ),
        settings=_value(data.get("settings") or {}),
        span=_span(data.get("span")),
    )


def _span(data: Any) -> Span | None:
    return Span(**data) if data else None


def _value(data: Any) -> Any:
    """JSON data back to frozen values, secrets included."""
    if isinstance(data, dict):
        if SECRET_KEY in data:
            return Secret(ref=data["ref"], names=tuple(data["names"]), digest=data["digest"])
        return Frozen({k: _value(v) for k, v in data.items()})
    if isinstance(data, list):
        return tuple(_value(v) for v in data)
    return data


def _node_from(data: Mapping[str, Any], plans: _JobPlans) -> Node:
    cls = NODE_KINDS[data["kind"]]
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        raw = data[f.name]
        if f.name == "span":
            values[f.name] = _span(raw)
        elif f.name == "plan":
            values[f.name] = plans[raw]
        elif f.name == "retry":
            values[f.name] = Retry(**raw)
        else:
            values[f.name] = _value(raw)
    return cls(**values)


def _module_from(data: Mapping[str, Any]) -> PromptModule:
    schema = data.get("output_schema")
    return PromptModule(
        name=data["name"],
        version=data["version"],
        file=data["file"],
        system=data.get("system"),
        user=data["user"],
        variables=_value(data.get("variables") or {}),
        output_format=data.get("output_format", "json"),
        output_schema=_value(schema) if schema is not None else None,
        sent_schema=_value(data["sent_schema"]) if data.get("sent_schema") is not None else None,
        strict=bool(data.get("strict", False)),
    )


def _provider_from(data: Mapping[str, Any]) -> Provider:
    return Provider(
        name=data["name"],
        protocol=data["protocol"],
        base_url=_value(data.get("base_url")),
        api_key=_value(data.get("api_key")),
        requests_per_minute=data.get("requests_per_minute"),
        tokens_per_minute=data.get("tokens_per_minute"),
        fallback=data.get("fallback"),
        structured_output=data.get("structured_output", "json_schema"),
        timeout=data.get("timeout"),
    )


