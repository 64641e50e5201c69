"""A plan drawn: Graphviz DOT and Mermaid flowcharts of its DAG, byte for byte the same for the same plan.

Both are drawn from one layout: a box a node (labelled with its kind, id and what it runs), a cluster a stack's
parallel group and a pipeline's job (holding that job's own nodes), and an arrow an edge, labelled with what it
carries unless that is `items`. An edge between two jobs is drawn between their clusters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ir import JobStep, Merge, Node, Plan, PromptCall, Reduce, Sink, Source, Split
from .plan_text import show

_LABEL_WIDTH = 48


@dataclass(frozen=True, slots=True, kw_only=True)
class _Box:
    key: str
    """Unique in the drawing: the node id, prefixed by its job's for a pipeline (`collect/input`)."""
    shape: str
    label: tuple[str, ...]


@dataclass(slots=True, kw_only=True)
class _Cluster:
    key: str
    label: str
    members: list[_Box | _Cluster] = field(default_factory=list)
    first: str = ""
    """The box an arrow into the cluster points at (the job's first node)."""
    last: str = ""
    """The box an arrow out of the cluster leaves from (the job's last node)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Arrow:
    tail: str
    head: str
    label: str | None


@dataclass(slots=True, kw_only=True)
class _Layout:
    members: list[_Box | _Cluster] = field(default_factory=list)
    arrows: list[_Arrow] = field(default_factory=list)
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    """Every cluster drawn for a job, by key, so arrows between jobs can be drawn between them."""


def _layout(
    plan: Plan, prefix: str = "", into: _Layout | None = None
) -> tuple[list[_Box | _Cluster], _Layout]:
    """The members drawn for `plan` (nodes in level order, groups after), recording arrows and job clusters."""
    layout = into or _Layout()
    members: list[_Box | _Cluster] = []
    groups: dict[str, _Cluster] = {}
    order = [n for level in plan.levels() for n in level]
    for node in order:
        key = prefix + node.id
        if isinstance(node, JobStep) and node.plan.nodes:
            cluster = _Cluster(
                key=key, label=f"job {node.job}" + (f" ({node.id})" if node.id != node.job else "")
            )
            cluster.members, _ = _layout(node.plan, key + "/", layout)
            inner = [n for level in node.plan.levels() for n in level]
            cluster.first, cluster.last = key + "/" + inner[0].id, key + "/" + inner[-1].id
            layout.clusters[key] = cluster
            members.append(cluster)
            continue
        box = _Box(key=key, shape=type(node).__name__, label=_label(node))
        group = node.group if isinstance(node, PromptCall) else None
        if group:
            groups.setdefault(
                group, _Cluster(key=f"{prefix}group {group}", label=f"parallel group {group}")
            ).members.append(box)
        else:
            members.append(box)
    members.extend(groups[name] for name in sorted(groups))
    position = {node.id: index for index, node in enumerate(order)}
    for edge in sorted(plan.edges, key=lambda e: (position[e.source], position[e.target], e.carries)):
        label = None if edge.carries in ("items", "after") else edge.carries
        layout.arrows.append(_Arrow(tail=prefix + edge.source, head=prefix + edge.target, label=label))
    if into is None:
        layout.members = members
    return members, layout


def _label(node: Node) -> tuple[str, ...]:
    lines = [f"{node.kind}: {node.id}", *_DETAILS[type(node)](node)]
    return tuple(line if len(line) <= _LABEL_WIDTH else line[: _LABEL_WIDTH - 3] + "..." for line in lines)


def _where(kind: str, options: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [" ".join([kind, *(show(options[k]) for k in keys if k in options)])]


def _call_details(node: PromptCall) -> list[str]:
    lines = [f"{node.prompt}@{node.version}", f"{node.model} via {node.provider}"]
    return [*lines, f"when {node.when}"] if node.when else lines


_DETAILS: dict[type[Node], Callable[[Any], list[str]]] = {
    Source: lambda node: _where(node.source, node.options, ("path", "query", "endpoint", "table")),
    PromptCall: _call_details,
    Split: lambda node: [f"by {node.split_by}"],
    Reduce: lambda node: [f"collects {', '.join(node.collects)}"],
    Merge: lambda node: [f"collects {', '.join(node.collects)}"],
    Sink: lambda node: _where(node.destination, node.options, ("path", "table", "endpoint")),
    JobStep: lambda node: [f"job {node.job}"],
}
"""The lines under a box's `kind: id`, by node class."""


# --------------------------------------------------------------------------------------------------------------
# Graphviz

_DOT_SHAPES = {
    "Source": "cylinder",
    "Sink": "cylinder",
    "PromptCall": "box",
    "Split": "trapezium",
    "Reduce": "invtrapezium",
    "Merge": "invtrapezium",
    "JobStep": "box3d",
}


def render_dot(plan: Plan) -> str:
    """The plan's DAG in Graphviz DOT (`dot -Tsvg`)."""
    _, layout = _layout(plan)
    lines = [
        f"digraph {_dot(plan.name)} {{",
        '  graph [rankdir=TB, compound=true, fontname="Helvetica"];',
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
    ]
    _dot_members(layout.members, lines, "  ")
    for arrow in layout.arrows:
        attributes = []
        tail, head = arrow.tail, arrow.head
        if tail in layout.clusters:
            attributes.append(f"ltail={_dot('cluster ' + tail)}")
            tail = layout.clusters[tail].last
        if head in layout.clusters:
            attributes.append(f"lhead={_dot('cluster ' + head)}")
            head = layout.clusters[head].first
        if arrow.label:
            attributes.append(f"label={_dot(arrow.label)}")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"  {_dot(tail)} -> {_dot(head)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_members(members: list[_Box | _Cluster], lines: list[str], indent: str) -> None:
    for member in members:
        if isinstance(member, _Cluster):
            lines.append(f"{indent}subgraph {_dot('cluster ' + member.key)} {{")
            lines.append(f"{indent}  label={_dot(member.label)};")
            _dot_members(member.members, lines, indent + "  ")
            lines.append(f"{indent}}}")
        else:
            label = "\\n".join(_dot_text(line) for line in member.label)
            lines.append(f'{indent}{_dot(member.key)} [label="{label}", shape={_DOT_SHAPES[member.shape]}];')


def _dot(text: str) -> str:
    """A DOT quoted string."""
    return f'"{_dot_text(text)}"'


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


# --------------------------------------------------------------------------------------------------------------
# Mermaid

_MERMAID_SHAPES = {
    "Source": ('[("', '")]'),
    "Sink": ('[("', '")]'),
    "PromptCall": ('("', '")'),
    "Split": ('{{"', '"}}'),
    "Reduce": ('{{"', '"}}'),
    "Merge": ('{{"', '"}}'),
    "JobStep": ('["', '"]'),
}


def render_mermaid(plan: Plan) -> str:
    """The plan's DAG as a Mermaid flowchart (`flowchart TD`), for Markdown that renders Mermaid."""
    _, layout = _layout(plan)
    names = _MermaidNames()
    lines = ["flowchart TD"]
    _mermaid_members(layout.members, lines, "  ", names)
    for arrow in layout.arrows:
        link = f'-->|"{_mermaid_text(arrow.label)}"|' if arrow.label else "-->"
        lines.append(f"  {names(arrow.tail)} {link} {names(arrow.head)}")
    return "\n".join(lines) + "\n"


class _MermaidNames:
    """Drawing keys -> Mermaid ids: letters, digits and `_` only, prefixed so no id is a keyword (`end`)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.taken: set[str] = set()

    def __call__(self, key: str) -> str:
        if key not in self.ids:
            base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", key)
            name, n = base, 2
            while name in self.taken:
                name, n = f"{base}_{n}", n + 1
            self.ids[key] = name
            self.taken.add(name)
        return self.ids[key]


def _mermaid_members(
    members: list[_Box | _Cluster], lines: list[str], indent: str, names: _MermaidNames
) -> None:
    for member in members:
        if isinstance(member, _Cluster):
            lines.append(f'{indent}subgraph {names(member.key)}["{_mermaid_text(member.label)}"]')
            _mermaid_members(member.members, lines, indent + "  ", names)
            lines.append(f"{indent}end")
        else:
            opening, closing = _MERMAID_SHAPES[member.shape]
            label = "<br/>".join(_mermaid_text(line) for line in member.label)
            lines.append(f"{indent}{names(member.key)}{opening}{label}{closing}")


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: entity codes for what Mermaid would read as syntax."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return " ".join(text.split())
