"""The plan's JSON form: deterministic (sorted keys, nodes in topological order, ties by id), read back by
`from_json` so that `from_json(to_json(p)) == p`, and hashed without spans, provenance and the root into the plan
id. The JSON Schema of this form is `schema/plan.schema.json`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

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
    ids: dict[int, str] = {}
    data = _plan_data(plan, for_hash, ids)
    if plan.kind == "pipeline" and not for_hash:
        data["plans"] = {job_id: _plan_data(job, False, ids) for job_id, job in sorted(_job_plans(plan, ids).items())}
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
    ids: dict[int, str] = {}
    head = _plan_data(plan, False, ids)
    identity = _digest(_plan_data(plan, True, ids))
    if plan.kind != "pipeline":
        yield json.dumps({"id": identity, **head}, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
        return
    marker = f"plans-{identity}"
    text = json.dumps({"id": identity, **head, "plans": marker}, indent=indent, sort_keys=True, ensure_ascii=False)
    before, after = text.split(json.dumps(marker))
    yield before + "{"
    pad = "\n" + " " * (2 * indent) if indent else ""
    for number, (job_id, job) in enumerate(sorted(_job_plans(plan, ids).items())):
        line = json.dumps(_plan_data(job, False, ids), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        yield f"{',' if number else ''}{pad}{json.dumps(job_id)}: {line}"
    yield ("\n" + " " * indent if indent else "") + "}" + after + "\n"


def plan_id(plan: Plan) -> str:
    return _digest(_plan_data(plan, True, {}))


def _digest(data: dict[str, Any]) -> str:
    # Masked as `to_json` masks, so the JSON of a plan with a literal password still carries its own id.
    canonical = mask_passwords(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _job_plans(plan: Plan, ids: dict[int, str]) -> dict[str, Plan]:
    """A pipeline's job plans by id, each once (two entries that run the same plan share it)."""
    return {_job_id(node.plan, ids): node.plan for node in plan.nodes if isinstance(node, JobStep)}


def _job_id(plan: Plan, ids: dict[int, str]) -> str:
    """A job plan's id, computed once per serialisation (the plan objects live as long as `ids` does)."""
    found = ids.get(id(plan))
    if found is None:
        found = ids[id(plan)] = plan_id(plan)
    return found


_SKIPPED_FOR_HASH = {"span", "provenance", "root", "origin", "file"}
"""Where things came from, not what runs: left out of the plan id, so that it is the same from any folder."""


def _plan_data(plan: Plan, for_hash: bool, ids: dict[int, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _field_names(Plan, for_hash):
        value = getattr(plan, name)
        if name == "nodes":
            data["nodes"] = [_node_data(node, for_hash, ids) for node in value]
        else:
            data[name] = _data(value, for_hash)
    return data


def _node_data(node: Node, for_hash: bool, ids: dict[int, str]) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": node.kind}
    for name in _field_names(type(node), for_hash):
        value = getattr(node, name)
        data[name] = _job_id(value, ids) if type(value) is Plan else _data(value, for_hash)
    return data


_PLAIN = frozenset({str, int, float, bool, type(None)})


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
    if kind is Frozen:
        return {k: v if type(v) in _PLAIN else _data(v, for_hash) for k, v in value._items.items()}
    if kind is tuple or kind is list:
        return [v if type(v) in _PLAIN else _data(v, for_hash) for v in value]
    return _other_data(value, for_hash)


def _other_data(value: Any, for_hash: bool) -> Any:
    if isinstance(value, Secret):
        if for_hash:
            # A rotated key must not change the plan id that resume state is keyed by.
            return {SECRET_KEY: "", "ref": value.ref, "names": list(value.names)}
        return {SECRET_KEY: str(value), "ref": value.ref, "names": list(value.names), "digest": value.digest}
    if isinstance(value, Span):
        return {f: getattr(value, f) for f in ("file", "line", "column", "end_line", "end_column")}
    if isinstance(value, Mapping):
        return {str(k): _data(v, for_hash) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_data(v, for_hash) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _data(getattr(value, name), for_hash) for name in _field_names(type(value), for_hash)}
    return value


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


