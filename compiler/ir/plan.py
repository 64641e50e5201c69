"""The plan's classes: Sleipnir's typed, immutable intermediate representation (its JSON form is `serial.py`).

The plan is the contract between the compiler and the runtime. The runtime reads a `Plan` (or its JSON) and
nothing else: every value is resolved, every prompt module's templates and output schema travel in
`Plan.resources`, and a secret travels as a reference to where it comes from, never as its value.

- Nodes are frozen, slotted dataclasses, one class per kind: `Source`, `PromptCall`, `Split`, `Reduce`,
  `Merge`, `Sink` and `JobStep` (a pipeline's job, holding that job's own plan).
- Edges say what flows: `items` (one item at a time), `groups` (the groups of a split), `collection` (every
  output of the node before, passed by reference to its node id) or `after` (ordering only, between jobs).
- `to_json` is deterministic (sorted keys, nodes in topological order, ties by id); `from_json(to_json(p)) == p`.
- The plan id is a SHA-256 of what runs: the JSON without spans, provenance and the workspace root, so the same
  job compiled in another folder or checkout has the same id (the runtime keys resume state by it).

The JSON Schema of the JSON form is `schema/plan.schema.json`; the rules are in `spec/plan.md`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..span import Span

if TYPE_CHECKING:
    import networkx as nx

FORMAT_VERSION = 2
"""The version of the plan's JSON form; fields are only ever added within a version. Version 2: a pipeline's
job steps name their job plan by id, and the pipeline carries each job plan once, in `plans`."""

SECRET_KEY = "$secret"
_SCALARS = frozenset({str, int, float, bool, type(None)})


class Frozen(Mapping[str, Any]):
    """An immutable, hashable mapping whose values are frozen too (lists become tuples)."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        scalars = _SCALARS
        self._items: dict[str, Any] = {
            k if type(k) is str else str(k): v if type(v) in scalars else freeze(v) for k, v in (items or {}).items()
        }
        self._hash: int | None = None

    @classmethod
    def of_text(cls, items: dict[str, str]) -> Frozen:
        """`Frozen(items)` for a mapping of text to text, which needs no freezing: `items` itself, not a copy
        (whoever made it lets it go). Lowering makes thousands of these, a provenance a node."""
        made = cls.__new__(cls)
        made._items = items
        made._hash = None
        return made

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(sorted((k, _hashable(v)) for k, v in self._items.items())))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Frozen):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return f"Frozen({self._items!r})"


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(map(_hashable, value))
    return value


EMPTY = Frozen()


def frozen(items: Mapping[str, Any] | None) -> Frozen:
    """`Frozen(items)`, sharing one empty instance for the many empty mappings a plan has."""
    return Frozen(items) if items else EMPTY


def freeze(value: Any) -> Any:
    """`value` made immutable: mappings become `Frozen`, lists tuples."""
    kind = type(value)
    if kind in _SCALARS or kind is Frozen or kind is Secret:
        return value
    if kind is dict or isinstance(value, Mapping):
        return Frozen(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A sensitive value, carried as where it comes from. The runtime resolves it when it makes the call."""

    ref: str
    """The text as written, with `${...}` for what the environment supplies: `${OPENAI_API_KEY}`,
    `Bearer ${API_TOKEN}`."""
    names: tuple[str, ...]
    """The environment variables the runtime reads to resolve `ref`."""
    digest: str | None
    """The first 8 hex digits of the SHA-256 of the value at plan time, so a reviewer sees that it changed;
    None when it was not set then."""

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a secret must come from the environment")

    def __str__(self) -> str:
        return f"(sensitive, sha256:{self.digest})" if self.digest else "(sensitive, unset)"


def digest(value: str) -> str:
    """What a secret shows of itself: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(value.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """When and how often a failed call is tried again (tenacity runs it); `delays` spells the schedule out."""

    max_retries: int = 0
    """Retries after the first attempt, not attempts."""
    backoff: str = "exponential"
    """`exponential`: initial * factor^(n-1); `linear`: initial * n; `fixed`: initial; all capped at max_delay."""
    initial_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_delay <= 0 or self.max_delay <= 0 or self.factor < 1:
            raise ValueError(f"bad retry policy {self}")
        if self.backoff not in ("exponential", "linear", "fixed"):
            raise ValueError(f"unknown backoff {self.backoff!r}")

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (1-based), before jitter."""
        if self.backoff == "exponential":
            wait = self.initial_delay * self.factor ** (retry - 1)
        elif self.backoff == "linear":
            wait = self.initial_delay * retry
        else:
            wait = self.initial_delay
        return float(min(self.max_delay, wait))

    @property
    def delays(self) -> tuple[float, ...]:
        return tuple(self.delay(n) for n in range(1, self.max_retries + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """What every node has. `provenance` maps each config key (dotted) to where its value came from."""

    kind: ClassVar[str] = "node"
    id: str
    """Stable and unique in its plan: `input`, `sentiment_analyzer`, `sentiment_analysis_stack.clean`."""
    span: Span | None = None
    """Where the node was declared: the prompt entry, the stack step (in the stack's file), the phase."""
    provenance: Frozen = EMPTY

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a node needs an id")


@dataclass(frozen=True, slots=True, kw_only=True)
class Source(Node):
    """Reads the items, in batches."""

    kind: ClassVar[str] = "source"
    source: str
    """`file`, `database`, `postgresql`, `sqlite`, `api`, or `run_input` (no `input:`: the items come from `--input FILE`, else the prompts run once, for one item with an empty row)."""
    options: Frozen = EMPTY
    """The rest of the input: `path`, `format`, `query`, `parameters`, `connection`, `endpoint`, `auth`; a query written with `${...}` is bound: `query` in the driver's placeholder style (`?` or `%s`), `bound` the values in order, `dialect`."""
    batch_size: int = 100
    batch_strategy: str = "sequential"
    key: str | None = None
    """The field that identifies an item; None: an `id` or `*_id` field, else the row number."""
    keep: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptCall(Node):
    """One call of a prompt module: per item, per group of a split, or once over a whole collection."""

    kind: ClassVar[str] = "prompt"
    prompt: str
    version: str
    scope: str = "item"
    """`item` (per item), `group` (per group of a split) or `all` (once, over a collection)."""
    output: str
    """The name later prompts, conditions and the output row see this call's result by: the prompt name, or
    the step id inside a stack."""
    namespace: str | None = None
    """The stack the call came from, whose name prefixes the output in result rows."""
    model: str
    provider: str
    options: Frozen = EMPTY
    """Model settings: `temperature`, `max_tokens`, `top_p`, `endpoint`, `api_key` (a `Secret`)."""
    parameters: Frozen = EMPTY
    """The module's parameters: its defaults overlaid with the job's values."""
    inputs: Frozen = EMPTY
    """Module variable -> Jinja template over the item and earlier outputs."""
    when: str | None = None
    """A condition on the item and earlier outputs; the call is skipped when it is false."""
    group: str | None = None
    """The parallel group of a stack the call belongs to."""
    parallel: bool = True
    timeout: float = 60.0
    retry: Retry = field(default_factory=Retry)
    on_failure: str = "fail"
    """What happens once retries are spent: `fail` the run, `skip` the item (dead letter) or `alert` and go on."""

    def __post_init__(self) -> None:
        Node.__post_init__(self)
        if self.scope not in ("item", "group", "all"):
            raise ValueError(f"unknown scope {self.scope!r}")
        if self.on_failure not in ("fail", "skip", "alert"):
            raise ValueError(f"unknown failure strategy {self.on_failure!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Split(Node):
    """Groups the items by the value of one field (`fan_out`)."""

    kind: ClassVar[str] = "split"
    split_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reduce(Node):
    """Waits for every output of `collects` and passes them on as one collection (`reduce`)."""

    kind: ClassVar[str] = "reduce"
    collects: tuple[str, ...]
    """Node ids whose outputs are gathered, by reference."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Merge(Node):
    """Waits for every group's outputs of `collects` and passes them on as one collection (`fan_in`)."""

    kind: ClassVar[str] = "merge"
    collects: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sink(Node):
    """Writes the results."""

    kind: ClassVar[str] = "sink"
    destination: str
    """`file`, `database`, `postgresql`, `sqlite`, `api` or `stdout`."""
    options: Frozen = EMPTY
    """`path`, `format`, `table`, `connection`, `endpoint`, `method`, `on_complete`."""
    mode: str = "replace"
    dead_letter: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStep(Node):
    """One job of a pipeline, with the plan it runs."""

    kind: ClassVar[str] = "job"
    job: str
    plan: Plan


NODE_KINDS: dict[str, type[Node]] = {c.kind: c for c in (Source, PromptCall, Split, Reduce, Merge, Sink, JobStep)}

EDGE_KINDS = ("items", "groups", "collection", "after")


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """`target` consumes what `source` produces."""

    source: str
    target: str
    carries: str = "items"

    def __post_init__(self) -> None:
        if self.carries not in EDGE_KINDS:
            raise ValueError(f"unknown edge kind {self.carries!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptModule:
    """A prompt module as the runtime needs it: its templates, variables and output shape."""

    name: str
    version: str
    file: str
    system: str | None = None
    user: str
    variables: Frozen = EMPTY
    output_format: str = "json"
    output_schema: Frozen | None = None
    """The schema every reply is validated against, as written."""
    sent_schema: Frozen | None = None
    """What a server with structured outputs is sent: the strict form of `output_schema` (every property
    required, optional ones nullable, `additionalProperties: false`, refused keywords dropped), or
    `output_schema` itself when strict mode cannot express it (then `strict` is false)."""
    strict: bool = False


STRUCTURED_OUTPUTS = ("json_schema", "json_object", "none")
"""How a provider's server takes an output schema (`sleipnir.yaml` `structured_output`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """A model provider the plan calls."""

    name: str
    """The name prompt calls use: `openai`, `mock`, or one from `sleipnir.yaml`."""
    protocol: str
    """How to talk to it: `openai` (Chat Completions) or `mock`."""
    base_url: str | Secret | None = None
    api_key: Secret | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    fallback: str | None = None
    """The provider calls go to when this one has no API key at run time (`sleipnir.yaml` `fallback_provider`)."""
    structured_output: str = "json_schema"
    """How its server takes an output schema: `json_schema` (structured outputs), `json_object` or `none` (the
    schema goes into the system message)."""
    timeout: float | None = None
    """Seconds for one call, when the prompt does not say."""

    def __post_init__(self) -> None:
        if self.structured_output not in STRUCTURED_OUTPUTS:
            raise ValueError(f"unknown structured_output {self.structured_output!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """A database connection: `default` is the workspace database."""

    name: str
    url: str | Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What the nodes share, by name."""

    prompts: tuple[PromptModule, ...] = ()
    providers: tuple[Provider, ...] = ()
    connections: tuple[Connection, ...] = ()
    rate_limit: Frozen = EMPTY
    """The job's own limits: `requests_per_minute`, `tokens_per_minute`."""

    def prompt(self, name: str, version: str) -> PromptModule:
        for module in self.prompts:
            if (module.name, module.version) == (name, version):
                return module
        raise KeyError(f"{name}@{version}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One resolved value and where it came from, for `plan` to print."""

    key: str
    value: Any
    origin: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", freeze(self.value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What would run: a job's nodes, or a pipeline's jobs, in a DAG, with every value resolved."""

    format_version: int = FORMAT_VERSION
    kind: str
    """`job` or `pipeline`."""
    name: str
    version: str | None = None
    description: str | None = None
    root: str = "."
    """The workspace root relative paths are resolved against (not part of the plan id)."""
    profile: str | None = None
    parameters: tuple[Setting, ...] = ()
    """The resolved `params` and overrides, with their origins."""
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    resources: Resources = field(default_factory=Resources)
    settings: Frozen = EMPTY
    """Run-wide settings with defaults filled in: `execution`, `error_handling`, `schedule`, `triggers`,
    `conditions`, `monitoring`, `logging`, `alerts`."""
    span: Span | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("job", "pipeline"):
            raise ValueError(f"unknown plan kind {self.kind!r}")
        ids = [node.id for node in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate node ids in plan {self.name}")
        position = {node_id: index for index, node_id in enumerate(ids)}
        for edge in self.edges:
            if edge.source not in position or edge.target not in position:
                raise ValueError(f"edge {edge.source} -> {edge.target} names a node that is not in the plan")
            # Nodes in topological order is the invariant that also rules out cycles.
            if position[edge.source] >= position[edge.target]:
                raise ValueError(f"plan {self.name}: nodes are not in topological order at {edge.source} -> {edge.target}")

    def graph(self) -> nx.DiGraph[str]:
        """The nodes and edges as a networkx graph (node attribute `node`, edge attribute `carries`)."""
        import networkx as nx  # imported when a graph is drawn or levelled, not for every compile

        graph: nx.DiGraph[str] = nx.DiGraph()
        for node in self.nodes:
            graph.add_node(node.id, node=node)
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, carries=edge.carries)
        return graph

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def levels(self) -> list[list[Node]]:
        """The nodes by topological level: each level depends only on the levels before it (networkx's
        `topological_generations`, without importing networkx: the nodes are in topological order already)."""
        level: dict[str, int] = {}
        before: dict[str, list[str]] = {}
        for edge in self.edges:
            before.setdefault(edge.target, []).append(edge.source)
        levels: list[list[Node]] = []
        for node in self.nodes:
            number = level[node.id] = max((level[s] + 1 for s in before.get(node.id, ())), default=0)
            if number == len(levels):
                levels.append([])
            levels[number].append(node)
        return [sorted(nodes, key=lambda n: n.id) for nodes in levels]

    @property
    def id(self) -> str:
        """The content hash of what runs: the same inputs give the same id wherever they are compiled."""
        from .serial import plan_id  # the JSON form is built from these classes

        return plan_id(self)


def thaw(value: Any) -> Any:
    """Frozen values back to plain dicts and lists (secrets stay `Secret`)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
