"""The plan and the languages it carries: what the compiler produces and the runtime reads, and nothing else.

- `plan.py`: the typed, immutable nodes (`Plan`, `Source`, `PromptCall`, ..., `Secret`, `Retry`).
- `serial.py`: the plan's deterministic JSON form (`to_json`, `from_json`) and its id.
- `expressions.py`: the `${...}` substitution and condition languages (grammars, typed nodes, parsers), which
  plans carry as text: the compiler checks them, the runtime evaluates them.
- `common.py`: small rules both sides apply the same way (file formats by suffix, did-you-mean, secret
  references in text).

The runtime imports from the compiler only this package (and `serve` the planner, to compile what it serves).
"""

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
from .serial import from_data, from_json, ordered, plan_id, to_data, to_json

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
    "ordered",
    "plan_id",
    "thaw",
    "to_data",
    "to_json",
]
