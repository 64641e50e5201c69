"""A checked job document -> its effective body: profile and overrides merged, `${...}` resolved, secrets sealed.

The order is the precedence of spec/profiles.md, lowest first: the job file, the profile, a pipeline's
`params`, `SLEIPNIR_PARAM_*`, `--param-file`, `--param`. Every place an override sets is remembered with its
origin, and so is every value a substitution fills in, so that `plan` can say where each value came from.

Substitutions resolve after merging, against the job's `params` (overlaid by parameter overrides), then the
environment. An unset name without a default is `unset-variable` at its span. A secret (a value under a key
such as `api_key` or `token`, or one filled from an environment variable named like `*_KEY`) becomes a `Secret`
that names the environment variables it comes from; a secret written as a literal is `literal-secret`, because
the plan carries secrets only as references.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checks.expressions import ScalarSpans
from .diagnostics import Diagnostics
from .documents import Document, Path
from .ir import Secret, Setting, digest
from .ir.common import RUN_TIME_NAMES, is_secret_env, suggestion_help
from .ir.expressions import (
    ExpressionError,
    Region,
    Substitution,
    Text,
    UnsetVariableError,
    format,
    names_in,
    parse_substitutions,
    resolve,
)
from .loader import Nodes, node_map, node_span
from .overlay import INPUT_SHORTHAND, PROMPT_SHORTHAND, OverlayError, Place, apply_tracked, job_keys
from .overrides import Override, scalar
from .schemas import fast_validator
from .span import Span
from .sqlquery import BoundQuery, Hole, QueryError, bind
from .validate import explain_value

SECRET_KEYS = frozenset({"api_key", "password", "token", "secret", "auth"})
"""Keys whose values are secrets."""
OUTPUT_PATH = ("output", "path")


@functools.lru_cache(maxsize=4096)

def _is_secret_key(key: str | int) -> bool:
    # `secret_env`, `api_key_env`: the name of a variable that holds a secret, which is not itself secret.
    return isinstance(key, str) and not key.endswith("_env") and (key.lower() in SECRET_KEYS or is_secret_env(key))


@dataclass(slots=True, kw_only=True)
class Effective:
    """A job as it will run: its resolved body, and where each value came from."""

    document: Document
    body: dict[str, Any]
    """The job body with overrides merged and substitutions resolved; secrets are `Secret` values."""
    origins: dict[Place, str] = field(default_factory=dict)
    """Places set by an override or filled by a substitution -> origin. Other places come from the file."""
    parameters: list[Setting] = field(default_factory=list)
    profile: str | None = None
    _nodes: Nodes | None = None
    sealed: bool = False
    """Whether any value was sealed as a `Secret`, or a query's substitutions bound (a `BoundQuery`)."""
    as_written: bool = False
    """Whether the body is the document's own, which `check` validated: nothing merged, filled in or sealed."""
    prompt_overrides: list[Override] = field(default_factory=list)
    """Shorthand overrides (`model`, `temperature`, `max_tokens`), which also apply to a stack's steps."""

    def origin(self, place: Place) -> str | None:
        """Where the value at `place` came from, or None when it is not in the job at all (a default)."""
        if place in self.origins:
            return self.origins[place]
        found = self.nodes.get(place)
        return f"{self.document.file}:{found[0].start_mark.line + 1}" if found else None

    @property
    def nodes(self) -> Nodes:
        if self._nodes is None:
            self._nodes = node_map(self.document)
        return self._nodes

    def span(self, place: Place) -> Span:
        """The span of the value at `place` in the job file; the job's own span when it is not there."""
        found = self.nodes.get(place)
        return node_span(self.document.file, found[1]) if found else self.document.span


def choose_profile(
    document: Document, explicit: str | None, default: str | None, sink: Diagnostics
) -> tuple[str | None, bool]:
    """The profile to apply to this job, and whether the choice is valid. An explicit `--profile` the job does
    not define is `unknown-profile`; a default applies only to the jobs that define it."""
    profiles = document.body.get("profiles") or {}
    if explicit is not None:
        if explicit in profiles:
            return explicit, True
        defined = ", ".join(sorted(profiles)) or "none"
        sink.emit(
            "unknown-profile",
            f"{document.label()} has no profile `{explicit}`",
            document.span_at((*document.base, "profiles"), key=True),
            label="profiles are defined here" if profiles else "",
            notes=(f"profiles of this job: {defined}",),
            help=suggestion_help(explicit, profiles) or "pick one of the job's profiles, or leave out --profile",
        )
        return None, False
    return (default, True) if default in profiles else (None, True)


def effective(
    document: Document,
    *,
    profile: str | None,
    overrides: Sequence[Override],
    environ: Mapping[str, str],
    sink: Diagnostics,
    spans: ScalarSpans,
) -> Effective | None:
    """The effective job, or None when an override or a substitution fails (diagnostics in `sink`)."""
    errors = len(sink.errors)
    # No deep copy: overlays copy before they change anything, and the resolver builds new containers.
    body = {k: v for k, v in document.body.items() if k != "profiles"}
    result = Effective(document=document, body=body, profile=profile)
    layers: list[Override] = []
    if profile is not None:
        overlay = document.body["profiles"][profile] or {}
        layers.extend(
            Override(
                key=str(key),
                value=value,
                origin=f"profile {profile}",
                span=document.span_at((*document.base, "profiles", profile, key), key=True),
            )
            for key, value in overlay.items()
        )
    layers.extend(overrides)
    values: dict[str, Any] = {}
    param_origins: dict[str, str] = {}
    used = _substituted_names(body) if layers else set()
    for override in layers:
        declared = {**(result.body.get("params") or {}), **values}
        if _is_parameter(override.key, declared, used):
            values[override.key] = override.value
            param_origins[override.key] = override.origin
            continue
        _apply(result, override, used, declared, sink)
    if len(sink.errors) > errors:
        return None
    params: dict[str, Any] = {**(result.body.get("params") or {}), **values}
    result.parameters = [
        Setting(key=name, value=params[name], origin=param_origins.get(name) or _param_origin(result, name))
        for name in sorted(params)
    ]
    if not layers and not _may_resolve(document, spans):
        # Nothing to merge, fill in or seal: the body is the one `check` validated.
        result.as_written = True
        return result
    _Resolver(result, params, param_origins, environ, sink, spans).run()
    if len(sink.errors) > errors:
        return None
    wrapped = {"job": _for_validation(result.body) if result.sealed else result.body}
    if not fast_validator("job").is_valid(wrapped):
        explain_value("job", wrapped, document, sink)
        return None
    return result


_SECRET_HINTS = ("${", "_key", "token", "secret", "password", "auth")


def _may_resolve(document: Document, spans: ScalarSpans) -> bool:
    """Whether the job may hold a substitution or a key that may be secret: a C-speed scan of its source text,
    since most jobs hold neither. When in doubt (no source text), yes."""
    source = spans.sources.get(document.file)
    if source is None:
        return True
    text = source.text[document.root.start_mark.index : document.root.end_mark.index].lower()
    return any(hint in text for hint in _SECRET_HINTS)


_NAME_KEYS = frozenset({"name", "id", "version", "prompt", "stack", "stack_version", "split_by", "key"})  # never secrets


def _param_origin(result: Effective, name: str) -> str:
    return result.origin(("params", name)) or "default"


def _is_parameter(key: str, params: Mapping[str, Any], used: set[str]) -> bool:
    if key in PROMPT_SHORTHAND or key in INPUT_SHORTHAND or "." in key or key in job_keys():
        return False
    return key in params or key in used


def _substituted_names(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for item in value.values():
            found |= _substituted_names(item)
    elif isinstance(value, list):
        for item in value:
            found |= _substituted_names(item)
    elif isinstance(value, str) and "${" in value:
        found.update(name.split(".")[0] for name in names_in(value))
    return found


def _apply(result: Effective, override: Override, used: set[str], params: Mapping[str, Any], sink: Diagnostics) -> None:
    where = override.span
    shown = f"`{override.key}` ({override.origin})"
    if "." not in override.key and override.key not in job_keys() | set(PROMPT_SHORTHAND) | set(INPUT_SHORTHAND):
        candidates = sorted(job_keys() | set(PROMPT_SHORTHAND) | set(INPUT_SHORTHAND) | set(params) | used)
        sink.emit(
            "unknown-key",
            f"{shown} is not a key, shorthand or parameter of {result.document.label()}",
            where,
            file=None if where else override.origin,
            notes=(f"parameters of this job: {', '.join(sorted(set(params) | used)) or 'none'}",),
            help=suggestion_help(override.key, candidates)
            or "use a shorthand (model, temperature, max_tokens, batch_size), a dotted path or a parameter name",
        )
        return
    try:
        merged, places = apply_tracked(result.body, override.key, override.value)
    except OverlayError as error:
        sink.emit(
            "unknown-key",
            f"{shown}: {error.message}",
            where,
            file=None if where else override.origin,
            help=suggestion_help(error.step, error.candidates),
            notes=(f"entries there: {', '.join(error.candidates)}",) if error.candidates else (),
        )
        return
    probe = merged
    if override.key in PROMPT_SHORTHAND and not places:
        # Nothing to set, but the value must still be one a prompt call accepts.
        probe = apply_tracked({**merged, "prompts": [{"name": "override_value"}]}, override.key, override.value)[0]
    wrapped = {"job": _for_validation(probe)}
    if not fast_validator("job").is_valid(wrapped):
        _explain_override(wrapped, override, sink)
        return
    result.body = merged
    for place in places:
        result.origins[place] = override.origin
    if override.key in PROMPT_SHORTHAND:
        result.prompt_overrides.append(override)


class _AtOverride:
    """Puts every diagnostic about a merged job at the override that caused it."""

    def __init__(self, override: Override) -> None:
        self.span = override.span or Span.point(override.origin, 1, 1)

    def span_at(self, path: Path, *, key: bool = False) -> Span:
        return self.span

    def source_text(self, path: Path) -> str:
        return ""


def _explain_override(wrapped: dict[str, Any], override: Override, sink: Diagnostics) -> None:
    """The schema's diagnostics for an override's value, naming the override; at its line when it has one."""
    found = Diagnostics()
    explain_value("job", wrapped, _AtOverride(override), found)
    value = json.dumps(override.value, default=str)
    for diagnostic in found:
        sink.emit(
            diagnostic.code,
            f"`{override.key}={value}` ({override.origin}): {diagnostic.message}",
            override.span,
            file=None if override.span else override.origin,
            label=diagnostic.primary.text if diagnostic.primary and override.span else "",
            notes=diagnostic.notes,
            help=diagnostic.help,
        )


def _for_validation(value: Any) -> Any:
    """`value` with each secret replaced by a string, as the schema sees it."""
    if isinstance(value, Secret):
        return value.ref
    if isinstance(value, BoundQuery):
        return str(value)
    if isinstance(value, dict):
        return {k: _for_validation(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_validation(v) for v in value]
    return value


class _Resolver:
    """Resolves every `${...}` of the body in place, sealing secrets and recording origins."""

    def __init__(
        self,
        result: Effective,
        params: dict[str, Any],
        param_origins: dict[str, str],
        environ: Mapping[str, str],
        sink: Diagnostics,
        spans: ScalarSpans,
    ) -> None:
        self.result = result
        self.params = params
        self.param_origins = param_origins
        self.environ = environ
        self.sink = sink
        self.spans = spans
        self.overridden = set(result.origins)
        """Places whose value an override set: they have no span in the job file."""

    def run(self) -> None:
        # A parameter may use another: resolve them in dependency order, so each sees the others' values.
        for name in _dependency_order(self.params):
            self.params[name] = self._value(("params", name), self.params[name], secret=_is_secret_key(name))
        self.result.parameters = [
            Setting(key=s.key, value=self.params[s.key], origin=s.origin) for s in self.result.parameters
        ]
        body = self.result.body
        for key in list(body):
            if key != "params":
                body[key] = self._value((key,), body[key], secret=False)
        body["params"] = dict(self.params)
        given = body.get("input")
        if isinstance(given, dict) and isinstance(given.get("query"), _QueryParts):
            given["query"] = self._bind(given["query"], given.get("parameters"))

    def _query(self, place: Place, text: str) -> Any:
        """A database query's substitutions as holes, to be bound rather than pasted (compiler/sqlquery.py)."""
        try:
            parts = parse_substitutions(text)
        except ExpressionError as error:
            self.sink.emit("expression-syntax", error.message, self._span(place, error.region.start, error.region.end))
            return text
        if not any(isinstance(p, Substitution) for p in parts):
            return resolve(parts, self._text)
        pieces: list[str | Hole] = []
        for part in parts:
            if isinstance(part, Text):
                pieces.append(part.value)
                continue
            try:
                value = self._hole_value(part)
            except UnsetVariableError as error:
                self._unset(place, error)
                return text
            pieces.append(Hole(name=part.name, value=value, region=part.span))
        origins = [o for o in map(self._origin_of, dict.fromkeys(p.name for p in pieces if isinstance(p, Hole))) if o]
        if origins:
            self.result.origins[place] = ", ".join(origins)
        return _QueryParts(place=place, text=text, pieces=pieces)

    def _hole_value(self, part: Substitution) -> Any:
        """A query substitution's value: a parameter's own value, an environment variable's text (sealed when
        its name is secret), or the default. Raises `UnsetVariableError`."""
        raw = self._parameter(part.name)
        if raw is _MISSING:
            found = self.environ.get(part.name)
            if found and is_secret_env(part.name):
                return Secret(ref=format((part,)), names=(part.name,), digest=digest(found))
            raw = found
        if (raw is None or raw == "") and part.default is not None:
            raw = part.default
        if raw is None or (part.required_message is not None and raw == ""):
            raise UnsetVariableError(part)
        return raw

    def _bind(self, query: _QueryParts, parameters: Any) -> Any:
        try:
            bound = bind(query.pieces, parameters if isinstance(parameters, dict) else {})
        except QueryError as error:
            self.sink.emit(
                "unsafe-substitution",
                error.message,
                self._span(query.place, error.region.start, error.region.end),
                file=None if query.place not in self.overridden else self.result.origins.get(query.place),
                label="here",
                help=error.help,
            )
            return query.text
        self.result.sealed = True
        return bound

    def _value(self, place: Place, value: Any, *, secret: bool) -> Any:
        if place == QUERY and isinstance(value, str) and "${" in value:
            return self._query(place, value)
        secret = secret or _is_secret_key(place[-1])
        if isinstance(value, dict):
            return {k: self._value((*place, k), v, secret=secret) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value((*place, i), v, secret=secret) for i, v in enumerate(value)]
        if not isinstance(value, str):
            if secret and value is not None and place[-1] != "auth":
                self._literal_secret(place)
            return value
        if "${" not in value:
            if secret and place[-1] != "auth" and value:
                self._literal_secret(place)
            return value
        return self._substitute(place, value, secret)

    def _substitute(self, place: Place, text: str, secret: bool) -> Any:
        try:
            parts = parse_substitutions(text)
        except ExpressionError as error:
            self.sink.emit("expression-syntax", error.message, self._span(place, error.region.start, error.region.end))
            return text
        names = [p.name for p in parts if isinstance(p, Substitution)]
        if not names:
            return resolve(parts, self._text)  # only `$${` escapes: the text, still from the file
        if place == OUTPUT_PATH and any(n in RUN_TIME_NAMES for n in names):
            return self._run_time_path(place, parts)
        values = [self._parameter(n) for n in names]
        from_env = [n for n, v in zip(names, values, strict=True) if v is _MISSING]
        if secret or any(is_secret_env(n) for n in from_env) or any(isinstance(v, Secret) for v in values):
            if not secret and place and place[-1] in _NAME_KEYS:
                self._secret_name(place, text, [n for n in from_env if is_secret_env(n)] or names)
                return text
            return self._seal(place, parts)
        try:
            if len(parts) == 1 and isinstance(parts[0], Substitution):
                resolved = self._whole(parts[0])
            else:
                resolved = resolve(parts, self._text)
        except UnsetVariableError as error:
            self._unset(place, error)
            return text
        origins = [o for o in map(self._origin_of, dict.fromkeys(names)) if o]
        if origins:
            self.result.origins[place] = ", ".join(origins)
        return resolved

    def _run_time_path(self, place: Place, parts: Sequence[Text | Substitution]) -> str:
        """`output.path` with `${run.id}`, `${run.date}` or `${trigger.file_stem}`: those stay for the runtime
        to fill when the run starts; the other substitutions resolve now."""
        pieces = []
        for part in parts:
            if isinstance(part, Substitution) and part.name in RUN_TIME_NAMES:
                pieces.append(format((part,)))
                continue
            try:
                pieces.append(resolve((part,), self._text).replace("${", "$${"))
            except UnsetVariableError as error:
                self._unset(place, error)
                pieces.append(format((part,)))
        return "".join(pieces)

    def _parameter(self, name: str) -> Any:
        head, *rest = name.split(".")
        value: Any = self.params.get(head, _MISSING)
        for step in rest:
            value = value.get(step, _MISSING) if isinstance(value, dict) else _MISSING
        return value

    def _text(self, name: str) -> str | None:
        value = self._parameter(name)
        if value is _MISSING:
            return self.environ.get(name)
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value).lower() if isinstance(value, bool) else str(value)

    def _whole(self, part: Substitution) -> Any:
        value = self._parameter(part.name)
        if value is not _MISSING and value is not None and value != "":
            return value
        return scalar(resolve((part,), self._text))

    def _origin_of(self, name: str) -> str | None:
        """Where a name's value came from; None when it was unset and the file's default applied."""
        head = name.split(".")[0]
        if self._parameter(name) is not _MISSING:
            return self.param_origins.get(head) or f"params.{head} ({_param_origin(self.result, head)})"
        return f"env {name}" if self.environ.get(name) else None

    def _secret_name(self, place: Place, text: str, secrets: Sequence[str]) -> None:
        shown = ", ".join(f"`{n}`" for n in dict.fromkeys(secrets))
        note = f"{shown} holds a secret (its name says so); secrets stay out of plans, logs and outputs, and names do not"
        self.sink.emit(
            "invalid-value", f"`{text}` would make a name of a secret", self._span(place),
            label="a secret's value as a name", notes=(note,),
            help="write the name, or take it from a variable whose name does not mark a secret",
        )  # fmt: skip

    def _seal(self, place: Place, parts: Sequence[Text | Substitution]) -> Any:
        """A secret as a reference: parameters are expanded as written, environment names stay names."""
        pieces: list[str] = []
        for part in parts:
            raw = self._parameter(part.name) if isinstance(part, Substitution) else _MISSING
            if isinstance(raw, Secret):
                pieces.append(raw.ref)
            elif raw is not _MISSING and raw is not None:
                pieces.append(str(raw).replace("${", "$${"))
            else:
                pieces.append(format((part,)))
        ref = "".join(pieces)
        names = tuple(dict.fromkeys(names_in(ref)))
        if not names:
            self._literal_secret(place)
            return ref
        try:
            value = resolve(parse_substitutions(ref), self.environ.get)
        except (UnsetVariableError, ExpressionError) as error:
            if isinstance(error, UnsetVariableError):
                self._unset(place, error)
            return ref
        self.result.origins[place] = ", ".join(f"env {n}" for n in names)
        self.result.sealed = True
        return Secret(ref=ref, names=names, digest=digest(value))

    def _literal_secret(self, place: Place) -> None:
        span = self._span(place)
        self.sink.emit(
            "literal-secret",
            f"`{'.'.join(map(str, place))}` is a secret written as a literal value",
            span,
            file=None if span else self.result.origin(place),
            label="a secret in plain text",
            help="put it in an environment variable and write `${NAME}` here; the plan carries secrets only as "
            "references to the environment",
        )

    def _unset(self, place: Place, error: UnsetVariableError) -> None:
        part = error.substitution
        span = self._span(place, part.span.start, part.span.end)
        self.sink.emit(
            "unset-variable",
            error.message if part.required_message else f"`{part.name}` is not set and has no default",
            span,
            file=None if span else self.result.origins.get(place),
            label="unset",
            help=f"set the environment variable `{part.name}`, pass `--param {part.name}=VALUE`, or give a default: "
            f"`${{{part.name}:-value}}`",
        )

    def _span(self, place: Place, start: int = 0, end: int = 0) -> Span | None:
        """The span of `place` (and of a region inside its text) in the job file; None for an override's value."""
        if place in self.overridden:
            return None
        document = self.result.document
        if start or end:
            return self.spans.span(document, (*document.base, *place), Region(start=start, end=end))
        return document.span_at((*document.base, *place))


_MISSING: Any = object()
QUERY: Place = ("input", "query")


@dataclass(slots=True, kw_only=True)
class _QueryParts:
    """A query's text and holes between resolving and binding (binding needs the input's `parameters`)."""

    place: Place
    text: str
    pieces: list[str | Hole]


def _dependency_order(params: Mapping[str, Any]) -> list[str]:
    """Parameter names, each after the parameters its value uses (in written order otherwise; a cycle is
    broken where it closes, and the parameter then sees the other's text as written)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if state.get(name):
            return
        state[name] = 1
        for used in sorted(_substituted_names(params[name])):
            if used in params and used != name:
                visit(used)
        state[name] = 2
        order.append(name)

    for name in params:
        visit(name)
    return order


def resolve_plain(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """`value` with every `${...}` resolved through `lookup`; a whole-scalar substitution takes its YAML type.
    For documents without a job's provenance (a pipeline's schedule). Raises `UnsetVariableError`."""
    if isinstance(value, dict):
        return {k: resolve_plain(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_plain(v, lookup) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    parts = parse_substitutions(value)
    text = resolve(parts, lookup)
    return scalar(text) if len(parts) == 1 and isinstance(parts[0], Substitution) else text
