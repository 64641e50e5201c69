"""The whole compiler in one place: check, pick the target, resolve each job, lower, and return typed plans.

    check (front end) -> target -> effective job (profile, overrides, substitutions) -> lower -> Plan

Each stage appends to one diagnostics sink; a plan is made only when every stage is clean, so the runtime never
sees a half-resolved value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .checker import CheckResult, check, check_some, gc_paused, index_workspace
from .checks.expressions import ScalarSpans
from .checks.paths import check_job_paths, resolve_in_run, rule_in_run
from .checks.references import check_resolved
from .codes import Severity
from .diagnostics import Diagnostic, Diagnostics
from .documents import WORKSPACE, Document
from .index import ScanMismatch
from .ir import Plan, PromptCall, Sink, Source
from .ir.common import DEFAULT_DATABASE, secret_or_text, suggestion_help
from .ir.expressions import UnsetVariableError
from .lower import WorkspaceSettings, lower_job
from .lower_pipeline import lower_pipeline
from .overrides import Override, command_line
from .resolve import Effective, choose_profile, effective, resolve_plain

PLANNABLE = ("job", "pipeline")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    """The plans made, and every diagnostic of the check and of planning."""

    plans: tuple[Plan, ...]
    diagnostics: tuple[Diagnostic, ...]
    check: CheckResult

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    @property
    def errors(self) -> int:
        return sum(d.severity == "error" for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return sum(d.severity == "warning" for d in self.diagnostics)

    @property
    def report(self) -> CheckResult:
        """Every diagnostic, as a check result the diagnostic renderers print."""
        return replace(self.check, diagnostics=self.diagnostics)

    def rendered(self) -> str:
        """Every diagnostic as text, for a log (`serve` logs why a workspace does not compile)."""
        from .render import RENDERERS

        return str(RENDERERS["human"](self.report, False))


def plan(
    target: str | None = None,
    *,
    profile: str | None = None,
    params: Sequence[str] = (),
    param_files: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
    workspace: str | None = None,
    select: Callable[[Document], bool] | None = None,
    cache: bool = False,
) -> PlanResult:
    """Plan `target`: a job or pipeline name (`name` or `name@version`) in the workspace around the current
    folder (or in `workspace`), a file, or a folder (every job and pipeline in it); with no target, the whole
    workspace. `overrides` (from the Python API) apply after `--param`s. `select` keeps only some of the
    documents a folder or workspace holds (`serve` plans the scheduled and triggered ones).

    A target named by name is planned in focus: every file is indexed (so that names resolve), but only the
    files of the target and of what it uses are checked. With `cache`, the workspace's check cache is used."""
    environ = dict(os.environ if environ is None else environ)
    is_path = target is not None and (Path(target).exists() or target.endswith((".yaml", ".yml")))
    layers = (params, param_files, overrides)
    if target and not is_path:
        # The files the target does not use are scanned for their names, not parsed. The scan answers only a
        # clean plan of what it was sure of: a scanned file that turns out to hold other documents when parsed,
        # or anything to report, and the plan is made again with every file parsed, as it always was.
        try:
            planned = _planned(_focused_check(target, workspace, cache=cache, scan=True), target, False,
                               profile, layers, environ, select)
        except ScanMismatch:
            planned = None
        if planned is None or planned.diagnostics:
            planned = _planned(_focused_check(target, workspace, cache=cache, scan=False), target, False,
                               profile, layers, environ, select)
        return planned
    result = check([target] if is_path and target else [workspace] if workspace else [], cache=cache)
    return _planned(result, target, is_path, profile, layers, environ, select)


def _planned(
    result: CheckResult,
    target: str | None,
    is_path: bool,
    profile: str | None,
    layers: tuple[Sequence[str], Sequence[str], Sequence[Override]],
    environ: Mapping[str, str],
    select: Callable[[Document], bool] | None,
) -> PlanResult:
    """The plans of `target` after the check that gave `result`."""
    params, param_files, overrides = layers
    sink = Diagnostics()
    plans: list[Plan] = []
    if result.errors and not is_path and target:
        result = _unrelated_errors_as_warnings(result, target)
    if result.errors:
        if target and not is_path:
            _targets(result, target, sink)  # a name that is not there is said too, beside what stops the rest
        return PlanResult(plans=(), diagnostics=(*result.diagnostics, *sink.items), check=result)
    with gc_paused():
        documents = _targets(result, None if is_path else target, sink)
        if select is not None:
            documents = [d for d in documents if select(d)]
        if documents:
            given = [*command_line(params, param_files, environ, sink), *overrides]
            if not sink.errors:
                planner = _Planner(result, profile, given, environ, sink)
                plans = [p for p in map(planner.plan, documents) if p is not None]
    diagnostics = (*result.diagnostics, *sorted(sink.items, key=Diagnostic.sort_key))
    if any(d.severity == "error" for d in diagnostics):
        plans = []
    return PlanResult(plans=tuple(plans), diagnostics=diagnostics, check=result)


def _focused_check(name: str, workspace: str | None, *, cache: bool, scan: bool) -> CheckResult:
    """Check only what `name` uses: the files of its document and of every document it refers to, and the
    manifest. The other files are read into the index (from the cache when fresh, else with `scan` scanned
    where the scan is sure of them); their reading problems are reported, as warnings once the target is found
    not to use them."""
    sink = Diagnostics()
    with gc_paused():
        index = index_workspace([workspace] if workspace else [], sink, cache=cache, scan=scan)
        wanted, _, version = name.partition("@")
        registry = index.registry
        target = next((d for kind in PLANNABLE if (d := registry.get(kind, wanted, version or None)) is not None), None)
        used = {d.file for d in documents_used(target, registry, {})} if target is not None else set()
        if index.workspace.manifest is not None:
            used.add(index.workspace.manifest.file)
        files = [f for f in index.checked if f.shown in used]
        unread = [d for f in index.checked if f.shown not in used for d in f.load]
        return check_some(index, files, [*sink.items, *unread], strict=False)


def _unrelated_errors_as_warnings(result: CheckResult, name: str) -> CheckResult:
    """Planning one job by name: a broken document the job does not use (another team's job, say) does not
    stop it. Its errors are still shown, as warnings; errors in the job's own file, in what it uses, or in
    `sleipnir.yaml` still stop it."""
    wanted, _, version = name.partition("@")
    document = next(
        (d for kind in PLANNABLE if (d := result.registry.get(kind, wanted, version or None)) is not None), None
    )
    if document is None:
        return result
    relevant = {d.file for d in documents_used(document, result.registry, {})}
    if result.workspace.manifest is not None:
        relevant.add(result.workspace.manifest.file)
    if any(d.severity is Severity.ERROR and (d.path is None or d.path in relevant) for d in result.diagnostics):
        return result
    note = f"not used by `{name}`, which is planned anyway"
    diagnostics = tuple(
        replace(d, severity=Severity.WARNING, notes=(*d.notes, note)) if d.severity is Severity.ERROR else d
        for d in result.diagnostics
    )
    return replace(result, diagnostics=diagnostics)


def documents_used(
    document: Document,
    registry: Any,
    seen: dict[int, Document],
    asked: dict[tuple[str, str, str | None], Document | None] | None = None,
) -> list[Document]:
    """`document` and every document it refers to: prompt modules, stacks, a pipeline's jobs. `asked` keeps
    each reference's answer, so that 2,000 jobs naming the same few prompts ask the registry once for each."""
    asked = {} if asked is None else asked
    seen[id(document)] = document
    body = document.body if isinstance(document.body, dict) else {}
    references: list[tuple[str, Any, Any]] = []
    for entry in _listed(body.get("prompts")):
        if isinstance(entry, dict):
            references.append(("prompt", entry.get("name"), entry.get("version")))
    for phase in _listed(body.get("phases")):
        if isinstance(phase, dict) and phase.get("prompt"):
            references.append(("prompt", phase.get("prompt"), phase.get("version")))
    for step in _listed(body.get("steps")):
        members = _listed(step.get("parallel")) or [step] if isinstance(step, dict) else []
        for member in members:
            if isinstance(member, dict):
                references.append(("prompt", member.get("prompt"), member.get("version")))
    if body.get("stack"):
        references.append(("stack", body.get("stack"), body.get("stack_version")))
    for entry in _listed(body.get("jobs")) if document.kind == "pipeline" else []:
        job = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
        references.append(("job", job, None))
    for kind, name, version in references:
        if not name:
            continue
        key = (kind, str(name), None if version is None else str(version))
        used = asked[key] if key in asked else asked.setdefault(key, registry.get(*key))
        if used is not None and id(used) not in seen:
            documents_used(used, registry, seen, asked)
    return list(seen.values())


def _listed(value: Any) -> list[Any]:
    """`value` when it is a list; checks must tolerate any shape, since broken documents are read too."""
    return value if isinstance(value, list) else []


def _targets(result: CheckResult, name: str | None, sink: Diagnostics) -> list[Document]:
    if name is None:
        checked = [d for d in result.workspace.documents if d.kind in PLANNABLE]
        if not checked:
            sink.emit("unknown-target", "nothing to plan: no job or pipeline here", None, file=".")
        return checked
    wanted, _, version = name.partition("@")
    for kind in PLANNABLE:
        document = result.registry.get(kind, wanted, version or None)
        if document is not None and document.kind in PLANNABLE:
            return [document]
    names = [n for kind in PLANNABLE for n in result.registry.names(kind)]
    notes: tuple[str, ...] = (f"jobs and pipelines here: {', '.join(sorted(set(names)))}",) if names else ()
    if result.errors:
        notes += ("a file with errors (above) may be the one that defines it",)
    sink.emit(
        "unknown-target",
        f"no job or pipeline named `{name}`",
        None,
        file=str(result.workspace.root or "."),
        help=suggestion_help(wanted, names) or "give a job or pipeline name, or a path to a file",
        notes=notes,
    )
    return []


class _Planner:
    def __init__(
        self,
        result: CheckResult,
        profile: str | None,
        overrides: list[Override],
        environ: Mapping[str, str],
        sink: Diagnostics,
    ) -> None:
        self.result = result
        self.registry = result.registry
        self.explicit_profile = profile
        manifest = result.workspace.manifest.body if result.workspace.manifest else {}
        self.default_profile = environ.get("SLEIPNIR_PROFILE") or manifest.get("default_profile")
        self.overrides = overrides
        self.environ = environ
        self.sink = sink
        self.spans = ScalarSpans(result.workspace.sources)
        self.workspace = _workspace_settings(result, manifest, environ)
        # The workspace's manifest, not every document: a focused plan reads only what its target uses.
        manifest = result.workspace.manifest
        self.manifests = [manifest] if manifest is not None and manifest.kind == WORKSPACE else []

    def plan(self, document: Document) -> Plan | None:
        if document.kind == "pipeline":
            return self._pipeline(document)
        job = self._effective(document, (), explicit=self.explicit_profile)
        return lower_job(job, self.registry, self.workspace, self.sink) if job else None

    def _effective(self, document: Document, extra: Sequence[Override], *, explicit: str | None) -> Effective | None:
        chosen, ok = choose_profile(document, explicit, self.default_profile, self.sink)
        if not ok:
            return None
        job = effective(
            document,
            profile=chosen,
            overrides=[*extra, *self.overrides],
            environ=self.environ,
            sink=self.sink,
            spans=self.spans,
        )
        if job is None:
            return None
        errors = len(self.sink.errors)
        if not job.as_written:  # else `check` found its references, against this registry, as they are here
            check_resolved(document, job.body, self.registry, self.sink)
        # Paths are judged again either way: a link may have changed since a cached check judged them.
        rule = rule_in_run(self.result.workspace, document, self.manifests)
        check_job_paths(document, job.body, document.base, rule, self.sink, job.origins, resolve=resolve_in_run)
        return job if len(self.sink.errors) == errors else None

    def _pipeline(self, document: Document) -> Plan | None:
        body = document.body
        shared = _params(document, (*document.base, "params"), body.get("params"), "pipeline")
        jobs: dict[str, Plan] = {}
        explicit = self.explicit_profile
        for index, entry in enumerate(body.get("jobs") or []):
            name = entry if isinstance(entry, str) else entry["name"]
            node_id = entry if isinstance(entry, str) else entry["id"]
            job = self.registry.get("job", name)
            assert job is not None, "pipeline jobs are checked before planning"
            own = [] if isinstance(entry, str) else _params(
                document, (*document.base, "jobs", index, "params"), entry.get("params"), f"pipeline entry {node_id}"
            )
            # `--profile` applies to the pipeline's jobs that define it (an error only if none does).
            defines = explicit is not None and explicit in (job.body.get("profiles") or {})
            effective_job = self._effective(job, [*shared, *own], explicit=explicit if defines else None)
            if effective_job is None:
                return None
            if not defines and explicit is not None:
                effective_job.profile = None
            jobs[node_id] = lower_job(effective_job, self.registry, self.workspace, self.sink)
        self._stages_without_input(document, jobs)
        if explicit is not None and not any(p.profile == explicit for p in jobs.values()):
            choose_profile(self.registry.get("job", _first_job(body)) or document, explicit, None, self.sink)
            return None
        schedule = body.get("schedule")
        if schedule:
            params = body.get("params") or {}
            lookup = lambda name: str(params[name]) if name in params else self.environ.get(name)  # noqa: E731
            try:
                schedule = resolve_plain(schedule, lookup)
            except UnsetVariableError as error:
                self.sink.emit(
                    "unset-variable",
                    error.message,
                    document.span_at((*document.base, "schedule")),
                    help=f"set `{error.substitution.name}` in the environment or in the pipeline's `params`",
                )
                return None
        return lower_pipeline(document, jobs, self.workspace, schedule)


    def _stages_without_input(self, document: Document, jobs: Mapping[str, Plan]) -> None:
        """`missing-input` for a stage that runs after another but reads no input while its prompts need
        fields of a row: it would run once on an empty row and fail there, after the stages before it ran."""
        previous: str | None = None
        for index, entry in enumerate(document.body.get("jobs") or []):
            node_id = entry if isinstance(entry, str) else str(entry["id"])
            after = ([previous] if previous else []) if isinstance(entry, str) else list(entry.get("depends_on") or [])
            previous = node_id
            needed = _row_fields_needed(jobs[node_id])
            if not after or needed is None:
                continue
            prompt, variable = needed
            writes = [w for w in (_writes(jobs[a]) for a in after if a in jobs) if w]
            name = jobs[node_id].name
            self.sink.emit(
                "missing-input",
                f"`{node_id}` runs after `{'`, `'.join(after)}` but reads no input, and its prompt `{prompt}` needs "
                f"`{variable}` from each row",
                document.span_at((*document.base, "jobs", index)),
                label="a stage with no input",
                notes=(f"`{after[0]}` writes {writes[0]}",) if writes else (),
                help=f"give job `{name}` an `input:` that reads what the stage before it writes"
                + (f", e.g. `input: {{source: file, path: {writes[0]}}}`" if writes else ""),
            )


def _row_fields_needed(plan: Plan) -> tuple[str, str] | None:
    """For a job with no input, the first (prompt, variable) a per-item call needs from the row and nothing
    else gives it (a default, a binding, an earlier output); None when its calls need nothing of a row."""
    if not any(isinstance(n, Source) and n.source == "run_input" for n in plan.nodes):
        return None
    given: set[str] = set()
    for node in plan.nodes:
        if not isinstance(node, PromptCall):
            continue
        if node.scope == "item":
            variables = plan.resources.prompt(node.prompt, node.version).variables
            for variable, spec in variables.items():
                required = isinstance(spec, Mapping) and spec.get("required") and "default" not in spec
                if required and variable not in node.inputs and variable not in given:
                    return node.prompt, variable
        given.update((node.prompt, node.output))
    return None


def _writes(plan: Plan) -> str | None:
    """The file a job plan's output writes, if it writes one."""
    for node in plan.nodes:
        if isinstance(node, Sink) and isinstance(node.options.get("path"), str):
            return str(node.options["path"])
    return None


def _first_job(body: Mapping[str, Any]) -> str:
    first = (body.get("jobs") or [""])[0]
    return first if isinstance(first, str) else str(first.get("name"))


def _params(document: Document, base: tuple[str | int, ...], params: Any, what: str) -> list[Override]:
    """A pipeline's `params` as parameter overrides for its jobs, each at its line."""
    if not isinstance(params, dict):
        return []
    found = []
    for key, value in params.items():
        span = document.span_at((*base, key), key=True)
        found.append(Override(key=f"params.{key}", value=value, origin=f"{what} ({span.file}:{span.line})", span=span))
    return found


def _workspace_settings(result: CheckResult, manifest: Mapping[str, Any], environ: Mapping[str, str]) -> WorkspaceSettings:
    root = result.workspace.root or Path.cwd()
    connections = {}
    for name, value in (manifest.get("connections") or {}).items():
        url = value.get("url") if isinstance(value, dict) else value
        connections[name] = secret_or_text(str(url), environ)
    providers = {}
    for name, value in (manifest.get("providers") or {}).items():
        settings = dict(value or {})
        if isinstance(settings.get("base_url"), str):
            settings["base_url"] = secret_or_text(settings["base_url"], environ)
        providers[name] = settings
    database = secret_or_text(str(manifest.get("database") or DEFAULT_DATABASE), environ)
    return WorkspaceSettings(
        root=str(Path(root).resolve()),
        database=database if isinstance(database, str) else database.ref,
        connections=connections,
        providers=providers,
        environ=environ,
        fallback_provider=manifest.get("fallback_provider"),
        allowed_paths=tuple(str(p) for p in ((manifest.get("paths") or {}).get("allow") or ())),
        engine=str(manifest.get("engine") or "local"),
    )
