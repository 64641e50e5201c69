"""The whole front end in one place: index (load, classify, validate each file), then run the semantic checks.

Each stage appends diagnostics to one sink and keeps going, so a single run reports every problem it can.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import Cache
from .checks import names
from .codes import Severity
from .diagnostics import Diagnostic, Diagnostics
from .documents import Document
from .index import FileIndex, Indexed, Query, Record, WorkspaceIndex, read
from .registry import Named, Registry
from .workspace import Workspace, discover, display_path


@dataclass(slots=True, kw_only=True)
class CheckContext:
    """What every semantic check reads: the workspace, the registry and the sink it appends to."""

    workspace: Workspace
    registry: Registry
    sink: Diagnostics
    documents: list[Document]
    """Every checked document, so that one run reports every problem; checks must tolerate any shape."""
    valid: list[Document] = field(default_factory=list)
    """The checked documents that passed schema validation, for checks that validate again (profiles)."""
    strict: bool = False


Check = Callable[[CheckContext], None]



class _Loaded:
    """The `check` of `checks/<module>.py`, imported when first run on a document of one of `kinds`: a warm
    check that re-runs no check imports none of them, and a workspace without pipelines or prompt modules never
    imports what only those need (networkx, jinja2, jsonschema)."""

    def __init__(self, module: str, kinds: tuple[str, ...] | None = None) -> None:
        self.module = module
        self.kinds = kinds
        self.check: Check | None = None

    def __call__(self, context: CheckContext) -> None:
        if self.kinds is not None and not any(d.kind in self.kinds for d in context.documents):
            return
        if self.check is None:
            self.check = importlib.import_module(f"{__package__}.checks.{self.module}").check
        self.check(context)


_JOBS = ("job", "template")
SEMANTIC_CHECKS: tuple[Check, ...] = (
    _Loaded("references", (*_JOBS, "stack")),
    _Loaded("pipelines", ("pipeline",)),
    _Loaded("schedules", (*_JOBS, "pipeline")),
    _Loaded("profiles", _JOBS),
    _Loaded("prompts", ("prompt",)),
    _Loaded("sandbox", ("prompt",)),
    _Loaded("expressions"),
    _Loaded("queries", _JOBS),
    _Loaded("passwords"),
    _Loaded("paths"),
)
"""The semantic checks that look at one document at a time (and the registry), in the order they run."""
CHECKS: tuple[Check, ...] = (names.check, *SEMANTIC_CHECKS)
"""Every semantic check, in the order they run: first `names`, which looks across the workspace's index."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The outcome of `check`: every diagnostic, sorted by place, and the workspace that was read."""

    diagnostics: tuple[Diagnostic, ...]
    workspace: Workspace
    registry: Registry
    """What references resolved against; later stages resolve with the same one."""
    strict: bool

    @property
    def errors(self) -> int:
        return sum(d.severity is Severity.ERROR for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return sum(d.severity is Severity.WARNING for d in self.diagnostics)

    @property
    def ok(self) -> bool:
        """No errors, and no warnings either under `--strict`."""
        return self.errors == 0 and (not self.strict or self.warnings == 0)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: it re-scans the growing node tree, a measured 2.7x to 3.7x cost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # Re-enabling would make the next allocation scan every object made meanwhile (0.28 s for 2,000
            # jobs). Freezing first resets that count; unfreezing files the survivors with the oldest generation.
            gc.freeze()
            gc.enable()
            gc.unfreeze()


def check(
    paths: Sequence[str] = (),
    *,
    strict: bool = False,
    cache: bool | Cache = False,
    overlay: Mapping[Path, str] | None = None,
) -> CheckResult:
    """Check the documents at `paths` (the workspace around the current folder when empty).

    With `cache`, entries in the workspace's `.sleipnir/cache/` (or the given `Cache`) spare re-reading
    unchanged files and re-running checks whose registry answers did not change: the result is the same as a
    cold check's. `overlay` maps absolute paths to text that stands for their files (an editor's unsaved
    buffers)."""
    sink = Diagnostics()
    with gc_paused():
        index = index_workspace(paths, sink, cache=cache, overlay=overlay)
        return check_some(index, index.checked, sink.items, strict=strict)


def check_some(
    index: WorkspaceIndex, files: Sequence[FileIndex], before: Sequence[Diagnostic], *, strict: bool
) -> CheckResult:
    """The result of checking `files` of `index` (after the diagnostics `before`), the cache brought up to
    date. `plan <name>` checks only the files of what its target uses."""
    diagnostics = [*before, *check_files(index, files, strict=strict)]
    if index.cache is not None:
        index.store(index.cache)
    return CheckResult(
        diagnostics=tuple(sorted(_one_per_place(diagnostics), key=Diagnostic.sort_key)),
        workspace=index.workspace,
        registry=index.registry,
        strict=strict,
    )


def index_workspace(
    paths: Sequence[str],
    sink: Diagnostics,
    *,
    cache: bool | Cache = False,
    overlay: Mapping[Path, str] | None = None,
    scan: bool = False,
) -> WorkspaceIndex:
    """Every file a check of `paths` reads, indexed; unreadable checked files get a diagnostic in `sink`. With
    `scan`, a file not in the cache is scanned rather than parsed where the scan is sure of it (`index.read`)."""
    layout = discover(paths, sink)
    store = cache if isinstance(cache, Cache) else Cache.at(layout.root) if cache and layout.root else None
    overlay = overlay or {}

    def read_all(files: Sequence[Path], report: bool) -> list[FileIndex]:
        found = []
        for path in files:
            try:
                found.append(read(path.absolute(), store, overlay, scan=scan))
            except OSError as error:
                if report:
                    sink.emit(
                        "io-error", f"cannot read file: {error.strerror or error}", None, file=display_path(path)
                    )
        return found

    return WorkspaceIndex(
        layout=layout,
        checked=read_all(layout.checked, True),
        context=read_all(layout.context, False),
        stdlib=read_all(layout.stdlib, False),
        overlay=overlay,
        cache=store,
    )


def check_files(index: WorkspaceIndex, files: Sequence[FileIndex], *, strict: bool) -> list[Diagnostic]:
    """Every diagnostic of `files`, in the order a one-pass check emits them: per file, reading, then schema,
    then each semantic check in turn. A document's semantic checks run again only when its file changed or a
    registry question they asked now has another answer; under `--strict` they always run, since they then
    read the environment too."""
    answers = _Answers(index.registry)
    duplicates = Diagnostics()
    names.duplicates(
        (d for f in index.checked for d in f.documents),
        (d for f in index.context for d in f.documents),
        duplicates,
    )
    named: dict[str | None, list[Diagnostic]] = {}
    for diagnostic in duplicates:
        named.setdefault(diagnostic.path, []).append(diagnostic)
    found: list[Diagnostic] = []
    for file in files:
        found.extend(file.load)
        for schema in file.schema:
            found.extend(schema)
        found.extend(named.get(file.shown, ()))
        findings: list[tuple[tuple[Diagnostic, ...], ...]] = []
        for position, entry in enumerate(file.documents):
            record = file.records[position]
            if strict or record is None or not answers.hold(record):
                record = _check_document(index, entry, answers, strict=strict)
                if not strict:
                    file.records[position] = record
                    file.changed = True
            stages = record.stages
            if any(stages):  # most documents have no findings: skipped once, not once per check
                findings.append(stages)
        for stage in range(len(SEMANTIC_CHECKS)):
            for stages in findings:
                found.extend(stages[stage])
    return found


def _check_document(index: WorkspaceIndex, entry: Indexed, answers: _Answers, *, strict: bool) -> Record:
    document = index.document(entry)
    registry = _Recording(index.registry, answers)
    context = CheckContext(
        workspace=index.workspace,
        registry=registry,
        sink=Diagnostics(),
        documents=[document],
        valid=[document] if entry.valid else [],
        strict=strict,
    )
    stages: list[tuple[Diagnostic, ...]] = []
    for run_check in SEMANTIC_CHECKS:
        kinds = getattr(run_check, "kinds", None)
        if kinds is not None and document.kind not in kinds:
            stages.append(())  # as the check would find: it looks at other kinds only
            continue
        context.sink = sink = Diagnostics()
        run_check(context)
        stages.append(tuple(sink.items))
    return Record(queries=tuple(registry.asked.items()), stages=tuple(stages))


class _Answers:
    """The registry's answers, in the form records keep them (JSON values), each computed once per check."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.known: dict[Query, Any] = {}

    def __call__(self, query: Query) -> Any:
        answer = self.known.get(query, _UNKNOWN)
        if answer is _UNKNOWN:
            answer = self.known[query] = self._answer(query)
        return answer

    def _answer(self, query: Query) -> Any:
        registry = self.registry
        if query[0] == "names":
            return hashlib.sha1("\0".join(registry.names(query[1])).encode()).hexdigest()
        if query[0] == "versions":
            return registry.versions(query[1], query[2])
        if query[0] == "find":
            found = registry.find(query[1], query[2], query[3] or None)
            return None if found is None else [found.file, found.index]
        raise ValueError(f"unknown registry question {query!r}")

    def hold(self, record: Record) -> bool:
        """Whether every answer `record` was given is still the answer."""
        known = self.known  # `__call__` inlined: a warm check of 2,000 jobs asks this 7,000 times
        for query, answer in record.queries:
            key = tuple(query)
            found = known.get(key, _UNKNOWN)
            if found is _UNKNOWN:
                found = known[key] = self._answer(key)
            if found != answer:
                return False
        return True


_UNKNOWN = object()


class _Recording(Registry):
    """The registry as one document's checks see it: every question asked, and its answer, is written down."""

    __slots__ = ("answers", "asked")

    def __init__(self, registry: Registry, answers: _Answers) -> None:
        super().__init__(registry.entries, registry.materialize, registry.ordered)
        self.answers = answers
        self.asked: dict[Query, Any] = {}

    def _ask(self, query: Query) -> None:
        if query not in self.asked:
            self.asked[query] = self.answers(query)

    def names(self, kind: str) -> list[str]:
        self._ask(("names", kind))
        return super().names(kind)

    def versions(self, kind: str, name: str) -> list[str]:
        self._ask(("versions", kind, name))
        return super().versions(kind, name)

    def find(self, kind: str, name: str, version: str | None = None) -> Named | None:
        self._ask(("find", kind, name, version or ""))
        return super().find(kind, name, version)


def _one_per_place(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """One problem, one diagnostic: where a semantic check points at the very place a schema error already
    does (a badly formed time, say), only the first diagnostic emitted there is kept."""
    seen: set[tuple[str, int, int]] = set()
    kept = []
    for diagnostic in diagnostics:
        if diagnostic.primary is not None:
            span = diagnostic.primary.span
            place = (span.file, span.line, span.column)
            if place in seen:
                continue
            seen.add(place)
        kept.append(diagnostic)
    return kept
