"""Effective documents -> the typed plan. One job lowers to source -> calls -> sink; a pipeline to its jobs.

- `prompts` chain per item: each call sees the row and every earlier call's output, by prompt name.
- A `stack` is expanded inline: each step is a call named `<stack>.<step id>` whose span points into the stack's
  file; a parallel group's calls all follow what came before the group, and the next step waits for all of them.
- `phases`: `map` (and any per-item phase) is a call per item; `reduce` gathers every output (a `Reduce` node,
  by reference) and its prompt runs once over them; `fan_out` splits the items into groups by `split_by`,
  `process` runs per group, and `fan_in` merges the groups' outputs (a `Merge` node) for its prompt.
- Defaults are filled in here, once, so the runtime never guesses: they are the ones spec/job.md documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .diagnostics import Diagnostics
from .documents import Document
from .ir import (
    EMPTY,
    Connection,
    Edge,
    Frozen,
    Merge,
    Node,
    Plan,
    PromptCall,
    PromptModule,
    Provider,
    Reduce,
    Resources,
    Retry,
    Secret,
    Sink,
    Source,
    Split,
    digest,
    frozen,
    ordered,
)
from .ir.common import DEFAULT_DATABASE, MONITORED, suffix_format
from .loader import Nodes, node_map
from .overlay import Place
from .registry import Registry
from .resolve import QUERY, Effective
from .sqlquery import BoundQuery, dialect_of
from .strict_schema import strict_form

DEFAULT_LOGGING = frozen(
    {"level": "INFO", "format": "text", "destination": "stderr", "rotate": "none", "max_bytes": 10485760,
     "retention": 7}
)
"""The `logging` settings of a job that has no `logging:` (spec/job.md)."""
DEFAULT_PROVIDER = "openai"
DEFAULT_CALL_TIMEOUT = 120.0
"""Seconds for one call when neither the prompt, the job (`execution.call_timeout`) nor the provider says."""
DEFAULT_RETRY = Retry(max_retries=3)
"""What a job that says nothing about retries gets: 3 retries of rate limits, 5xx, timeouts and dropped
connections, 1 s, 2 s, 4 s apart with jitter (never sooner than a `Retry-After`)."""
OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-")

@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceSettings:
    """What the plan takes from `sleipnir.yaml`: the root, the default database, connections and providers."""

    root: str
    database: str = DEFAULT_DATABASE
    connections: Mapping[str, str | Secret] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    fallback_provider: str | None = None
    allowed_paths: tuple[str, ...] = ()
    """`paths: allow:`: the folders outside the workspace jobs may use (`ir.WorkspacePaths`)."""
    engine: str = "local"
    """`engine:`, the engine of jobs whose `execution.engine` says nothing."""
    modules: dict[tuple[str, str], PromptModule] = field(default_factory=dict)
    """Prompt modules already made ready for a plan, shared by every job of one compile."""
    called: dict[tuple[str, str | None], tuple[Document, PromptModule]] = field(default_factory=dict)
    """Each prompt a call names (name, version as written): its document and module, looked up once a compile."""
    made_providers: dict[str, Provider] = field(default_factory=dict)
    """Providers by name, made once a compile and shared, as modules are (the plan's JSON writes each once)."""


class _JobLowering:
    def __init__(
        self, job: Effective, registry: Registry, workspace: WorkspaceSettings, sink: Diagnostics | None = None
    ) -> None:
        self.job = job
        self.sink = sink if sink is not None else Diagnostics()
        self.body = job.body
        self.registry = registry
        self.workspace = workspace
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.modules: dict[tuple[str, str], PromptModule] = {}
        self.providers: set[str] = set()
        self.connections: set[str] = set()
        self.stack_nodes: dict[int, Nodes] = {}
        execution = self.body.get("execution") or {}
        self.call_timeout = float(execution["call_timeout"]) if execution.get("call_timeout") else None
        self.retry, self.on_failure, self.retry_origin = self._retry_policy()

    # -- helpers -------------------------------------------------------------------------------------------

    def _span(self, place: Place) -> Any:
        return self.job.span(place)

    def _add(self, node: Node, *after: str, carries: str = "items") -> str:
        self.nodes.append(node)
        for before in after:
            self.edges.append(Edge(source=before, target=node.id, carries=carries))
        return node.id

    def _unique(self, wanted: str) -> str:
        taken = {node.id for node in self.nodes}
        if wanted not in taken:
            return wanted
        n = 2
        while f"{wanted}#{n}" in taken:
            n += 1
        return f"{wanted}#{n}"

    def _provenance(self, entries: Mapping[str, Place | str | None]) -> Frozen:
        """Config key -> origin: a place in the job body is looked up, a string is the origin itself."""
        found: dict[str, str] = {}
        origin_of = self.job.origin
        for key, where in entries.items():
            origin = origin_of(where) if isinstance(where, tuple) else where
            if origin:
                found[key] = origin
        return Frozen.of_text(found) if found else EMPTY

    # -- the job ------------------------------------------------------------------------------------------

    def lower(self) -> Plan:
        first = self._source()
        if self.body.get("stack"):
            frontier = self._stack(first)
        elif self.body.get("phases"):
            frontier = [self._phases(first)]
        else:
            frontier = [self._prompts(first)]
        self._sink(frontier)
        nodes, edges = ordered(tuple(self.nodes), tuple(self.edges))
        return Plan(
            kind="job",
            name=self.job.document.name or "?",
            version=self.job.document.version,
            description=self.body.get("description"),
            root=self.workspace.root,
            profile=self.job.profile,
            parameters=tuple(self.job.parameters),
            nodes=nodes,
            edges=edges,
            resources=Resources(
                prompts=tuple(self.modules[k] for k in sorted(self.modules)),
                providers=tuple(self._provider(name) for name in sorted(self.providers)),
                connections=tuple(self._connection(name) for name in sorted(self.connections)),
                rate_limit=frozen((self.body.get("execution") or {}).get("rate_limit") or {}),
            ),
            settings=self._settings(),
            span=self.job.document.span,
        )

    def _source(self) -> str:
        given = dict(self.body.get("input") or {})
        source = given.pop("source", None) or (
            "file" if "path" in given else "database" if "query" in given else "api" if "endpoint" in given else "run_input"
        )
        batch_size = given.pop("batch_size", 100)
        strategy = given.pop("batch_strategy", "sequential")
        key = given.pop("key", None)
        keep = tuple(given.pop("keep", ()) or ())
        if source == "file" and "format" not in given and isinstance(given.get("path"), str):
            given["format"] = suffix_format(given["path"])
        if source in ("database", "sqlite", "postgresql"):
            given["connection"] = self._use_connection(given.get("connection"))
            if isinstance(given.get("query"), BoundQuery):
                self._bind_query(source, given)
        node = Source(
            id="input",
            span=self._span(("input",)) if "input" in self.body else None,
            source=source,
            options=frozen(given),
            batch_size=int(batch_size),
            batch_strategy=str(strategy),
            key=key,
            keep=keep,
            provenance=self._provenance(
                {
                    "source": ("input", "source"),
                    "batch_size": ("input", "batch_size"),
                    "batch_strategy": ("input", "batch_strategy"),
                    **{k: ("input", k) for k in given},
                }
            ),
        )
        return self._add(node)

    def _sink(self, frontier: list[str]) -> None:
        given = dict(self.body.get("output") or {})
        destination = given.pop("destination", None) or (
            "file" if "path" in given else "database" if "table" in given else "api" if "endpoint" in given else "stdout"
        )
        database = destination in ("database", "sqlite", "postgresql")
        # Files and databases alike keep what earlier runs wrote, merged by item key.
        mode = given.pop("mode", None) or ("upsert" if database or destination == "file" else "append")
        name = self.job.document.name or "job"
        dead_letter = given.pop("dead_letter", None) or f".sleipnir/dead_letter/{name}.jsonl"
        if destination == "file" and "format" not in given and isinstance(given.get("path"), str):
            given["format"] = suffix_format(given["path"])
        if database:
            given["connection"] = self._use_connection(given.get("connection"))
            given.setdefault("table", f"{name.replace('.', '_').replace('-', '_')}_results")
        given.setdefault("on_complete", "none")
        node = Sink(
            id="output",
            span=self._span(("output",)) if "output" in self.body else None,
            destination=destination,
            options=frozen(given),
            mode=mode,
            dead_letter=dead_letter,
            provenance=self._provenance(
                {"destination": ("output", "destination"), "mode": ("output", "mode"), **{k: ("output", k) for k in given}}
            ),
        )
        collected = len(frontier) == 1 and self._collected(frontier[0])
        self._add(node, *frontier, carries="collection" if collected else "items")

    def _bind_query(self, source: str, given: dict[str, Any]) -> None:
        """The query in its dialect's placeholder style, with `bound` the values in order (`parameters` are
        among them); its substitutions were never pasted into the text."""
        name = given["connection"]
        url = self.workspace.database if name == "default" else self.workspace.connections.get(name, name)
        dialect = dialect_of(source, url.ref if isinstance(url, Secret) else url)
        query: BoundQuery = given["query"]
        if dialect is None:
            self.sink.emit(
                "unsafe-substitution",
                f"the query's substitutions cannot be bound: connection `{name}` hides its kind of database",
                self._span(QUERY),
                label="a query with `${...}`",
                help="say which database it is: `source: postgresql` or `source: sqlite`",
            )
            given["query"] = str(query)
            return
        given["query"], bound = query.render(dialect)
        given["bound"] = list(bound)
        given["dialect"] = dialect
        given.pop("parameters", None)

    def _collected(self, node_id: str) -> bool:
        node = next(n for n in self.nodes if n.id == node_id)
        return isinstance(node, Reduce | Merge) or (isinstance(node, PromptCall) and node.scope == "all")

    def _use_connection(self, given: Any) -> str:
        if given is None:
            self.connections.add("default")
            return "default"
        if isinstance(given, str) and given in self.workspace.connections:
            self.connections.add(given)
        return str(given) if not isinstance(given, Secret) else given.ref

    # -- calls --------------------------------------------------------------------------------------------

    def _prompts(self, last: str) -> str:
        for index, entry in enumerate(self.body.get("prompts") or []):
            node = self._call(
                id=self._unique(entry["name"]),
                entry=entry,
                place=("prompts", index),
                prompt=entry["name"],
                output=entry["name"],
            )
            last = self._add(node, last)
        return last

    def _phases(self, last: str) -> str:
        grouped = False
        for index, phase in enumerate(self.body.get("phases") or []):
            name = phase["name"]
            place: Place = ("phases", index)
            span = self._span(place)
            if "split_by" in phase or name == "fan_out":
                split = Split(id=self._unique(name), span=span, split_by=str(phase.get("split_by", "")))
                last = self._add(split, last)
                grouped = True
                continue
            if name in ("reduce", "fan_in"):
                gather_cls = Merge if name == "fan_in" else Reduce
                gather = gather_cls(id=self._unique(f"{name}.collect"), span=span, collects=(last,))
                # The gather takes items (or groups) one by one, and passes them all on as one collection.
                last = self._add(gather, last, carries="groups" if grouped else "items")
                grouped = False
                if phase.get("prompt"):
                    call = self._call(
                        id=self._unique(name), entry=phase, place=place, prompt=phase["prompt"], output=name,
                        scope="all", parallel=bool(phase.get("parallel", False)),
                    )
                    last = self._add(call, last, carries="collection")
                continue
            if phase.get("prompt"):
                default_parallel = name in ("map", "process") or grouped
                call = self._call(
                    id=self._unique(name), entry=phase, place=place, prompt=phase["prompt"], output=name,
                    scope="group" if grouped else "item", parallel=bool(phase.get("parallel", default_parallel)),
                )
                last = self._add(call, last, carries="groups" if grouped else "items")
        return last

    def _stack(self, last: str) -> list[str]:
        stack = self.registry.get("stack", str(self.body["stack"]), self.body.get("stack_version"))
        assert stack is not None, "references are checked before lowering"
        before = [last]
        for index, step in enumerate(stack.body.get("steps") or []):
            members = step.get("parallel", [step])
            group = f"{stack.name}.{step['id']}" if "parallel" in step and step.get("id") else (
                f"{stack.name}.parallel{index + 1}" if "parallel" in step else None
            )
            added = []
            for number, member in enumerate(members):
                place: Place = (*(("steps", index, "parallel", number) if group else ("steps", index)),)
                node = self._call(
                    id=self._unique(f"{stack.name}.{member['id']}"),
                    entry=member,
                    place=None,
                    prompt=member["prompt"],
                    output=member["id"],
                    namespace=stack.name,
                    group=group,
                    span=stack.span_at((*stack.base, *place)),
                    where=self._stack_origins(stack, place),
                )
                added.append(self._add(node, *before))
            before = added
        # After a parallel group, what follows waits for each item's calls in the group (not for all items).
        return before

    def _stack_origins(self, stack: Document, place: Place) -> dict[str, str]:
        """`file:line` of each key a stack step sets, in the stack's file."""
        nodes = self.stack_nodes.get(id(stack))
        if nodes is None:
            nodes = self.stack_nodes[id(stack)] = node_map(stack)
        found = {}
        for (*prefix, key), (key_node, _) in nodes.items():
            if tuple(prefix) == place and isinstance(key, str):
                found[key] = f"{stack.file}:{key_node.start_mark.line + 1}"
        return found

    def _module(self, name: str, version: str | None) -> tuple[Document, PromptModule]:
        asked = (name, version) if version is None or type(version) is str else None
        found = self.workspace.called.get(asked) if asked else None
        if found is None:
            module = self.registry.get("prompt", name, version)
            assert module is not None, "references are checked before lowering"
            made = self.workspace.modules.get((name, module.version or ""))
            if made is None:
                key = (module.name or name, module.version or "")
                made = self.workspace.modules.get(key) or self._prompt_module(module, key)
            found = (module, made)
            if asked:
                self.workspace.called[asked] = found
        self.modules[(found[1].name, found[1].version)] = found[1]
        return found

    def _prompt_module(self, module: Document, key: tuple[str, str]) -> PromptModule:
        template = module.body.get("template") or {}
        output = module.body.get("output") or {}
        made = self.workspace.modules[key] = PromptModule(
            name=key[0],
            version=key[1],
            file=module.file,
            system=template.get("system"),
            user=template.get("user", ""),
            variables=frozen(module.body.get("variables") or {}),
            output_format=output.get("format", "json"),
            output_schema=frozen(output["schema"]) if isinstance(output.get("schema"), dict) else None,
        )
        if made.output_schema is not None and made.output_format == "json":
            form = strict_form(output["schema"])
            made = self.workspace.modules[key] = replace(made, sent_schema=frozen(form.schema), strict=form.strict)
        return made

    def _call(
        self,
        *,
        id: str,
        entry: Mapping[str, Any],
        place: Place | None,
        prompt: str,
        output: str,
        scope: str = "item",
        parallel: bool = True,
        namespace: str | None = None,
        group: str | None = None,
        span: Any = None,
        where: Mapping[str, str] | None = None,
    ) -> PromptCall:
        module, made = self._module(prompt, entry.get("version"))
        body = module.body
        defaults = body.get("model") or {}
        module_origin = f"prompt {made.name}@{made.version}"
        settings: dict[str, Any] = {}
        origins: dict[str, Place | str | None] = {}

        def origin(key: str) -> Place | str | None:
            return (*place, key) if place is not None else (where or {}).get(key)

        for key in ("temperature", "max_tokens", "top_p"):
            if key in entry:
                settings[key] = entry[key]
                origins[key] = origin(key)
            elif key in defaults:
                settings[key] = defaults[key]
                origins[key] = module_origin
        model = entry.get("model") or defaults.get("name") or "mock"
        origins["model"] = origin("model") if "model" in entry else module_origin if defaults.get("name") else "default"
        if place is None:
            # A stack step: the job's shorthand overrides reach it as they reach the job's own prompts.
            for override in self.job.prompt_overrides:
                if override.key == "model":
                    model = override.value
                else:
                    settings[override.key] = override.value
                origins[override.key] = override.origin
        provider, model = self._choose_provider(entry.get("provider"), str(model), defaults.get("provider"))
        self.providers.add(provider)
        for key in ("endpoint", "api_key"):
            if key in entry:
                settings[key] = entry[key]
                origins[key] = origin(key)
        parameters = {
            name: spec["default"]
            for name, spec in (body.get("parameters") or {}).items()
            if isinstance(spec, dict) and "default" in spec
        }
        parameters.update(entry.get("parameters") or {})
        timeout, origins["timeout"] = self._timeout(entry, provider, origin)
        origins["retry"] = self.retry_origin
        return PromptCall(
            id=id,
            span=span or (self._span(place) if place is not None else None),
            prompt=made.name,
            version=made.version,
            scope=scope,
            output=output,
            namespace=namespace,
            model=model,
            provider=provider,
            options=frozen(settings),
            parameters=frozen(parameters),
            inputs=frozen(entry.get("inputs") or {}),
            when=entry.get("when"),
            group=group,
            parallel=parallel,
            timeout=timeout,
            retry=self.retry,
            on_failure=self.on_failure,
            provenance=self._provenance(origins),
        )

    def _choose_provider(self, explicit: Any, model: str, module_provider: Any) -> tuple[str, str]:
        """The provider for a call, and the model name to send it: `provider/model` names both."""
        known = {"openai", "mock", *self.workspace.providers}
        if explicit:
            return str(explicit), model
        head, sep, rest = model.partition("/")
        if sep and head in known:
            return head, rest
        if model == "mock" or model.startswith("mock-"):
            return "mock", model
        if model.startswith(OPENAI_PREFIXES):
            return "openai", model
        return (str(module_provider) if module_provider else DEFAULT_PROVIDER), model

    def _timeout(self, entry: Mapping[str, Any], provider: str, origin: Any) -> tuple[float, Any]:
        """Seconds for one call: the prompt's `timeout`, else `execution.call_timeout`, else the provider's,
        else 120; and where that came from."""
        if "timeout" in entry:
            return float(entry["timeout"]), origin("timeout")
        if self.call_timeout is not None:
            return self.call_timeout, self.job.origin(("execution", "call_timeout")) or ""
        configured = (self.workspace.providers.get(provider) or {}).get("timeout")
        if configured:
            return float(configured), f"sleipnir.yaml providers.{provider}.timeout"
        return DEFAULT_CALL_TIMEOUT, "default"

    def _retry_policy(self) -> tuple[Retry, str, str]:
        """The retry policy of every call: `error_handling.on_prompt_failure`, or `execution.retry_on_failure`."""
        policy = (self.body.get("error_handling") or {}).get("on_prompt_failure")
        shorthand = (self.body.get("execution") or {}).get("retry_on_failure", 0)
        if policy is None:
            if shorthand:
                return Retry(max_retries=int(shorthand)), "fail", self.job.origin(("execution", "retry_on_failure")) or ""
            return DEFAULT_RETRY, "fail", "default"
        strategy = policy.get("strategy", "fail")
        retries = int(policy.get("max_retries", 3)) if strategy == "retry" else 0
        retry = Retry(
            max_retries=retries,
            backoff=policy.get("backoff", "exponential"),
            initial_delay=float(policy.get("initial_delay", 1)),
            max_delay=float(policy.get("max_delay", 60)),
            factor=float(policy.get("factor", 2)),
            jitter=bool(policy.get("jitter", True)),
        )
        on_failure = "fail" if strategy == "retry" else strategy
        # A profile overlays the policy key by key: its origin is on the keys it set, not on the mapping.
        place = ("error_handling", "on_prompt_failure")
        origins = [self.job.origin(place), *(self.job.origin((*place, key)) for key in policy)]
        return retry, on_failure, next((o for o in origins if o), "")

    # -- resources and settings ---------------------------------------------------------------------------

    def _provider(self, name: str) -> Provider:
        if name in self.workspace.made_providers:
            return self.workspace.made_providers[name]
        configured = self.workspace.providers.get(name) or {}
        env = configured.get("api_key_env") or ("OPENAI_API_KEY" if name != "mock" else None)
        api_key = None
        if env:
            value = self.workspace.environ.get(env)
            api_key = Secret(ref=f"${{{env}}}", names=(env,), digest=digest(value) if value else None)
        made = self.workspace.made_providers[name] = Provider(
            name=name,
            protocol="mock" if name == "mock" else "openai",
            base_url=configured.get("base_url"),
            api_key=api_key,
            requests_per_minute=configured.get("requests_per_minute"),
            tokens_per_minute=configured.get("tokens_per_minute"),
            fallback=self.workspace.fallback_provider if name != "mock" else None,
            structured_output=configured.get("structured_output", "json_schema"),
            timeout=float(configured["timeout"]) if configured.get("timeout") else None,
        )
        return made

    def _connection(self, name: str) -> Connection:
        if name == "default":
            return Connection(name=name, url=self.workspace.database)
        return Connection(name=name, url=self.workspace.connections[name])

    def _settings(self) -> Frozen:
        body = self.body
        execution = dict(body.get("execution") or {})
        execution.setdefault("concurrency", 10)
        execution.setdefault("engine", self.workspace.engine)
        execution.setdefault("call_timeout", None)
        execution.setdefault("timeout", None)
        handling = body.get("error_handling") or {}
        settings: dict[str, Any] = {
            "execution": execution,
            "error_handling": {
                "on_prompt_failure": {
                    **_FAILURE_DEFAULTS,
                    **{k: v for k, v in (handling.get("on_prompt_failure") or {}).items() if k in ("log", "alert")},
                    "strategy": "retry" if self.retry.max_retries else self.on_failure,
                },
                "on_input_error": _overlaid(_FAILURE_DEFAULTS, handling.get("on_input_error")),
                "on_output_error": _overlaid(_FAILURE_DEFAULTS, handling.get("on_output_error")),
            },
            "monitoring": _overlaid(_MONITORING_DEFAULTS, body.get("monitoring")),
            "logging": _overlaid(DEFAULT_LOGGING, body.get("logging")),
            "triggers": list(body.get("triggers") or []),
            "conditions": list(body.get("conditions") or []),
            "alerts": [{"cooldown": "15m", **alert} for alert in body.get("alerts") or []],
        }
        if body.get("schedule"):
            settings["schedule"] = schedule_settings(body["schedule"])
        if self.workspace.allowed_paths:
            settings["paths"] = {"allow": list(self.workspace.allowed_paths)}
        return frozen(settings)


_FAILURE_DEFAULTS = frozen({"strategy": "fail", "log": True, "alert": False})
_MONITORING_DEFAULTS = frozen({"metrics": list(MONITORED), "export_to": "none"})


def _overlaid(defaults: Frozen, given: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """`defaults` with what a job gives over them; the shared defaults themselves when it gives nothing."""
    return {**defaults, **given} if given else defaults


def lower_job(
    job: Effective, registry: Registry, workspace: WorkspaceSettings, sink: Diagnostics | None = None
) -> Plan:
    """The plan of one effective job; what cannot be lowered (a query whose dialect is unknown) goes to `sink`."""
    return _JobLowering(job, registry, workspace, sink).lower()


def schedule_settings(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule with its defaults filled in (spec/schedules.md), for a job and a pipeline alike."""
    return {
        "timezone": "UTC",
        "enabled": True,
        "catchup": "latest",
        "catchup_window": "1d",
        "overlap": "skip",
        **schedule,
    }
