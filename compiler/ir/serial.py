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
    return tuple(by_id[i] for i in order), tuple(sorted(edges, key=lambda e: (e.source, e.target, e.carries)))


def to_data(plan: Plan, *, for_hash: bool = False) -> dict[str, Any]:
    """The plan as JSON-ready data. `for_hash` leaves out spans, provenance and the root.

    A pipeline's job steps hold their job plan's id; `plans` holds each job plan once, by id (it is not part of
    the hash: the ids in the steps already are)."""
    memo = _Memo(splice=False)
    data = _plan_data(plan, for_hash, memo)
    if plan.kind == "pipeline" and not for_hash:
        data["plans"] = {job_id: _plan_data(job, False, memo) for job_id, job in sorted(_job_plans(plan, memo).items())}
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
    for piece in _json_pieces(plan, indent):
        yield mask_passwords(piece)


def _json_pieces(plan: Plan, indent: int | None) -> Iterator[str]:
    memo = _Memo(splice=True)
    identity = _digest(memo.compact(_plan_data(plan, True, memo)))
    head = _plan_data(plan, False, _Memo(splice=False, ids=memo.ids))
    if plan.kind != "pipeline":
        yield _dumps({"id": identity, **head}, indent) + "\n"
        return
    marker = f"plans-{identity}"
    text = _dumps({"id": identity, **head, "plans": marker}, indent)
    before, after = text.split(json.dumps(marker))
    yield before + "{"
    pad = "\n" + " " * (2 * indent) if indent else ""
    for number, (job_id, job) in enumerate(sorted(_job_plans(plan, memo).items())):
        line = memo.compact(_plan_data(job, False, memo))
        yield f"{',' if number else ''}{pad}{json.dumps(job_id)}: {line}"
    yield ("\n" + " " * indent if indent else "") + "}" + after + "\n"


def plan_id(plan: Plan) -> str:
    memo = _Memo(splice=True)
    return _digest(memo.compact(_plan_data(plan, True, memo)))


def _digest(canonical: str) -> str:
    # Masked as `to_json` masks, so the JSON of a plan with a literal password still carries its own id.
    return hashlib.sha256(mask_passwords(canonical).encode()).hexdigest()


class _Memo:
    """What one serialisation computes once: each job plan's id, and (with `splice`, for compact JSON) the JSON
    of each shared resource. Lowering makes one `PromptModule` and `Provider` per workspace and shares it among
    the jobs that use it; in a 2,000-job pipeline their copies were 60% of the job plans' JSON. With `splice`,
    a shared resource is encoded once, stands as a marker string in each plan's data, and `compact` puts its
    text in place of the marker: the same bytes `json.dumps` would write there."""

    __slots__ = ("ids", "kept", "markers", "numbers", "prefix", "splice", "texts", "used")

    def __init__(self, *, splice: bool, ids: dict[int, str] | None = None) -> None:
        self.splice = splice
        self.ids: dict[int, str] = {} if ids is None else ids
        self.numbers: dict[tuple[int, bool], int] = {}
        self.texts: list[str] = []
        self.markers: list[str] = []
        """Each marker as JSON writes it (quoted, its control character escaped)."""
        self.kept: list[Any] = []
        """The resources encoded: alive as long as the memo, so that no other object takes their `id`."""
        self.used: set[int] = set()
        # A control character and a random part: no string of a plan is written as this.
        self.prefix = f"\x00{os.urandom(8).hex()}:"

    def resource(self, item: Any, for_hash: bool) -> Any:
        if not self.splice:
            return _data(item, for_hash)
        key = (id(item), for_hash)
        number = self.numbers.get(key)
        if number is None:
            number = self.numbers[key] = len(self.texts)
            self.texts.append(_compact(_data(item, for_hash)))
            self.markers.append(json.dumps(f"{self.prefix}{number}"))
            self.kept.append(item)
        self.used.add(number)
        return f"{self.prefix}{number}"

    def compact(self, data: Any) -> str:
        """`data` as canonical compact JSON, each marker replaced by its resource's text."""
        text = _compact(data)
        for number in self.used:
            text = text.replace(self.markers[number], self.texts[number])
        self.used.clear()
        return text


def _compact(data: Any) -> str:
    return _dumps(data, None)


def _dumps(data: Any, indent: int | None) -> str:
    """`json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False)`, compact without `indent`, byte for
    byte; through orjson, about five times faster on a plan, where it writes the same bytes (`_data` wraps the
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
        hashing = memo if memo.splice else _Memo(splice=True)
        found = memo.ids[id(plan)] = _digest(hashing.compact(_plan_data(plan, True, hashing)))
    return found


_SKIPPED_FOR_HASH = {"span", "provenance", "root", "origin", "file"}
"""Where things came from, not what runs: left out of the plan id, so that it is the same from any folder."""
_SHARED = ("prompts", "providers")
"""The resources lowering shares among plans (see `_Memo`)."""


def _plan_data(plan: Plan, for_hash: bool, memo: _Memo) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _field_names(Plan, for_hash):
        value = getattr(plan, name)
        if name == "nodes":
            data["nodes"] = [_node_data(node, for_hash, memo) for node in value]
        elif name == "resources" and type(value) is Resources:
            data["resources"] = {
                field: [memo.resource(item, for_hash) for item in getattr(value, field)]
                if field in _SHARED
                else _data(getattr(value, field), for_hash)
                for field in _field_names(Resources, for_hash)
            }
        else:
            data[name] = _data(value, for_hash)
    return data


def _node_data(node: Node, for_hash: bool, memo: _Memo) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": node.kind}
    plain = _PLAIN
    for name in _field_names(type(node), for_hash):
        value = getattr(node, name)
        kind = type(value)
        data[name] = value if kind in plain else _job_id(value, memo) if kind is Plan else _data(value, for_hash)
    return data


_PLAIN = frozenset({str, int, bool, type(None)})
"""Values written as they are. Floats are not: `_data` looks at each (a plan has few)."""


_FIELD_NAMES: dict[tuple[type, bool], tuple[str, ...]] = {}


def _field_names(cls: type, for_hash: bool) -> tuple[str, ...]:
    """The fields of a plan class the JSON (or the hash) holds, looked up once per class."""
    names = _FIELD_NAMES.get((cls, for_hash))
    if names is None:
        names = _FIELD_NAMES[(cls, for_hash)] = tuple(
            f.name for f in fields(cls) if not (for_hash and f.name in _SKIPPED_FOR_HASH)
        )
    return names


def _data(value: Any, for_hash: bool) -> Any:
    # Exact types first: a 2,000-job pipeline has a million values, and ABC isinstance checks were half the
    # time of writing its JSON.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if 1e-4 <= abs(value) < 1e16:  # repr writes no exponent here: no need to ask it
            return value
        return value if math.isfinite(value) and "e" not in repr(value) else _Float(value)
    if kind is Frozen:
        return {k: v if type(v) in _PLAIN else _data(v, for_hash) for k, v in value._items.items()}
    if kind is tuple or kind is list:
        return [v if type(v) in _PLAIN else _data(v, for_hash) for v in value]
    return _other_data(value, for_hash)


def _other_data(value: Any, for_hash: bool) -> Any:
    convert = _CONVERTERS.get(type(value))
    if convert is None:
        convert = _CONVERTERS[type(value)] = _converter(type(value))
    return convert(value, for_hash)


def _secret_data(value: Secret, for_hash: bool) -> dict[str, Any]:
    if for_hash:
        # A rotated key must not change the plan id that resume state is keyed by.
        return {SECRET_KEY: "", "ref": value.ref, "names": list(value.names)}
    return {SECRET_KEY: str(value), "ref": value.ref, "names": list(value.names), "digest": value.digest}


def _span_data(value: Span, for_hash: bool) -> dict[str, Any]:
    return {
        "file": value.file,
        "line": value.line,
        "column": value.column,
        "end_line": value.end_line,
        "end_column": value.end_column,
    }


def _mapping_data(value: Mapping[Any, Any], for_hash: bool) -> dict[str, Any]:
    return {str(k): _data(v, for_hash) for k, v in value.items()}


def _sequence_data(value: list[Any] | tuple[Any, ...], for_hash: bool) -> list[Any]:
    return [_data(v, for_hash) for v in value]


def _dataclass_data(value: Any, for_hash: bool) -> dict[str, Any]:
    data = {}
    for name in _field_names(type(value), for_hash):
        item = getattr(value, name)
        data[name] = item if type(item) in _PLAIN else _data(item, for_hash)
    return data


def _as_is(value: Any, for_hash: bool) -> Any:
    return value


def _converter(kind: type) -> Callable[[Any, bool], Any]:
    """How values of type `kind` become JSON data: decided once per type (the isinstance checks against ABCs
    were a tenth of writing a 2,000-job pipeline's JSON)."""
    if issubclass(kind, Secret):
        return _secret_data
    if issubclass(kind, Span):
        return _span_data
    if issubclass(kind, Mapping):
        return _mapping_data
    if issubclass(kind, list | tuple):
        return _sequence_data
    if hasattr(kind, "__dataclass_fields__"):
        return _dataclass_data
    return _as_is


_CONVERTERS: dict[type, Callable[[Any, bool], Any]] = {}


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


