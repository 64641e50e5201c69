"""A job's files stay inside its workspace (`ir.WorkspacePaths`): a relative path that climbs out with `..`, or an
absolute path, is `path-outside-workspace` unless `sleipnir.yaml` lists a folder holding it under `paths: allow:`.

The paths are a source's and a sink's `path`, the dead letter, the log file and the globs `file_created` triggers
watch. A path holding a `${...}` is judged by `plan`, once it is resolved (a `--param` cannot lead out either).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

import yaml

from ..diagnostics import Diagnostics
from ..documents import MANIFEST_NAMES, WORKSPACE, Document, Path
from ..ir.common import WorkspacePaths
from ..workspace import display_path, find_root
from . import DocumentVisitor

if TYPE_CHECKING:
    from ..checker import CheckContext


def check(context: CheckContext) -> None:
    _Paths(context).run()


def workspace_paths(document: Document, manifests: Iterable[Document], fallback: FilePath | None) -> WorkspacePaths:
    """The rule for `document`'s files: its workspace's root (the nearest `sleipnir.yaml` above it) and the folders
    that manifest allows."""
    root = find_root(FilePath(document.file).resolve()) or fallback or FilePath.cwd()
    for manifest in manifests:
        if manifest.kind == WORKSPACE and FilePath(manifest.file).resolve().parent == root:
            given = manifest.body.get("paths") if isinstance(manifest.body, dict) else None
            allow = given.get("allow") if isinstance(given, dict) else None
            return _allowed(root, allow)
    # The manifest was not among the documents at hand (a check one document at a time, a focused plan): read
    # its `paths.allow` from the file itself.
    for name in MANIFEST_NAMES:
        try:
            body = yaml.safe_load((root / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        given = body.get("paths") if isinstance(body, dict) else None
        return _allowed(root, given.get("allow") if isinstance(given, dict) else None)
    return WorkspacePaths(root=str(root))


def _allowed(root: FilePath, allow: Any) -> WorkspacePaths:
    folders = allow if isinstance(allow, list) else ()
    return WorkspacePaths(root=str(root), allow=tuple(str(a) for a in folders if isinstance(a, str)))


def check_job_paths(
    document: Document,
    job: dict[str, Any],
    base: Path,
    rule: WorkspacePaths,
    sink: Diagnostics,
    origins: Mapping[Path, str] | None = None,
    resolve: Callable[[str, str], FilePath | str | None] | None = None,
) -> None:
    """`path-outside-workspace` for each path of the job body `job` (at `base` in `document`) that leads out;
    `origins` (from `plan`) says where a value came from when it was not written there (`--param`)."""
    for place, value in _paths(job):
        if "${" in value:
            continue
        reason = rule.escape(value, resolve)
        if reason is None:
            continue
        origin = (origins or {}).get(place)
        sink.emit(
            "path-outside-workspace",
            f"`{_shown(value)}` {reason}",
            document.span_at((*base, *place)),
            label="outside the workspace",
            notes=(
                *((f"the value comes from {origin}",) if origin else ()),
                f"the workspace is {display_path(FilePath(rule.root)) or '.'}",
            ),
            help="use a path inside the workspace, or list the folder that holds it in sleipnir.yaml: "
            "`paths: {allow: [/data/shared]}`",
        )


def _paths(job: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for section, key in (("input", "path"), ("output", "path"), ("output", "dead_letter"), ("logging", "path")):
        given = job.get(section)
        if isinstance(given, dict) and isinstance(given.get(key), str):
            yield (section, key), given[key]
    triggers = job.get("triggers")
    for index, trigger in enumerate(triggers if isinstance(triggers, list) else []):
        if isinstance(trigger, dict) and trigger.get("type") == "file_created" and isinstance(trigger.get("path"), str):
            yield ("triggers", index, "path"), trigger["path"]


def _shown(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Paths(DocumentVisitor):
    def __init__(self, context: CheckContext) -> None:
        super().__init__(context)
        # The workspace's manifest, not every document of it: a focused plan reads only what its target uses.
        manifest = context.workspace.manifest
        self.manifests = [d for d in (*context.documents, *([manifest] if manifest is not None else [])) if d.kind == WORKSPACE]

    def visit_job_body(self, document: Document, job: dict[str, Any], path: Path) -> None:
        if not any(True for _ in _paths(job)):
            return
        rule = rule_in_run(self.context.workspace, document, self.manifests)
        check_job_paths(document, job, path, rule, self.sink, resolve=resolve_in_run)


_RULES: list[Any] = [None, {}, {}]
"""For one check run (one `Workspace`): the rule of each folder, so that 2,000 jobs in 68 files find their
workspace root 68 times, not 2,000; and each folder a path is in, resolved once. A new run, with a new
`Workspace`, starts afresh, so a symlink changed between two runs of the language server is seen."""


def rule_in_run(workspace: Any, document: Document, manifests: list[Document]) -> WorkspacePaths:
    """`workspace_paths`, once per folder in a run over `workspace` (a check, a plan); call it before
    `resolve_in_run`, which it readies for the run."""
    if _RULES[0] is not workspace:
        _RULES[:] = [workspace, {}, {}]
    if manifests[1:]:
        return workspace_paths(document, manifests, workspace.root)
    rules: dict[str, WorkspacePaths] = _RULES[1]
    folder = os.path.dirname(document.file)
    rule = rules.get(folder)
    if rule is None:
        rule = rules[folder] = workspace_paths(document, manifests, workspace.root)
    return rule


def resolve_in_run(root: str, path: str) -> str | None:
    """`os.path.realpath(root/path)`, with the folder part resolved (and whether it is there) once a run: the
    last part is looked at on its own (one `lstat`), and followed when it is a link."""
    folders: dict[str, tuple[str, bool]] = _RULES[2]
    try:
        head, tail = os.path.split(os.path.join(root, os.path.expanduser(path)))
        found = folders.get(head)
        if found is None:
            real = os.path.realpath(head)
            found = folders[head] = (real, os.path.isdir(real))
        base, present = found
        full = os.path.join(base, tail)
        # Nothing in a folder that is not there is a link: no `lstat` (and no failed one) for each of 2,000 jobs'
        # outputs before their first run.
        return os.path.realpath(full) if present and os.path.islink(full) else os.path.normpath(full)
    except (OSError, ValueError):
        return None
