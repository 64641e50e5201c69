"""The plan and the languages it carries: what the compiler produces and the runtime reads, and nothing else.

- `plan.py`: the typed, immutable nodes (`Plan`, `Source`, `PromptCall`, ..., `Secret`, `Retry`).
- `serial.py`: the plan's deterministic JSON form (`to_json`, `from_json`) and its id.
- `expressions.py`: the `${...}` substitution and condition languages (grammars, typed nodes, parsers), which
  plans carry as text: the compiler checks them, the runtime evaluates them.
- `common.py`: small rules both sides apply the same way (file formats by suffix, did-you-mean, secret
  references in text).

The runtime imports from the compiler only this package (and `serve` the planner, to compile what it serves).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import (
        EDGE_KINDS,
        EMPTY,
        FORMAT_VERSION,
        NODE_KINDS,
        SECRET_KEY,
        STRUCTURED_OUTPUTS,
        Connection,
        Edge,
        Frozen,
        JobStep,
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
        Setting,
        Sink,
        Source,
        Split,
        digest,
        freeze,
        frozen,
        thaw,
    )
    from .serial import from_data, from_json, iter_json, iter_json_bytes, ordered, plan_id, to_data, to_json

__all__ = [
    "EDGE_KINDS",
    "EMPTY",
    "FORMAT_VERSION",
    "NODE_KINDS",
    "SECRET_KEY",
    "STRUCTURED_OUTPUTS",
    "Connection",
    "Edge",
    "Frozen",
    "JobStep",
    "Merge",
    "Node",
    "Plan",
    "PromptCall",
    "PromptModule",
    "Provider",
    "Reduce",
    "Resources",
    "Retry",
    "Secret",
    "Setting",
    "Sink",
    "Source",
    "Split",
    "digest",
    "freeze",
    "from_data",
    "from_json",
    "frozen",
    "iter_json",
    "iter_json_bytes",
    "ordered",
    "plan_id",
    "thaw",
    "to_data",
    "to_json",
]

_HOMES = {
    "Connection": ".plan",
    "EDGE_KINDS": ".plan",
    "EMPTY": ".plan",
    "Edge": ".plan",
    "FORMAT_VERSION": ".plan",
    "Frozen": ".plan",
    "JobStep": ".plan",
    "Merge": ".plan",
    "NODE_KINDS": ".plan",
    "Node": ".plan",
    "Plan": ".plan",
    "PromptCall": ".plan",
    "PromptModule": ".plan",
    "Provider": ".plan",
    "Reduce": ".plan",
    "Resources": ".plan",
    "Retry": ".plan",
    "SECRET_KEY": ".plan",
    "STRUCTURED_OUTPUTS": ".plan",
    "Secret": ".plan",
    "Setting": ".plan",
    "Sink": ".plan",
    "Source": ".plan",
    "Split": ".plan",
    "digest": ".plan",
    "freeze": ".plan",
    "from_data": ".serial",
    "from_json": ".serial",
    "frozen": ".plan",
    "iter_json": ".serial",
    "iter_json_bytes": ".serial",
    "ordered": ".serial",
    "plan_id": ".serial",
    "thaw": ".plan",
    "to_data": ".serial",
    "to_json": ".serial",
}


def __getattr__(name: str) -> Any:
    """Names are imported on first use: `compiler.ir.common` (did-you-mean, file formats) is wanted by every
    check, the plan classes and the expression grammars only when something is planned or parsed."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
