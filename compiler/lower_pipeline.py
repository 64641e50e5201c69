"""Lowering a pipeline: one `JobStep` a job, each holding its job's own plan (lowered by `lower.py`), with
`after` edges from `depends_on`."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from .documents import Document
from .ir import EMPTY, Edge, JobStep, Node, Plan, Setting, frozen, ordered
from .lower import WorkspaceSettings, schedule_settings


def lower_pipeline(
    document: Document, jobs: Mapping[str, Plan], workspace: WorkspaceSettings, schedule: Mapping[str, Any] | None
) -> Plan:
    """The plan of a pipeline: one `JobStep` a job, with `after` edges from `depends_on` (a plain list is a
    sequence: each entry after the one before). `jobs` maps each entry id to its job's plan."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    previous: str | None = None
    for index, entry in enumerate(document.body.get("jobs") or []):
        place = (*document.base, "jobs", index)
        if isinstance(entry, str):
            node_id, depends = entry, [previous] if previous else []
        else:
            node_id, depends = str(entry["id"]), [str(d) for d in entry.get("depends_on") or []]
        plan = jobs[node_id]
        nodes.append(JobStep(id=node_id, span=document.span_at(place), job=plan.name, plan=plan))
        edges.extend(Edge(source=d, target=node_id, carries="after") for d in depends)
        previous = node_id
    ordered_nodes, ordered_edges = ordered(tuple(nodes), tuple(edges))
    settings: dict[str, Any] = {}
    if schedule:
        settings["schedule"] = schedule_settings(schedule)
    return Plan(
        kind="pipeline",
        name=document.name or posixpath.splitext(posixpath.basename(document.file))[0],
        version=document.version,
        description=document.body.get("description"),
        root=workspace.root,
        parameters=tuple(
            Setting(key=str(key), value=value, origin=f"{document.file}:{document.line_at((*document.base, 'params', key))}")
            for key, value in sorted((document.body.get("params") or {}).items())
        ),
        nodes=ordered_nodes,
        edges=ordered_edges,
        settings=frozen(settings) if settings else EMPTY,
        span=document.span,
    )
