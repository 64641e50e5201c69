"""Checked documents -> an outline of what would run: each job's source, prompts (with the version chosen for
each reference), stack steps and sink, and each pipeline's stages in order.

This is the front end's view for `sleipnir plan`; the typed IR that the runtime reads is built from the same
resolved references.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from .checker import CheckResult
from .documents import Document
from .registry import Registry

OUTLINE_VERSION = 1


def outline(result: CheckResult) -> dict[str, Any]:
    """A JSON-ready outline of every checked job and pipeline. Call only on a result without errors."""
    workspace, registry = result.workspace, result.registry
    jobs = [_job(d, registry) for d in workspace.documents if d.kind == "job"]
    pipelines = [_pipeline(d) for d in workspace.documents if d.kind == "pipeline"]
    return {"version": OUTLINE_VERSION, "jobs": jobs, "pipelines": pipelines}


def _where(document: Document) -> str:
    return str(document.span)


def _reference(registry: Registry, kind: str, name: Any, version: Any) -> dict[str, Any]:
    requested = None if version is None else str(version)
    chosen = registry.get(kind, str(name), requested)
    return {
        "name": name,
        "requested": requested,
        "version": chosen.version if chosen else requested,
        "newest": requested is None,
        "from": chosen.file if chosen else None,
    }


def _job(document: Document, registry: Registry) -> dict[str, Any]:
    body = document.body
    prompts = [
        {**_reference(registry, "prompt", p.get("name"), p.get("version")), "model": p.get("model")}
        for p in body.get("prompts") or []
        if isinstance(p, dict)
    ]
    stack = None
    if body.get("stack"):
        stack = _reference(registry, "stack", body["stack"], body.get("stack_version"))
        stack_document = registry.get("stack", str(body["stack"]), stack["requested"])
        stack["steps"] = _steps(stack_document, registry) if stack_document else []
    phases = [
        {
            "name": phase.get("name"),
            **({"prompt": _reference(registry, "prompt", phase["prompt"], phase.get("version"))} if phase.get("prompt") else {}),
            **({"split_by": phase["split_by"]} if "split_by" in phase else {}),
        }
        for phase in body.get("phases") or []
        if isinstance(phase, dict)
    ]
    return {
        "name": document.name,
        "version": document.version,
        "at": _where(document),
        "input": body.get("input"),
        "prompts": prompts,
        "stack": stack,
        "phases": phases,
        "output": body.get("output"),
        "schedule": body.get("schedule"),
        "profiles": sorted(body.get("profiles") or {}),
    }


def _steps(stack: Document, registry: Registry) -> list[dict[str, Any]]:
    steps = []
    for step in stack.body.get("steps") or []:
        if not isinstance(step, dict):
            continue
        group = step.get("parallel")
        members = group if isinstance(group, list) else [step]
        for member in members:
            if isinstance(member, dict) and member.get("prompt"):
                steps.append(
                    {
                        "id": member.get("id"),
                        "prompt": _reference(registry, "prompt", member["prompt"], member.get("version")),
                        "when": member.get("when"),
                        "parallel_group": step.get("id", "parallel") if isinstance(group, list) else None,
                    }
                )
    return steps


def _pipeline(document: Document) -> dict[str, Any]:
    entries = document.body.get("jobs") or []
    graph: nx.DiGraph[str] = nx.DiGraph()
    names: dict[str, str] = {}
    previous = None
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            node = entry if entry not in names else f"{entry}#{index + 1}"
            names[node] = entry
            graph.add_node(node)
            if previous is not None:
                graph.add_edge(previous, node)
            previous = node
        elif isinstance(entry, dict):
            node = str(entry.get("id"))
            names[node] = str(entry.get("name"))
            graph.add_node(node)
            for dependency in entry.get("depends_on") or []:
                graph.add_edge(str(dependency), node)
    stages = [
        [{"id": node, "job": names.get(node, node)} for node in sorted(generation)]
        for generation in nx.topological_generations(graph)
    ]
    return {"name": document.name, "at": _where(document), "stages": stages}


def render_text(plan: dict[str, Any]) -> str:
    """The outline for people."""
    lines: list[str] = []
    for job in plan["jobs"]:
        version = f" {job['version']}" if job["version"] else ""
        lines.append(f"job {job['name']}{version}  ({job['at']})")
        if job["input"]:
            lines.append(f"  input   {_mapping(job['input'])}")
        for prompt in job["prompts"]:
            lines.append(f"  prompt  {_chosen(prompt)}" + (f"  model {prompt['model']}" if prompt["model"] else ""))
        if job["stack"]:
            lines.append(f"  stack   {_chosen(job['stack'])}")
            for step in job["stack"]["steps"]:
                extra = f"  when {step['when']}" if step["when"] else ""
                group = f"  [parallel {step['parallel_group']}]" if step["parallel_group"] else ""
                lines.append(f"    step  {step['id']}: {_chosen(step['prompt'])}{group}{extra}")
        for phase in job["phases"]:
            detail = f" {_chosen(phase['prompt'])}" if "prompt" in phase else ""
            split = f" split by {phase['split_by']}" if "split_by" in phase else ""
            lines.append(f"  phase   {phase['name']}{detail}{split}")
        if job["output"]:
            lines.append(f"  output  {_mapping(job['output'])}")
        if job["schedule"]:
            lines.append(f"  schedule {_mapping(job['schedule'])}")
        if job["profiles"]:
            lines.append(f"  profiles {', '.join(job['profiles'])}")
    for pipeline in plan["pipelines"]:
        lines.append(f"pipeline {pipeline['name'] or '(unnamed)'}  ({pipeline['at']})")
        for number, stage in enumerate(pipeline["stages"], 1):
            lines.append(f"  stage {number}: " + ", ".join(f"{s['id']} = {s['job']}" if s["id"] != s["job"] else s["job"] for s in stage))
    return "\n".join(lines)


def _chosen(reference: dict[str, Any]) -> str:
    note = " (newest)" if reference["newest"] else ""
    return f"{reference['name']} {reference['version'] or '?'}{note}"


def _mapping(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
