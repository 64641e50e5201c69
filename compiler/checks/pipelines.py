"""Pipelines: every entry names a job that exists, ids are unique, and dependencies form no cycle.

A pipeline lists its jobs in one of two forms: plain job names, run in sequence, or entries with an `id`, a job
`name` and `depends_on`, which form a graph. Both lower to the same job graph (see spec/pipeline.md); mixing the
two in one pipeline is an error, because a plain name's place in the sequence says nothing about the graph.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..diagnostics import Label
from ..documents import Document, Path
from ..ir.common import suggestion_help

if TYPE_CHECKING:
    import networkx as nx

    from ..checker import CheckContext


def check(context: CheckContext) -> None:
    for document in context.documents:
        if document.kind == "pipeline" and isinstance(document.body, dict):
            jobs = document.body.get("jobs")
            if isinstance(jobs, list):
                _Pipeline(context, document, jobs).check()


class _Pipeline:
    def __init__(self, context: CheckContext, document: Document, entries: list[Any]) -> None:
        self.context = context
        self.sink = context.sink
        self.document = document
        self.entries = entries
        self.path: Path = (*document.base, "jobs")
        self.ids: dict[str, int] = {}
        """Each id (a plain entry's job name) and the index of the entry that first used it."""

    def check(self) -> None:
        self._one_form()
        for index, entry in enumerate(self.entries):
            if isinstance(entry, str):
                self._job(entry, (*self.path, index))
                self._id(entry, index, (*self.path, index), plain=True)
            elif isinstance(entry, dict):
                name, id_ = entry.get("name"), entry.get("id")
                if isinstance(name, str):
                    self._job(name, (*self.path, index, "name"))
                if isinstance(id_, str):
                    self._id(id_, index, (*self.path, index, "id"), plain=False)
        self._dependencies()

    def _one_form(self) -> None:
        forms = [(index, isinstance(entry, str)) for index, entry in enumerate(self.entries)]
        forms = [(index, plain) for index, plain in forms if plain or isinstance(self.entries[index], dict)]
        if not forms:
            return
        first_index, first_plain = forms[0]
        other = next((index for index, plain in forms if plain != first_plain), None)
        if other is None:
            return
        self.sink.emit(
            "invalid-value",
            "a pipeline lists its jobs either as names or as entries with ids, not both",
            self.document.span_at((*self.path, other)),
            label="a job name" if not first_plain else "an entry with an id",
            secondary=[
                Label(
                    span=self.document.span_at((*self.path, first_index)),
                    text="the first entry is " + ("a job name" if first_plain else "an entry with an id"),
                )
            ],
            notes=("plain names run in sequence; entries with `id`, `name` and `depends_on` form a graph",),
            help="write every entry as `- id: ...` with `name:` and `depends_on:`",
        )

    def _job(self, name: str, path: Path) -> None:
        if "${" in name:
            self.sink.emit(
                "literal-required",
                f"a pipeline names its jobs as written, and `{name}` holds a substitution",
                self.document.span_at(path),
                label="a substitution where a job name is required",
                help="write the job's name; to vary what a job does, give it `params:` in this entry",
            )
            return
        if self.context.registry.get("job", name) is not None:
            return
        self.sink.emit(
            "unknown-job",
            f"unknown job `{name}`",
            self.document.span_at(path),
            label="no job has this name",
            help=suggestion_help(name, self.context.registry.names("job"))
            or f"define a job named `{name}` in the workspace",
        )

    def _id(self, id_: str, index: int, path: Path, *, plain: bool) -> None:
        first = self.ids.setdefault(id_, index)
        if first == index:
            return
        first_entry = self.entries[first]
        first_path: Path = (*self.path, first) if isinstance(first_entry, str) else (*self.path, first, "id")
        self.sink.emit(
            "duplicate-id",
            f"job `{id_}` is listed twice" if plain else f"id `{id_}` is used twice",
            self.document.span_at(path),
            label="used again here",
            secondary=[Label(span=self.document.span_at(first_path), text="first used here")],
            help=(
                "a job runs once per pipeline run; to run it twice, write entries with different `id`s"
                if plain
                else "give each entry its own `id`"
            ),
        )

    def _dependencies(self) -> None:
        edges: dict[str, list[str]] = {id_: [] for id_ in self.ids}
        # Where each dependency is written; spans are looked up only for the few a diagnostic shows.
        paths: dict[tuple[str, str], Path] = {}
        for index, entry in enumerate(self.entries):
            if not isinstance(entry, dict):
                continue
            id_, depends_on = entry.get("id"), entry.get("depends_on")
            if not isinstance(id_, str) or not isinstance(depends_on, list):
                continue
            for position, dependency in enumerate(depends_on):
                if not isinstance(dependency, str):
                    continue
                path = (*self.path, index, "depends_on", position)
                if dependency not in self.ids:
                    self._unknown_dependency(dependency, path)
                elif (id_, dependency) not in paths:
                    edges[id_].append(dependency)
                    paths[(id_, dependency)] = path
        # A full cycle search on an acyclic graph is measurably slow; the acyclicity test is linear, and needs
        # no networkx (240 ms to import, on every check of a workspace with a pipeline).
        if not _acyclic(edges):
            import networkx as nx

            graph: nx.DiGraph[str] = nx.DiGraph()
            graph.add_nodes_from(self.ids)
            graph.add_edges_from(paths)
            for cycle in _cycles(graph, order=self.ids):
                self._cycle(cycle, paths)

    def _unknown_dependency(self, dependency: str, path: Path) -> None:
        self.sink.emit(
            "unknown-dependency",
            f"`depends_on` names no job id in this pipeline: `{dependency}`",
            self.document.span_at(path),
            label="no entry has this id",
            notes=(f"the ids in this pipeline are: {', '.join(self.ids)}",) if self.ids else (),
            help=suggestion_help(dependency, self.ids) or "name the `id` of an entry of this pipeline",
        )

    def _cycle(self, cycle: list[str], paths: dict[tuple[str, str], Path]) -> None:
        edges = list(itertools.pairwise(cycle))
        spans = {edge: self.document.span_at(paths[edge]) for edge in edges}
        # The dependency that closes the cycle is the one read last, top to bottom; the path ends with it.
        last = max(range(len(edges)), key=lambda k: (spans[edges[k]].line, spans[edges[k]].column))
        edges = edges[last + 1 :] + edges[: last + 1]
        cycle = [edges[0][0], *(target for _, target in edges)]
        *others, closing = edges
        self.sink.emit(
            "dependency-cycle",
            f"dependency cycle: {' -> '.join(cycle)}",
            spans[closing],
            label="closes the cycle",
            secondary=[
                Label(span=spans[edge], text=f"`{edge[0]}` depends on `{edge[1]}`") for edge in others
            ],
            notes=("`a -> b` means that `a` depends on `b`",),
            help="remove one of these dependencies",
        )


def _acyclic(edges: dict[str, list[str]]) -> bool:
    """Whether the graph has no cycle (self-dependencies included): Kahn's algorithm, linear in its size."""
    waiting = dict.fromkeys(edges, 0)
    for targets in edges.values():
        for target in targets:
            waiting[target] += 1
    ready = [node for node, count in waiting.items() if count == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for target in edges[node]:
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    return seen == len(edges)


def _cycles(graph: nx.DiGraph[str], *, order: dict[str, int]) -> list[list[str]]:
    """One cycle per self-dependency and per other strongly connected group, as paths that end where they start.

    Each cycle is the shortest one through the group's entry that comes first in the pipeline.
    """
    import networkx as nx

    cycles = [[node, node] for node in sorted(nx.nodes_with_selfloops(graph), key=order.__getitem__)]
    groups = [group for group in nx.strongly_connected_components(graph) if len(group) > 1]
    for group in sorted(groups, key=lambda g: min(order[n] for n in g)):
        start = min(group, key=order.__getitem__)
        within = graph.subgraph(group)
        best: list[str] | None = None
        for successor in sorted(within.successors(start), key=order.__getitem__):
            if successor == start:
                continue
            path = nx.shortest_path(within, successor, start)
            if best is None or len(path) < len(best):
                best = path
        if best is not None:
            cycles.append([start, *best])
    return cycles
