"""The JSON Schema of the plan's JSON form (`schema/plan.schema.json`), made from the IR's dataclasses.

Each IR class is one definition: its fields, typed from their annotations, none other allowed. A node is picked
by its `kind`. What the user wrote (options, parameters, inputs, settings, a parameter's value) is free-form, but
a secret anywhere in it must be a well-formed secret reference, leaf by leaf. Fields with a default may be absent
(an older plan of the same format version lacks the fields added since); the rest are required.

A test keeps the published file equal to `render()`; regenerate it with
`python -c "from sleipnir.compiler.plan_schema import write; write('schema/')"`.
"""

from __future__ import annotations

import json
import os
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from . import ir
from .model import DOCS_BASE, DRAFT_07, SCHEMA_BASE
from .span import Span

NAME = "plan"
LINK = f"{DOCS_BASE}spec/plan.md"

_CLASSES: tuple[type, ...] = (
    ir.Plan,
    *ir.NODE_KINDS.values(),
    ir.Edge,
    ir.Resources,
    ir.PromptModule,
    ir.Provider,
    ir.Connection,
    ir.Setting,
    ir.Retry,
    Span,
)

_ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Plan", "kind"): ("job", "pipeline"),
    ("PromptCall", "scope"): ("item", "group", "all"),
    ("PromptCall", "on_failure"): ("fail", "skip", "alert"),
    ("Edge", "carries"): ir.EDGE_KINDS,
    ("Retry", "backoff"): ("exponential", "linear", "fixed"),
    ("Provider", "structured_output"): ir.STRUCTURED_OUTPUTS,
}
"""Fields whose values `__post_init__` limits to a set."""

_BOUNDS: dict[str, dict[str, int]] = {
    "Span.line": {"minimum": 1},
    "Span.column": {"minimum": 1},
    "Span.end_line": {"minimum": 1},
    "Span.end_column": {"minimum": 1},
    "Retry.max_retries": {"minimum": 0},
    "Retry.initial_delay": {"exclusiveMinimum": 0},
    "Retry.max_delay": {"exclusiveMinimum": 0},
    "Retry.factor": {"minimum": 1},
}
"""Numeric fields whose range `__post_init__` checks."""

_ABOUT: dict[str, str] = {
    "id": "Stable and unique in its plan: `input`, `sentiment_analyzer`, `sentiment_analysis_stack.clean`.",
    "span": "Where it was declared: file, line and column, or null.",
    "provenance": "Each config key (dotted) -> where its value came from: `jobs/x.yaml:12`, `profile production`, `--param`.",
    "options": "Resolved settings; secrets appear as secret references.",
    "parameters": "The prompt module's parameters: its defaults overlaid with the job's values.",
    "name": "The name.",
    "Provider.name": "The name prompt calls use: `openai`, `mock`, or one from `sleipnir.yaml`.",
    "Connection.name": "The connection's name: `default` is the workspace database.",
    "PromptModule.name": "The prompt module's name.",
    "PromptModule.version": "The prompt module's version.",
    "PromptModule.file": "The file the module was read from.",
    "version": "The version, or null.",
    "description": "What it does, or null.",
    "kind": "What it is.",
    "file": "The file it was read from.",
    "Plan.format_version": "The version of the plan's JSON form: 2.",
    "Plan.kind": "`job` or `pipeline`.",
    "Plan.name": "The job's or pipeline's name.",
    "Plan.root": "The workspace root that relative paths are resolved against (not part of the plan id).",
    "Plan.profile": "The profile applied, or null.",
    "Plan.parameters": "The resolved `params` and overrides, each with its origin.",
    "Plan.nodes": "The nodes, in topological order, ties by id.",
    "Plan.edges": "The edges, sorted by source, target and kind.",
    "Plan.resources": "What the nodes share by name: prompt modules, providers, connections, rate limits.",
    "Plan.settings": "Run-wide settings, defaults filled in: `execution`, `error_handling`, `schedule`, `triggers`, `conditions`, `monitoring`, `logging`, `alerts`.",
    "Source.kind": "`source`: reads the items, in batches.",
    "Source.source": "`file`, `database`, `postgresql`, `sqlite`, `api` or `run_input`.",
    "Source.options": "The rest of the input: `path`, `format`, `query`, `parameters`, `connection`, `endpoint`, `auth`; a query written with `${...}` is bound: `query` in the driver's placeholder style (`?` or `%s`), `bound` the values in order, `dialect`.",
    "Source.batch_size": "Items a batch.",
    "Source.batch_strategy": "How items are put in batches.",
    "Source.key": "The field that identifies an item, or null for an `id` or `*_id` field, else the row number.",
    "Source.keep": "Input fields copied to each result row.",
    "PromptCall.kind": "`prompt`: one call of a prompt module.",
    "PromptCall.prompt": "The prompt module's name.",
    "PromptCall.version": "The prompt module's version.",
    "PromptCall.scope": "`item` (per item), `group` (per group of a split) or `all` (once, over a collection).",
    "PromptCall.output": "The name later prompts, conditions and the output row see the result by.",
    "PromptCall.namespace": "The stack the call came from, or null.",
    "PromptCall.model": "The model name sent to the provider.",
    "PromptCall.provider": "The provider the call goes to, by name.",
    "PromptCall.options": "Model settings: `temperature`, `max_tokens`, `top_p`, `endpoint`, `api_key`.",
    "PromptCall.inputs": "Module variable -> Jinja template over the item and earlier outputs.",
    "PromptCall.when": "A condition on the item and earlier outputs; the call is skipped when it is false. Null: always.",
    "PromptCall.group": "The stack parallel group the call belongs to, or null.",
    "PromptCall.parallel": "Whether calls run concurrently, up to the execution concurrency.",
    "PromptCall.timeout": "Seconds one call may take.",
    "PromptCall.retry": "When and how often a failed call is tried again.",
    "PromptCall.on_failure": "Once retries are spent: `fail` the run, `skip` the item, or `alert` and go on.",
    "Split.kind": "`split`: groups the items by one field.",
    "Split.split_by": "The field the items are grouped by.",
    "Reduce.kind": "`reduce`: waits for every output and passes them on as one collection.",
    "Reduce.collects": "Node ids whose outputs are gathered, by reference.",
    "Merge.kind": "`merge`: waits for every group's outputs and passes them on as one collection.",
    "Merge.collects": "Node ids whose per-group outputs are gathered, by reference.",
    "Sink.kind": "`sink`: writes the results.",
    "Sink.destination": "`file`, `database`, `postgresql`, `sqlite`, `api` or `stdout`.",
    "Sink.options": "`path`, `format`, `table`, `connection`, `endpoint`, `method`, `on_complete`.",
    "Sink.mode": "How results meet what is already there.",
    "Sink.dead_letter": "Where skipped items go, with their error.",
    "JobStep.kind": "`job`: one job of a pipeline.",
    "JobStep.job": "The job's name.",
    "JobStep.plan": "The id of the plan the job runs: its entry in the pipeline's `plans`.",
    "plans": "A pipeline's job plans, each once, by id (a job step names its plan by id).",
    "Edge.source": "The node id that produces.",
    "Edge.target": "The node id that consumes.",
    "Edge.carries": "`items` (one at a time), `groups`, `collection` (every output, by reference) or `after` (order only).",
    "Resources.prompts": "The prompt modules the calls use, with their templates and output shape.",
    "Resources.providers": "The model providers the calls use.",
    "Resources.connections": "The database connections the plan uses.",
    "Resources.rate_limit": "The job's own limits: `requests_per_minute`, `tokens_per_minute`.",
    "PromptModule.system": "The system message template, or null.",
    "PromptModule.user": "The user message template.",
    "PromptModule.variables": "The module's declared variables.",
    "PromptModule.output_format": "`json` or `text`.",
    "PromptModule.output_schema": "The JSON Schema a JSON answer must meet, or null.",
    "PromptModule.sent_schema": "What a server with structured outputs is sent: the strict form of the output schema, or the schema itself when strict mode cannot express it; null without a schema.",
    "PromptModule.strict": "Whether `sent_schema` is sent with `strict: true`.",
    "Provider.protocol": "How to talk to it: `openai` (Chat Completions) or `mock`.",
    "Provider.base_url": "The API's base URL, a secret reference, or null for the protocol's default.",
    "Provider.api_key": "The API key, as a secret reference, or null.",
    "Provider.requests_per_minute": "The provider's request rate limit, or null.",
    "Provider.tokens_per_minute": "The provider's token rate limit, or null.",
    "Provider.fallback": "The provider calls go to when this one has no API key at run time (`mock`), or null.",
    "Provider.structured_output": "How its server takes an output schema: `json_schema`, `json_object` or `none`.",
    "Provider.timeout": "Seconds for one call when the prompt does not say, or null.",
    "Connection.url": "The database URL or path, or a secret reference.",
    "Setting.key": "The parameter's name.",
    "Setting.value": "The resolved value.",
    "Setting.origin": "Where the value came from: `jobs/x.yaml:12`, `profile production`, `--param`, `env NAME`, `default`.",
    "Retry.max_retries": "Retries after the first attempt.",
    "Retry.backoff": "`exponential`, `linear` or `fixed`.",
    "Retry.initial_delay": "Seconds before the first retry.",
    "Retry.max_delay": "The longest wait, in seconds.",
    "Retry.factor": "The exponential backoff's growth factor.",
    "Retry.jitter": "Whether waits are randomised.",
    "Span.file": "The file's path.",
    "Span.line": "The first line, from 1.",
    "Span.column": "The first column, from 1.",
    "Span.end_line": "The last line.",
    "Span.end_column": "The column after the end.",
    "$secret": "What a secret shows of itself: `(sensitive, sha256:<first 8>)`, or `(sensitive, unset)`.",
    "ref": "The text as written, with `${NAME}` where the environment supplies the value.",
    "names": "The environment variables the runtime reads to resolve the reference.",
    "digest": "The first 8 hex digits of the SHA-256 of the value at plan time, or null when it was not set.",
    "plan_id": "The plan id: the SHA-256 of what runs (the JSON without spans, provenance and root).",
}


def build() -> dict[str, Any]:
    """The draft-07 schema of `ir.to_json`'s output."""
    definitions: dict[str, Any] = {_ref_name(cls): _record(cls) for cls in _CLASSES}
    definitions["node"] = _node_choice()
    definitions["secret"] = _secret()
    definitions["value"] = {
        "description": "A user-given value: anything JSON holds, with each secret a secret reference.",
        "if": {"type": "object", "required": [ir.SECRET_KEY]},
        "then": {"$ref": "#/definitions/secret"},
        "else": {
            "items": {"$ref": "#/definitions/value"},
            "additionalProperties": {"$ref": "#/definitions/value"},
        },
    }
    plan = definitions["plan"]
    top = {
        "$schema": DRAFT_07,
        "$id": f"{SCHEMA_BASE}{NAME}.schema.json",
        "title": "Sleipnir plan",
        "description": "What would run: the typed plan sleipnir plan --format json prints and the runtime reads.",
        "type": "object",
        "properties": {
            "id": _property("plan_id", _hex(64)),
            **plan["properties"],
            "plans": _property(
                "plans",
                {
                    "type": "object",
                    "propertyNames": _hex(64),
                    "additionalProperties": {"$ref": "#/definitions/plan"},
                },
            ),
        },
        "required": ["id", *plan["required"]],
        "additionalProperties": False,
        "definitions": dict(sorted(definitions.items())),
    }
    return top


def render() -> str:
    """`build()` as the exact text of `schema/plan.schema.json`."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def write(directory: str) -> Path:
    """Write `plan.schema.json` into `directory` (atomically: a temporary file, then a rename); its path."""
    path = Path(directory) / f"{NAME}.schema.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(render(), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _ref_name(cls: type) -> str:
    kinds = {node_cls: kind for kind, node_cls in ir.NODE_KINDS.items()}
    if cls in kinds:
        return f"{kinds[cls]}_node"
    return {"PromptModule": "prompt_module"}.get(cls.__name__, cls.__name__.lower())


def _record(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    properties: dict[str, Any] = {}
    required: list[str] = []
    if cls in ir.NODE_KINDS.values():
        properties["kind"] = _property(f"{cls.__name__}.kind", {"const": cls.kind})  # type: ignore[attr-defined]
        required.append("kind")
    for f in fields(cls):
        # A job step names its plan by id; the plan itself is in the pipeline's `plans`.
        shape = _hex(64) if (cls, f.name) == (ir.JobStep, "plan") else _shape(hints[f.name], cls.__name__, f.name)
        properties[f.name] = _property(f"{cls.__name__}.{f.name}", shape)
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(f.name)
    if cls is ir.Plan:
        properties["format_version"] = _property("Plan.format_version", {"const": ir.FORMAT_VERSION})
        required.insert(0, "format_version")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _property(key: str, shape: dict[str, Any]) -> dict[str, Any]:
    about = _ABOUT.get(key) or _ABOUT[key.rsplit(".", 1)[-1]]
    return {
        "description": about.replace("`", ""),
        "markdownDescription": f"{about}\n\n[reference]({LINK})",
        **shape,
    }


def _shape(hint: Any, owner: str, name: str) -> dict[str, Any]:
    """The schema of a field annotated `hint`."""
    if (owner, name) in _ENUMS:
        return {"enum": list(_ENUMS[owner, name])}
    if name == "provenance":
        return {"type": "object", "additionalProperties": {"type": "string"}}
    if isinstance(hint, types.UnionType):
        branches = [_shape(arg, owner, name) for arg in hint.__args__]
        return {"anyOf": branches}
    origin = typing.get_origin(hint)
    if origin is tuple:
        return {"type": "array", "items": _shape(typing.get_args(hint)[0], owner, name)}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    if hint in simple:
        return {"type": simple[hint], **_BOUNDS.get(f"{owner}.{name}", {})}
    if hint is Any:
        return {"$ref": "#/definitions/value"}
    if hint is ir.Frozen:
        return {"type": "object", "additionalProperties": {"$ref": "#/definitions/value"}}
    if hint is ir.Node:
        return {"$ref": "#/definitions/node"}
    if hint is ir.Secret:
        return {"$ref": "#/definitions/secret"}
    return {"$ref": f"#/definitions/{_ref_name(hint)}"}


def _node_choice() -> dict[str, Any]:
    """A node, picked by `kind`: one `if`/`then` a kind, so a bad node is explained against its own kind only."""
    return {
        "description": "One node of the plan, of the class its kind names.",
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": _property("kind", {"enum": list(ir.NODE_KINDS)})},
        "allOf": [
            {"if": {"properties": {"kind": {"const": kind}}}, "then": {"$ref": f"#/definitions/{kind}_node"}}
            for kind in ir.NODE_KINDS
        ],
    }


def _secret() -> dict[str, Any]:
    return {
        "description": "A sensitive value, carried as where it comes from; never the value.",
        "type": "object",
        "properties": {
            ir.SECRET_KEY: _property(
                "$secret",
                {
                    "type": "string",
                    "pattern": "^[(]sensitive, (sha256:[0-9a-f]{8}|unset)[)]$",
                    "x-expected": "(sensitive, sha256:<8 hex digits>) or (sensitive, unset)",
                },
            ),
            "ref": _property("ref", {"type": "string", "minLength": 1}),
            "names": _property(
                "names", {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
            ),
            "digest": _property("digest", {"anyOf": [_hex(8), {"type": "null"}]}),
        },
        "required": [ir.SECRET_KEY, "ref", "names", "digest"],
        "additionalProperties": False,
    }


def _hex(digits: int) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": f"^[0-9a-f]{{{digits}}}$",
        "x-expected": f"{digits} lowercase hex digits",
    }
